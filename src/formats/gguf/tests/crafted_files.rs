//! One crafted file per rejection kind, built field by field (the writer refuses to make them).

use crate::formats::gguf::{read_gguf, GgufError, GgufFile, GgufLimits};

/// Raw GGUF bytes, field by field.
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, tensor_count: u64, metadata_count: u64) -> Raw {
        Raw(b"GGUF".to_vec())
            .u32(version)
            .u64(tensor_count)
            .u64(metadata_count)
    }

    fn bytes(mut self, bytes: &[u8]) -> Raw {
        self.0.extend_from_slice(bytes);
        self
    }

    fn u32(self, value: u32) -> Raw {
        self.bytes(&value.to_le_bytes())
    }

    fn u64(self, value: u64) -> Raw {
        self.bytes(&value.to_le_bytes())
    }

    fn string(self, text: &[u8]) -> Raw {
        self.u64(text.len() as u64).bytes(text)
    }

    /// A key, its type id and the encoded value.
    fn kv(self, key: &[u8], type_id: u32, value: &[u8]) -> Raw {
        self.string(key).u32(type_id).bytes(value)
    }

    fn tensor(self, name: &[u8], dims: &[u64], ggml_type: u32, offset: u64) -> Raw {
        let mut raw = self.string(name).u32(dims.len() as u32);
        for &dim in dims {
            raw = raw.u64(dim);
        }
        raw.u32(ggml_type).u64(offset)
    }

    /// Zero padding to `alignment`, then `n_bytes` of data.
    fn data(mut self, alignment: usize, n_bytes: usize) -> Raw {
        let padded = self.0.len().next_multiple_of(alignment);
        self.0.resize(padded + n_bytes, 0x5A);
        self
    }

    fn parse(&self) -> Result<GgufFile, GgufError> {
        read_gguf(&self.0, &GgufLimits::REFERENCE)
    }

    fn rejection(&self) -> GgufError {
        match self.parse() {
            Ok(file) => panic!("crafted file was accepted: {file:?}"),
            Err(error) => error,
        }
    }
}

/// A u32 value (type 4).
fn u32_value(value: u32) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// A valid file with one string key and two F32 tensors of 4 and 3 elements.
fn valid_file() -> Raw {
    Raw::header(3, 2, 1)
        .kv(
            b"general.architecture",
            8,
            &[&1u64.to_le_bytes()[..], b"x"].concat(),
        )
        .tensor(b"a", &[4], 0, 0)
        .tensor(b"b", &[3], 0, 32)
        .data(32, 32 + 12)
}

#[test]
fn the_crafting_helper_makes_valid_files() {
    let parsed = valid_file().parse().unwrap();
    assert_eq!(parsed.tensors.len(), 2);
    assert_eq!(parsed.data_start, 160);
    // A rank-0 scalar is legal, as in ggml.
    let scalar = Raw::header(3, 1, 0).tensor(b"s", &[], 0, 0).data(32, 4);
    assert_eq!(
        scalar.parse().unwrap().tensors[0].shape(),
        Vec::<u64>::new()
    );
}

#[test]
fn wrong_magic_is_bad_magic() {
    for magic in [*b"GGUX", *b"GGML", *b"\0\0\0\0", *b"FUGG"] {
        let mut file = valid_file();
        file.0[..4].copy_from_slice(&magic);
        let error = file.rejection();
        assert_eq!(error, GgufError::BadMagic { found: magic });
        assert_eq!(error.slug(), "gguf-bad-magic");
    }
}

#[test]
fn versions_other_than_2_and_3_are_unsupported() {
    for version in [0, 1, 4, u32::MAX] {
        let error = Raw::header(version, 0, 0).rejection();
        assert_eq!(error, GgufError::UnsupportedVersion { version });
        assert_eq!(error.slug(), "gguf-unsupported-version");
    }
    let error = Raw::header(3 << 24, 0, 0).rejection();
    assert_eq!(error, GgufError::BigEndian { version: 3 << 24 });
    assert_eq!(error.slug(), "gguf-unsupported-version");
    // Version 2 has the same layout.
    assert_eq!(Raw::header(2, 0, 0).parse().unwrap().version, 2);
}

#[test]
fn every_prefix_of_a_file_is_truncated_until_the_last_tensor_ends() {
    let file = valid_file().0;
    let last_tensor_end = 160 + 32 + 12;
    for len in 0..file.len() {
        let result = read_gguf(&file[..len], &GgufLimits::REFERENCE);
        if len < last_tensor_end {
            let error = result.expect_err("a prefix was accepted");
            assert_eq!(error.slug(), "gguf-truncated", "prefix {len}: {error}");
            if len >= 131 {
                assert!(matches!(error, GgufError::TensorDataOutOfBounds { .. }));
            }
        } else {
            // The last tensor's padding is not needed, as in llama.cpp.
            assert!(result.is_ok(), "prefix {len}");
        }
    }
}

#[test]
fn counts_over_the_limits_are_refused() {
    let limits = |edit: fn(&mut GgufLimits)| {
        let mut limits = GgufLimits::REFERENCE;
        edit(&mut limits);
        limits
    };
    let file = valid_file().0;
    let cases: [(GgufLimits, &str); 4] = [
        (limits(|l| l.max_tensors = 1), "tensor count"),
        (
            limits(|l| l.max_metadata_entries = 0),
            "metadata key-value count",
        ),
        (
            limits(|l| l.max_string_bytes = 19),
            "string length in bytes",
        ),
        (
            limits(|l| l.max_metadata_bytes = 127),
            "metadata region (header, key-value pairs and tensor infos) in bytes",
        ),
    ];
    for (limits, expected_what) in cases {
        let error = read_gguf(&file, &limits).unwrap_err();
        let GgufError::LimitExceeded { what, .. } = &error else {
            panic!("expected a limit for {expected_what}, got {error}");
        };
        assert_eq!(*what, expected_what);
        assert_eq!(error.slug(), "gguf-limit-exceeded");
    }
    // The metadata region of this file (up to the end of the infos) is 131 bytes.
    let at_limit = limits(|l| l.max_metadata_bytes = 131);
    assert!(read_gguf(&file, &at_limit).is_ok());
    let below = limits(|l| l.max_metadata_bytes = 130);
    assert!(matches!(
        read_gguf(&file, &below),
        Err(GgufError::LimitExceeded {
            value: 131,
            limit: 130,
            ..
        })
    ));

    let array = Raw::header(3, 0, 1).kv(
        b"k",
        9,
        &[&u32_value(4)[..], &3u64.to_le_bytes(), &[0; 12]].concat(),
    );
    let error = read_gguf(&array.0, &limits(|l| l.max_array_len = 2)).unwrap_err();
    assert_eq!(
        error,
        GgufError::LimitExceeded {
            what: "metadata array length",
            value: 3,
            limit: 2
        }
    );
}

#[test]
fn lying_counts_and_lengths_fail_without_allocating() {
    let unlimited = GgufLimits {
        max_metadata_bytes: u64::MAX,
        max_metadata_entries: u64::MAX,
        max_string_bytes: u64::MAX,
        max_array_len: u64::MAX,
        max_tensors: u64::MAX,
    };
    let files = [
        Raw::header(3, u64::MAX, 0),
        Raw::header(3, 0, u64::MAX),
        Raw::header(3, 0, 1).u64(u64::MAX),
        Raw::header(3, 0, 1).kv(b"k", 8, &u64::MAX.to_le_bytes()),
        Raw::header(3, 0, 1).kv(
            b"k",
            9,
            &[&8u32.to_le_bytes()[..], &u64::MAX.to_le_bytes()].concat(),
        ),
        Raw::header(3, 0, 1).kv(
            b"k",
            9,
            &[&12u32.to_le_bytes()[..], &(u64::MAX / 4).to_le_bytes()].concat(),
        ),
        Raw::header(3, 1, 0).u64(u64::MAX),
    ];
    for file in files {
        let error = read_gguf(&file.0, &unlimited).unwrap_err();
        assert_eq!(error.slug(), "gguf-truncated", "{error}");
    }
}

fn assert_invalid_metadata(file: Raw, expected_key: &str, reason_part: &str) {
    let error = file.rejection();
    let GgufError::InvalidMetadata { key, reason } = &error else {
        panic!("expected invalid metadata ({reason_part}), got {error}");
    };
    assert_eq!(key, expected_key);
    assert!(
        reason.contains(reason_part),
        "{reason:?} lacks {reason_part:?}"
    );
    assert_eq!(error.slug(), "gguf-invalid-metadata");
}

#[test]
fn malformed_keys_and_values_are_invalid_metadata() {
    let one = |key: &[u8], type_id: u32, value: &[u8]| Raw::header(3, 0, 1).kv(key, type_id, value);
    assert_invalid_metadata(one(b"k\xff", 4, &u32_value(1)), "k\u{fffd}", "not UTF-8");
    assert_invalid_metadata(one(b"", 4, &u32_value(1)), "", "empty");
    assert_invalid_metadata(
        one(&[b'k'; 65_536], 4, &u32_value(1)),
        &"k".repeat(65_536),
        "65535",
    );
    assert_invalid_metadata(one(b"k", 13, &[]), "k", "unknown value type 13");
    assert_invalid_metadata(one(b"k", u32::MAX, &[]), "k", "unknown value type");
    assert_invalid_metadata(one(b"k", 7, &[2]), "k", "neither 0 nor 1");
    let string_value = |bytes: &[u8]| [&(bytes.len() as u64).to_le_bytes()[..], bytes].concat();
    assert_invalid_metadata(one(b"k", 8, &string_value(b"\xc3\x28")), "k", "not UTF-8");
    let array = |element_type: u32, count: u64, elements: &[u8]| {
        [
            &element_type.to_le_bytes()[..],
            &count.to_le_bytes(),
            elements,
        ]
        .concat()
    };
    assert_invalid_metadata(
        one(b"k", 9, &array(9, 1, &array(4, 0, &[]))),
        "k",
        "arrays of arrays",
    );
    assert_invalid_metadata(
        one(b"k", 9, &array(13, 0, &[])),
        "k",
        "unknown array element type 13",
    );
    assert_invalid_metadata(
        one(b"k", 9, &array(7, 3, &[1, 0, 7])),
        "k",
        "neither 0 nor 1",
    );
    let strings = [string_value(b"ok"), string_value(b"\xff")].concat();
    assert_invalid_metadata(one(b"k", 9, &array(8, 2, &strings)), "k", "not UTF-8");
}

#[test]
fn a_bad_general_alignment_is_invalid_metadata() {
    let alignment =
        |type_id: u32, value: &[u8]| Raw::header(3, 0, 1).kv(b"general.alignment", type_id, value);
    assert_invalid_metadata(
        alignment(10, &64u64.to_le_bytes()),
        "general.alignment",
        "must be a u32",
    );
    assert_invalid_metadata(
        alignment(5, &64i32.to_le_bytes()),
        "general.alignment",
        "must be a u32",
    );
    for bad in [0, 48, 1 << 21] {
        assert_invalid_metadata(alignment(4, &u32_value(bad)), "general.alignment", "ggml");
    }
    // Powers of two up to 1 MiB are fine, even below the spec's multiple of 8 (ggml reads them).
    for good in [1, 4, 64, 1 << 20] {
        let file = Raw::header(3, 1, 1)
            .kv(b"general.alignment", 4, &u32_value(good))
            .tensor(b"t", &[1], 0, 0)
            .data(good as usize, 4);
        let parsed = file.parse().unwrap();
        assert_eq!(parsed.alignment, good);
        assert_eq!(parsed.data_start % u64::from(good), 0);
    }
}

#[test]
fn a_repeated_key_is_refused() {
    let file = Raw::header(3, 0, 2)
        .kv(b"k", 4, &u32_value(1))
        .kv(b"k", 4, &u32_value(2));
    let error = file.rejection();
    assert_eq!(error, GgufError::DuplicateKey { key: "k".into() });
    assert_eq!(error.slug(), "gguf-invalid-metadata");
}

fn assert_bad_tensor(file: Raw, expected_name: &str, reason_part: &str) {
    let error = file.rejection();
    let GgufError::BadTensor { name, reason } = &error else {
        panic!("expected a bad tensor ({reason_part}), got {error}");
    };
    assert_eq!(name, expected_name);
    assert!(
        reason.contains(reason_part),
        "{reason:?} lacks {reason_part:?}"
    );
    assert_eq!(error.slug(), "gguf-bad-tensor");
}

#[test]
fn malformed_tensor_infos_are_bad_tensors() {
    let one = |name: &[u8], dims: &[u64], ggml_type: u32, offset: u64| {
        Raw::header(3, 1, 0)
            .tensor(name, dims, ggml_type, offset)
            .data(32, 1024)
    };
    assert_bad_tensor(one(b"", &[1], 0, 0), "", "empty");
    assert_bad_tensor(one(&[b'n'; 64], &[1], 0, 0), &"n".repeat(64), "at most 63");
    assert!(one(&[b'n'; 63], &[1], 0, 0).parse().is_ok());
    assert_bad_tensor(one(b"n\xff", &[1], 0, 0), "n\u{fffd}", "not UTF-8");
    assert_bad_tensor(one(b"t", &[1, 1, 1, 1, 1], 0, 0), "t", "at most 4");
    assert_bad_tensor(
        Raw::header(3, 1, 0).string(b"t").u32(u32::MAX),
        "t",
        "at most 4",
    );
    assert_bad_tensor(one(b"t", &[4, 0], 0, 0), "t", "contain 0");
    assert_bad_tensor(one(b"t", &[u64::MAX], 0, 0), "t", "more elements");
    assert_bad_tensor(one(b"t", &[1 << 32, 1 << 31], 0, 0), "t", "more elements");
    assert_bad_tensor(
        one(b"t", &[16, 2], 8, 0),
        "t",
        "whole number of 32-element blocks",
    );
    assert_bad_tensor(one(b"t", &[1], 0, 32), "t", "requires 0");
    // The second tensor must start at the first one's padded end (32), not right after it.
    let unpadded = Raw::header(3, 2, 0)
        .tensor(b"a", &[3], 0, 0)
        .tensor(b"b", &[3], 0, 12)
        .data(32, 64);
    assert_bad_tensor(unpadded, "b", "requires 32");
}

#[test]
fn a_repeated_tensor_name_is_refused() {
    let file = Raw::header(3, 2, 0)
        .tensor(b"t", &[1], 0, 0)
        .tensor(b"t", &[1], 0, 32)
        .data(32, 64);
    let error = file.rejection();
    assert_eq!(error, GgufError::DuplicateTensor { name: "t".into() });
    assert_eq!(error.slug(), "gguf-bad-tensor");
}

#[test]
fn unknown_and_removed_ggml_types_are_refused() {
    for ggml_type in [4, 5, 31, 36, 40, u32::MAX] {
        let file = Raw::header(3, 1, 0)
            .tensor(b"t", &[32], ggml_type, 0)
            .data(32, 1024);
        let error = file.rejection();
        assert_eq!(
            error,
            GgufError::UnknownTensorType {
                name: "t".into(),
                ggml_type
            }
        );
        assert_eq!(error.slug(), "gguf-unsupported-tensor-type");
    }
}

#[test]
fn tensor_data_past_the_end_is_truncated() {
    let file = Raw::header(3, 1, 0)
        .tensor(b"t", &[2, 2], 0, 0)
        .data(32, 15);
    let error = file.rejection();
    assert_eq!(
        error,
        GgufError::TensorDataOutOfBounds {
            name: "t".into(),
            end: 96 + 16,
            file_len: 96 + 15
        }
    );
    assert_eq!(error.slug(), "gguf-truncated");
}
