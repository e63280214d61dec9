//! One crafted file per rejection kind, each checked through every entry point.

use super::{file_with_header, file_with_header_bytes, generous_limits};
use crate::formats::safetensors::{
    read_header, Dtype, Header, Limits, SafetensorsError, StreamValidator, MAX_NAME_BYTES,
};

/// Parses `file` whole, through a reader, and as a stream in one chunk and in 1-byte chunks;
/// all four must agree (the stream's `TrailingBytes::actual` is a lower bound, so it is
/// compared by `expected` only).
fn parse_every_way(file: &[u8], limits: &Limits) -> Result<Header, SafetensorsError> {
    let whole = Header::parse_file(file, limits);
    let from_reader = read_header(file, file.len() as u64, limits);
    assert_eq!(whole, from_reader, "parse_file and read_header disagree");
    for chunk_len in [file.len().max(1), 1] {
        let mut validator = StreamValidator::new(*limits);
        let streamed = file
            .chunks(chunk_len)
            .try_for_each(|chunk| validator.feed(chunk))
            .and_then(|()| validator.finish());
        match (&whole, &streamed) {
            (
                Err(SafetensorsError::TrailingBytes { expected, .. }),
                Err(SafetensorsError::TrailingBytes {
                    expected: streamed_expected,
                    ..
                }),
            ) => assert_eq!(expected, streamed_expected),
            _ => assert_eq!(whole, streamed, "stream in chunks of {chunk_len} disagrees"),
        }
    }
    whole
}

fn rejection(file: &[u8]) -> SafetensorsError {
    rejection_with(file, &generous_limits())
}

fn rejection_with(file: &[u8], limits: &Limits) -> SafetensorsError {
    match parse_every_way(file, limits) {
        Ok(header) => panic!("crafted file was accepted: {header:?}"),
        Err(error) => error,
    }
}

const ONE_F32: &str = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;

#[test]
fn fewer_than_eight_bytes_is_too_short() {
    for len in 0..8 {
        let error = rejection(&vec![0u8; len]);
        assert_eq!(error, SafetensorsError::TooShort { len: len as u64 });
        assert_eq!(error.slug(), "safetensors-too-short");
    }
}

#[test]
fn header_length_over_the_limit_is_refused_before_reading_it() {
    let limits = Limits {
        max_header_bytes: 64,
        max_file_bytes: 1 << 20,
    };
    // Only the prefix exists: the limit is checked before the header is needed.
    let error = rejection_with(&65u64.to_le_bytes(), &limits);
    assert_eq!(
        error,
        SafetensorsError::HeaderTooLarge {
            header_len: 65,
            limit: 64
        }
    );
    assert_eq!(error.slug(), "safetensors-header-too-large");
    // u64::MAX must not overflow anything.
    let error = rejection_with(&u64::MAX.to_le_bytes(), &limits);
    assert!(matches!(error, SafetensorsError::HeaderTooLarge { .. }));
}

#[test]
fn lying_header_length_is_truncated() {
    let mut file = file_with_header(ONE_F32, &[0; 4]);
    let claimed = (file.len() as u64) * 2;
    file[..8].copy_from_slice(&claimed.to_le_bytes());
    let error = rejection(&file);
    assert_eq!(
        error,
        SafetensorsError::HeaderExceedsFile {
            header_len: claimed,
            file_len: file.len() as u64
        }
    );
    assert_eq!(error.slug(), "safetensors-truncated");
}

#[test]
fn header_cut_short_is_truncated() {
    let file = file_with_header(ONE_F32, &[0; 4]);
    let error = rejection(&file[..20]);
    assert!(matches!(
        error,
        SafetensorsError::HeaderExceedsFile { file_len: 20, .. }
    ));
}

#[test]
fn declared_size_over_the_file_limit_is_refused_from_the_header() {
    let limits = Limits {
        max_header_bytes: 1 << 10,
        max_file_bytes: 1000,
    };
    let header = r#"{"big":{"dtype":"U8","shape":[5000],"data_offsets":[0,5000]}}"#;
    // No data at all: the header alone proves the file too large.
    let error = rejection_with(&file_with_header(header, &[]), &limits);
    let declared = 8 + header.len() as u64 + 5000;
    assert_eq!(
        error,
        SafetensorsError::FileTooLarge {
            size: declared,
            limit: 1000
        }
    );
    assert_eq!(error.slug(), "upload-too-large");

    // A header length that alone exceeds the file limit is refused at the prefix.
    let limits = Limits {
        max_header_bytes: 1 << 20,
        max_file_bytes: 100,
    };
    let error = rejection_with(&500u64.to_le_bytes(), &limits);
    assert_eq!(
        error,
        SafetensorsError::FileTooLarge {
            size: 508,
            limit: 100
        }
    );
}

#[test]
fn declared_size_overflowing_u64_is_too_large() {
    let header = format!(
        r#"{{"big":{{"dtype":"U8","shape":[{max}],"data_offsets":[0,{max}]}}}}"#,
        max = u64::MAX
    );
    let limits = Limits {
        max_header_bytes: 1 << 10,
        max_file_bytes: u64::MAX,
    };
    let error = rejection_with(&file_with_header(&header, &[]), &limits);
    assert_eq!(
        error,
        SafetensorsError::FileTooLarge {
            size: u64::MAX,
            limit: u64::MAX
        }
    );
}

#[test]
fn non_utf8_header_is_invalid() {
    let error = rejection(&file_with_header_bytes(b"{\"\xff\": 1}", &[]));
    assert_eq!(error, SafetensorsError::HeaderNotUtf8 { valid_up_to: 2 });
    assert_eq!(error.slug(), "safetensors-invalid-header");
}

#[test]
fn malformed_json_is_invalid() {
    for header in [
        "",
        "{",
        r#"{"w":"#,
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} x"#,
        r#"{'w': 1}"#,
        "{}\0\0\0\0",
    ] {
        let error = rejection(&file_with_header(header, &[]));
        assert!(
            matches!(error, SafetensorsError::HeaderNotJson(_)),
            "{header:?}: {error:?}"
        );
        assert_eq!(error.slug(), "safetensors-invalid-header");
    }
}

#[test]
fn json_that_is_not_an_object_is_invalid() {
    for header in ["[1,2]", "\"text\"", "null", "42"] {
        let error = rejection(&file_with_header(header, &[]));
        assert!(
            matches!(error, SafetensorsError::HeaderNotObject(_)),
            "{header:?}: {error:?}"
        );
        assert_eq!(error.slug(), "safetensors-invalid-header");
    }
}

#[test]
fn malformed_entries_name_their_tensor() {
    let cases = [
        r#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}}"#,
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":{"begin":0}}}"#,
        r#"{"w":{"dtype":"F32","shape":[1,2,3,4,5,6,7,8,9,10,11,12],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999999999999]}}"#,
        r#"{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}}"#,
        r#"{"w":[0,4]}"#,
        r#"{"w":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#,
    ];
    for header in cases {
        let error = rejection(&file_with_header(header, &[0; 4]));
        match &error {
            SafetensorsError::InvalidTensorEntry { name, .. } => assert_eq!(name, "w", "{header}"),
            other => panic!("{header}: {other:?}"),
        }
        assert!(error.to_string().contains("\"w\""), "{error}");
        assert_eq!(error.slug(), "safetensors-invalid-header");
    }
}

#[test]
fn empty_and_overlong_names_are_invalid() {
    let empty = r#"{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    let error = rejection(&file_with_header(empty, &[0]));
    assert!(matches!(&error, SafetensorsError::InvalidTensorEntry { name, .. } if name.is_empty()));

    let long_name = "n".repeat(MAX_NAME_BYTES + 1);
    let header = format!(r#"{{"{long_name}":{{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}}}"#);
    let error = rejection(&file_with_header(&header, &[0]));
    assert!(matches!(error, SafetensorsError::InvalidTensorEntry { .. }));
    assert_eq!(error.slug(), "safetensors-invalid-header");
    // The message quotes a shortened name, not 1 KiB of it.
    assert!(error.to_string().len() < 300, "{error}");

    let longest_name = "n".repeat(MAX_NAME_BYTES);
    let header =
        format!(r#"{{"{longest_name}":{{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}}}"#);
    parse_every_way(&file_with_header(&header, &[0]), &generous_limits()).unwrap();
}

#[test]
fn metadata_must_be_an_object_of_unique_strings() {
    let cases = [
        r#"{"__metadata__":{"format":1}}"#,
        r#"{"__metadata__":{"format":null}}"#,
        r#"{"__metadata__":null}"#,
        r#"{"__metadata__":["pt"]}"#,
        r#"{"__metadata__":{"a":"1","a":"2"}}"#,
        r#"{"__metadata__":{},"__metadata__":{}}"#,
    ];
    for header in cases {
        let error = rejection(&file_with_header(header, &[]));
        assert!(
            matches!(error, SafetensorsError::InvalidMetadata { .. }),
            "{header}: {error:?}"
        );
        assert_eq!(error.slug(), "safetensors-invalid-header");
    }
}

#[test]
fn unknown_dtype_is_named() {
    for dtype in ["F4", "f32", "Q4_0", "F8_E4M3FNUZ"] {
        let header = format!(r#"{{"w":{{"dtype":"{dtype}","shape":[1],"data_offsets":[0,1]}}}}"#);
        let error = rejection(&file_with_header(&header, &[0]));
        assert_eq!(
            error,
            SafetensorsError::UnknownDtype {
                name: "w".into(),
                dtype: dtype.into()
            }
        );
        assert_eq!(error.slug(), "safetensors-unknown-dtype");
    }
}

#[test]
fn shape_times_dtype_must_match_the_offsets() {
    let header = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    let error = rejection(&file_with_header(header, &[0; 20]));
    assert_eq!(
        error,
        SafetensorsError::ShapeMismatch {
            name: "w".into(),
            dtype: Dtype::F32,
            shape: vec![2, 3],
            expected_bytes: Some(24),
            actual_bytes: 20
        }
    );
    assert_eq!(error.slug(), "safetensors-shape-mismatch");
    assert!(error.to_string().contains("24 bytes"), "{error}");
}

#[test]
fn overflowing_shape_product_is_a_shape_mismatch() {
    // 2^32 × 2^32 elements overflow u64 before the dtype size is even applied.
    let header = r#"{"w":{"dtype":"U8","shape":[4294967296,4294967296,2],"data_offsets":[0,4]}}"#;
    let error = rejection(&file_with_header(header, &[0; 4]));
    assert!(
        matches!(
            &error,
            SafetensorsError::ShapeMismatch { name, expected_bytes: None, actual_bytes: 4, .. } if name == "w"
        ),
        "{error:?}"
    );
    assert_eq!(error.slug(), "safetensors-shape-mismatch");
    // The element count fits but times 8 bytes it does not.
    let header = r#"{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}}"#;
    let error = rejection(&file_with_header(header, &[0; 4]));
    assert!(matches!(
        error,
        SafetensorsError::ShapeMismatch {
            expected_bytes: None,
            ..
        }
    ));
}

#[test]
fn offsets_ending_before_they_begin_are_bad() {
    let header = r#"{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#;
    let error = rejection(&file_with_header(header, &[0; 4]));
    assert_eq!(
        error,
        SafetensorsError::BadOffsets {
            name: "w".into(),
            begin: 4,
            end: 0
        }
    );
    assert_eq!(error.slug(), "safetensors-bad-offsets");
}

#[test]
fn overlapping_tensors_are_bad() {
    let header = r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},
                    "b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}"#;
    let error = rejection(&file_with_header(header, &[0; 12]));
    assert_eq!(
        error,
        SafetensorsError::Overlap {
            first: "a".into(),
            first_end: 8,
            second: "b".into(),
            second_begin: 4
        }
    );
    assert_eq!(error.slug(), "safetensors-bad-offsets");

    // A zero-sized tensor "inside" another is refused too, as by the reference.
    let header = r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},
                    "z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}}"#;
    let error = rejection(&file_with_header(header, &[0; 8]));
    assert!(
        matches!(
            error,
            SafetensorsError::Overlap {
                second_begin: 4,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn unclaimed_data_bytes_are_a_gap() {
    let header = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},
                    "b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}}"#;
    let error = rejection(&file_with_header(header, &[0; 10]));
    assert_eq!(
        error,
        SafetensorsError::Gap {
            after: Some("a".into()),
            before: "b".into(),
            gap_begin: 4,
            gap_end: 6
        }
    );
    assert_eq!(error.slug(), "safetensors-bad-offsets");

    let header = r#"{"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
    let error = rejection(&file_with_header(header, &[0; 6]));
    assert_eq!(
        error,
        SafetensorsError::Gap {
            after: None,
            before: "b".into(),
            gap_begin: 0,
            gap_end: 2
        }
    );
}

#[test]
fn missing_data_is_truncated() {
    let file = file_with_header(ONE_F32, &[0; 3]);
    let error = rejection(&file);
    assert_eq!(
        error,
        SafetensorsError::Truncated {
            expected: file.len() as u64 + 1,
            actual: file.len() as u64
        }
    );
    assert_eq!(error.slug(), "safetensors-truncated");
}

#[test]
fn extra_data_is_trailing_bytes() {
    let file = file_with_header(ONE_F32, &[0; 5]);
    let error = rejection(&file);
    assert_eq!(
        error,
        SafetensorsError::TrailingBytes {
            expected: file.len() as u64 - 1,
            actual: file.len() as u64
        }
    );
    assert_eq!(error.slug(), "safetensors-trailing-bytes");
}

#[test]
fn duplicate_names_are_refused_although_serde_would_keep_the_last() {
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                    "w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
    // A plain map deserialization silently keeps one entry: the reason for our visitor.
    let plain: std::collections::HashMap<String, serde_json::Value> =
        serde_json::from_str(header).unwrap();
    assert_eq!(plain.len(), 1);

    let error = rejection(&file_with_header(header, &[0; 4]));
    assert_eq!(
        error,
        SafetensorsError::DuplicateTensor { name: "w".into() }
    );
    assert_eq!(error.slug(), "safetensors-duplicate-tensor");
}

#[test]
fn more_than_a_million_tensors_are_refused() {
    use std::fmt::Write as _;
    let n_tensors = crate::formats::safetensors::MAX_TENSORS + 1;
    let mut header = String::with_capacity(n_tensors * 48);
    header.push('{');
    for tensor_index in 0..n_tensors {
        if tensor_index > 0 {
            header.push(',');
        }
        write!(
            header,
            r#""{tensor_index}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#
        )
        .unwrap();
    }
    header.push('}');
    let limits = Limits {
        max_header_bytes: 1 << 30,
        max_file_bytes: 1 << 30,
    };
    let file = file_with_header(&header, &[]);
    let error = Header::parse_file(&file, &limits).unwrap_err();
    assert_eq!(
        error,
        SafetensorsError::TooManyTensors {
            limit: n_tensors - 1
        }
    );
    assert_eq!(error.slug(), "safetensors-invalid-header");
}

#[test]
fn reader_failures_are_io_errors_not_client_errors() {
    struct FailingReader;
    impl std::io::Read for FailingReader {
        fn read(&mut self, _buffer: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let error = read_header(FailingReader, 100, &generous_limits()).unwrap_err();
    assert!(matches!(error, SafetensorsError::Io { .. }), "{error:?}");
    assert_eq!(error.slug(), "io-error");
    assert!(!error.is_client_error());

    // A reader shorter than the length its caller promised is an I/O problem too.
    let file = file_with_header(ONE_F32, &[0; 4]);
    let error = read_header(&file[..12], file.len() as u64, &generous_limits()).unwrap_err();
    assert!(
        matches!(
            error,
            SafetensorsError::Io {
                kind: std::io::ErrorKind::UnexpectedEof,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn legal_corner_cases_are_accepted() {
    // No tensors at all, with and without metadata, padded with spaces like the reference.
    for header in ["{}", "{}      ", r#"{"__metadata__":{}}"#] {
        let parsed = parse_every_way(&file_with_header(header, &[]), &generous_limits()).unwrap();
        assert!(parsed.is_empty());
        assert_eq!(parsed.data_len, 0);
        assert_eq!(parsed.n_parameters(), 0);
    }

    // Zero-sized tensors (before, between and after others), a scalar, unknown entry fields,
    // metadata, and declaration order different from offset order.
    let header = r#"{
        "__metadata__": {"format": "pt", "note": "ünïcode"},
        "b": {"dtype": "F16", "shape": [2, 2], "data_offsets": [5, 13], "extra": {"ignored": true}},
        "empty_first": {"dtype": "F32", "shape": [0, 7], "data_offsets": [0, 0]},
        "scalar": {"dtype": "I8", "shape": [], "data_offsets": [0, 1]},
        "bools": {"dtype": "BOOL", "shape": [4], "data_offsets": [1, 5]},
        "empty_last": {"dtype": "I64", "shape": [3, 0], "data_offsets": [13, 13]}
    }   "#;
    let data: Vec<u8> = (0u8..13).collect();
    let file = file_with_header(header, &data);
    let parsed = parse_every_way(&file, &generous_limits()).unwrap();
    let names: Vec<&str> = parsed
        .tensors
        .iter()
        .map(|tensor| tensor.name.as_str())
        .collect();
    assert_eq!(names, ["empty_first", "scalar", "bools", "b", "empty_last"]);
    assert_eq!(parsed.metadata["note"], "ünïcode");
    assert_eq!(parsed.header_len, header.len() as u64);
    assert_eq!(parsed.data_start, 8 + header.len() as u64);
    assert_eq!(parsed.data_len, 13);
    assert_eq!(parsed.total_file_size(), file.len() as u64);
    assert_eq!(parsed.n_parameters(), 1 + 4 + 4);
    assert_eq!(parsed.dtype_counts()[&Dtype::F32], 1);
    assert_eq!(parsed.dtype_counts().values().sum::<usize>(), 5);

    let b = parsed.get("b").unwrap();
    assert_eq!(
        (b.dtype, b.shape.as_slice(), b.n_elements(), b.n_bytes()),
        (Dtype::F16, &[2, 2][..], 4, 8)
    );
    assert_eq!(parsed.tensor_bytes(&file, b).unwrap(), &data[5..13]);
    assert_eq!(parsed.file_range(b).end, file.len() as u64);
    assert!(parsed.get("empty_last").unwrap().is_empty());
    assert_eq!(parsed.by_name()["scalar"].n_elements(), 1);
    assert!(parsed.get("missing").is_none());
}
