//! What a job asks for, parsed and validated up front: a [`JobSpec`] is only built from a
//! request whose scheme, format, every option, skip pattern and override is valid, and whose
//! scheme/format pairs can be expressed, so a worker never meets a bad request.

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::quant::fp8::Fp8Format;
use crate::quant::ggml::GgmlType;
use crate::quant::int4::Int4Options;
use crate::quant::int8::{Granularity, Int8Options};
use crate::quant::kmeans::KmeansOptions;
pub use crate::quant::layout::{OutputFormat, Scheme};
use crate::quant::nf4::Nf4Options;

/// Schemes this build can run.
pub const KNOWN_SCHEMES: &[&str] = &[
    "int8", "int4", "nf4", "fp8", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q6_k", "binary",
    "ternary", "kmeans", "f16",
];
/// Output formats this build can write.
pub const KNOWN_FORMATS: &[&str] = &["safetensors", "gguf", "dequantized", "dequantized-f16"];

/// Most skip patterns plus overrides one job may carry.
const MAX_PATTERNS: usize = 256;
/// Compiled-size limit per pattern, so a hostile regex cannot exhaust memory.
const MAX_REGEX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown scheme '{scheme}'; known schemes: {}", KNOWN_SCHEMES.join(", "))]
    UnknownScheme { scheme: String },
    #[error("unknown format '{format}'; known formats: {}", KNOWN_FORMATS.join(", "))]
    UnknownFormat { format: String },
    #[error("invalid option '{field}': {message}")]
    InvalidOption { field: String, message: String },
    #[error("scheme '{scheme}' cannot be written as format '{format}': {reason}")]
    Unsupported {
        scheme: String,
        format: String,
        reason: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::InvalidOption {
        field: field.into(),
        message: message.into(),
    }
}

impl OutputFormat {
    pub fn parse(format: Option<&str>) -> Result<Self, SpecError> {
        match format.unwrap_or("safetensors") {
            "safetensors" => Ok(OutputFormat::Safetensors),
            "gguf" => Ok(OutputFormat::Gguf),
            "dequantized" | "dequantized-f32" => Ok(OutputFormat::Dequantized { f16: false }),
            "dequantized-f16" => Ok(OutputFormat::Dequantized { f16: true }),
            other => Err(SpecError::UnknownFormat {
                format: other.to_owned(),
            }),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Int4OptionsWire {
    group_size: Option<usize>,
    symmetric: Option<bool>,
    scale: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Nf4OptionsWire {
    double_quant: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fp8OptionsWire {
    format: Option<String>,
    granularity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KmeansOptionsWire {
    bits: Option<u8>,
    max_iterations: Option<u32>,
    tolerance: Option<f64>,
}

/// Schemes without options accept only an empty options object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoOptions {}

/// Wire form of the int8 options; every field optional, unknown fields refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Int8OptionsWire {
    granularity: Option<String>,
    symmetric: Option<bool>,
}

/// Deserializes scheme options, naming the offending field in the error.
fn from_options<T: serde::de::DeserializeOwned>(
    options: Map<String, Value>,
    prefix: &str,
) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(Value::Object(options)).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        // Unknown fields are reported at the parent path; serde names them in backticks.
        let field = if path.is_empty() || path == "." {
            message.split('`').nth(1).unwrap_or("options").to_owned()
        } else {
            path
        };
        SpecError::InvalidOption {
            field: format!("{prefix}{field}"),
            message,
        }
    })
}

/// The value of the string option `field` among `choices` (the first is the default).
fn one_of<T: Copy>(
    value: Option<&str>,
    field: String,
    choices: &[(&str, T)],
) -> Result<T, SpecError> {
    let Some(value) = value else {
        return Ok(choices[0].1);
    };
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            invalid(
                field,
                format!("'{value}' is not one of: {}", names.join(", ")),
            )
        })
}

const GRANULARITIES: [(&str, Granularity); 2] = [
    ("channel", Granularity::Channel),
    ("tensor", Granularity::Tensor),
];

fn parse_int8(options: Map<String, Value>, prefix: &str) -> Result<Scheme, SpecError> {
    let wire: Int8OptionsWire = from_options(options, prefix)?;
    Ok(Scheme::Int8(Int8Options {
        granularity: one_of(
            wire.granularity.as_deref(),
            format!("{prefix}granularity"),
            &GRANULARITIES,
        )?,
        symmetric: wire.symmetric.unwrap_or(true),
    }))
}

fn parse_int4(options: Map<String, Value>, prefix: &str) -> Result<Scheme, SpecError> {
    let wire: Int4OptionsWire = from_options(options, prefix)?;
    let group_size = wire.group_size.unwrap_or(128);
    if ![32, 64, 128].contains(&group_size) {
        return Err(invalid(
            format!("{prefix}group_size"),
            format!("{group_size} is not one of: 32, 64, 128"),
        ));
    }
    let symmetric = wire.symmetric.unwrap_or(true);
    let restricted_range = one_of(
        wire.scale.as_deref(),
        format!("{prefix}scale"),
        &[("absmax/7.5", false), ("absmax/7", true)],
    )?;
    if restricted_range && !symmetric {
        return Err(invalid(
            format!("{prefix}scale"),
            "absmax/7 applies to symmetric int4 only",
        ));
    }
    Ok(Scheme::Int4(Int4Options {
        group_size,
        symmetric,
        restricted_range,
    }))
}

fn parse_fp8(options: Map<String, Value>, prefix: &str) -> Result<Scheme, SpecError> {
    let wire: Fp8OptionsWire = from_options(options, prefix)?;
    let format = one_of(
        wire.format.as_deref(),
        format!("{prefix}format"),
        &[("e4m3", Fp8Format::E4M3), ("e5m2", Fp8Format::E5M2)],
    )?;
    let granularity = one_of(
        wire.granularity.as_deref(),
        format!("{prefix}granularity"),
        &GRANULARITIES,
    )?;
    Ok(Scheme::Fp8 {
        format,
        per_channel: granularity == Granularity::Channel,
    })
}

fn parse_kmeans(options: Map<String, Value>, prefix: &str) -> Result<Scheme, SpecError> {
    let wire: KmeansOptionsWire = from_options(options, prefix)?;
    let bits = wire.bits.unwrap_or(4);
    if !(2..=8).contains(&bits) {
        return Err(invalid(
            format!("{prefix}bits"),
            format!("{bits} is not between 2 and 8"),
        ));
    }
    let max_iterations = wire.max_iterations.unwrap_or(30);
    if max_iterations > 1000 {
        return Err(invalid(format!("{prefix}max_iterations"), "at most 1000"));
    }
    let tolerance = wire.tolerance.unwrap_or(1e-4);
    if !(tolerance.is_finite() && (0.0..1.0).contains(&tolerance)) {
        return Err(invalid(format!("{prefix}tolerance"), "must be in [0, 1)"));
    }
    Ok(Scheme::Kmeans(KmeansOptions {
        bits,
        max_iterations,
        tolerance,
    }))
}

/// The schemes without options: the ggml block types (by their ggml name), binary, ternary, f16.
fn optionless_scheme(name: &str) -> Option<Scheme> {
    let ggml = GgmlType::ALL
        .into_iter()
        .find(|ty| ty.is_block_quantized() && ty.name() == name);
    if let Some(ty) = ggml {
        return Some(Scheme::Ggml(ty));
    }
    match name {
        "binary" => Some(Scheme::Binary),
        "ternary" => Some(Scheme::Ternary),
        "f16" => Some(Scheme::F16),
        _ => None,
    }
}

impl Scheme {
    /// Parses a scheme name and its options object (without the job-wide `skip`/`overrides`).
    /// `prefix` names where the options sit, for error messages (`""` or `overrides.<p>.options.`).
    pub fn parse(name: &str, options: Map<String, Value>, prefix: &str) -> Result<Self, SpecError> {
        match name {
            "int8" => parse_int8(options, prefix),
            "int4" => parse_int4(options, prefix),
            "nf4" => {
                let wire: Nf4OptionsWire = from_options(options, prefix)?;
                Ok(Scheme::Nf4(Nf4Options {
                    double_quant: wire.double_quant.unwrap_or(false),
                }))
            }
            "fp8" => parse_fp8(options, prefix),
            "kmeans" => parse_kmeans(options, prefix),
            other => match optionless_scheme(other) {
                Some(scheme) => {
                    let _: NoOptions = from_options(options, prefix)?;
                    Ok(scheme)
                }
                None => Err(SpecError::UnknownScheme {
                    scheme: other.to_owned(),
                }),
            },
        }
    }

    /// The options with every default filled in.
    pub fn canonical_options(&self) -> Map<String, Value> {
        let value = match self {
            Scheme::Int8(options) => json!({
                "granularity": match options.granularity {
                    Granularity::Channel => "channel",
                    Granularity::Tensor => "tensor",
                },
                "symmetric": options.symmetric,
            }),
            Scheme::Int4(options) if options.symmetric => json!({
                "group_size": options.group_size,
                "symmetric": true,
                "scale": if options.restricted_range { "absmax/7" } else { "absmax/7.5" },
            }),
            Scheme::Int4(options) => json!({
                "group_size": options.group_size,
                "symmetric": false,
            }),
            Scheme::Nf4(options) => json!({"double_quant": options.double_quant}),
            Scheme::Fp8 {
                format,
                per_channel,
            } => json!({
                "format": match format {
                    Fp8Format::E4M3 => "e4m3",
                    Fp8Format::E5M2 => "e5m2",
                },
                "granularity": if *per_channel { "channel" } else { "tensor" },
            }),
            Scheme::Kmeans(options) => json!({
                "bits": options.bits,
                "max_iterations": options.max_iterations,
                "tolerance": options.tolerance,
            }),
            Scheme::Ggml(_) | Scheme::F16 | Scheme::Binary | Scheme::Ternary => json!({}),
        };
        match value {
            Value::Object(map) => map,
            _ => unreachable!("options are objects"),
        }
    }

    /// Why this scheme cannot be written in `format`, if it cannot.
    pub fn unsupported_in(&self, format: OutputFormat) -> Option<&'static str> {
        match (self, format) {
            (Scheme::Int8(_), OutputFormat::Gguf) => Some(
                "GGUF has no per-channel or per-tensor int8 type; use q8_0 (int8 in blocks of 32)",
            ),
            (Scheme::Int4(_), OutputFormat::Gguf) => Some(
                "GGUF has no group-wise int4 type with compressed-tensors' layout; use q4_0 or q4_1",
            ),
            (Scheme::Nf4(_), OutputFormat::Gguf) => Some("GGUF has no NF4 type; use q4_0 or q4_1"),
            (Scheme::Binary | Scheme::Ternary | Scheme::Kmeans(_), OutputFormat::Gguf) => {
                Some("GGUF has no binary, ternary or codebook type; use format safetensors (quantd layout) or dequantized")
            }
            (Scheme::Fp8 { .. }, OutputFormat::Gguf) => Some("GGUF has no FP8 type; use q8_0"),
            (Scheme::Fp8 { format: Fp8Format::E5M2, .. }, OutputFormat::Safetensors) => Some(
                "compressed-tensors defines FP8 weights as E4M3 only; use e4m3, or format dequantized to evaluate e5m2",
            ),
            (Scheme::Ggml(_), OutputFormat::Safetensors) => Some(
                "ggml block types are read from GGUF files; use format gguf (or dequantized to evaluate)",
            ),
            _ => None,
        }
    }
}

/// A regex over tensor names, kept with its source for the canonical options.
#[derive(Debug, Clone)]
pub struct NamePattern {
    pub source: String,
    regex: Regex,
}

impl NamePattern {
    fn parse(source: &str, field: &str) -> Result<Self, SpecError> {
        let regex = RegexBuilder::new(source)
            .size_limit(MAX_REGEX_BYTES)
            .build()
            .map_err(|e| invalid(field, format!("not a valid regex: {e}")))?;
        Ok(NamePattern {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// Everything a job asks for.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The scheme for tensors no override matches.
    pub scheme: Scheme,
    /// Tensors whose name matches any of these stay in source precision.
    pub skip: Vec<NamePattern>,
    /// The first matching pattern's scheme applies instead of the default.
    pub overrides: Vec<(NamePattern, Scheme)>,
    pub format: OutputFormat,
}

/// What a job does with one tensor, before shape rules apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TensorChoice<'a> {
    Skip,
    Quantize(&'a Scheme),
}

impl JobSpec {
    /// Parses the request's `scheme`, `options` (absent or `null` = defaults; may hold `skip` and
    /// `overrides`) and `format` (absent = `safetensors`).
    pub fn parse(
        scheme: &str,
        options: Option<&Value>,
        format: Option<&str>,
    ) -> Result<Self, SpecError> {
        let format = OutputFormat::parse(format)?;
        let mut options = match options {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(invalid("options", "must be a JSON object")),
        };
        let skip = match options.remove("skip") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let field = format!("skip[{index}]");
                    let source = item
                        .as_str()
                        .ok_or_else(|| invalid(&field, "must be a regex string"))?;
                    NamePattern::parse(source, &field)
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(invalid("skip", "must be an array of regex strings")),
        };
        let overrides =
            match options.remove("overrides") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Object(entries)) => entries
                    .iter()
                    .map(|(pattern, entry)| parse_override(pattern, entry))
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return Err(invalid(
                    "overrides",
                    "must be an object: {\"<regex>\": {\"scheme\": \"...\", \"options\": {...}}}",
                )),
            };
        if skip.len() + overrides.len() > MAX_PATTERNS {
            return Err(invalid(
                "overrides",
                format!("at most {MAX_PATTERNS} skip patterns and overrides"),
            ));
        }
        let scheme = Scheme::parse(scheme, options, "")?;
        let spec = JobSpec {
            scheme,
            skip,
            overrides,
            format,
        };
        for used in std::iter::once(&spec.scheme).chain(spec.overrides.iter().map(|(_, s)| s)) {
            if let Some(reason) = used.unsupported_in(format) {
                return Err(SpecError::Unsupported {
                    scheme: used.name().to_owned(),
                    format: format.name().to_owned(),
                    reason: reason.to_owned(),
                });
            }
        }
        let schemes = spec.schemes();
        let has_nf4 = schemes.iter().any(|s| matches!(s, Scheme::Nf4(_)));
        let has_compressed_tensors = schemes
            .iter()
            .any(|s| matches!(s, Scheme::Int8(_) | Scheme::Int4(_) | Scheme::Fp8 { .. }));
        let nf4_variants = schemes
            .iter()
            .filter(|s| matches!(s, Scheme::Nf4(_)))
            .count();
        if format == OutputFormat::Safetensors
            && has_nf4
            && (has_compressed_tensors || nf4_variants > 1)
        {
            return Err(SpecError::Unsupported {
                scheme: "nf4".into(),
                format: format.name().into(),
                reason: "a bitsandbytes NF4 checkpoint has one quantization config: it cannot mix with compressed-tensors schemes or other NF4 options".into(),
            });
        }
        Ok(spec)
    }

    /// The options as stored and shown: the scheme's options with defaults filled in, plus
    /// `skip` and `overrides` when given (overrides also canonical).
    pub fn canonical_options(&self) -> Value {
        let mut options = self.scheme.canonical_options();
        if !self.skip.is_empty() {
            options.insert(
                "skip".into(),
                Value::Array(
                    self.skip
                        .iter()
                        .map(|p| Value::String(p.source.clone()))
                        .collect(),
                ),
            );
        }
        if !self.overrides.is_empty() {
            let overrides = self
                .overrides
                .iter()
                .map(|(pattern, scheme)| {
                    (
                        pattern.source.clone(),
                        json!({"scheme": scheme.name(), "options": scheme.canonical_options()}),
                    )
                })
                .collect::<Map<_, _>>();
            options.insert("overrides".into(), Value::Object(overrides));
        }
        Value::Object(options)
    }

    /// Skip patterns first, then overrides in order, then the default scheme.
    pub fn choice_for(&self, tensor_name: &str) -> TensorChoice<'_> {
        if self.skip.iter().any(|p| p.matches(tensor_name)) {
            return TensorChoice::Skip;
        }
        for (pattern, scheme) in &self.overrides {
            if pattern.matches(tensor_name) {
                return TensorChoice::Quantize(scheme);
            }
        }
        TensorChoice::Quantize(&self.scheme)
    }

    /// Every distinct scheme the job may use (default first).
    pub fn schemes(&self) -> Vec<&Scheme> {
        let mut schemes = vec![&self.scheme];
        for (_, scheme) in &self.overrides {
            if !schemes.contains(&scheme) {
                schemes.push(scheme);
            }
        }
        schemes
    }
}

fn parse_override(pattern: &str, entry: &Value) -> Result<(NamePattern, Scheme), SpecError> {
    let field = format!("overrides.{pattern}");
    let pattern_parsed = NamePattern::parse(pattern, &field)?;
    let Value::Object(entry) = entry else {
        return Err(invalid(
            &field,
            "must be an object with 'scheme' and optional 'options'",
        ));
    };
    if let Some(unknown) = entry.keys().find(|k| *k != "scheme" && *k != "options") {
        return Err(invalid(
            format!("{field}.{unknown}"),
            "unknown field; expected 'scheme' and 'options'",
        ));
    }
    let scheme_name = entry
        .get("scheme")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{field}.scheme"), "missing scheme name"))?;
    let options = match entry.get("options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(invalid(format!("{field}.options"), "must be a JSON object")),
    };
    if options.contains_key("skip") || options.contains_key("overrides") {
        return Err(invalid(
            format!("{field}.options"),
            "skip and overrides apply to the whole job, not inside an override",
        ));
    }
    let scheme = Scheme::parse(scheme_name, options, &format!("{field}.options."))?;
    Ok((pattern_parsed, scheme))
}

/// Every spec error is the request's: 422, with the option or field it names.
impl crate::error::Failure for SpecError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Unprocessable
    }

    fn slug(&self) -> &'static str {
        match self {
            SpecError::UnknownScheme { .. } => "unknown-scheme",
            SpecError::UnknownFormat { .. } => "unknown-format",
            SpecError::Unsupported { .. } => "unsupported-combination",
            SpecError::InvalidOption { .. } => "invalid-option",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            SpecError::UnknownScheme { .. } => "Unknown scheme",
            SpecError::UnknownFormat { .. } => "Unknown format",
            SpecError::Unsupported { .. } => "Scheme and format do not combine",
            SpecError::InvalidOption { .. } => "Invalid option",
        }
    }

    fn field(&self) -> Option<&str> {
        Some(match self {
            SpecError::UnknownScheme { .. } => "scheme",
            SpecError::UnknownFormat { .. } | SpecError::Unsupported { .. } => "format",
            SpecError::InvalidOption { field, .. } => field,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(scheme: &str, options: Value) -> Result<JobSpec, SpecError> {
        JobSpec::parse(scheme, Some(&options), None)
    }

    #[test]
    fn defaults_are_per_channel_symmetric_safetensors() {
        let spec = JobSpec::parse("int8", None, None).unwrap();
        assert_eq!(
            spec.canonical_options(),
            json!({"granularity": "channel", "symmetric": true})
        );
        assert_eq!(spec.format, OutputFormat::Safetensors);
    }

    #[test]
    fn every_known_scheme_parses_and_every_ggml_block_type_is_known() {
        for name in KNOWN_SCHEMES {
            let scheme = Scheme::parse(name, Map::new(), "").unwrap();
            assert_eq!(scheme.name(), *name);
        }
        for ty in GgmlType::ALL
            .into_iter()
            .filter(|ty| ty.is_block_quantized())
        {
            assert!(KNOWN_SCHEMES.contains(&ty.name()), "{ty} missing");
        }
    }

    #[test]
    fn options_round_trip_through_the_canonical_form() {
        let options = json!({
            "granularity": "tensor",
            "symmetric": false,
            "skip": ["^lm_head\\."],
            "overrides": {"attn": {"scheme": "int8", "options": {"granularity": "tensor", "symmetric": true}}}
        });
        let spec = parse("int8", options.clone()).unwrap();
        assert_eq!(spec.canonical_options(), options);
        let again =
            JobSpec::parse("int8", Some(&spec.canonical_options()), Some("dequantized")).unwrap();
        assert_eq!(again.canonical_options(), options);
        assert_eq!(again.choice_for("lm_head.weight"), TensorChoice::Skip);
        assert!(
            matches!(again.choice_for("layer.attn.weight"), TensorChoice::Quantize(Scheme::Int8(o)) if o.symmetric)
        );
        assert!(
            matches!(again.choice_for("layer.mlp.weight"), TensorChoice::Quantize(Scheme::Int8(o)) if !o.symmetric)
        );
    }

    #[test]
    fn bad_input_names_the_problem() {
        assert!(matches!(
            parse("int3", json!({})),
            Err(SpecError::UnknownScheme { .. })
        ));
        let field_of = |r: Result<JobSpec, SpecError>| match r {
            Err(SpecError::InvalidOption { field, .. }) => field,
            other => panic!("expected an option error, got {other:?}"),
        };
        assert_eq!(
            field_of(parse("int8", json!({"granularity": "row"}))),
            "granularity"
        );
        assert_eq!(
            field_of(parse("int8", json!({"symetric": true}))),
            "symetric"
        );
        assert_eq!(
            field_of(parse("int8", json!({"symmetric": "yes"}))),
            "symmetric"
        );
        assert_eq!(
            field_of(parse("int8", json!({"skip": ["(unclosed"]}))),
            "skip[0]"
        );
        assert_eq!(field_of(parse("int8", json!({"skip": "x"}))), "skip");
        assert_eq!(
            field_of(parse(
                "int8",
                json!({"overrides": {"x": {"scheme": "int8", "options": {"granularity": 3}}}})
            )),
            "overrides.x.options.granularity"
        );
        assert_eq!(
            field_of(parse("int8", json!({"overrides": {"x": {"options": {}}}}))),
            "overrides.x.scheme"
        );
        assert!(matches!(
            parse("int8", json!({"overrides": {"x": {"scheme": "int5"}}})),
            Err(SpecError::UnknownScheme { .. })
        ));
        assert!(JobSpec::parse("int8", Some(&json!([1])), None).is_err());
        assert!(matches!(
            JobSpec::parse("int8", None, Some("onnx")),
            Err(SpecError::UnknownFormat { .. })
        ));
    }
}
