//! Every scheme × output format, end to end through the layouts: random tensors are encoded
//! into a real safetensors or GGUF file through the checking emitter, then read back by the
//! serving reader. What serving holds (blocks, int8 rows or f32) must equal the scheme's own
//! dequantization (the `dequantized` format's output) up to one f32 rounding of the block form,
//! `float` must equal it exactly, and the emitted pieces must be the declared tensors in order.

use std::collections::BTreeMap;
use std::io;

use proptest::prelude::*;

use super::*;
use crate::formats::gguf::{read_gguf, GgufLimits, GgufTensorSpec, GgufWriter, DEFAULT_ALIGNMENT};
use crate::formats::safetensors::{Dtype, Limits, SafetensorsWriter, TensorInfo};
use crate::quant::fp8::Fp8Format;
use crate::quant::ggml::GgmlType;
use crate::quant::int4::Int4Options;
use crate::quant::int8::{Granularity, Int8Options};
use crate::quant::kmeans::KmeansOptions;
use crate::quant::layout::{
    Emitter, EncodeContext, OutputFormat, OutputTensor, Scheme, StoredAs, TensorSink,
};
use crate::quant::nf4::Nf4Options;

const LAYER: &str = "layer";
const NAME: &str = "layer.weight";

/// One of every scheme family and option that changes the layout.
fn schemes() -> Vec<Scheme> {
    let mut schemes = vec![Scheme::Binary, Scheme::Ternary, Scheme::F16];
    for granularity in [Granularity::Channel, Granularity::Tensor] {
        for symmetric in [true, false] {
            schemes.push(Scheme::Int8(Int8Options {
                granularity,
                symmetric,
            }));
        }
    }
    for group_size in [32, 64, 128] {
        for (symmetric, restricted_range) in [(true, false), (true, true), (false, false)] {
            schemes.push(Scheme::Int4(Int4Options {
                group_size,
                symmetric,
                restricted_range,
            }));
        }
    }
    for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
        for per_channel in [true, false] {
            schemes.push(Scheme::Fp8 {
                format,
                per_channel,
            });
        }
    }
    for double_quant in [false, true] {
        schemes.push(Scheme::Nf4(Nf4Options { double_quant }));
    }
    for bits in [2, 4, 8] {
        schemes.push(Scheme::Kmeans(KmeansOptions {
            bits,
            max_iterations: 10,
            tolerance: 1e-4,
        }));
    }
    // Every block type ggml has here, so a new one is covered as soon as it exists.
    for ty in GgmlType::ALL {
        if ty.is_block_quantized() {
            schemes.push(Scheme::Ggml(ty));
        }
    }
    schemes
}

const FORMATS: [OutputFormat; 4] = [
    OutputFormat::Safetensors,
    OutputFormat::Gguf,
    OutputFormat::Dequantized { f16: false },
    OutputFormat::Dequantized { f16: true },
];

/// The file's writer, recording every emitted piece.
struct Recording {
    writer: Writer,
    pieces: Vec<(String, u64)>,
}

enum Writer {
    Safetensors(SafetensorsWriter<Vec<u8>>),
    Gguf(GgufWriter<Vec<u8>>),
}

impl TensorSink for Recording {
    fn write_tensor_data(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.pieces.push((name.to_owned(), bytes.len() as u64));
        match &mut self.writer {
            Writer::Safetensors(w) => w.write_tensor_data(name, bytes).map_err(io::Error::other),
            Writer::Gguf(w) => w.write_tensor_data(name, bytes).map_err(io::Error::other),
        }
    }
}

fn tensor_info(rows: usize, cols: usize) -> TensorInfo {
    TensorInfo {
        name: NAME.into(),
        dtype: Dtype::F32,
        shape: vec![rows, cols],
        data_offsets: (0, (rows * cols * 4) as u64),
    }
}

/// Encodes `values` with `scheme` into a whole file of `format`; returns the file and the
/// emitted pieces merged per tensor (name, bytes).
fn encode_file(
    scheme: Scheme,
    format: OutputFormat,
    tensor: &TensorInfo,
    values: &[f32],
) -> (Vec<u8>, Vec<(String, u64)>, Vec<OutputTensor>) {
    let layout = scheme.layout();
    let declared = layout.declare(tensor, format);
    let writer = match format {
        OutputFormat::Gguf => Writer::Gguf(
            GgufWriter::new(
                Vec::new(),
                Vec::new(),
                declared
                    .iter()
                    .map(|t| GgufTensorSpec {
                        name: t.name.clone(),
                        shape: t.shape.iter().map(|&d| d as u64).collect(),
                        ggml_type: match t.stored_as {
                            StoredAs::Ggml(id) => id,
                            StoredAs::Safetensors(_) => panic!("GGUF declares ggml types"),
                        },
                        n_bytes: t.n_bytes,
                    })
                    .collect(),
                DEFAULT_ALIGNMENT,
            )
            .unwrap(),
        ),
        _ => Writer::Safetensors(
            SafetensorsWriter::new(
                Vec::new(),
                declared
                    .iter()
                    .map(|t| match t.stored_as {
                        StoredAs::Safetensors(dtype) => (t.name.clone(), dtype, t.shape.clone()),
                        StoredAs::Ggml(_) => panic!("safetensors declares dtypes"),
                    })
                    .collect(),
                layout
                    .quantd_metadata(tensor, format)
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            )
            .unwrap(),
        ),
    };
    let mut sink = Recording {
        writer,
        pieces: Vec::new(),
    };
    let should_continue = || true;
    let mut cx = EncodeContext::new(
        crate::quant::kernels::scalar(),
        crate::quant::ggml::scalar(),
        &should_continue,
    );
    let mut emitter = Emitter::new(&declared, &mut sink);
    layout
        .encode(&mut cx, tensor, values, format, &mut emitter)
        .unwrap_or_else(|e| panic!("{scheme:?} {format:?}: {e}"));
    emitter.check_complete().unwrap();
    let mut merged: Vec<(String, u64)> = Vec::new();
    for (name, len) in sink.pieces {
        match merged.last_mut() {
            Some((last, total)) if *last == name => *total += len,
            _ => merged.push((name, len)),
        }
    }
    let file = match sink.writer {
        Writer::Safetensors(w) => w.finish().unwrap(),
        Writer::Gguf(w) => w.finish().unwrap(),
    };
    (file, merged, declared)
}

/// Calls `read` with the serving reader over `file`.
fn with_weight_file<R>(
    file: &[u8],
    format: OutputFormat,
    read: impl FnOnce(&WeightFile<'_>) -> R,
) -> R {
    if format == OutputFormat::Gguf {
        let gguf = read_gguf(file, &GgufLimits::REFERENCE).unwrap();
        read(&WeightFile::Gguf { file, gguf: &gguf })
    } else {
        let limits = Limits {
            max_header_bytes: 1 << 20,
            max_file_bytes: 1 << 30,
        };
        let header = Header::parse_file(file, &limits).unwrap();
        read(&WeightFile::Safetensors {
            file,
            header: &header,
        })
    }
}

fn held_values(weights: DenseWeights, rows: usize, cols: usize) -> Vec<f32> {
    match weights {
        DenseWeights::F32(values) => values,
        DenseWeights::Int8 {
            q,
            scales,
            zero_points,
        } => Held::Int8 {
            q,
            scales,
            zero_points,
        }
        .into_f32(&[rows, cols]),
        DenseWeights::Blocks(matrix) => matrix.dequantize(),
    }
}

/// The scheme's own dequantization of `values` (its `dequantized` output), f16-rounded for
/// the f16 format.
fn own_dequantization(scheme: Scheme, tensor: &TensorInfo, values: &[f32], f16: bool) -> Vec<f32> {
    let (file, _, _) = encode_file(scheme, OutputFormat::Dequantized { f16 }, tensor, values);
    let mut own = Vec::new();
    with_weight_file(&file, OutputFormat::Safetensors, |weights| {
        own = weights.float(NAME).unwrap().unwrap();
    });
    own
}

fn check_scheme_in_format(
    scheme: Scheme,
    format: OutputFormat,
    rows: usize,
    cols: usize,
    values: &[f32],
) {
    let what = format!("{scheme:?} as {format:?}, {rows}x{cols}");
    let tensor = tensor_info(rows, cols);
    let (file, emitted, declared) = encode_file(scheme, format, &tensor, values);
    let declared: Vec<(String, u64)> = declared.into_iter().map(|t| (t.name, t.n_bytes)).collect();
    assert_eq!(emitted, declared, "{what}: emitted order");

    let f16 = format == OutputFormat::Dequantized { f16: true };
    let own = own_dequantization(scheme, &tensor, values, f16);
    let max_abs = own.iter().fold(0f32, |m, v| m.max(v.abs()));
    with_weight_file(&file, format, |weights| {
        assert_eq!(
            weights.linear_shape(LAYER),
            Some((rows, cols)),
            "{what}: shape"
        );
        if matches!(scheme, Scheme::Nf4(_)) && format == OutputFormat::Safetensors {
            // bitsandbytes runs NF4; serving refuses it, the layout still decodes it.
            let error = weights.float(NAME).unwrap_err().to_string();
            assert!(error.contains("does not run"), "{what}: {error}");
            let recognized = recognize(weights, NAME).unwrap().unwrap();
            let held = recognized
                .layout
                .decode(weights, NAME, &[rows, cols])
                .unwrap();
            assert_eq!(held.into_f32(&[rows, cols]), own, "{what}: decode");
            return;
        }
        assert_eq!(weights.float(NAME).unwrap().unwrap(), own, "{what}: float");
        for mode in [Int8Mode::Blocks, Int8Mode::PerRow] {
            let mut report = LoadReport::default();
            let held = weights
                .linear(LAYER, rows, cols, mode, &mut report)
                .unwrap();
            let got = held_values(held, rows, cols);
            assert_eq!(got.len(), own.len(), "{what}");
            for (index, (a, b)) in got.iter().zip(&own).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + max_abs),
                    "{what} ({mode:?}): [{index}] {a} vs {b}"
                );
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_scheme_and_format_reads_back_as_its_own_dequantization(
        (rows, cols, values) in (1usize..5, 0u32..3).prop_flat_map(|(rows, log_blocks)| {
            let cols = 128usize << log_blocks;
            (Just(rows), Just(cols), prop::collection::vec(-4.0f32..4.0, rows * cols))
        })
    ) {
        for scheme in schemes() {
            for format in FORMATS {
                // Rows that do not fit a block type are planned as a fallback, not encoded.
                let fits = match scheme {
                    Scheme::Ggml(ty) => cols.is_multiple_of(ty.block_size()),
                    _ => true,
                };
                if fits && scheme.unsupported_in(format).is_none() {
                    check_scheme_in_format(scheme, format, rows, cols, &values);
                }
            }
        }
    }
}
