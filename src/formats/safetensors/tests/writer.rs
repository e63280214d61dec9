//! The writer's byte layout and its contract with callers.

use std::collections::BTreeMap;
use std::io::Write;

use safetensors::tensor::SafeTensors;

use super::generous_limits;
use crate::formats::safetensors::{
    to_le_bytes, Dtype, Header, SafetensorsWriteError, SafetensorsWriter, MAX_NAME_BYTES,
};

fn declare(tensors: &[(&str, Dtype, &[usize])]) -> Vec<(String, Dtype, Vec<usize>)> {
    tensors
        .iter()
        .map(|(name, dtype, shape)| (name.to_string(), *dtype, shape.to_vec()))
        .collect()
}

fn new_writer(tensors: &[(&str, Dtype, &[usize])]) -> SafetensorsWriter<Vec<u8>> {
    SafetensorsWriter::new(Vec::new(), declare(tensors), BTreeMap::new()).unwrap()
}

#[test]
fn layout_is_prefix_padded_json_then_data_in_declared_order() {
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    let declared = declare(&[("z.first", Dtype::I8, &[3]), ("a.second", Dtype::F32, &[2])]);
    let mut writer = SafetensorsWriter::new(Vec::new(), declared, metadata).unwrap();
    writer
        .write_tensor_values("z.first", &[-1i8, 0, 1])
        .unwrap();
    writer
        .write_tensor_values("a.second", &[1.0f32, 2.0])
        .unwrap();
    let file = writer.finish().unwrap();

    let json = r#"{"__metadata__":{"format":"pt"},"z.first":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},"a.second":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}}"#;
    let padded_len = json.len().div_ceil(8) * 8;
    let mut expected = (padded_len as u64).to_le_bytes().to_vec();
    expected.extend_from_slice(json.as_bytes());
    expected.resize(8 + padded_len, b' ');
    expected.extend_from_slice(&[0xff, 0, 1]);
    expected.extend_from_slice(&to_le_bytes(&[1.0f32, 2.0]));
    assert_eq!(
        String::from_utf8_lossy(&file),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(file, expected);
}

#[test]
fn typed_values_round_trip_through_the_reference() {
    let weights: Vec<f32> = (0..300).map(|index| index as f32 * 0.25 - 10.0).collect();
    let quantized: Vec<i8> = (0..300).map(|index| (index % 256) as u8 as i8).collect();
    let half_bits: Vec<u16> = (0..5000).map(|index| index as u16).collect();
    let mut writer = new_writer(&[
        ("weights", Dtype::F32, &[3, 100]),
        ("quantized", Dtype::I8, &[300]),
        ("scales", Dtype::F16, &[5000]),
    ]);
    writer.write_tensor_values("weights", &weights).unwrap();
    writer
        .write_tensor_values("quantized", &quantized[..100])
        .unwrap();
    writer
        .write_tensor_values("quantized", &quantized[100..])
        .unwrap();
    // More than one 8 KiB encode buffer's worth of values.
    writer.write_tensor_values("scales", &half_bits).unwrap();
    let file = writer.finish().unwrap();

    let reference = SafeTensors::deserialize(&file).unwrap();
    let read_f32: Vec<f32> = reference
        .tensor("weights")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes(bytes.try_into().unwrap()))
        .collect();
    assert_eq!(read_f32, weights);
    assert_eq!(
        reference.tensor("quantized").unwrap().data(),
        to_le_bytes(&quantized)
    );
    assert_eq!(
        reference.tensor("scales").unwrap().data(),
        to_le_bytes(&half_bits)
    );
}

#[test]
fn zero_tensors_and_zero_sized_tensors_need_no_data() {
    let file = new_writer(&[]).finish().unwrap();
    assert_eq!(file, b"\x08\0\0\0\0\0\0\0{}      ");
    assert!(Header::parse_file(&file, &generous_limits())
        .unwrap()
        .is_empty());
    assert!(SafeTensors::deserialize(&file).unwrap().is_empty());

    let mut writer = new_writer(&[
        ("empty_a", Dtype::F32, &[0]),
        ("x", Dtype::U8, &[2]),
        ("empty_b", Dtype::F64, &[4, 0]),
        ("empty_c", Dtype::I8, &[0]),
    ]);
    // Skipping a zero-sized tensor, or writing it an empty chunk, are both fine.
    writer.write_tensor_data("x", &[1, 2]).unwrap();
    writer.write_tensor_data("empty_c", &[]).unwrap();
    let file = writer.finish().unwrap();
    let header = Header::parse_file(&file, &generous_limits()).unwrap();
    assert_eq!(header.get("empty_b").unwrap().data_offsets, (2, 2));
    assert_eq!(SafeTensors::deserialize(&file).unwrap().len(), 4);
}

#[test]
fn declarations_a_reader_would_refuse_are_refused() {
    let refuse = |tensors: Vec<(String, Dtype, Vec<usize>)>| {
        SafetensorsWriter::new(Vec::new(), tensors, BTreeMap::new())
            .err()
            .expect("declaration accepted")
    };
    let error = refuse(declare(&[("a", Dtype::U8, &[1]), ("a", Dtype::U8, &[1])]));
    assert!(matches!(error, SafetensorsWriteError::DuplicateTensor { name } if name == "a"));
    for bad_name in [
        String::new(),
        "n".repeat(MAX_NAME_BYTES + 1),
        "__metadata__".to_owned(),
    ] {
        let error = refuse(vec![(bad_name, Dtype::U8, vec![1])]);
        assert!(
            matches!(error, SafetensorsWriteError::InvalidTensor { .. }),
            "{error:?}"
        );
    }
    let error = refuse(declare(&[("deep", Dtype::U8, &[1; 9])]));
    assert!(matches!(error, SafetensorsWriteError::InvalidTensor { .. }));
    let error = refuse(declare(&[("huge", Dtype::F64, &[usize::MAX, 2])]));
    assert!(matches!(error, SafetensorsWriteError::InvalidTensor { .. }));
    // Each fits, but their offsets together overflow u64.
    let half = (u64::MAX / 2 + 1) as usize;
    let error = refuse(declare(&[
        ("a", Dtype::U8, &[half]),
        ("b", Dtype::U8, &[half]),
    ]));
    assert!(matches!(error, SafetensorsWriteError::InvalidTensor { name, .. } if name == "b"));
}

#[test]
fn data_must_arrive_in_declared_order_and_size() {
    let tensors: &[(&str, Dtype, &[usize])] = &[("a", Dtype::U8, &[4]), ("b", Dtype::U8, &[2])];

    let mut writer = new_writer(tensors);
    let error = writer.write_tensor_data("nope", &[1]).unwrap_err();
    assert!(matches!(error, SafetensorsWriteError::UnknownTensor { .. }));

    let error = writer.write_tensor_data("b", &[1]).unwrap_err();
    assert!(matches!(
        error,
        SafetensorsWriteError::OutOfOrder { pending, missing_bytes: 4, .. } if pending == "a"
    ));

    writer.write_tensor_data("a", &[1, 2, 3]).unwrap();
    let error = writer.write_tensor_data("a", &[4, 5]).unwrap_err();
    assert!(matches!(
        error,
        SafetensorsWriteError::TooManyBytes {
            declared: 4,
            received: 5,
            ..
        }
    ));
    writer.write_tensor_data("a", &[4]).unwrap();
    writer.write_tensor_data("b", &[1]).unwrap();
    let error = writer.write_tensor_data("a", &[1]).unwrap_err();
    assert!(matches!(
        error,
        SafetensorsWriteError::AlreadyWritten { .. }
    ));

    let error = writer.finish().unwrap_err();
    assert!(matches!(
        error,
        SafetensorsWriteError::Incomplete { name, declared: 2, received: 1 } if name == "b"
    ));

    // A tensor never started is incomplete too.
    let mut writer = new_writer(tensors);
    writer.write_tensor_data("a", &[0; 4]).unwrap();
    let error = writer.finish().unwrap_err();
    assert!(matches!(
        error,
        SafetensorsWriteError::Incomplete { received: 0, .. }
    ));
}

#[test]
fn typed_values_must_match_the_dtype_and_fit_before_anything_is_written() {
    let mut writer = new_writer(&[("w", Dtype::F16, &[2])]);
    let error = writer.write_tensor_values("w", &[1.0f32]).unwrap_err();
    assert!(matches!(
        error,
        SafetensorsWriteError::DtypeMismatch {
            dtype: Dtype::F16,
            element_type: "f32",
            ..
        }
    ));
    let before = writer.header().data_start;
    let error = writer.write_tensor_values("w", &[1u16, 2, 3]).unwrap_err();
    assert!(matches!(error, SafetensorsWriteError::TooManyBytes { .. }));
    writer.write_tensor_values("w", &[1u16, 2]).unwrap();
    let file = writer.finish().unwrap();
    assert_eq!(file.len() as u64, before + 4);
}

#[test]
fn a_failed_write_poisons_the_writer() {
    /// Accepts `capacity` bytes, then fails every write.
    struct FullDisk {
        capacity: usize,
    }
    impl Write for FullDisk {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.capacity == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n_written = bytes.len().min(self.capacity);
            self.capacity -= n_written;
            Ok(n_written)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let declared = declare(&[("w", Dtype::U8, &[64])]);
    let error = SafetensorsWriter::new(FullDisk { capacity: 4 }, declared.clone(), BTreeMap::new())
        .err()
        .unwrap();
    assert!(matches!(error, SafetensorsWriteError::Io(_)));

    let mut writer =
        SafetensorsWriter::new(FullDisk { capacity: 100 }, declared, BTreeMap::new()).unwrap();
    let error = writer.write_tensor_data("w", &[0; 64]).unwrap_err();
    assert!(matches!(error, SafetensorsWriteError::Io(_)));
    let error = writer.write_tensor_data("w", &[]).unwrap_err();
    assert!(matches!(error, SafetensorsWriteError::Poisoned));
    assert!(matches!(
        writer.finish().err().unwrap(),
        SafetensorsWriteError::Poisoned
    ));
}

#[test]
fn finish_flushes_the_sink() {
    let mut writer = SafetensorsWriter::new(
        std::io::BufWriter::new(Vec::new()),
        declare(&[("w", Dtype::U8, &[3])]),
        BTreeMap::new(),
    )
    .unwrap();
    writer.write_tensor_data("w", &[1, 2, 3]).unwrap();
    let expected_len = writer.header().total_file_size();
    let sink = writer.finish().unwrap();
    assert_eq!(sink.buffer().len(), 0);
    assert_eq!(sink.get_ref().len() as u64, expected_len);
}
