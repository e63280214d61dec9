//! The body of `POST /v2/models/{name}/infer` as sent (derived `Deserialize`, Open Inference
//! Protocol's JSON schema), and its conversion into serving's [`InferenceInput`]: the shape
//! checked, the data walked against it (JSON or the binary tensor data extension), every value
//! checked against its datatype, BYTES counted against the request limit before any is read.

use serde::Deserialize;
use serde_json::Value;

use super::tensor::{self, Datatype, Shape};
use crate::serving::request::{
    check_input_count, FloatTensor, InferenceInput, InvalidRequest, TextBatch,
};

/// An inference request. Unknown members are ignored, as the protocol allows.
#[derive(Debug, Deserialize)]
pub struct InferBody {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<InputBody>,
    #[serde(default)]
    pub outputs: Vec<OutputBody>,
    #[serde(default)]
    pub parameters: Option<RequestParameters>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RequestParameters {
    /// The binary tensor data extension: every output as raw bytes.
    #[serde(default)]
    pub binary_data_output: Option<bool>,
}

/// A requested output.
#[derive(Debug, Deserialize)]
pub struct OutputBody {
    #[serde(default)]
    pub parameters: Option<OutputParameters>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OutputParameters {
    /// The binary tensor data extension: this output as raw bytes.
    #[serde(default)]
    pub binary_data: Option<bool>,
}

/// An input tensor: its name, shape and datatype, and its values either as JSON `data` or as
/// `parameters.binary_data_size` raw bytes after the JSON header.
#[derive(Debug, Deserialize)]
pub struct InputBody {
    #[serde(default)]
    pub name: Option<String>,
    pub shape: Vec<u64>,
    pub datatype: DatatypeBody,
    #[serde(default)]
    pub parameters: Option<InputParameters>,
    /// Flat, or nested exactly like the shape; walked against it by [`tensor`] (a nested list
    /// of any depth, so it stays a JSON value until then).
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct InputParameters {
    #[serde(default)]
    pub binary_data_size: Option<u64>,
}

/// The datatypes this server takes: numbers (models compute in f32) and BYTES (text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DatatypeBody {
    #[serde(rename = "FP32")]
    Fp32,
    #[serde(rename = "FP64")]
    Fp64,
    #[serde(rename = "FP16")]
    Fp16,
    #[serde(rename = "INT32")]
    Int32,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "BYTES")]
    Bytes,
}

impl DatatypeBody {
    /// The numeric datatype, or `None` for BYTES.
    fn numeric(self) -> Option<Datatype> {
        Some(match self {
            DatatypeBody::Fp32 => Datatype::Fp32,
            DatatypeBody::Fp64 => Datatype::Fp64,
            DatatypeBody::Fp16 => Datatype::Fp16,
            DatatypeBody::Int32 => Datatype::Int32,
            DatatypeBody::Int64 => Datatype::Int64,
            DatatypeBody::Bytes => return None,
        })
    }
}

impl InferBody {
    /// Whether the client asked for the output as raw bytes (binary tensor data extension):
    /// `parameters.binary_data_output` on the request, or `parameters.binary_data` on a
    /// requested output.
    pub fn wants_binary_output(&self) -> bool {
        let flag = |flag: Option<bool>| flag.unwrap_or(false);
        flag(self.parameters.as_ref().and_then(|p| p.binary_data_output))
            || self
                .outputs
                .iter()
                .any(|o| flag(o.parameters.as_ref().and_then(|p| p.binary_data)))
    }
}

/// An input as sent: the JSON part of the request and the bytes after it.
pub struct SentInputs<'a> {
    pub inputs: Vec<InputBody>,
    pub binary: &'a [u8],
}

impl TryFrom<SentInputs<'_>> for InferenceInput {
    type Error = InvalidRequest;

    fn try_from(sent: SentInputs<'_>) -> Result<Self, InvalidRequest> {
        let inputs = sent.inputs;
        let [input] = <[InputBody; 1]>::try_from(inputs).map_err(|inputs| {
            InvalidRequest::at(
                "inputs",
                format!("this model takes one input tensor, got {}", inputs.len()),
            )
        })?;
        let name = input.name.as_deref().unwrap_or("input");
        let refused = |message: String| InvalidRequest::at("inputs", message);
        let shape = Shape::new(name, &input.shape).map_err(refused)?;
        let binary = binary_part(&input, sent.binary)?;
        match input.datatype.numeric() {
            // Values are checked while they are converted (an O(n) scan over at most the body):
            // each must fit its datatype and be finite in f32, so no NaN reaches a model.
            Some(datatype) => {
                let values = match binary {
                    Some(bytes) => tensor::numbers_from_binary(name, datatype, bytes, &shape),
                    None => tensor::numbers_from_json(name, datatype, json_data(&input)?, &shape),
                }
                .map_err(refused)?;
                Ok(InferenceInput::Tensor(FloatTensor::new(
                    shape.dims, values,
                )?))
            }
            // Each string is a sequence for the encoder: the count is checked on the shape,
            // before the data is read, against the same limit as /v1/embeddings' inputs.
            None => {
                check_input_count(shape.elements)
                    .map_err(|error| refused(format!("input '{name}': {}", error.message)))?;
                let texts = match binary {
                    Some(bytes) => tensor::strings_from_binary(name, bytes, &shape),
                    None => tensor::strings_from_json(name, json_data(&input)?, &shape),
                }
                .map_err(refused)?;
                Ok(InferenceInput::Texts(TextBatch::try_from(texts)?))
            }
        }
    }
}

/// The JSON `data` of an input sent without binary data.
fn json_data(input: &InputBody) -> Result<&Value, InvalidRequest> {
    input.data.as_ref().ok_or_else(|| {
        InvalidRequest::at(
            "inputs",
            format!(
                "input '{}' needs 'data'",
                input.name.as_deref().unwrap_or("input")
            ),
        )
    })
}

/// The raw bytes of an input sent with `parameters.binary_data_size`, if it was; binary bytes
/// that no input claims are refused rather than ignored.
fn binary_part<'a>(
    input: &InputBody,
    binary: &'a [u8],
) -> Result<Option<&'a [u8]>, InvalidRequest> {
    let Some(size) = input.parameters.as_ref().and_then(|p| p.binary_data_size) else {
        if !binary.is_empty() {
            return Err(InvalidRequest::new(format!(
                "{} bytes follow the JSON header but no input has parameters.binary_data_size",
                binary.len()
            )));
        }
        return Ok(None);
    };
    if usize::try_from(size).ok() != Some(binary.len()) {
        return Err(InvalidRequest::new(format!(
            "binary_data_size {size} does not match the {} bytes after the JSON header",
            binary.len()
        )));
    }
    Ok(Some(binary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::json_body;
    use crate::serving::MAX_INPUTS_PER_REQUEST;
    use serde_json::json;

    fn convert(body: Value, binary: &[u8]) -> Result<InferenceInput, InvalidRequest> {
        let body: InferBody = json_body(&serde_json::to_vec(&body).unwrap())?;
        InferenceInput::try_from(SentInputs {
            inputs: body.inputs,
            binary,
        })
    }

    fn one(input: Value) -> Value {
        json!({"inputs": [input]})
    }

    #[test]
    fn numeric_inputs_become_checked_tensors() {
        let input = convert(
            one(json!({"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]})),
            &[],
        )
        .unwrap();
        assert_eq!(
            input,
            InferenceInput::Tensor(FloatTensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap())
        );
        let bytes: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let sized = json!({"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}});
        assert!(convert(one(sized), &bytes).is_ok());
    }

    #[test]
    fn malformed_inputs_are_refused_as_requests() {
        let cases = [
            json!({"inputs": []}),
            json!({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}, {"shape": [1], "datatype": "FP32", "data": [1]}]}),
            one(json!({"shape": [1], "datatype": "FP32"})),
            one(json!({"shape": [2], "datatype": "FP32", "data": [1]})),
            one(json!({"shape": [0], "datatype": "FP32", "data": []})),
            one(
                json!({"shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": 4}}),
            ),
        ];
        for body in cases {
            let error = convert(body.clone(), &[]).unwrap_err();
            assert!(!error.message.is_empty(), "{body}");
        }
        // Bytes no input claims.
        assert!(convert(
            one(json!({"shape": [1], "datatype": "FP32", "data": [1]})),
            &[0; 4]
        )
        .is_err());
    }

    #[test]
    fn binary_data_size_must_match_the_bytes_after_the_header() {
        let with_size = |size: u64| InputBody {
            name: None,
            shape: vec![3],
            datatype: DatatypeBody::Bytes,
            parameters: Some(InputParameters {
                binary_data_size: Some(size),
            }),
            data: None,
        };
        assert_eq!(
            binary_part(&with_size(3), &[1, 2, 3]).unwrap(),
            Some(&[1u8, 2, 3][..])
        );
        for size in [4, 2, u64::MAX] {
            let error = binary_part(&with_size(size), &[1, 2, 3]).unwrap_err();
            assert!(error.message.contains("binary_data_size"), "{error}");
        }
    }

    #[test]
    fn wrong_types_are_serde_refusals_naming_inputs() {
        for input in [
            json!({"shape": [-1, 64], "datatype": "FP32", "data": []}),
            json!({"shape": [1.5], "datatype": "FP32", "data": []}),
            json!({"shape": "64", "datatype": "FP32", "data": []}),
            json!({"shape": [1], "datatype": "UINT8", "data": [1]}),
            json!({"shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": -3}}),
        ] {
            let error = convert(one(input.clone()), &[]).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("inputs"), "{input}: {error}");
        }
        assert!(json_body::<InferBody>(br#"{"nothing": []}"#).is_err());
        assert!(json_body::<InferBody>(b"{not json").is_err());
    }

    #[test]
    fn bytes_inputs_are_capped_on_the_shape_before_the_data_is_read() {
        let many = MAX_INPUTS_PER_REQUEST + 1;
        let error = convert(
            one(json!({"name": "text", "shape": [many], "datatype": "BYTES", "data": ["x"]})),
            &[],
        )
        .unwrap_err();
        assert!(error.message.contains("at most 2048"), "{error}");
        let texts = convert(
            one(json!({"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]})),
            &[],
        )
        .unwrap();
        assert!(matches!(texts, InferenceInput::Texts(t) if t.len() == 2));
    }

    #[test]
    fn binary_output_is_asked_on_the_request_or_an_output() {
        let body =
            |value: Value| json_body::<InferBody>(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert!(!body(json!({"inputs": []})).wants_binary_output());
        assert!(
            body(json!({"inputs": [], "parameters": {"binary_data_output": true}}))
                .wants_binary_output()
        );
        assert!(body(json!({"inputs": [], "outputs": [{"name": "output", "parameters": {"binary_data": true}}]})).wants_binary_output());
        assert!(
            !body(json!({"inputs": [], "outputs": [{"name": "output"}]})).wants_binary_output()
        );
    }
}
