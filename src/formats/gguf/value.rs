//! Metadata values: the thirteen GGUF value types and their little-endian encoding.
//!
//! The layout is `gguf_metadata_value_t` of ggml's `docs/gguf.md`: scalars in their natural
//! little-endian width, a bool as one byte 0 or 1, a string as a `u64` byte length and UTF-8
//! without a NUL, an array as a `u32` element type, a `u64` element count and the elements.
//! gguf-py packs the same bytes in `GGUFWriter._pack_val`.

/// The `u32` type tag written before each value (`enum gguf_metadata_value_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgufValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

/// Tag order is the on-disk id: `ALL_VALUE_TYPES[id]` is the type with that id.
const ALL_VALUE_TYPES: [GgufValueType; 13] = [
    GgufValueType::U8,
    GgufValueType::I8,
    GgufValueType::U16,
    GgufValueType::I16,
    GgufValueType::U32,
    GgufValueType::I32,
    GgufValueType::F32,
    GgufValueType::Bool,
    GgufValueType::String,
    GgufValueType::Array,
    GgufValueType::U64,
    GgufValueType::I64,
    GgufValueType::F64,
];

impl GgufValueType {
    /// The type with on-disk id `id` (0..=12).
    pub fn from_id(id: u32) -> Option<GgufValueType> {
        ALL_VALUE_TYPES.get(usize::try_from(id).ok()?).copied()
    }

    /// The on-disk id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's short name (`GGUF_TYPE_NAME` in gguf.cpp): `u8`, `str`, `arr`, ...
    pub fn name(self) -> &'static str {
        match self {
            GgufValueType::U8 => "u8",
            GgufValueType::I8 => "i8",
            GgufValueType::U16 => "u16",
            GgufValueType::I16 => "i16",
            GgufValueType::U32 => "u32",
            GgufValueType::I32 => "i32",
            GgufValueType::F32 => "f32",
            GgufValueType::Bool => "bool",
            GgufValueType::String => "str",
            GgufValueType::Array => "arr",
            GgufValueType::U64 => "u64",
            GgufValueType::I64 => "i64",
            GgufValueType::F64 => "f64",
        }
    }

    /// Bytes one value of this type occupies on disk at least: its size for scalars, the
    /// 8-byte length for a string, the 12-byte array header for an array. Readers multiply it
    /// by a claimed element count to refuse counts the remaining bytes cannot hold before
    /// allocating anything.
    pub(super) fn min_encoded_bytes(self) -> u64 {
        match self {
            GgufValueType::U8 | GgufValueType::I8 | GgufValueType::Bool => 1,
            GgufValueType::U16 | GgufValueType::I16 => 2,
            GgufValueType::U32 | GgufValueType::I32 | GgufValueType::F32 => 4,
            GgufValueType::U64 | GgufValueType::I64 | GgufValueType::F64 => 8,
            GgufValueType::String => 8,
            GgufValueType::Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: one variant per element type. Arrays of arrays are legal in the spec but
/// ggml's reader (`gguf_init_from_reader`) refuses them, so they are not represented here and
/// [`read_gguf`](super::read_gguf) rejects them.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl GgufValue {
    pub fn value_type(&self) -> GgufValueType {
        match self {
            GgufValue::U8(_) => GgufValueType::U8,
            GgufValue::I8(_) => GgufValueType::I8,
            GgufValue::U16(_) => GgufValueType::U16,
            GgufValue::I16(_) => GgufValueType::I16,
            GgufValue::U32(_) => GgufValueType::U32,
            GgufValue::I32(_) => GgufValueType::I32,
            GgufValue::F32(_) => GgufValueType::F32,
            GgufValue::Bool(_) => GgufValueType::Bool,
            GgufValue::String(_) => GgufValueType::String,
            GgufValue::Array(_) => GgufValueType::Array,
            GgufValue::U64(_) => GgufValueType::U64,
            GgufValue::I64(_) => GgufValueType::I64,
            GgufValue::F64(_) => GgufValueType::F64,
        }
    }

    /// The string, when this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(text) => Some(text),
            _ => None,
        }
    }

    /// The number, when this is a `u32` value (the type of most counts llama.cpp reads).
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            GgufValue::U32(number) => Some(*number),
            _ => None,
        }
    }

    /// Appends the value without its type tag.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            GgufValue::U8(value) => out.push(*value),
            GgufValue::I8(value) => out.extend_from_slice(&value.to_le_bytes()),
            GgufValue::U16(value) => out.extend_from_slice(&value.to_le_bytes()),
            GgufValue::I16(value) => out.extend_from_slice(&value.to_le_bytes()),
            GgufValue::U32(value) => out.extend_from_slice(&value.to_le_bytes()),
            GgufValue::I32(value) => out.extend_from_slice(&value.to_le_bytes()),
            GgufValue::F32(value) => out.extend_from_slice(&value.to_le_bytes()),
            GgufValue::Bool(value) => out.push(u8::from(*value)),
            GgufValue::String(text) => encode_string(text, out),
            GgufValue::Array(array) => array.encode_into(out),
            GgufValue::U64(value) => out.extend_from_slice(&value.to_le_bytes()),
            GgufValue::I64(value) => out.extend_from_slice(&value.to_le_bytes()),
            GgufValue::F64(value) => out.extend_from_slice(&value.to_le_bytes()),
        }
    }
}

/// Appends every element of a numeric slice in little-endian order.
macro_rules! encode_numbers {
    ($values:expr, $out:expr) => {
        for value in $values {
            $out.extend_from_slice(&value.to_le_bytes());
        }
    };
}

impl GgufArray {
    /// The type of every element.
    pub fn element_type(&self) -> GgufValueType {
        match self {
            GgufArray::U8(_) => GgufValueType::U8,
            GgufArray::I8(_) => GgufValueType::I8,
            GgufArray::U16(_) => GgufValueType::U16,
            GgufArray::I16(_) => GgufValueType::I16,
            GgufArray::U32(_) => GgufValueType::U32,
            GgufArray::I32(_) => GgufValueType::I32,
            GgufArray::F32(_) => GgufValueType::F32,
            GgufArray::Bool(_) => GgufValueType::Bool,
            GgufArray::String(_) => GgufValueType::String,
            GgufArray::U64(_) => GgufValueType::U64,
            GgufArray::I64(_) => GgufValueType::I64,
            GgufArray::F64(_) => GgufValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(values) => values.len(),
            GgufArray::I8(values) => values.len(),
            GgufArray::U16(values) => values.len(),
            GgufArray::I16(values) => values.len(),
            GgufArray::U32(values) => values.len(),
            GgufArray::I32(values) => values.len(),
            GgufArray::F32(values) => values.len(),
            GgufArray::Bool(values) => values.len(),
            GgufArray::String(values) => values.len(),
            GgufArray::U64(values) => values.len(),
            GgufArray::I64(values) => values.len(),
            GgufArray::F64(values) => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends element type, count and elements.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.element_type().id().to_le_bytes());
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        match self {
            GgufArray::U8(values) => out.extend_from_slice(values),
            GgufArray::I8(values) => encode_numbers!(values, out),
            GgufArray::U16(values) => encode_numbers!(values, out),
            GgufArray::I16(values) => encode_numbers!(values, out),
            GgufArray::U32(values) => encode_numbers!(values, out),
            GgufArray::I32(values) => encode_numbers!(values, out),
            GgufArray::F32(values) => encode_numbers!(values, out),
            GgufArray::Bool(values) => out.extend(values.iter().map(|value| u8::from(*value))),
            GgufArray::String(values) => {
                for text in values {
                    encode_string(text, out);
                }
            }
            GgufArray::U64(values) => encode_numbers!(values, out),
            GgufArray::I64(values) => encode_numbers!(values, out),
            GgufArray::F64(values) => encode_numbers!(values, out),
        }
    }
}

/// A `gguf_string_t`: `u64` byte length, then the UTF-8 bytes, no NUL.
pub(super) fn encode_string(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}
