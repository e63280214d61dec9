//! Writer → reader round trips: every value type, several tensor types and ranks, alignments.

use proptest::prelude::*;

use super::{entry, pattern_bytes, spec, write_file};
use crate::formats::gguf::{
    read_gguf, type_size_info, GgufArray, GgufLimits, GgufTensorSpec, GgufValue, GgufWriter,
    GGML_QUANTIZATION_VERSION, GGML_TYPE_BF16, GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_I8,
    GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q4_K, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q6_K,
    GGML_TYPE_Q8_0, KEY_GENERAL_ALIGNMENT, KEY_GENERAL_ARCHITECTURE, KEY_GENERAL_FILE_TYPE,
    KEY_GENERAL_NAME, KEY_GENERAL_QUANTIZATION_VERSION, LLAMA_FTYPE_MOSTLY_Q8_0,
};

/// One key per scalar type and per array element type, with edge values.
fn every_value_type() -> Vec<(String, GgufValue)> {
    vec![
        entry(KEY_GENERAL_ARCHITECTURE, GgufValue::String("llama".into())),
        entry(
            KEY_GENERAL_NAME,
            GgufValue::String("naïve — model ✓".into()),
        ),
        entry(
            KEY_GENERAL_FILE_TYPE,
            GgufValue::U32(LLAMA_FTYPE_MOSTLY_Q8_0),
        ),
        entry(
            KEY_GENERAL_QUANTIZATION_VERSION,
            GgufValue::U32(GGML_QUANTIZATION_VERSION),
        ),
        entry("test.u8", GgufValue::U8(u8::MAX)),
        entry("test.i8", GgufValue::I8(i8::MIN)),
        entry("test.u16", GgufValue::U16(u16::MAX)),
        entry("test.i16", GgufValue::I16(i16::MIN)),
        entry("test.u32", GgufValue::U32(u32::MAX)),
        entry("test.i32", GgufValue::I32(i32::MIN)),
        entry("test.f32", GgufValue::F32(-0.0)),
        entry("test.bool_true", GgufValue::Bool(true)),
        entry("test.bool_false", GgufValue::Bool(false)),
        entry("test.empty_string", GgufValue::String(String::new())),
        entry("test.u64", GgufValue::U64(u64::MAX)),
        entry("test.i64", GgufValue::I64(i64::MIN)),
        entry("test.f64", GgufValue::F64(f64::MIN_POSITIVE)),
        entry(
            "test.array.u8",
            GgufValue::Array(GgufArray::U8(vec![0, 255])),
        ),
        entry(
            "test.array.i8",
            GgufValue::Array(GgufArray::I8(vec![-128, 127])),
        ),
        entry(
            "test.array.u16",
            GgufValue::Array(GgufArray::U16(vec![1, u16::MAX])),
        ),
        entry(
            "test.array.i16",
            GgufValue::Array(GgufArray::I16(vec![-1, 1])),
        ),
        entry(
            "test.array.u32",
            GgufValue::Array(GgufArray::U32(vec![7; 5])),
        ),
        entry(
            "test.array.i32",
            GgufValue::Array(GgufArray::I32(vec![-3, 0, 3])),
        ),
        entry(
            "test.array.f32",
            GgufValue::Array(GgufArray::F32(vec![1.5, f32::INFINITY, -1e-30])),
        ),
        entry(
            "test.array.bool",
            GgufValue::Array(GgufArray::Bool(vec![true, false, true])),
        ),
        entry(
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufArray::String(vec![
                "<s>".into(),
                "".into(),
                "▁hello".into(),
                "\n".into(),
            ])),
        ),
        entry(
            "test.array.u64",
            GgufValue::Array(GgufArray::U64(vec![u64::MAX])),
        ),
        entry(
            "test.array.i64",
            GgufValue::Array(GgufArray::I64(vec![i64::MIN, 0])),
        ),
        entry(
            "test.array.f64",
            GgufValue::Array(GgufArray::F64(vec![0.1, -2.5])),
        ),
        entry("test.array.empty", GgufValue::Array(GgufArray::I32(vec![]))),
    ]
}

/// Tensors of several types and every rank from 0 to 4, with their byte sizes from the block
/// table.
fn several_tensors() -> Vec<GgufTensorSpec> {
    let shapes: [(&str, &[u64], u32); 11] = [
        ("scalar", &[], GGML_TYPE_F32),
        ("norm.weight", &[7], GGML_TYPE_F32),
        ("half", &[3, 5], GGML_TYPE_F16),
        ("brain", &[2, 3, 4, 5], GGML_TYPE_BF16),
        ("bytes", &[9], GGML_TYPE_I8),
        ("blk.0.attn_q.weight", &[4, 64], GGML_TYPE_Q8_0),
        ("blk.0.attn_k.weight", &[2, 3, 32], GGML_TYPE_Q4_0),
        ("q4_1", &[1, 96], GGML_TYPE_Q4_1),
        ("q5_0", &[5, 32], GGML_TYPE_Q5_0),
        ("q5_1", &[2, 2, 2, 32], GGML_TYPE_Q5_1),
        ("k_quants", &[2, 256], GGML_TYPE_Q4_K),
    ];
    let mut tensors: Vec<GgufTensorSpec> = shapes
        .iter()
        .map(|(name, shape, ggml_type)| {
            let (block_elements, block_bytes) = type_size_info(*ggml_type).unwrap();
            let n_elements: u64 = shape.iter().product();
            let n_bytes = n_elements / block_elements as u64 * block_bytes as u64;
            spec(name, shape, *ggml_type, n_bytes)
        })
        .collect();
    tensors.push(spec("q6_k", &[1, 512], GGML_TYPE_Q6_K, 2 * 210));
    tensors
}

fn round_trip(alignment: u32) {
    let metadata = every_value_type();
    let tensors = several_tensors();
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(index, tensor)| pattern_bytes(index as u64, tensor.n_bytes as usize))
        .collect();
    let file = write_file(metadata.clone(), tensors.clone(), &data, alignment);
    let parsed = read_gguf(&file, &GgufLimits::REFERENCE).unwrap();

    assert_eq!(parsed.version, 3);
    assert_eq!(parsed.alignment, alignment);
    assert_eq!(parsed.data_start % u64::from(alignment), 0);
    let mut expected_metadata = metadata;
    if alignment != 32 {
        expected_metadata.push(entry(KEY_GENERAL_ALIGNMENT, GgufValue::U32(alignment)));
    }
    assert_eq!(parsed.metadata, expected_metadata);
    assert_eq!(parsed.architecture(), Some("llama"));
    assert_eq!(parsed.tensors.len(), tensors.len());
    for ((info, spec), bytes) in parsed.tensors.iter().zip(&tensors).zip(&data) {
        assert_eq!(info.name, spec.name);
        assert_eq!(info.shape(), spec.shape);
        assert_eq!(info.ggml_type, spec.ggml_type);
        assert_eq!(info.offset % u64::from(alignment), 0, "{}", info.name);
        assert_eq!(info.n_bytes(), Some(spec.n_bytes));
        assert_eq!(
            parsed.tensor_bytes(&file, info),
            Some(&bytes[..]),
            "{}",
            info.name
        );
    }
    // The file ends with the last tensor's padding.
    let last = parsed.tensors.last().unwrap();
    let last_end = parsed.file_range(last).unwrap().end;
    assert_eq!(
        file.len() as u64,
        last_end.next_multiple_of(u64::from(alignment))
    );
}

#[test]
fn every_value_type_and_several_tensors_round_trip_at_alignment_32() {
    round_trip(32);
}

#[test]
fn every_value_type_and_several_tensors_round_trip_at_alignment_64() {
    round_trip(64);
}

#[test]
fn small_and_large_alignments_round_trip() {
    round_trip(8);
    round_trip(4096);
}

#[test]
fn writer_reports_the_layout_it_wrote() {
    let tensors = several_tensors();
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|tensor| vec![1; tensor.n_bytes as usize])
        .collect();
    let mut writer = GgufWriter::new(Vec::new(), every_value_type(), tensors.clone(), 64).unwrap();
    let infos = writer.tensor_infos().to_vec();
    let (data_start, file_size) = (writer.data_start(), writer.file_size());
    for (tensor, bytes) in tensors.iter().zip(&data) {
        writer.write_tensor_data(&tensor.name, bytes).unwrap();
    }
    let file = writer.finish().unwrap();
    let parsed = read_gguf(&file, &GgufLimits::REFERENCE).unwrap();
    assert_eq!(parsed.tensors, infos);
    assert_eq!(parsed.data_start, data_start);
    assert_eq!(file.len() as u64, file_size);
}

#[test]
fn chunked_writes_give_the_same_bytes() {
    let tensors = several_tensors();
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(index, tensor)| pattern_bytes(100 + index as u64, tensor.n_bytes as usize))
        .collect();
    let whole = write_file(every_value_type(), tensors.clone(), &data, 32);
    for chunk_len in [1, 3, 64] {
        let mut writer =
            GgufWriter::new(Vec::new(), every_value_type(), tensors.clone(), 32).unwrap();
        for (tensor, bytes) in tensors.iter().zip(&data) {
            for chunk in bytes.chunks(chunk_len) {
                writer.write_tensor_data(&tensor.name, chunk).unwrap();
            }
            // An empty write to a complete tensor changes nothing.
            writer.write_tensor_data(&tensor.name, &[]).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), whole, "chunks of {chunk_len}");
    }
}

/// Row-major shapes with a last dimension that is a whole number of blocks.
fn arbitrary_tensor() -> impl Strategy<Value = (Vec<u64>, u32)> {
    let ggml_type = prop::sample::select(vec![
        GGML_TYPE_F32,
        GGML_TYPE_F16,
        GGML_TYPE_BF16,
        GGML_TYPE_Q8_0,
        GGML_TYPE_Q4_0,
        GGML_TYPE_Q4_1,
        GGML_TYPE_Q5_0,
        GGML_TYPE_Q4_K,
    ]);
    (ggml_type, prop::collection::vec(1u64..4, 0..4), 1u64..3).prop_map(
        |(ggml_type, mut outer_dims, row_blocks)| {
            let (block_elements, _) = type_size_info(ggml_type).unwrap();
            outer_dims.push(row_blocks * block_elements as u64);
            (outer_dims, ggml_type)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_files_round_trip(
        tensors in prop::collection::vec(arbitrary_tensor(), 0..6),
        alignment in prop::sample::select(vec![8u32, 16, 32, 64, 256]),
        name in "[a-z ]{0,20}",
        tokens in prop::collection::vec("\\PC{0,8}", 0..10),
    ) {
        let metadata = vec![
            entry(KEY_GENERAL_ARCHITECTURE, GgufValue::String("test".into())),
            entry(KEY_GENERAL_NAME, GgufValue::String(name)),
            entry("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(tokens))),
        ];
        let specs: Vec<GgufTensorSpec> = tensors
            .iter()
            .enumerate()
            .map(|(index, (shape, ggml_type))| {
                let (block_elements, block_bytes) = type_size_info(*ggml_type).unwrap();
                let n_bytes = shape.iter().product::<u64>() / block_elements as u64
                    * block_bytes as u64;
                spec(&format!("t{index}"), shape, *ggml_type, n_bytes)
            })
            .collect();
        let data: Vec<Vec<u8>> = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| pattern_bytes(index as u64, spec.n_bytes as usize))
            .collect();
        let file = write_file(metadata.clone(), specs.clone(), &data, alignment);
        let parsed = read_gguf(&file, &GgufLimits::REFERENCE).unwrap();
        prop_assert_eq!(&parsed.metadata[..3], &metadata[..]);
        prop_assert_eq!(parsed.tensors.len(), specs.len());
        for ((info, spec), bytes) in parsed.tensors.iter().zip(&specs).zip(&data) {
            prop_assert_eq!(info.shape(), spec.shape.clone());
            prop_assert_eq!(parsed.tensor_bytes(&file, info), Some(&bytes[..]));
        }
    }
}
