//! The writer's contract: what it refuses to declare, the order of data, and I/O failures.

use std::io::Write;

use super::{entry, spec};
use crate::formats::gguf::{
    GgufArray, GgufTensorSpec, GgufValue, GgufWriteError, GgufWriter, GGML_MAX_ARRAY_ELEMENTS,
    GGML_TYPE_F32, GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, KEY_GENERAL_ALIGNMENT,
};

fn new_writer(
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorSpec>,
    alignment: u32,
) -> Result<GgufWriter<Vec<u8>>, GgufWriteError> {
    GgufWriter::new(Vec::new(), metadata, tensors, alignment)
}

fn f32_tensor(name: &str, n_elements: u64) -> GgufTensorSpec {
    spec(name, &[n_elements], GGML_TYPE_F32, n_elements * 4)
}

#[test]
fn alignments_must_be_powers_of_two_from_8_to_1_mib() {
    for alignment in [0, 1, 4, 12, 48, 1 << 21, u32::MAX] {
        let result = new_writer(vec![], vec![], alignment);
        assert!(
            matches!(result, Err(GgufWriteError::InvalidAlignment { alignment: a, .. }) if a == alignment),
            "alignment {alignment} was accepted"
        );
    }
    for alignment in [8, 32, 64, 1 << 20] {
        assert!(new_writer(vec![], vec![], alignment).is_ok());
    }
}

#[test]
fn bad_keys_are_refused() {
    let value = || GgufValue::U32(1);
    for (key, reason_part) in [
        ("", "empty"),
        ("général.name", "ASCII"),
        (&*"k".repeat(65_536), "65535"),
    ] {
        let error = new_writer(vec![entry(key, value())], vec![], 32)
            .err()
            .unwrap();
        let GgufWriteError::InvalidKey { reason, .. } = &error else {
            panic!("expected an invalid key, got {error}");
        };
        assert!(reason.contains(reason_part), "{reason}");
    }
    let error = new_writer(vec![entry("k", value()), entry("k", value())], vec![], 32)
        .err()
        .unwrap();
    assert!(matches!(error, GgufWriteError::DuplicateKey { key } if key == "k"));
}

#[test]
fn an_explicit_alignment_key_must_match_the_alignment() {
    for wrong in [GgufValue::U32(64), GgufValue::U64(32), GgufValue::I32(32)] {
        let result = new_writer(vec![entry(KEY_GENERAL_ALIGNMENT, wrong)], vec![], 32);
        assert!(matches!(result, Err(GgufWriteError::InvalidValue { .. })));
    }
    // Matching: kept once, not appended again.
    let writer = new_writer(
        vec![entry(KEY_GENERAL_ALIGNMENT, GgufValue::U32(64))],
        vec![],
        64,
    )
    .unwrap();
    let file = writer.finish().unwrap();
    assert_eq!(&file[16..24], &1u64.to_le_bytes());
}

#[test]
fn arrays_longer_than_ggml_reads_are_refused() {
    let too_long = vec![0u8; GGML_MAX_ARRAY_ELEMENTS as usize + 1];
    let result = new_writer(
        vec![entry("k", GgufValue::Array(GgufArray::U8(too_long)))],
        vec![],
        32,
    );
    assert!(matches!(result, Err(GgufWriteError::InvalidValue { .. })));
}

#[test]
fn bad_tensor_declarations_are_refused() {
    let cases: Vec<(GgufTensorSpec, &str)> = vec![
        (f32_tensor("", 1), "empty"),
        (f32_tensor(&"n".repeat(64), 1), "at most 63"),
        (spec("t", &[1, 1, 1, 1, 1], GGML_TYPE_F32, 4), "at most 4"),
        (spec("t", &[0, 4], GGML_TYPE_F32, 0), "contain 0"),
        (spec("t", &[32], 4, 18), "unknown ggml type 4"),
        (spec("t", &[32], 99, 18), "unknown ggml type 99"),
        (
            spec("t", &[16], GGML_TYPE_Q8_0, 17),
            "whole number of 32-element blocks",
        ),
        (spec("t", &[2, 32], GGML_TYPE_Q4_0, 32), "takes 36"),
        (spec("t", &[3], GGML_TYPE_F32, 16), "takes 12"),
    ];
    for (tensor, reason_part) in cases {
        let error = new_writer(vec![], vec![tensor], 32).err().unwrap();
        let GgufWriteError::InvalidTensor { reason, .. } = &error else {
            panic!("expected an invalid tensor ({reason_part}), got {error}");
        };
        assert!(
            reason.contains(reason_part),
            "{reason:?} lacks {reason_part:?}"
        );
    }
    let error = new_writer(vec![], vec![f32_tensor("t", 1), f32_tensor("t", 2)], 32)
        .err()
        .unwrap();
    assert!(matches!(error, GgufWriteError::DuplicateTensor { name } if name == "t"));
}

#[test]
fn data_must_follow_the_declared_order() {
    let tensors = vec![f32_tensor("a", 2), f32_tensor("b", 1), f32_tensor("c", 1)];
    let mut writer = new_writer(vec![], tensors, 32).unwrap();

    let error = writer.write_tensor_data("zzz", &[0; 4]).unwrap_err();
    assert!(matches!(error, GgufWriteError::UnknownTensor { .. }));

    let error = writer.write_tensor_data("b", &[0; 4]).unwrap_err();
    assert!(matches!(
        error,
        GgufWriteError::OutOfOrder { ref pending, missing_bytes: 8, .. } if pending == "a"
    ));

    writer.write_tensor_data("a", &[1; 4]).unwrap();
    let error = writer.write_tensor_data("a", &[1; 5]).unwrap_err();
    assert!(matches!(
        error,
        GgufWriteError::TooManyBytes {
            declared: 8,
            received: 9,
            ..
        }
    ));
    let error = writer.write_tensor_data("b", &[0; 4]).unwrap_err();
    assert!(matches!(
        error,
        GgufWriteError::OutOfOrder {
            missing_bytes: 4,
            ..
        }
    ));
    writer.write_tensor_data("a", &[1; 4]).unwrap();

    // Skipping "b" is out of order too.
    let error = writer.write_tensor_data("c", &[0; 4]).unwrap_err();
    assert!(matches!(
        error,
        GgufWriteError::OutOfOrder { ref pending, missing_bytes: 4, .. } if pending == "b"
    ));
    writer.write_tensor_data("b", &[2; 4]).unwrap();
    let error = writer.write_tensor_data("a", &[1]).unwrap_err();
    assert!(matches!(error, GgufWriteError::AlreadyWritten { .. }));

    // "c" got nothing yet.
    let error = writer.finish().unwrap_err();
    assert!(matches!(
        error,
        GgufWriteError::Incomplete { ref name, declared: 4, received: 0 } if name == "c"
    ));
}

#[test]
fn finish_reports_a_partly_written_tensor() {
    let mut writer = new_writer(vec![], vec![f32_tensor("a", 2)], 32).unwrap();
    writer.write_tensor_data("a", &[0; 5]).unwrap();
    let error = writer.finish().unwrap_err();
    assert!(matches!(
        error,
        GgufWriteError::Incomplete {
            declared: 8,
            received: 5,
            ..
        }
    ));
}

/// A sink that fails after accepting `capacity` bytes.
struct FailingSink {
    written: Vec<u8>,
    capacity: usize,
}

impl Write for FailingSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = self.capacity - self.written.len();
        if room == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = room.min(bytes.len());
        self.written.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_write_poisons_the_writer() {
    let metadata = vec![entry("general.architecture", GgufValue::String("x".into()))];
    let header_fails = GgufWriter::new(
        FailingSink {
            written: Vec::new(),
            capacity: 10,
        },
        metadata.clone(),
        vec![f32_tensor("a", 64)],
        32,
    );
    assert!(matches!(header_fails, Err(GgufWriteError::Io(_))));

    let sink = FailingSink {
        written: Vec::new(),
        capacity: 200,
    };
    let mut writer = GgufWriter::new(sink, metadata, vec![f32_tensor("a", 64)], 32).unwrap();
    let error = writer.write_tensor_data("a", &[0; 256]).unwrap_err();
    assert!(matches!(error, GgufWriteError::Io(_)));
    let error = writer.write_tensor_data("a", &[0; 4]).unwrap_err();
    assert!(matches!(error, GgufWriteError::Poisoned));
    assert!(matches!(writer.finish(), Err(GgufWriteError::Poisoned)));
}
