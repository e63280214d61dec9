//! The gguf-py fixture `shared/fixtures/gguf/tiny.gguf`: what it holds, and that rewriting it
//! from its parsed parts reproduces it byte for byte.

use super::tiny_gguf;
use crate::formats::gguf::{
    read_gguf, GgufArray, GgufFile, GgufLimits, GgufTensorSpec, GgufValue, GgufWriter,
    GGML_TYPE_F32, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0,
};

fn parse_tiny() -> (Vec<u8>, GgufFile) {
    let file = tiny_gguf();
    let parsed = read_gguf(&file, &GgufLimits::REFERENCE).unwrap();
    (file, parsed)
}

#[test]
fn tiny_gguf_metadata_is_what_gguf_py_wrote() {
    let (file, parsed) = parse_tiny();
    assert_eq!(file.len(), 2272);
    assert_eq!(parsed.version, 3);
    assert_eq!(parsed.alignment, 32);
    assert_eq!(parsed.architecture(), Some("tinytest"));
    let keys: Vec<&str> = parsed
        .metadata
        .iter()
        .map(|(key, _)| key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.name",
            "tinytest.answer",
            "tinytest.pi",
            "tinytest.list",
            "tinytest.note",
        ]
    );
    assert_eq!(
        parsed.get("general.name"),
        Some(&GgufValue::String("oracle tiny gguf".into()))
    );
    assert_eq!(parsed.get("tinytest.answer"), Some(&GgufValue::U32(42)));
    assert_eq!(
        parsed.get("tinytest.pi"),
        Some(&GgufValue::F32(std::f32::consts::PI))
    );
    assert_eq!(
        parsed.get("tinytest.list"),
        Some(&GgufValue::Array(GgufArray::I32(vec![1, 2, 3])))
    );
    assert_eq!(
        parsed.get("tinytest.note"),
        Some(&GgufValue::String("written by gguf-py".into()))
    );
}

#[test]
fn tiny_gguf_tensors_have_the_expected_types_shapes_and_offsets() {
    let (file, parsed) = parse_tiny();
    assert_eq!(parsed.data_start, 512);
    // (name, ggml type, row-major shape, offset, bytes); 8 rows of 64 elements are 2 blocks a
    // row for the 32-element block types.
    let expected: [(&str, u32, &[u64], u64, u64); 5] = [
        ("norm.weight", GGML_TYPE_F32, &[64], 0, 64 * 4),
        ("w_q8_0", GGML_TYPE_Q8_0, &[8, 64], 256, 8 * 2 * 34),
        ("w_q4_0", GGML_TYPE_Q4_0, &[8, 64], 800, 8 * 2 * 18),
        ("w_q4_1", GGML_TYPE_Q4_1, &[8, 64], 1088, 8 * 2 * 20),
        ("w_q5_0", GGML_TYPE_Q5_0, &[8, 64], 1408, 8 * 2 * 22),
    ];
    assert_eq!(parsed.tensors.len(), expected.len());
    for (tensor, (name, ggml_type, shape, offset, n_bytes)) in parsed.tensors.iter().zip(expected) {
        assert_eq!(tensor.name, name);
        assert_eq!(tensor.ggml_type, ggml_type, "{name}");
        assert_eq!(tensor.shape(), shape, "{name}");
        assert_eq!(tensor.offset, offset, "{name}");
        assert_eq!(tensor.n_bytes(), Some(n_bytes), "{name}");
        assert_eq!(
            parsed.tensor_bytes(&file, tensor).map(<[u8]>::len),
            Some(n_bytes as usize)
        );
    }
    // ggml order on disk: ne[0] = 64 (the row), ne[1] = 8.
    assert_eq!(parsed.tensor("w_q8_0").unwrap().dims, vec![64, 8]);
    // The F32 tensor decodes to finite floats of moderate size.
    let norm = parsed
        .tensor_bytes(&file, parsed.tensor("norm.weight").unwrap())
        .unwrap();
    for value in norm
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes(chunk.try_into().unwrap()))
    {
        assert!(value.is_finite() && value.abs() < 10.0, "{value}");
    }
}

/// gguf-py writes header, metadata in insertion order, tensor infos, padding, and each tensor
/// padded to 32 bytes, the last one included: exactly our layout, so the rewrite is identical.
#[test]
fn rewriting_tiny_gguf_reproduces_its_bytes() {
    let (file, parsed) = parse_tiny();
    let specs: Vec<GgufTensorSpec> = parsed
        .tensors
        .iter()
        .map(|tensor| tensor.to_spec().unwrap())
        .collect();
    let mut writer =
        GgufWriter::new(Vec::new(), parsed.metadata.clone(), specs, parsed.alignment).unwrap();
    assert_eq!(writer.data_start(), parsed.data_start);
    assert_eq!(writer.tensor_infos(), &parsed.tensors[..]);
    for tensor in &parsed.tensors {
        let bytes = parsed.tensor_bytes(&file, tensor).unwrap();
        writer.write_tensor_data(&tensor.name, bytes).unwrap();
    }
    let rewritten = writer.finish().unwrap();
    assert_eq!(rewritten.len(), file.len());
    assert!(rewritten == file, "rewrite differs from gguf-py's bytes");
}
