//! Input tensors of `/v2` inference requests, parsed into validated values before any model
//! work: the shape (every dimension positive, the element count computed with checked
//! arithmetic), the data (JSON, flat or nested exactly like the shape, or little-endian bytes from
//! the binary tensor data extension), and every value inside its datatype's range and finite in
//! f32, the arithmetic the models run in.
//!
//! Errors are plain sentences naming the input and, for a bad value, the row-major index of the
//! first bad element; the caller answers them with 400.

use serde_json::Value;

/// Most dimensions an input shape may have (the served architectures take one or two).
const MAX_DIMS: usize = 8;

/// The numeric datatypes `/v2` inputs may use; models compute in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Fp32,
    Fp64,
    Fp16,
    Int32,
    Int64,
}

impl Datatype {
    fn name(self) -> &'static str {
        match self {
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Fp16 => "FP16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
        }
    }

    /// Bytes per element in the binary tensor data extension.
    fn width(self) -> usize {
        match self {
            Datatype::Fp16 => 2,
            Datatype::Fp32 | Datatype::Int32 => 4,
            Datatype::Fp64 | Datatype::Int64 => 8,
        }
    }

    /// A JSON number as this datatype, then as the f32 the model computes with; `None` when the
    /// value is not of the datatype (a fraction for an integer type) or does not fit it or f32.
    fn value_of_json(self, number: &serde_json::Number) -> Option<f32> {
        let value = match self {
            Datatype::Int32 => i32::try_from(number.as_i64()?).ok()? as f32,
            Datatype::Int64 => number.as_i64()? as f32,
            Datatype::Fp16 => half::f16::from_f64(number.as_f64()?).to_f32(),
            Datatype::Fp32 | Datatype::Fp64 => number.as_f64()? as f32,
        };
        value.is_finite().then_some(value)
    }

    /// One little-endian element (`bytes.len() == self.width()`) as f32; `None` when it is NaN,
    /// infinite, or beyond f32's range.
    fn value_of_le_bytes(self, bytes: &[u8]) -> Option<f32> {
        let value = match self {
            Datatype::Fp32 => f32::from_le_bytes(bytes.try_into().ok()?),
            Datatype::Int32 => i32::from_le_bytes(bytes.try_into().ok()?) as f32,
            Datatype::Fp64 => f64::from_le_bytes(bytes.try_into().ok()?) as f32,
            Datatype::Int64 => i64::from_le_bytes(bytes.try_into().ok()?) as f32,
            Datatype::Fp16 => half::f16::from_le_bytes(bytes.try_into().ok()?).to_f32(),
        };
        value.is_finite().then_some(value)
    }

    /// Why a value was refused, for the error message.
    fn range_note(self) -> &'static str {
        match self {
            Datatype::Fp32 => "FP32 values must be finite (no NaN, no infinity, |x| ≤ 3.4028235e38)",
            Datatype::Fp64 => {
                "FP64 values must be finite and within f32's range (|x| ≤ 3.4028235e38), which the model computes in"
            }
            Datatype::Fp16 => "FP16 values must be finite (no NaN, no infinity, |x| ≤ 65504)",
            Datatype::Int32 => "INT32 values must be integers in -2147483648..=2147483647",
            Datatype::Int64 => {
                "INT64 values must be integers in -9223372036854775808..=9223372036854775807"
            }
        }
    }
}

/// A validated input shape: at least one dimension, every dimension positive, and an element
/// count that fits `usize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub dims: Vec<usize>,
    /// The product of `dims`.
    pub elements: usize,
}

impl Shape {
    /// Checks the `shape` member of input `name`.
    pub fn new(name: &str, dims: &[u64]) -> Result<Shape, String> {
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(format!(
                "input '{name}' has {} dimensions; a shape has 1 to {MAX_DIMS}",
                dims.len()
            ));
        }
        let dims = dims
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                format!("input '{name}' has shape {dims:?}, more elements than can be addressed")
            })?;
        if dims.contains(&0) {
            return Err(format!(
                "input '{name}' has shape {dims:?} with a zero dimension: it holds no values"
            ));
        }
        let elements = dims
            .iter()
            .try_fold(1usize, |product, &d| product.checked_mul(d))
            .ok_or_else(|| {
                format!("input '{name}' has shape {dims:?}, more elements than can be addressed")
            })?;
        Ok(Shape { dims, elements })
    }
}

/// The values of a JSON `data` member: either flat (exactly `shape.elements` leaves) or nested
/// exactly like the shape at every level. `leaf` turns one value (with its row-major index) into
/// an element.
fn collect_json<T>(
    name: &str,
    data: &Value,
    shape: &Shape,
    leaf: &mut dyn FnMut(usize, &Value) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let Value::Array(items) = data else {
        return Err(format!("input '{name}': 'data' must be an array"));
    };
    let nested = items.first().is_some_and(Value::is_array);
    if !nested {
        if items.len() != shape.elements {
            return Err(format!(
                "input '{name}' has shape {:?} ({} values) but its flat data has {}",
                shape.dims,
                shape.elements,
                items.len()
            ));
        }
        return items
            .iter()
            .enumerate()
            .map(|(index, value)| {
                if value.is_array() {
                    return Err(format!(
                        "input '{name}': data mixes nested arrays and values (element {index})"
                    ));
                }
                leaf(index, value)
            })
            .collect();
    }
    // Nested: every level must match the shape; the leaves arrive in row-major order. The data
    // is not longer than the request body, so growing the vector as the walk goes is bounded.
    let mut out = Vec::new();
    walk_nested(
        name,
        data,
        &shape.dims,
        &shape.dims,
        &mut Vec::new(),
        &mut out,
        leaf,
    )?;
    Ok(out)
}

/// One level of nested data: `value` must be an array of `dims[0]` items (arrays for the outer
/// levels, values at the innermost). `path` is the index of `value` for error messages.
fn walk_nested<T>(
    name: &str,
    value: &Value,
    dims: &[usize],
    shape: &[usize],
    path: &mut Vec<usize>,
    out: &mut Vec<T>,
    leaf: &mut dyn FnMut(usize, &Value) -> Result<T, String>,
) -> Result<(), String> {
    let Some((&length, inner)) = dims.split_first() else {
        if value.is_array() {
            return Err(format!(
                "input '{name}': data nests deeper than shape {shape:?} at {path:?}"
            ));
        }
        let index = out.len();
        out.push(leaf(index, value)?);
        return Ok(());
    };
    let Value::Array(items) = value else {
        return Err(format!(
            "input '{name}': data at {path:?} is a value where shape {shape:?} needs an array of {length}"
        ));
    };
    if items.len() != length {
        return Err(format!(
            "input '{name}': data at {path:?} has {} items where shape {shape:?} needs {length} (ragged or mis-shaped data)",
            items.len()
        ));
    }
    for (index, item) in items.iter().enumerate() {
        path.push(index);
        walk_nested(name, item, inner, shape, path, out, leaf)?;
        path.pop();
    }
    Ok(())
}

/// Numeric JSON data of input `name` as f32, each value checked against `datatype`.
pub fn numbers_from_json(
    name: &str,
    datatype: Datatype,
    data: &Value,
    shape: &Shape,
) -> Result<Vec<f32>, String> {
    collect_json(name, data, shape, &mut |index, value| {
        let refuse = || {
            format!(
                "input '{name}': element {index} is {value}, refused: {}",
                datatype.range_note()
            )
        };
        match value {
            Value::Number(number) => datatype.value_of_json(number).ok_or_else(refuse),
            // JSON has no NaN or infinity literals; clients that send them as strings or null
            // get told so.
            _ => Err(format!(
                "input '{name}': element {index} is {value}, not a number ({} data holds JSON numbers; NaN and infinity are refused)",
                datatype.name()
            )),
        }
    })
}

/// BYTES JSON data of input `name`: strings, exactly as many as the shape holds (the caller
/// checks that count against the request limit before the data is walked).
pub fn strings_from_json(name: &str, data: &Value, shape: &Shape) -> Result<Vec<String>, String> {
    collect_json(name, data, shape, &mut |index, value| match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(format!(
            "input '{name}': element {index} is {other}; BYTES data must be strings"
        )),
    })
}

/// Little-endian binary data (the binary tensor data extension) of input `name` as f32: a whole
/// number of `datatype` elements, exactly `shape.elements` of them, each finite in f32.
pub fn numbers_from_binary(
    name: &str,
    datatype: Datatype,
    bytes: &[u8],
    shape: &Shape,
) -> Result<Vec<f32>, String> {
    let width = datatype.width();
    if !bytes.len().is_multiple_of(width) {
        return Err(format!(
            "input '{name}': {} bytes are not a whole number of {} values",
            bytes.len(),
            datatype.name()
        ));
    }
    let count = bytes.len() / width;
    if count != shape.elements {
        return Err(format!(
            "input '{name}' has shape {:?} ({} values) but its binary data holds {count}",
            shape.dims, shape.elements
        ));
    }
    bytes
        .chunks_exact(width)
        .enumerate()
        .map(|(index, element)| {
            datatype.value_of_le_bytes(element).ok_or_else(|| {
                format!(
                    "input '{name}': element {index} (binary) is not finite in f32, refused: {}",
                    datatype.range_note()
                )
            })
        })
        .collect()
}

/// BYTES elements in the binary format (each a 4-byte little-endian length, then its bytes):
/// UTF-8 strings, exactly as many as the shape holds (decoding stops at the first one beyond).
pub fn strings_from_binary(
    name: &str,
    mut bytes: &[u8],
    shape: &Shape,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if out.len() == shape.elements {
            return Err(format!(
                "input '{name}' has shape {:?} ({} strings) but its binary data holds more",
                shape.dims, shape.elements
            ));
        }
        let Some((length, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!(
                "input '{name}': truncated BYTES element length (element {})",
                out.len()
            ));
        };
        let length = usize::try_from(u32::from_le_bytes(*length)).unwrap_or(usize::MAX);
        if rest.len() < length {
            return Err(format!(
                "input '{name}': BYTES element {} claims {length} bytes, {} remain",
                out.len(),
                rest.len()
            ));
        }
        let (text, rest) = rest.split_at(length);
        out.push(String::from_utf8(text.to_vec()).map_err(|_| {
            format!(
                "input '{name}': BYTES element {} is not UTF-8 text",
                out.len()
            )
        })?);
        bytes = rest;
    }
    if out.len() != shape.elements {
        return Err(format!(
            "input '{name}' has shape {:?} ({} strings) but its binary data holds {}",
            shape.dims,
            shape.elements,
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A shape as the wire sends it: serde refuses what is not a list of u64.
    fn shape(value: Value) -> Result<Shape, String> {
        let dims: Vec<u64> = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Shape::new("input", &dims)
    }

    #[test]
    fn shapes_use_checked_arithmetic_and_refuse_zero_dimensions() {
        assert_eq!(
            shape(json!([2, 64])).unwrap(),
            Shape {
                dims: vec![2, 64],
                elements: 128
            }
        );
        // 2^58 · 64 = 2^64 wraps to 0 in unchecked arithmetic (the issue-8 panic).
        let error = shape(json!([288_230_376_151_711_744u64, 64])).unwrap_err();
        assert!(
            error.contains("more elements than can be addressed"),
            "{error}"
        );
        let error = shape(json!([u64::MAX, u64::MAX])).unwrap_err();
        assert!(error.contains("more elements"), "{error}");
        assert!(shape(json!([0, 64]))
            .unwrap_err()
            .contains("zero dimension"));
        assert!(shape(json!([64, 0]))
            .unwrap_err()
            .contains("zero dimension"));
        assert!(shape(json!([])).is_err());
        assert!(shape(json!([1, 1, 1, 1, 1, 1, 1, 1, 1])).is_err());
        assert!(shape(json!([-1, 64])).is_err());
        assert!(shape(json!([1.5, 64])).is_err());
        assert!(shape(json!("64")).is_err());
    }

    #[test]
    fn nested_data_must_match_the_shape_at_every_level() {
        let two_by_three = shape(json!([2, 3])).unwrap();
        let parse = |data: Value| numbers_from_json("input", Datatype::Fp32, &data, &two_by_three);
        assert_eq!(
            parse(json!([[1, 2, 3], [4, 5, 6]])).unwrap(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(parse(json!([1, 2, 3, 4, 5, 6])).unwrap().len(), 6);
        // Ragged: the issue's [[63 values], [0.1]] for shape [1, 64] in miniature.
        let error = parse(json!([[1, 2, 3, 4, 5], [6]])).unwrap_err();
        assert!(error.contains("ragged"), "{error}");
        assert!(parse(json!([[1, 2, 3], [4, 5]])).is_err());
        assert!(parse(json!([[1, 2, 3]])).is_err());
        assert!(parse(json!([[1, 2, 3], [4, 5, 6], [7, 8, 9]])).is_err());
        assert!(parse(json!([[1, 2, 3], [4, 5, [6]]])).is_err());
        assert!(parse(json!([[1, 2, 3], 4, 5, 6])).is_err());
        assert!(parse(json!([1, 2, 3, 4, 5, [6]])).is_err());
        assert!(parse(json!([[[1, 2, 3]], [[4, 5, 6]]])).is_err());
        assert!(parse(json!([1, 2, 3, 4, 5])).is_err());
        assert!(parse(json!(7)).is_err());
        let issue = shape(json!([1, 64])).unwrap();
        let mut rows = vec![json!(vec![0.1; 63]), json!([0.1])];
        let ragged = numbers_from_json("input", Datatype::Fp32, &json!(rows), &issue);
        assert!(ragged.is_err());
        rows.pop();
        rows[0] = json!(vec![0.1; 64]);
        assert!(numbers_from_json("input", Datatype::Fp32, &json!(rows), &issue).is_ok());
    }

    #[test]
    fn json_values_must_be_finite_and_fit_their_datatype() {
        let four = shape(json!([4])).unwrap();
        let parse = |datatype, data: Value| numbers_from_json("input", datatype, &data, &four);
        assert_eq!(
            parse(Datatype::Fp32, json!([0.5, -1, 3e38, 1])).unwrap(),
            [0.5, -1.0, 3e38, 1.0]
        );
        // Beyond f32 (f64 parses it, `as f32` would make it infinite): refused, with its index.
        let error = parse(Datatype::Fp32, json!([0.5, 1, 1e39, 1])).unwrap_err();
        assert!(error.contains("element 2"), "{error}");
        assert!(parse(Datatype::Fp64, json!([0.5, 1, 1e300, 1])).is_err());
        assert!(parse(Datatype::Fp64, json!([0.5, 1, 1e30, 1])).is_ok());
        // NaN and infinity as strings or null are not numbers.
        for bad in [json!("NaN"), json!("Infinity"), json!(null), json!(true)] {
            let error = parse(Datatype::Fp32, json!([0, bad, 0, 0])).unwrap_err();
            assert!(error.contains("element 1"), "{error}");
        }
        // FP16: 65504 is its largest finite value; 70000 becomes infinity.
        assert_eq!(
            parse(Datatype::Fp16, json!([65504, 0.5, -65504, 0])).unwrap(),
            [65504.0, 0.5, -65504.0, 0.0]
        );
        let error = parse(Datatype::Fp16, json!([0, 0, 0, 70000])).unwrap_err();
        assert!(
            error.contains("element 3") && error.contains("65504"),
            "{error}"
        );
        // Integers: in range and whole.
        assert!(parse(Datatype::Int32, json!([1, -2, 2147483647, -2147483648])).is_ok());
        let error = parse(Datatype::Int32, json!([1, 1e10, 0, 0])).unwrap_err();
        assert!(
            error.contains("element 1") && error.contains("INT32"),
            "{error}"
        );
        assert!(parse(Datatype::Int32, json!([1, 2147483648u64, 0, 0])).is_err());
        assert!(parse(Datatype::Int32, json!([1, 0.5, 0, 0])).is_err());
        assert!(parse(Datatype::Int64, json!([1, i64::MAX, i64::MIN, 0])).is_ok());
        assert!(parse(Datatype::Int64, json!([1, u64::MAX, 0, 0])).is_err());
        assert!(parse(Datatype::Int64, json!([1, 1e10, 0, 0])).is_err());
    }

    #[test]
    fn serde_json_refuses_json_numbers_beyond_f64() {
        // 1e999 is not an f64: the body is refused as JSON before any value is converted.
        assert!(serde_json::from_str::<Value>(r#"{"data": [1e999]}"#).is_err());
        assert!(serde_json::from_str::<Value>(r#"{"data": [NaN]}"#).is_err());
    }

    #[test]
    fn binary_values_must_be_finite_with_the_first_bad_index_named() {
        let three = shape(json!([3])).unwrap();
        let fp32 =
            |values: [f32; 3]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
        assert_eq!(
            numbers_from_binary("input", Datatype::Fp32, &fp32([1.0, 2.0, 3.0]), &three).unwrap(),
            [1.0, 2.0, 3.0]
        );
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let error =
                numbers_from_binary("input", Datatype::Fp32, &fp32([1.0, bad, bad]), &three)
                    .unwrap_err();
            assert!(error.contains("element 1"), "{error}");
        }
        let fp64: Vec<u8> = [1.0f64, 2.0, 1e300]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let error = numbers_from_binary("input", Datatype::Fp64, &fp64, &three).unwrap_err();
        assert!(error.contains("element 2"), "{error}");
        let fp64_nan: Vec<u8> = [f64::NAN, 2.0, 1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(numbers_from_binary("input", Datatype::Fp64, &fp64_nan, &three).is_err());
        let fp16: Vec<u8> = [half::f16::ONE, half::f16::INFINITY, half::f16::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let error = numbers_from_binary("input", Datatype::Fp16, &fp16, &three).unwrap_err();
        assert!(error.contains("element 1"), "{error}");
        let int64: Vec<u8> = [i64::MAX, i64::MIN, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(numbers_from_binary("input", Datatype::Int64, &int64, &three).is_ok());
        // Counts: not a whole number of elements, or not the shape's count.
        assert!(numbers_from_binary("input", Datatype::Fp32, &[0; 13], &three).is_err());
        assert!(numbers_from_binary("input", Datatype::Fp32, &[0; 16], &three).is_err());
        assert!(numbers_from_binary("input", Datatype::Fp32, &[], &three).is_err());
    }

    #[test]
    fn bytes_inputs_are_shaped() {
        let two = shape(json!([2])).unwrap();
        assert_eq!(
            strings_from_json("text", &json!(["a", "b"]), &two).unwrap(),
            ["a", "b"]
        );
        assert!(strings_from_json("text", &json!(["a"]), &two).is_err());
        assert!(strings_from_json("text", &json!(["a", 1]), &two).is_err());
        assert!(strings_from_json("text", &json!([["a"], ["b"]]), &two).is_err());
        let nested = shape(json!([2, 1])).unwrap();
        assert!(strings_from_json("text", &json!([["a"], ["b"]]), &nested).is_ok());
        let huge = shape(json!([4294967296u64, 4294967296u64])).unwrap_err();
        assert!(huge.contains("more elements"), "{huge}");

        let encode = |texts: &[&str]| -> Vec<u8> {
            texts
                .iter()
                .flat_map(|t| {
                    let mut element = (t.len() as u32).to_le_bytes().to_vec();
                    element.extend_from_slice(t.as_bytes());
                    element
                })
                .collect()
        };
        let three = shape(json!([3])).unwrap();
        assert_eq!(
            strings_from_binary("text", &encode(&["ab", "", "c"]), &three).unwrap(),
            ["ab", "", "c"]
        );
        // More or fewer strings than the shape holds; decoding stops at the first one beyond.
        let error =
            strings_from_binary("text", &encode(&["a", "b", "c", "d"]), &three).unwrap_err();
        assert!(error.contains("holds more"), "{error}");
        let error = strings_from_binary("text", &encode(&["a", "b"]), &three).unwrap_err();
        assert!(error.contains("holds 2"), "{error}");
        // A length beyond the remaining bytes (u32::MAX, no overflow) and a truncated length.
        let mut lying = u32::MAX.to_le_bytes().to_vec();
        lying.push(b'a');
        assert!(strings_from_binary("text", &lying, &three).is_err());
        assert!(strings_from_binary("text", &[1, 0], &three).is_err());
        assert!(strings_from_binary("text", &[1, 0, 0, 0, 0xff], &three).is_err());
    }
}
