//! ggml's legacy block quantizers (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), byte for byte.
//!
//! The bytes are those of the `gguf` Python package (`gguf/quants.py`, PyPI 0.19.0), which
//! reproduces ggml's reference quantizers `quantize_row_{q8_0,q4_0,...}_ref` of
//! `ggml/src/ggml-quants.c` in numpy; the layouts are ggml's `block_*` structs of
//! `ggml-common.h` ([`blocks`]). [`scalar`](mod@scalar) defines every byte, including the
//! rounding conventions, which are easy to get subtly wrong:
//!
//! - Q8_0: `d = absmax / 127` (f32), `q = round_half_away_from_zero(x * (1 / d))`.
//! - Q4_0 / Q5_0: `d = max / -8` (`/ -16`) where `max` is the *signed* element of largest
//!   magnitude (the first one on ties), `q = trunc(x * id + 8.5)` (`+ 16.5`) clamped to 15
//!   (31): a tie after scaling rounds up, a truncation rather than round-to-even.
//! - Q4_1 / Q5_1: `d = (max - min) / 15` (`/ 31`), `m = min`,
//!   `q = trunc((x - min) * id + 0.5)` clamped to 15 (31).
//! - Every step is one f32 operation with one rounding, never fused; the f32 `d` quantizes,
//!   and only the stored copy is rounded to f16; `id = 0` when `d == 0`. (ggml built with FMA
//!   contraction, and some gguf-py versions that emulate it in float64, fuse `x * id + 8.5`
//!   in Q4_0 / Q5_0 and differ in about one element in 10^7; `tests/gguf_py.rs` pins one such
//!   element per type.)
//!
//! Like [`crate::quant::kernels`], the quantizers are run-time dispatched: [`select`] picks a
//! [`GgmlKernels`] table once, from the same [`KernelChoice`] the int8 kernels use, and every
//! SIMD table reproduces the scalar bytes exactly (`tests.rs` checks them against each other
//! and against fixtures made by gguf-py and ggml).
//!
//! ISAs: x86_64 AVX2 (+F16C) and AVX-512 (F + BW) process groups of 8 / 16 blocks in two
//! passes (per-block scales through one transposing reduction per group, then the quants),
//! software-pipelined so the scale latency of one group hides behind the quants of the
//! previous one; aarch64 NEON goes block by block with its across-vector max/min. On the
//! development machine (Zen 4, 2 vCPUs) AVX-512 quantizes 26-37 GB/s of f32 in cache and
//! 15-17 GB/s from memory on one core, against 21-25 GB/s for a plain read; the scalar
//! reference runs at 1-2 GB/s. Non-temporal stores (through a line-aligned staging buffer)
//! and software prefetch were tried and measured no faster there, so the kernels use plain
//! stores.
//!
//! Input policy: the caller rejects tensors with NaN or ±Inf before quantizing (the int8
//! scheme does so with `Kernels::min_max`). For such input the bytes are unspecified and may
//! differ between ISAs, but no function panics or misbehaves. Finite input, however extreme
//! (subnormals, ±f32::MAX, blocks whose `1 / d` overflows), gives identical bytes on every ISA.
//!
//! Safety model: as in `kernels`, the SIMD functions are `unsafe fn`s with
//! `#[target_feature]`, wrapped in private safe `fn`s that live only inside static tables that
//! [`select`] hands out after run-time detection, so holding a `&GgmlKernels` proves its
//! functions may run on this CPU.

pub mod blocks;
pub mod kquants;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(test)]
mod tests;

use std::fmt;

pub use crate::quant::kernels::{Isa, KernelChoice, KernelError};
pub use blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK};
pub use kquants::{
    dequantize_q4_k, dequantize_q6_k, quantize_q4_k, quantize_q6_k, BlockQ4K, BlockQ6K, QK_K,
};

/// A ggml tensor type this module can write: the float types, the legacy 32-element block
/// types and the 256-element K-quant super-blocks Q4_K and Q6_K ([`kquants`]).
/// [`GgmlType::id`] is ggml's `enum ggml_type` value, stored in GGUF tensor infos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    /// ggml's `Q4_K` (`block_q4_K`, 144 bytes per 256 elements).
    Q4K,
    /// ggml's `Q6_K` (`block_q6_K`, 210 bytes per 256 elements).
    Q6K,
}

impl GgmlType {
    /// Every type, in `ggml_type` order.
    pub const ALL: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ];

    /// ggml's `enum ggml_type` value (`GGML_TYPE_Q4_0 = 2`, ...), as written in GGUF files.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q6K => 14,
        }
    }

    /// The type with ggml id `id`, if it is one of ours.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|ty| ty.id() == id)
    }

    /// Elements per block: 1 for the float types, [`QK`] = 32 for the legacy block types,
    /// [`QK_K`] = 256 for the K-quants.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                QK
            }
            GgmlType::Q4K | GgmlType::Q6K => QK_K,
        }
    }

    /// Bytes per block (ggml's `type_size`).
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q4_0 => size_of::<BlockQ4_0>(),
            GgmlType::Q4_1 => size_of::<BlockQ4_1>(),
            GgmlType::Q5_0 => size_of::<BlockQ5_0>(),
            GgmlType::Q5_1 => size_of::<BlockQ5_1>(),
            GgmlType::Q8_0 => size_of::<BlockQ8_0>(),
            GgmlType::Q4K => size_of::<BlockQ4K>(),
            GgmlType::Q6K => size_of::<BlockQ6K>(),
        }
    }

    /// ggml's lower-case type name (`"q8_0"`, `"f16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q4K => "q4_k",
            GgmlType::Q6K => "q6_k",
        }
    }

    /// Bytes of a row of `n_elements`, or `None` unless `n_elements` is a multiple of the
    /// block size (or the byte count overflows).
    pub fn row_bytes(self, n_elements: usize) -> Option<usize> {
        if !n_elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }

    /// Whether this is a block type with a quantizer in [`GgmlKernels`].
    pub fn is_block_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A row quantizer: `src` holds whole blocks, `dst` receives their bytes.
pub type RowQuantizer = fn(src: &[f32], dst: &mut [u8]);

/// A table of block quantizers for one ISA, chosen once with [`select`].
///
/// Every function takes whole rows (any number of complete 32-element blocks, the blocks of
/// several rows back to back included) and writes raw little-endian blocks, ready for a GGUF
/// tensor: `src.len()` must be a multiple of 32 and `dst.len()` equal to
/// `ty.row_bytes(src.len())`; both are checked, and a mismatch panics. The bytes are those of
/// [`scalar`](mod@scalar) on every ISA (see the module docs for non-finite input).
pub struct GgmlKernels {
    pub isa: Isa,
    pub quantize_q8_0: RowQuantizer,
    pub quantize_q4_0: RowQuantizer,
    pub quantize_q4_1: RowQuantizer,
    pub quantize_q5_0: RowQuantizer,
    pub quantize_q5_1: RowQuantizer,
}

impl GgmlKernels {
    /// The row quantizer for a block type; `None` for F32 and F16, which [`quantize`] encodes
    /// without a kernel.
    pub fn quantizer(&self, ty: GgmlType) -> Option<RowQuantizer> {
        match ty {
            GgmlType::Q8_0 => Some(self.quantize_q8_0),
            GgmlType::Q4_0 => Some(self.quantize_q4_0),
            GgmlType::Q4_1 => Some(self.quantize_q4_1),
            GgmlType::Q5_0 => Some(self.quantize_q5_0),
            GgmlType::Q5_1 => Some(self.quantize_q5_1),
            // The K-quants have only their scalar reference, on every ISA.
            GgmlType::Q4K => Some(kquants::quantize_q4_k),
            GgmlType::Q6K => Some(kquants::quantize_q6_k),
            GgmlType::F32 | GgmlType::F16 => None,
        }
    }
}

impl fmt::Debug for GgmlKernels {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("GgmlKernels")
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

static SCALAR: GgmlKernels = GgmlKernels {
    isa: Isa::Scalar,
    quantize_q8_0: scalar::quantize_q8_0,
    quantize_q4_0: scalar::quantize_q4_0,
    quantize_q4_1: scalar::quantize_q4_1,
    quantize_q5_0: scalar::quantize_q5_0,
    quantize_q5_1: scalar::quantize_q5_1,
};

/// The portable reference table; always available.
pub fn scalar() -> &'static GgmlKernels {
    &SCALAR
}

/// Whether this CPU can run the quantizers written for `isa`.
fn is_supported(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86_64::avx2_supported(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86_64::avx512_supported(),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => aarch64::neon_supported(),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// The table for `isa`. Callers must have checked [`is_supported`]: the SIMD tables run
/// instructions the CPU might lack.
fn table_for_supported(isa: Isa) -> &'static GgmlKernels {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &x86_64::AVX2,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &x86_64::AVX512,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &aarch64::NEON,
        _ => &SCALAR,
    }
}

/// Every ISA whose quantizers can run on this CPU, best last. Scalar is always first.
pub fn available() -> Vec<Isa> {
    [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&isa| is_supported(isa))
        .collect()
}

/// Resolves a choice to a quantizer table (`Auto`: the best this CPU runs, detected at run
/// time), or says why the CPU cannot honour it.
pub fn select(choice: KernelChoice) -> Result<&'static GgmlKernels, KernelError> {
    let requested = match choice {
        KernelChoice::Auto => available().last().copied().unwrap_or(Isa::Scalar),
        KernelChoice::Scalar => Isa::Scalar,
        KernelChoice::Avx2 => Isa::Avx2,
        KernelChoice::Avx512 => Isa::Avx512,
        KernelChoice::Neon => Isa::Neon,
    };
    if !is_supported(requested) {
        let available = available()
            .iter()
            .map(|isa| isa.name())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(KernelError::Unavailable {
            requested,
            available,
        });
    }
    Ok(table_for_supported(requested))
}

/// Panics unless `src` is whole blocks of `ty` and `dst` exactly their bytes. Every quantizer
/// calls it before touching memory; the SIMD code relies on it.
pub(crate) fn check_row_lengths(ty: GgmlType, src: &[f32], dst: &[u8]) {
    let expected = ty.row_bytes(src.len()).unwrap_or_else(|| {
        panic!(
            "{ty}: {} elements is not a whole number of {}-element blocks",
            src.len(),
            ty.block_size()
        )
    });
    assert_eq!(
        dst.len(),
        expected,
        "{ty}: dst must hold the {} blocks of {} bytes of {} elements",
        src.len() / ty.block_size(),
        ty.type_size(),
        src.len()
    );
}

/// Quantizes whole rows of finite f32 into `ty`'s raw little-endian blocks, ready for a GGUF
/// file: block types through `kernels`, F32 as its bytes, F16 rounded to nearest even.
///
/// # Panics
/// Unless `src.len()` is a multiple of `ty.block_size()` and
/// `dst.len() == ty.row_bytes(src.len())`.
pub fn quantize(kernels: &GgmlKernels, ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    match kernels.quantizer(ty) {
        Some(row_quantizer) => row_quantizer(src, dst),
        None => {
            check_row_lengths(ty, src, dst);
            match ty {
                GgmlType::F16 => scalar::encode_f16(src, dst),
                _ => scalar::encode_f32(src, dst),
            }
        }
    }
}

/// Decodes raw blocks of `ty` into floats with gguf-py's arithmetic (scalar reference; also
/// F32 and F16).
///
/// # Panics
/// Unless `dst.len()` is a multiple of `ty.block_size()` and
/// `src.len() == ty.row_bytes(dst.len())`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let expected = ty.row_bytes(dst.len()).unwrap_or_else(|| {
        panic!(
            "{ty}: {} elements is not a whole number of {}-element blocks",
            dst.len(),
            ty.block_size()
        )
    });
    assert_eq!(
        src.len(),
        expected,
        "{ty}: src must be the bytes of {} elements",
        dst.len()
    );
    match ty {
        GgmlType::F32 => {
            for (value, bytes) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *value = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            }
        }
        GgmlType::F16 => {
            for (value, bytes) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *value = scalar::f16_value(u16::from_le_bytes([bytes[0], bytes[1]]));
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
            for (block, out) in src
                .chunks_exact(ty.type_size())
                .zip(dst.chunks_exact_mut(QK))
            {
                scalar::dequantize_block(ty, block, out);
            }
        }
        GgmlType::Q4K => kquants::dequantize_q4_k(src, dst),
        GgmlType::Q6K => kquants::dequantize_q6_k(src, dst),
    }
}
