//! What a job asks for, parsed and validated up front: a [`QuantSpec`] is only built from a
//! request whose scheme is known and whose every option is valid, so workers never see a bad one.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::quant::int8::{Granularity, Int8Options};

/// Schemes this build can run.
pub const KNOWN_SCHEMES: &[&str] = &["int8"];
/// Output formats this build can write.
pub const KNOWN_FORMATS: &[&str] = &["safetensors"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantSpec {
    Int8(Int8Options),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown scheme '{scheme}'; known schemes: {}", KNOWN_SCHEMES.join(", "))]
    UnknownScheme { scheme: String },
    #[error("unknown format '{format}'; known formats: {}", KNOWN_FORMATS.join(", "))]
    UnknownFormat { format: String },
    #[error("invalid option '{field}': {message}")]
    InvalidOption { field: String, message: String },
}

/// Wire form of the int8 options; every field optional, unknown fields refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Int8OptionsWire {
    granularity: Option<String>,
    symmetric: Option<bool>,
}

impl QuantSpec {
    /// Parses a scheme name and its JSON options (absent or `null` = all defaults).
    pub fn parse(scheme: &str, options: Option<&Value>) -> Result<Self, SpecError> {
        let options = match options {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(value @ Value::Object(_)) => value.clone(),
            Some(_) => {
                return Err(SpecError::InvalidOption {
                    field: "options".into(),
                    message: "must be a JSON object".into(),
                })
            }
        };
        match scheme {
            "int8" => Ok(QuantSpec::Int8(parse_int8(options)?)),
            other => Err(SpecError::UnknownScheme {
                scheme: other.to_owned(),
            }),
        }
    }

    pub fn scheme(&self) -> &'static str {
        match self {
            QuantSpec::Int8(_) => "int8",
        }
    }

    /// The options with every default filled in: what is stored and shown.
    pub fn canonical_options(&self) -> Value {
        match self {
            QuantSpec::Int8(options) => json!({
                "granularity": match options.granularity {
                    Granularity::Channel => "channel",
                    Granularity::Tensor => "tensor",
                },
                "symmetric": options.symmetric,
            }),
        }
    }
}

/// Validates the output format name (default `safetensors`).
pub fn parse_format(format: Option<&str>) -> Result<&'static str, SpecError> {
    match format.unwrap_or("safetensors") {
        "safetensors" => Ok("safetensors"),
        other => Err(SpecError::UnknownFormat {
            format: other.to_owned(),
        }),
    }
}

fn parse_int8(options: Value) -> Result<Int8Options, SpecError> {
    let wire: Int8OptionsWire = serde_json::from_value(options).map_err(|e| {
        let message = e.to_string();
        // serde names the offending field in its message; surface it as the field.
        let field = message
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| "options".to_owned());
        SpecError::InvalidOption { field, message }
    })?;
    let granularity = match wire.granularity.as_deref() {
        None | Some("channel") => Granularity::Channel,
        Some("tensor") => Granularity::Tensor,
        Some(other) => {
            return Err(SpecError::InvalidOption {
                field: "granularity".into(),
                message: format!("'{other}' is not one of: channel, tensor"),
            })
        }
    };
    Ok(Int8Options {
        granularity,
        symmetric: wire.symmetric.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_per_channel_symmetric() {
        let spec = QuantSpec::parse("int8", None).unwrap();
        assert_eq!(
            spec.canonical_options(),
            json!({"granularity": "channel", "symmetric": true})
        );
    }

    #[test]
    fn options_round_trip_through_the_canonical_form() {
        let options = json!({"granularity": "tensor", "symmetric": false});
        let spec = QuantSpec::parse("int8", Some(&options)).unwrap();
        assert_eq!(spec.canonical_options(), options);
        assert_eq!(
            QuantSpec::parse("int8", Some(&spec.canonical_options())),
            Ok(spec)
        );
    }

    #[test]
    fn bad_input_names_the_problem() {
        assert!(matches!(
            QuantSpec::parse("int3", None),
            Err(SpecError::UnknownScheme { .. })
        ));
        let err = QuantSpec::parse("int8", Some(&json!({"granularity": "row"}))).unwrap_err();
        assert!(
            matches!(err, SpecError::InvalidOption { ref field, .. } if field == "granularity")
        );
        let err = QuantSpec::parse("int8", Some(&json!({"symetric": true}))).unwrap_err();
        assert!(matches!(err, SpecError::InvalidOption { ref field, .. } if field == "symetric"));
        let err = QuantSpec::parse("int8", Some(&json!({"symmetric": "yes"}))).unwrap_err();
        assert!(matches!(err, SpecError::InvalidOption { .. }));
        assert!(QuantSpec::parse("int8", Some(&json!([1]))).is_err());
        assert!(parse_format(Some("gguf")).is_err());
    }
}
