//! The stream validator: same verdict as whole-file parsing for any chunking, and early failure.

use proptest::prelude::*;

use super::{file_with_header, generous_limits};
use crate::formats::safetensors::{
    Dtype, Header, Limits, SafetensorsError, SafetensorsWriter, StreamValidator,
};

/// Feeds `file` in chunks whose sizes cycle through `chunk_lens`, stopping at the first error.
fn stream_in_chunks(
    file: &[u8],
    chunk_lens: &[usize],
    limits: Limits,
) -> Result<Header, SafetensorsError> {
    let mut validator = StreamValidator::new(limits);
    let mut rest = file;
    for &chunk_len in chunk_lens.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, after) = rest.split_at(chunk_len.min(rest.len()));
        validator.feed(chunk)?;
        rest = after;
    }
    validator.finish()
}

/// Equal results, except that a stream's `TrailingBytes::actual` is only a lower bound.
fn assert_same_verdict(
    whole: &Result<Header, SafetensorsError>,
    streamed: &Result<Header, SafetensorsError>,
) {
    match (whole, streamed) {
        (
            Err(SafetensorsError::TrailingBytes { expected, actual }),
            Err(SafetensorsError::TrailingBytes {
                expected: streamed_expected,
                actual: streamed_actual,
            }),
        ) => {
            assert_eq!(expected, streamed_expected);
            assert!(streamed_actual > streamed_expected && streamed_actual <= actual);
        }
        _ => assert_eq!(whole, streamed),
    }
}

/// A valid file from our writer, built from a small random model.
fn valid_files() -> impl Strategy<Value = Vec<u8>> {
    let one_tensor = (
        prop::sample::select(vec![Dtype::F32, Dtype::F16, Dtype::I8, Dtype::U8]),
        prop::collection::vec(0usize..6, 0..3),
    );
    (prop::collection::vec(one_tensor, 0..5), any::<u8>()).prop_map(|(tensors, fill)| {
        let specs: Vec<(String, Dtype, Vec<usize>)> = tensors
            .into_iter()
            .enumerate()
            .map(|(tensor_index, (dtype, shape))| (format!("t{tensor_index}"), dtype, shape))
            .collect();
        let mut writer =
            SafetensorsWriter::new(Vec::new(), specs.clone(), Default::default()).unwrap();
        for (name, dtype, shape) in &specs {
            let n_bytes = shape.iter().product::<usize>() * dtype.size_bytes();
            writer
                .write_tensor_data(name, &vec![fill; n_bytes])
                .unwrap();
        }
        writer.finish().unwrap()
    })
}

/// Ways to damage a file: every rejection kind reachable by position is among the results.
#[derive(Clone, Debug)]
enum Damage {
    None,
    Truncate(prop::sample::Index),
    Append(usize),
    FlipByte(prop::sample::Index, u8),
    LieAboutHeaderLength(u64),
}

fn damages() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (1usize..50).prop_map(Damage::Append),
        (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(at, mask)| Damage::FlipByte(at, mask)),
        prop_oneof![0u64..200, Just(u64::MAX)].prop_map(Damage::LieAboutHeaderLength),
    ]
}

fn apply(damage: &Damage, mut file: Vec<u8>) -> Vec<u8> {
    match damage {
        Damage::None => {}
        Damage::Truncate(at) => file.truncate(at.index(file.len())),
        Damage::Append(n_bytes) => file.extend(std::iter::repeat_n(7u8, *n_bytes)),
        Damage::FlipByte(at, mask) => {
            let at = at.index(file.len());
            file[at] ^= mask;
        }
        Damage::LieAboutHeaderLength(header_len) => {
            file[..8].copy_from_slice(&header_len.to_le_bytes())
        }
    }
    file
}

fn limit_choices() -> impl Strategy<Value = Limits> {
    (
        prop_oneof![Just(1u64 << 20), 16u64..300],
        prop_oneof![Just(1u64 << 30), 16u64..600],
    )
        .prop_map(|(max_header_bytes, max_file_bytes)| Limits {
            max_header_bytes,
            max_file_bytes,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_chunking_gives_the_whole_file_verdict(
        file in valid_files(),
        damage in damages(),
        limits in limit_choices(),
        chunk_lens in prop::collection::vec(1usize..64, 1..6),
    ) {
        let undamaged_file = file.clone();
        let file = apply(&damage, file);
        let whole = Header::parse_file(&file, &limits);
        let header_len = u64::from_le_bytes(undamaged_file[..8].try_into().unwrap());
        let within_limits = limits.max_file_bytes >= file.len() as u64
            && limits.max_header_bytes >= header_len;
        if matches!(damage, Damage::None) && within_limits {
            prop_assert!(whole.is_ok(), "{:?}", whole);
        }
        assert_same_verdict(&whole, &stream_in_chunks(&file, &chunk_lens, limits));
        assert_same_verdict(&whole, &stream_in_chunks(&file, &[1], limits));
        assert_same_verdict(&whole, &stream_in_chunks(&file, &[file.len().max(1)], limits));
    }
}

const ONE_F32: &str = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;

#[test]
fn header_length_is_refused_on_its_eighth_byte() {
    let limits = Limits {
        max_header_bytes: 100,
        max_file_bytes: 1 << 20,
    };
    let mut validator = StreamValidator::new(limits);
    let prefix = 101u64.to_le_bytes();
    validator.feed(&prefix[..7]).unwrap();
    let error = validator.feed(&prefix[7..]).unwrap_err();
    assert!(matches!(
        error,
        SafetensorsError::HeaderTooLarge {
            header_len: 101,
            ..
        }
    ));
    assert_eq!(validator.bytes_seen(), 8);
    // A failed validator repeats its error and counts nothing more.
    assert_eq!(validator.feed(b"more").unwrap_err(), error);
    assert_eq!(validator.bytes_seen(), 8);
    assert_eq!(validator.finish().unwrap_err(), error);
}

#[test]
fn header_is_validated_as_soon_as_it_arrives() {
    let file = file_with_header(ONE_F32, &[1; 16]);
    let header_end = 8 + ONE_F32.len();
    let mut validator = StreamValidator::new(generous_limits());
    validator.feed(&file[..header_end - 1]).unwrap();
    assert!(validator.header().is_none());
    validator.feed(&file[header_end - 1..header_end]).unwrap();
    let header = validator.header().expect("header parsed on its last byte");
    assert_eq!(header.tensors[0].shape, [4]);
    assert_eq!(validator.expected_file_size(), Some(file.len() as u64));

    // A bad header fails on the chunk that completes it, with no tensor byte sent.
    let bad = file_with_header(
        r#"{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#,
        &[],
    );
    let mut validator = StreamValidator::new(generous_limits());
    let error = validator.feed(&bad).unwrap_err();
    assert!(matches!(error, SafetensorsError::ShapeMismatch { .. }));
}

#[test]
fn declared_size_over_the_limit_fails_before_any_data() {
    let limits = Limits {
        max_header_bytes: 1 << 10,
        max_file_bytes: 1 << 20,
    };
    // Claims 16 GiB of data; nothing but the header is ever sent.
    let header = r#"{"w":{"dtype":"F32","shape":[4294967296],"data_offsets":[0,17179869184]}}"#;
    let mut validator = StreamValidator::new(limits);
    let error = validator.feed(&file_with_header(header, &[])).unwrap_err();
    assert!(
        matches!(
            error,
            SafetensorsError::FileTooLarge {
                limit: 1_048_576,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn an_over_long_body_is_refused_at_its_first_extra_chunk() {
    let file = file_with_header(ONE_F32, &[1; 16]);
    let mut validator = StreamValidator::new(generous_limits());
    validator.feed(&file).unwrap();
    let error = validator.feed(&[0]).unwrap_err();
    assert_eq!(
        error,
        SafetensorsError::TrailingBytes {
            expected: file.len() as u64,
            actual: file.len() as u64 + 1
        }
    );

    // An endless body: the validator stops it one chunk after the declared end.
    const CHUNK_LEN: usize = 1024;
    let mut validator = StreamValidator::new(generous_limits());
    validator.feed(&file[..8 + ONE_F32.len()]).unwrap();
    let endless_chunk = [0u8; CHUNK_LEN];
    let mut n_chunks_accepted = 0u64;
    let error = loop {
        match validator.feed(&endless_chunk) {
            Ok(()) => n_chunks_accepted += 1,
            Err(error) => break error,
        }
        assert!(
            n_chunks_accepted < 1_000_000,
            "endless body was never refused"
        );
    };
    assert!(matches!(error, SafetensorsError::TrailingBytes { .. }));
    assert_eq!(n_chunks_accepted, 0);
    assert!(validator.bytes_seen() <= file.len() as u64 + CHUNK_LEN as u64);
}

#[test]
fn finish_reports_what_is_missing() {
    let file = file_with_header(ONE_F32, &[1; 16]);
    let finish_after = |n_bytes: usize| {
        let mut validator = StreamValidator::new(generous_limits());
        validator.feed(&file[..n_bytes]).unwrap();
        validator.finish()
    };
    assert_eq!(
        finish_after(0).unwrap_err(),
        SafetensorsError::TooShort { len: 0 }
    );
    assert_eq!(
        finish_after(5).unwrap_err(),
        SafetensorsError::TooShort { len: 5 }
    );
    assert_eq!(
        finish_after(20).unwrap_err(),
        SafetensorsError::HeaderExceedsFile {
            header_len: ONE_F32.len() as u64,
            file_len: 20
        }
    );
    assert_eq!(
        finish_after(file.len() - 1).unwrap_err(),
        SafetensorsError::Truncated {
            expected: file.len() as u64,
            actual: file.len() as u64 - 1
        }
    );
    assert_eq!(finish_after(file.len()).unwrap().tensors.len(), 1);
}

#[test]
fn empty_chunks_and_an_empty_header_are_handled() {
    let file = file_with_header("{}      ", &[]);
    let mut validator = StreamValidator::new(generous_limits());
    validator.feed(&[]).unwrap();
    for byte in &file {
        validator.feed(&[]).unwrap();
        validator.feed(std::slice::from_ref(byte)).unwrap();
    }
    assert!(validator.finish().unwrap().is_empty());

    // N = 0 is parsed (and refused) on the eighth byte, with nothing more to wait for.
    let mut validator = StreamValidator::new(generous_limits());
    let error = validator.feed(&0u64.to_le_bytes()).unwrap_err();
    assert!(matches!(error, SafetensorsError::HeaderNotJson(_)));
}

#[test]
fn the_pending_header_length_is_known_between_prefix_and_parse() {
    let header_json = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    let file = file_with_header(header_json, &[7, 7]);
    let mut validator = StreamValidator::new(generous_limits());
    validator.feed(&file[..7]).unwrap();
    assert_eq!(validator.pending_header_len(), None, "prefix incomplete");
    validator.feed(&file[7..8]).unwrap();
    assert_eq!(
        validator.pending_header_len(),
        Some(header_json.len() as u64),
        "known before any header byte"
    );
    validator.feed(&file[8..file.len() - 2]).unwrap();
    assert_eq!(validator.pending_header_len(), None, "parsed");
    validator.feed(&file[file.len() - 2..]).unwrap();
    validator.finish().unwrap();
}
