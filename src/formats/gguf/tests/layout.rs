//! The exact bytes of tiny files, written out by hand from `docs/gguf.md`.

use super::{entry, spec, write_file};
use crate::formats::gguf::{
    read_gguf, GgufLimits, GgufValue, GgufWriter, GGML_TYPE_F32, GGML_TYPE_Q8_0,
};

/// One string key, one 2-element F32 tensor, alignment 32.
#[test]
fn one_key_one_tensor_has_the_documented_bytes() {
    let values = [1.0f32, -2.0];
    let data: Vec<u8> = values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    let file = write_file(
        vec![entry("general.architecture", GgufValue::String("t".into()))],
        vec![spec("w", &[2], GGML_TYPE_F32, 8)],
        &[data],
        32,
    );

    let mut expected: Vec<u8> = [
        &[0x47, 0x47, 0x55, 0x46][..], // magic "GGUF"
        &[3, 0, 0, 0],                 // version 3
        &[1, 0, 0, 0, 0, 0, 0, 0],     // tensor_count 1
        &[1, 0, 0, 0, 0, 0, 0, 0],     // metadata_kv_count 1
        &[20, 0, 0, 0, 0, 0, 0, 0],    // key length 20
        b"general.architecture",
        &[8, 0, 0, 0],             // value type STRING
        &[1, 0, 0, 0, 0, 0, 0, 0], // string length 1
        b"t",
        &[1, 0, 0, 0, 0, 0, 0, 0], // tensor name length 1
        b"w",
        &[1, 0, 0, 0],             // n_dims 1
        &[2, 0, 0, 0, 0, 0, 0, 0], // ne[0] = 2
        &[0, 0, 0, 0],             // GGML_TYPE_F32
        &[0, 0, 0, 0, 0, 0, 0, 0], // offset 0
    ]
    .concat();
    assert_eq!(expected.len(), 98);
    expected.resize(128, 0); // padding to the 32-byte alignment
    expected.extend_from_slice(&[0x00, 0x00, 0x80, 0x3f]); // 1.0f32
    expected.extend_from_slice(&[0x00, 0x00, 0x00, 0xc0]); // -2.0f32
    expected.resize(160, 0); // the last tensor is padded too, as gguf-py and ggml do
    assert_eq!(file, expected);
}

/// Two tensors: the second starts at the first's padded end, and a 2-D shape is stored
/// reversed (ggml's `ne[0]` is the row length).
#[test]
fn offsets_are_padded_and_dims_reversed() {
    let q8_bytes = 3 * 34; // 3 rows of one 32-element Q8_0 block
    let file = write_file(
        vec![],
        vec![
            spec("a", &[3], GGML_TYPE_F32, 12),
            spec("q", &[3, 32], GGML_TYPE_Q8_0, q8_bytes),
        ],
        &[vec![0xAA; 12], vec![0xBB; q8_bytes as usize]],
        32,
    );

    let mut expected: Vec<u8> = [
        &b"GGUF"[..],
        &3u32.to_le_bytes(),
        &2u64.to_le_bytes(), // two tensors
        &0u64.to_le_bytes(), // no metadata
        // tensor "a": rank 1, ne = [3], F32, offset 0
        &1u64.to_le_bytes(),
        b"a",
        &1u32.to_le_bytes(),
        &3u64.to_le_bytes(),
        &0u32.to_le_bytes(),
        &0u64.to_le_bytes(),
        // tensor "q": rank 2, ne = [32, 3] (row-major [3, 32] reversed), Q8_0, offset 32
        &1u64.to_le_bytes(),
        b"q",
        &2u32.to_le_bytes(),
        &32u64.to_le_bytes(),
        &3u64.to_le_bytes(),
        &8u32.to_le_bytes(),
        &32u64.to_le_bytes(),
    ]
    .concat();
    assert_eq!(expected.len(), 98);
    expected.resize(128, 0);
    expected.extend_from_slice(&[0xAA; 12]);
    expected.resize(128 + 32, 0);
    expected.extend_from_slice(&[0xBB; 102]);
    expected.resize(128 + 32 + 128, 0);
    assert_eq!(file, expected);
}

/// With alignment 64 the writer appends `general.alignment` as a u32 and pads to 64.
#[test]
fn non_default_alignment_writes_the_key_and_pads_to_it() {
    let file = write_file(
        vec![],
        vec![spec("w", &[1], GGML_TYPE_F32, 4)],
        &[vec![1, 2, 3, 4]],
        64,
    );
    let mut expected: Vec<u8> = [
        &b"GGUF"[..],
        &3u32.to_le_bytes(),
        &1u64.to_le_bytes(),
        &1u64.to_le_bytes(),
        &17u64.to_le_bytes(),
        b"general.alignment",
        &4u32.to_le_bytes(),  // UINT32
        &64u32.to_le_bytes(), // the alignment
        &1u64.to_le_bytes(),
        b"w",
        &1u32.to_le_bytes(),
        &1u64.to_le_bytes(),
        &0u32.to_le_bytes(),
        &0u64.to_le_bytes(),
    ]
    .concat();
    assert_eq!(expected.len(), 90);
    expected.resize(128, 0);
    expected.extend_from_slice(&[1, 2, 3, 4]);
    expected.resize(192, 0);
    assert_eq!(file, expected);
    let parsed = read_gguf(&file, &GgufLimits::REFERENCE).unwrap();
    assert_eq!(parsed.alignment, 64);
    assert_eq!(parsed.data_start, 128);
}

/// No tensors: the header is still padded (gguf-py pads before the empty data section).
#[test]
fn zero_tensors_give_a_padded_header_only() {
    let writer = GgufWriter::new(
        Vec::new(),
        vec![entry("general.architecture", GgufValue::String("x".into()))],
        vec![],
        32,
    )
    .unwrap();
    assert_eq!(writer.data_start(), 96);
    assert_eq!(writer.file_size(), 96);
    let file = writer.finish().unwrap();
    assert_eq!(file.len(), 96);
    assert_eq!(&file[..4], b"GGUF");
    assert_eq!(&file[8..16], &0u64.to_le_bytes());
    assert!(file[65..].iter().all(|&byte| byte == 0));
    let parsed = read_gguf(&file, &GgufLimits::REFERENCE).unwrap();
    assert!(parsed.tensors.is_empty());
    assert_eq!(parsed.data_start, 96);
}

/// Every scalar and array encoding, checked byte for byte against the spec's layout.
#[test]
fn value_encodings_match_the_spec() {
    use crate::formats::gguf::GgufArray;
    let cases: Vec<(GgufValue, u32, Vec<u8>)> = vec![
        (GgufValue::U8(0xAB), 0, vec![0xAB]),
        (GgufValue::I8(-2), 1, vec![0xFE]),
        (GgufValue::U16(0x1234), 2, vec![0x34, 0x12]),
        (GgufValue::I16(-2), 3, vec![0xFE, 0xFF]),
        (GgufValue::U32(0x0102_0304), 4, vec![4, 3, 2, 1]),
        (GgufValue::I32(-1), 5, vec![0xFF; 4]),
        (GgufValue::F32(1.0), 6, vec![0, 0, 0x80, 0x3F]),
        (GgufValue::Bool(true), 7, vec![1]),
        (
            GgufValue::String("hé".into()),
            8,
            [&3u64.to_le_bytes()[..], "hé".as_bytes()].concat(),
        ),
        (GgufValue::U64(1), 10, 1u64.to_le_bytes().to_vec()),
        (GgufValue::I64(-1), 11, vec![0xFF; 8]),
        (GgufValue::F64(1.0), 12, 1.0f64.to_le_bytes().to_vec()),
        (
            GgufValue::Array(GgufArray::String(vec!["a".into(), "".into()])),
            9,
            [
                &8u32.to_le_bytes()[..], // element type STRING
                &2u64.to_le_bytes(),     // two elements
                &1u64.to_le_bytes(),
                b"a",
                &0u64.to_le_bytes(),
            ]
            .concat(),
        ),
        (
            GgufValue::Array(GgufArray::Bool(vec![false, true])),
            9,
            [&7u32.to_le_bytes()[..], &2u64.to_le_bytes(), &[0, 1]].concat(),
        ),
    ];
    for (value, type_id, value_bytes) in cases {
        let file = write_file(vec![entry("k", value.clone())], vec![], &[], 32);
        let expected_entry = [
            &1u64.to_le_bytes()[..],
            b"k",
            &type_id.to_le_bytes(),
            &value_bytes,
        ]
        .concat();
        assert_eq!(
            &file[24..24 + expected_entry.len()],
            &expected_entry[..],
            "{value:?}"
        );
        let parsed = read_gguf(&file, &GgufLimits::REFERENCE).unwrap();
        assert_eq!(parsed.metadata, vec![entry("k", value)]);
    }
}
