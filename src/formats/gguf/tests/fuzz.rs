//! Damaged files never make the reader panic, and a cut file is never accepted.

use proptest::prelude::*;

use super::{entry, spec, tiny_gguf, write_file};
use crate::formats::gguf::{
    read_gguf, GgufArray, GgufError, GgufLimits, GgufValue, GGML_TYPE_F32, GGML_TYPE_Q8_0,
};

/// A writer-made file with strings, arrays of strings and numbers, and two tensors, so that bit
/// flips land in every kind of field.
fn rich_file() -> Vec<u8> {
    write_file(
        vec![
            entry("general.architecture", GgufValue::String("llama".into())),
            entry(
                "tokenizer.ggml.tokens",
                GgufValue::Array(GgufArray::String(vec!["a".into(), "bc".into(), "".into()])),
            ),
            entry(
                "test.scores",
                GgufValue::Array(GgufArray::F32(vec![0.5, -1.0])),
            ),
            entry("test.flag", GgufValue::Bool(true)),
        ],
        vec![
            spec("token_embd.weight", &[2, 32], GGML_TYPE_Q8_0, 68),
            spec("output_norm.weight", &[5], GGML_TYPE_F32, 20),
        ],
        &[vec![3; 68], vec![4; 20]],
        32,
    )
}

/// Small limits, so that flipped length fields also hit the limit paths.
fn small_limits() -> GgufLimits {
    GgufLimits {
        max_metadata_bytes: 4096,
        max_metadata_entries: 16,
        max_string_bytes: 256,
        max_array_len: 64,
        max_tensors: 16,
    }
}

/// Where the last tensor's data ends: any shorter prefix must be refused.
fn data_end(file: &[u8]) -> u64 {
    let parsed = read_gguf(file, &GgufLimits::REFERENCE).unwrap();
    parsed
        .tensors
        .iter()
        .filter_map(|tensor| parsed.file_range(tensor))
        .map(|range| range.end)
        .max()
        .unwrap_or(parsed.data_start)
}

fn read_with_both_limits(file: &[u8]) -> Result<(), GgufError> {
    let _ = read_gguf(file, &small_limits());
    read_gguf(file, &GgufLimits::REFERENCE).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn truncated_files_are_refused_without_panicking(cut in 0.0f64..1.0) {
        for file in [tiny_gguf(), rich_file()] {
            let end = data_end(&file);
            let len = (end as f64 * cut) as usize;
            let result = read_with_both_limits(&file[..len]);
            prop_assert!(result.is_err(), "a prefix of {} bytes was accepted", len);
            prop_assert_eq!(result.unwrap_err().slug(), "gguf-truncated");
        }
    }

    #[test]
    fn bit_flips_never_panic(flips in prop::collection::vec((0.0f64..1.0, 0u8..8), 1..6)) {
        for mut file in [tiny_gguf(), rich_file()] {
            let metadata_end = read_gguf(&file, &GgufLimits::REFERENCE).unwrap().data_start;
            for (position, bit) in &flips {
                // Most flips land in the metadata, where they change meaning.
                let index = (metadata_end as f64 * position) as usize;
                file[index] ^= 1 << bit;
            }
            let _ = read_with_both_limits(&file);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..512),
        counts in (0u64..4, 0u64..4),
    ) {
        let mut file = b"GGUF".to_vec();
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(&counts.0.to_le_bytes());
        file.extend_from_slice(&counts.1.to_le_bytes());
        file.extend_from_slice(&tail);
        let _ = read_with_both_limits(&file);
    }
}
