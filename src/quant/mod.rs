//! The pure quantization core: FP32 weights in, quantized bytes, scales and error statistics
//! out.
//!
//! This module owns the numeric side of `quantd` and nothing else. It is plain synchronous code
//! over slices: no I/O, no logging, no async runtime, no wire formats. The service layer reads
//! tensors, picks a kernel table once at start-up (and logs that choice), calls into here on a
//! worker thread and writes the results out.
//!
//! Reading order:
//! - [`kernels`]: run-time dispatched primitives (`absmax`, `min_max`, fused `quantize_i8`) with
//!   one scalar reference that defines every result, and per-ISA SIMD versions checked against it.
//! - [`metrics`]: turns the fused [`ErrorStats`] into the figures a user reads (MSE, SQNR, ...).
//! - [`int8`]: the int8 scheme over one tensor (per-channel or per-tensor, symmetric or
//!   asymmetric), built on a kernel table.

pub mod binary;
pub mod convert;
pub mod fp8;
pub mod ggml;
pub mod int4;
pub mod int8;
pub mod kernels;
pub mod kmeans;
pub mod layout;
pub mod metrics;
pub mod nf4;
mod rows;
pub mod ternary;

pub use int8::{
    dequantize_int8, quantize_int8, quantize_int8_cancellable, quantize_int8_into, Granularity,
    Int8Options, Int8Scales, Int8Tensor, QuantError,
};
pub use kernels::{
    available, detect_best, scalar, select, ErrorStats, I8Params, Isa, KernelChoice, KernelError,
    Kernels,
};
pub use metrics::TensorMetrics;
