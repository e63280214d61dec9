//! Streaming parse of the header JSON into raw, unchecked entries.
//!
//! `serde_json` deserializing into a map keeps only the last of two equal keys, so a crafted
//! header could show one tensor to a checker and another to a loader. This visitor instead walks
//! the top-level object key by key and keeps every entry in declaration order; duplicates are
//! then rejected by `validate`. Type errors inside an entry are attributed to that entry through
//! a small side channel ([`ParseContext`]), because serde's error type cannot carry our variants.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::validate::shorten_for_message;
use super::{SafetensorsError, MAX_RANK, MAX_TENSORS, METADATA_KEY};

/// The header as written, before any semantic check.
pub(super) struct RawHeader {
    /// Tensor entries in declaration order, duplicates included.
    pub entries: Vec<RawEntry>,
    pub metadata: BTreeMap<String, String>,
}

/// One tensor entry as written.
pub(super) struct RawEntry {
    pub name: String,
    pub fields: RawEntryFields,
}

/// The fields of a tensor entry. Unknown fields are ignored, as the reference reader does.
#[derive(Deserialize)]
pub(super) struct RawEntryFields {
    /// Kept as a string so an unknown dtype gets its own error kind.
    pub dtype: String,
    #[serde(deserialize_with = "deserialize_shape")]
    pub shape: Vec<u64>,
    #[serde(deserialize_with = "deserialize_offsets")]
    pub data_offsets: (u64, u64),
}

/// Parses `text` (the whole header, padding included) into raw entries.
pub(super) fn parse_header_json(text: &str) -> Result<RawHeader, SafetensorsError> {
    let mut context = ParseContext {
        position: Position::TopLevel,
        error: None,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = HeaderSeed {
        context: &mut context,
    }
    .deserialize(&mut deserializer)
    // `end` rejects anything but whitespace after the object (the writer pads with spaces).
    .and_then(|raw_header| deserializer.end().map(|()| raw_header));
    parsed.map_err(|json_error| context.into_error(json_error))
}

/// Where the parser was when serde reported a type error, so the error names the right thing.
enum Position {
    TopLevel,
    Metadata,
    Tensor(String),
}

/// State shared between the visitors and [`parse_header_json`].
struct ParseContext {
    position: Position,
    /// A semantic error found by a visitor; serde only transports its message.
    error: Option<SafetensorsError>,
}

impl ParseContext {
    /// Records `error` and returns a serde error that aborts the parse.
    fn fail<E: de::Error>(&mut self, error: SafetensorsError) -> E {
        let message = error.to_string();
        self.error = Some(error);
        E::custom(message)
    }

    /// Turns the serde_json error that stopped the parse into our error kind.
    fn into_error(self, json_error: serde_json::Error) -> SafetensorsError {
        if let Some(error) = self.error {
            return error;
        }
        // serde_json quotes offending strings, which an attacker controls in length.
        let message = shorten_json_message(&json_error.to_string());
        match json_error.classify() {
            // A data error is well-formed JSON of the wrong type; syntax, EOF (and the
            // impossible I/O case for an in-memory string) mean the text is not JSON.
            serde_json::error::Category::Data => match self.position {
                Position::TopLevel => SafetensorsError::HeaderNotObject(message),
                Position::Metadata => SafetensorsError::InvalidMetadata { reason: message },
                Position::Tensor(name) => SafetensorsError::InvalidTensorEntry {
                    name: shorten_for_message(&name),
                    reason: message,
                },
            },
            _ => SafetensorsError::HeaderNotJson(message),
        }
    }
}

/// Visits the top-level object.
struct HeaderSeed<'context> {
    context: &'context mut ParseContext,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawHeader, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object mapping tensor names to entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let context = self.context;
        let mut entries = Vec::new();
        let mut metadata = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == METADATA_KEY {
                if metadata.is_some() {
                    return Err(context.fail(SafetensorsError::InvalidMetadata {
                        reason: format!("{METADATA_KEY:?} appears more than once"),
                    }));
                }
                context.position = Position::Metadata;
                metadata = Some(map.next_value_seed(MetadataSeed {
                    context: &mut *context,
                })?);
            } else {
                // Checked before the entry is parsed so a huge header stops growing early.
                if entries.len() == MAX_TENSORS {
                    return Err(
                        context.fail(SafetensorsError::TooManyTensors { limit: MAX_TENSORS })
                    );
                }
                context.position = Position::Tensor(key);
                let fields = map.next_value::<RawEntryFields>()?;
                let Position::Tensor(name) =
                    std::mem::replace(&mut context.position, Position::TopLevel)
                else {
                    unreachable!("position is only changed by this loop");
                };
                entries.push(RawEntry { name, fields });
            }
            context.position = Position::TopLevel;
        }
        Ok(RawHeader {
            entries,
            metadata: metadata.unwrap_or_default(),
        })
    }
}

/// Visits `__metadata__`: an object of strings whose keys must be unique.
struct MetadataSeed<'context> {
    context: &'context mut ParseContext,
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed<'_> {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut metadata = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<String>()?;
            if metadata.contains_key(&key) {
                return Err(self.context.fail(SafetensorsError::InvalidMetadata {
                    reason: format!("key {key:?} appears more than once"),
                }));
            }
            metadata.insert(key, value);
        }
        Ok(metadata)
    }
}

/// Deserializes a shape, refusing more than [`MAX_RANK`] dimensions while parsing so a long
/// array in the header cannot make us allocate eight bytes per digit.
fn deserialize_shape<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    struct ShapeVisitor;

    impl<'de> Visitor<'de> for ShapeVisitor {
        type Value = Vec<u64>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                formatter,
                "an array of at most {MAX_RANK} non-negative integers"
            )
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut shape = Vec::new();
            while let Some(dim) = seq.next_element::<u64>()? {
                if shape.len() == MAX_RANK {
                    return Err(de::Error::custom(format_args!(
                        "shape has more than {MAX_RANK} dimensions"
                    )));
                }
                shape.push(dim);
            }
            Ok(shape)
        }
    }

    deserializer.deserialize_seq(ShapeVisitor)
}

/// Keeps the start of a long serde_json message and its end, which holds line and column.
fn shorten_json_message(message: &str) -> String {
    const HEAD_CHARS: usize = 200;
    const TAIL_CHARS: usize = 60;
    let n_chars = message.chars().count();
    if n_chars <= HEAD_CHARS + TAIL_CHARS {
        return message.to_owned();
    }
    let head: String = message.chars().take(HEAD_CHARS).collect();
    let tail: String = message.chars().skip(n_chars - TAIL_CHARS).collect();
    format!("{head}…{tail}")
}

/// Deserializes `[begin, end]`. A derived tuple would report extra elements as a JSON syntax
/// error ("trailing characters"); this reports them as a malformed entry.
fn deserialize_offsets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(u64, u64), D::Error> {
    struct OffsetsVisitor;

    impl<'de> Visitor<'de> for OffsetsVisitor {
        type Value = (u64, u64);

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an array of two non-negative integers [begin, end]")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(u64, u64), A::Error> {
            let begin = seq
                .next_element::<u64>()?
                .ok_or_else(|| de::Error::invalid_length(0, &self))?;
            let end = seq
                .next_element::<u64>()?
                .ok_or_else(|| de::Error::invalid_length(1, &self))?;
            if seq.next_element::<de::IgnoredAny>()?.is_some() {
                return Err(de::Error::invalid_length(3, &self));
            }
            Ok((begin, end))
        }
    }

    deserializer.deserialize_seq(OffsetsVisitor)
}
