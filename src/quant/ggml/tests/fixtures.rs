//! The shared GGUF fixture (`shared/fixtures/gguf/gguf_test_vectors.json`): bytes made by
//! gguf-py and cross-checked against llama.cpp's C code, and raw blocks with the floats they
//! decode to. See `shared/fixtures/README.md`.

use serde_json::Value;

use super::super::*;
use super::all_tables;

/// Where the fixture lives: beside the repository in the real crate, or at its absolute path
/// when these files are compiled from a scratch crate elsewhere.
const CANDIDATE_PATHS: [&str; 2] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/gguf/gguf_test_vectors.json"
    ),
    "/work/shared/fixtures/gguf/gguf_test_vectors.json",
];

fn load_vectors() -> Value {
    let text = CANDIDATE_PATHS
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_else(|| panic!("gguf test vectors not found at {CANDIDATE_PATHS:?}"));
    serde_json::from_str(&text).expect("the fixture is valid JSON")
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|idx| u8::from_str_radix(&hex[idx..idx + 2], 16).expect("hex digit"))
        .collect()
}

/// A JSON array of numbers as f32 (each was printed from a float32, so the cast is exact).
fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("an array of numbers")
        .iter()
        .map(|number| number.as_f64().expect("a number") as f32)
        .collect()
}

/// The raw blocks of one type, concatenated.
fn raw_blocks(entry: &Value) -> Vec<u8> {
    entry["blocks_hex"]
        .as_array()
        .expect("blocks_hex is an array")
        .iter()
        .flat_map(|block| hex_bytes(block.as_str().expect("a hex string")))
        .collect()
}

/// Decoded values must match bit for bit: same f32 operations as gguf-py.
fn assert_same_floats(actual: &[f32], expected: &[f32], context: &str) {
    assert_eq!(actual.len(), expected.len(), "{context}: length");
    for (idx, (got, want)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{context}: value {idx}: {got} vs {want}"
        );
    }
}

#[test]
fn quantize_matches_ggml_bytes() {
    let vectors = load_vectors();
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
    ] {
        let entry = &vectors[ty.name().to_uppercase()];
        assert_eq!(entry["block_values"].as_u64(), Some(ty.block_size() as u64));
        assert_eq!(entry["block_bytes"].as_u64(), Some(ty.type_size() as u64));
        let input = floats(&entry["quantize_input_f32"]);
        let expected = hex_bytes(entry["quantize_output_hex"].as_str().expect("hex output"));
        for kernels in all_tables() {
            let mut actual = vec![0u8; expected.len()];
            quantize(kernels, ty, &input, &mut actual);
            assert_eq!(actual, expected, "{} {ty}", kernels.isa);
        }
    }
}

#[test]
fn dequantize_matches_gguf_py_floats() {
    let vectors = load_vectors();
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
    ] {
        let entry = &vectors[ty.name().to_uppercase()];
        let expected = floats(&entry["expected_f32"]);
        let mut decoded = vec![0.0f32; expected.len()];
        dequantize(ty, &raw_blocks(entry), &mut decoded);
        assert_same_floats(&decoded, &expected, ty.name());
    }
}

/// A k-quant decoder: raw blocks in, floats out.
type Decoder = fn(&[u8], &mut [f32]);

#[test]
fn k_quants_dequantize_like_gguf_py() {
    let vectors = load_vectors();
    let decoders: [(&str, usize, Decoder); 2] = [
        ("Q4_K", size_of::<BlockQ4K>(), dequantize_q4_k),
        ("Q6_K", size_of::<BlockQ6K>(), dequantize_q6_k),
    ];
    for (name, block_bytes, decode) in decoders {
        let entry = &vectors[name];
        assert_eq!(entry["block_values"].as_u64(), Some(QK_K as u64));
        assert_eq!(entry["block_bytes"].as_u64(), Some(block_bytes as u64));
        let expected = floats(&entry["expected_f32"]);
        let mut decoded = vec![0.0f32; expected.len()];
        decode(&raw_blocks(entry), &mut decoded);
        assert_same_floats(&decoded, &expected, name);
    }
}

#[test]
fn quantizing_the_decoded_fixture_blocks_is_stable() {
    // Quantizing what a block decodes to need not give the block back (d is re-derived in
    // f32), but decoding that again must reproduce the same floats within half a step.
    let vectors = load_vectors();
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
    ] {
        let decoded = floats(&vectors[ty.name().to_uppercase()]["expected_f32"]);
        let mut bytes = vec![0u8; ty.row_bytes(decoded.len()).unwrap()];
        quantize(scalar(), ty, &decoded, &mut bytes);
        let mut again = vec![0.0f32; decoded.len()];
        dequantize(ty, &bytes, &mut again);
        for (block_idx, (first, second)) in decoded.chunks(QK).zip(again.chunks(QK)).enumerate() {
            let block = &bytes[block_idx * ty.type_size()..];
            let d = scalar::f16_value(u16::from_le_bytes([block[0], block[1]])).abs();
            for (&want, &got) in first.iter().zip(second) {
                assert!(
                    (want - got).abs() <= 0.5 * d + want.abs() * 1e-3,
                    "{ty}: {want} {got}"
                );
            }
        }
    }
}
