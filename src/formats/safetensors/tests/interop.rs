//! Interoperability with the reference `safetensors` crate (huggingface/safetensors) in both
//! directions, a differential test of what each accepts, and the shared digits fixture.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use safetensors::tensor::{SafeTensors, TensorView};

use super::{file_with_header, fixture_path, generous_limits};
use crate::formats::safetensors::{read_header, Dtype, Header, SafetensorsWriter, StreamValidator};

fn reference_dtype(dtype: Dtype) -> safetensors::Dtype {
    serde_json::from_str(&format!("\"{}\"", dtype.as_str())).unwrap()
}

/// Deterministic, tensor-specific bytes so a misplaced tensor cannot go unnoticed.
fn pattern_bytes(seed: u64, n_bytes: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n_bytes)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

fn n_bytes_of(dtype: Dtype, shape: &[usize]) -> usize {
    shape.iter().product::<usize>() * dtype.size_bytes()
}

/// Checks that our header says exactly what the reference reader says about `file`.
fn assert_same_as_reference(ours: &Header, file: &[u8]) {
    let (reference_header_len, reference) = SafeTensors::read_metadata(file).unwrap();
    assert_eq!(ours.header_len, reference_header_len as u64);
    let reference_tensors = reference.tensors();
    assert_eq!(ours.tensors.len(), reference_tensors.len());
    for tensor in &ours.tensors {
        let reference_tensor = reference_tensors[&tensor.name];
        assert_eq!(
            reference_dtype(tensor.dtype),
            reference_tensor.dtype,
            "{}",
            tensor.name
        );
        assert_eq!(tensor.shape, reference_tensor.shape, "{}", tensor.name);
        let (begin, end) = reference_tensor.data_offsets;
        assert_eq!(
            tensor.data_offsets,
            (begin as u64, end as u64),
            "{}",
            tensor.name
        );
    }
    let reference_metadata: BTreeMap<String, String> = reference
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert_eq!(ours.metadata, reference_metadata);
    assert!(ours
        .tensors
        .windows(2)
        .all(|pair| pair[0].data_offsets <= pair[1].data_offsets));
}

/// Up to six tensors with names that need JSON escaping, any dtype, rank 0–3, dims 0–4.
fn tensor_specs() -> impl Strategy<Value = Vec<(String, Dtype, Vec<usize>)>> {
    let suffix = prop::sample::select(vec!["", ".weight", " \"quoted\"", "\\back", "ü/é", "\n"]);
    let one_tensor = (
        suffix,
        prop::sample::select(Dtype::ALL.to_vec()),
        prop::collection::vec(0usize..5, 0..4),
    );
    prop::collection::vec(one_tensor, 0..7).prop_map(|tensors| {
        tensors
            .into_iter()
            .enumerate()
            .map(|(tensor_index, (suffix, dtype, shape))| {
                (format!("layer{tensor_index}{suffix}"), dtype, shape)
            })
            .collect()
    })
}

fn metadata_maps() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-z_]{1,6}", "\\PC{0,8}", 0..3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn files_written_by_the_reference_parse_identically(
        specs in tensor_specs(),
        metadata in metadata_maps(),
        seed in any::<u64>(),
    ) {
        let datas: Vec<Vec<u8>> = specs
            .iter()
            .enumerate()
            .map(|(tensor_index, (_, dtype, shape))| {
                pattern_bytes(seed ^ tensor_index as u64, n_bytes_of(*dtype, shape))
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = specs
            .iter()
            .zip(&datas)
            .map(|((name, dtype, shape), data)| {
                let view = TensorView::new(reference_dtype(*dtype), shape.clone(), data).unwrap();
                (name.clone(), view)
            })
            .collect();
        let reference_metadata: Option<HashMap<String, String>> =
            (!metadata.is_empty()).then(|| metadata.clone().into_iter().collect());
        let file = safetensors::serialize(views, &reference_metadata).unwrap();

        let ours = Header::parse_file(&file, &generous_limits()).unwrap();
        assert_same_as_reference(&ours, &file);
        for ((name, dtype, shape), data) in specs.iter().zip(&datas) {
            let tensor = ours.get(name).unwrap();
            prop_assert_eq!((tensor.dtype, &tensor.shape), (*dtype, shape));
            prop_assert_eq!(ours.tensor_bytes(&file, tensor).unwrap(), data.as_slice());
        }
    }

    #[test]
    fn files_we_write_load_in_the_reference(
        specs in tensor_specs(),
        metadata in metadata_maps(),
        seed in any::<u64>(),
        chunk_len in 1usize..20,
    ) {
        let mut writer = SafetensorsWriter::new(Vec::new(), specs.clone(), metadata.clone()).unwrap();
        let declared = writer.header().clone();
        let mut datas = Vec::new();
        for (tensor_index, (name, dtype, shape)) in specs.iter().enumerate() {
            let data = pattern_bytes(seed ^ tensor_index as u64, n_bytes_of(*dtype, shape));
            for chunk in data.chunks(chunk_len) {
                writer.write_tensor_data(name, chunk).unwrap();
            }
            datas.push(data);
        }
        let file = writer.finish().unwrap();

        // The data section starts 8-aligned, after a header padded with spaces.
        prop_assert_eq!(declared.data_start % 8, 0);
        prop_assert_eq!(file.len() as u64, declared.total_file_size());
        let header_text = std::str::from_utf8(&file[8..declared.data_start as usize]).unwrap();
        prop_assert!(
            header_text.trim_end_matches(' ').ends_with('}'),
            "header must be JSON padded with spaces"
        );

        let reference = SafeTensors::deserialize(&file).unwrap();
        prop_assert_eq!(reference.len(), specs.len());
        for ((name, dtype, shape), data) in specs.iter().zip(&datas) {
            let view = reference.tensor(name).unwrap();
            prop_assert_eq!(view.dtype(), reference_dtype(*dtype));
            prop_assert_eq!(view.shape(), shape.as_slice());
            prop_assert_eq!(view.data(), data.as_slice());
        }
        let (_, reference_metadata) = SafeTensors::read_metadata(&file).unwrap();
        let reference_metadata: BTreeMap<String, String> =
            reference_metadata.metadata().clone().unwrap_or_default().into_iter().collect();
        prop_assert_eq!(&reference_metadata, &metadata);

        // And our own reader sees exactly the header the writer announced.
        let reparsed = Header::parse_file(&file, &generous_limits()).unwrap();
        prop_assert_eq!(reparsed, declared);
    }

    /// Headers with slightly wrong offsets and sizes: we accept exactly what the reference
    /// accepts (the generator avoids the rules only we enforce, such as duplicate names).
    #[test]
    fn we_accept_exactly_what_the_reference_accepts(
        entries in prop::collection::vec(
            (
                prop::sample::select(vec![Dtype::U8, Dtype::F16, Dtype::F32, Dtype::F64]),
                prop::collection::vec(0usize..4, 0..3),
                prop_oneof![6 => Just(0i64), 1 => -3i64..=3],
                prop_oneof![6 => Just(0i64), 1 => -3i64..=3],
            ),
            0..5,
        ),
        data_len_jitter in prop_oneof![6 => Just(0i64), 1 => -3i64..=3],
        reverse_declaration in any::<bool>(),
    ) {
        let mut cursor = 0i64;
        let mut header_entries = Vec::new();
        for (tensor_index, (dtype, shape, begin_jitter, size_jitter)) in entries.iter().enumerate() {
            let begin = (cursor + begin_jitter).max(0);
            let end = (begin + n_bytes_of(*dtype, shape) as i64 + size_jitter).max(0);
            header_entries.push(format!(
                r#""t{tensor_index}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{begin},{end}]}}"#
            ));
            cursor = end;
        }
        if reverse_declaration {
            header_entries.reverse();
        }
        let header = format!("{{{}}}", header_entries.join(","));
        let data_len = (cursor + data_len_jitter).max(0) as usize;
        let file = file_with_header(&header, &vec![0u8; data_len]);

        let ours = Header::parse_file(&file, &generous_limits());
        let reference = SafeTensors::deserialize(&file);
        prop_assert_eq!(ours.is_ok(), reference.is_ok(), "ours: {:?}, header: {}", ours, header);
        if let Ok(ours) = ours {
            assert_same_as_reference(&ours, &file);
        }
    }
}

#[test]
fn digits_fixture_parses_like_the_reference_every_way() {
    let path = fixture_path("digits/digits_mlp_fp32.safetensors");
    let file = std::fs::read(&path).unwrap();
    let header = Header::parse_file(&file, &generous_limits()).unwrap();
    assert_same_as_reference(&header, &file);

    let expected = [
        ("fc1.bias", vec![128]),
        ("fc1.weight", vec![128, 64]),
        ("fc2.bias", vec![64]),
        ("fc2.weight", vec![64, 128]),
        ("fc3.bias", vec![10]),
        ("fc3.weight", vec![10, 64]),
    ];
    assert_eq!(header.tensors.len(), expected.len());
    for (tensor, (name, shape)) in header.tensors.iter().zip(&expected) {
        assert_eq!(&tensor.name, name);
        assert_eq!(&tensor.shape, shape);
        assert_eq!(tensor.dtype, Dtype::F32);
    }
    assert_eq!(
        header.n_parameters(),
        128 + 128 * 64 + 64 + 64 * 128 + 10 + 10 * 64
    );
    assert_eq!(header.dtype_counts(), BTreeMap::from([(Dtype::F32, 6)]));
    assert_eq!(header.total_file_size(), file.len() as u64);
    assert!(header.metadata.contains_key("arch"));

    // Through a reader over the real file, and as a stream in awkward chunks.
    let reader = std::fs::File::open(&path).unwrap();
    assert_eq!(
        read_header(reader, file.len() as u64, &generous_limits()).unwrap(),
        header
    );
    let mut validator = StreamValidator::new(generous_limits());
    for chunk in file.chunks(4093) {
        validator.feed(chunk).unwrap();
    }
    assert_eq!(validator.finish().unwrap(), header);

    // The first weight's bytes are the little-endian f32s the reference sees.
    let fc1 = header.get("fc1.weight").unwrap();
    let reference = SafeTensors::deserialize(&file).unwrap();
    assert_eq!(
        header.tensor_bytes(&file, fc1).unwrap(),
        reference.tensor("fc1.weight").unwrap().data()
    );
}

#[test]
fn digits_test_split_fixture_parses_like_the_reference() {
    let file = std::fs::read(fixture_path("digits/digits_test_split.safetensors")).unwrap();
    let header = Header::parse_file(&file, &generous_limits()).unwrap();
    assert_same_as_reference(&header, &file);
    assert!(!header.is_empty());
}
