//! Run-time dispatched quantization kernels.
//!
//! A [`Kernels`] value is a table of plain function pointers for one instruction set. The
//! service resolves `QUANTD_KERNELS` ([`KernelChoice`]) once at start-up into
//! `crate::dispatch::Dispatch`, which calls [`select`] here (and the other tables' `select`)
//! and is passed down to every quantization job and inference as one value. Nothing in here
//! detects features per call or logs anything.
//!
//! The scalar versions in [`scalar`](mod@scalar) define every result. The SIMD versions must produce
//! bit-identical quantized bytes, `absmax`, `min_max`, `max_abs_err` and `sum_sq_deq`; only the
//! float sums `sum_sq_err`, `sum_sq_ref` and `dot` of [`ErrorStats`] may differ, by summation
//! order (see [`STATS_BLOCK`]). `tests.rs` checks every variant usable on the running CPU
//! against the scalar one on edge cases and random inputs.
//!
//! Performance notes (x86_64): the quantize loop is compute-bound in cache (about 25 GB/s of
//! f32 per Zen 4 core with AVX-512), so it keeps work off the multiply/FMA ports: one f32
//! clamp, an integer clamp, an integer sum of squared steps and a one-instruction absolute
//! maximum. For tensors larger than the caches, `quantize_i8_streaming` adds non-temporal
//! stores and a prefetch of the next row.
//!
//! Safety model: the SIMD functions are `unsafe fn`s with `#[target_feature]`. Each is wrapped
//! in a safe `fn` that lives only inside a private static table, and [`select`] hands that table
//! out only after run-time detection confirmed the features. So holding a `&Kernels` is the proof
//! that its functions may run on this CPU.

pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

/// Number of elements whose error terms are summed in f32 before being folded into the f64
/// totals of [`ErrorStats`].
///
/// f32 lanes keep the SIMD loop cheap; bounding the run to 1024 elements keeps the f32 rounding
/// error of each partial sum around 1e-6 relative. Scalar and SIMD kernels block identically
/// (blocks start at multiples of this from the start of the slice), so their sums differ only by
/// the order inside a block.
pub const STATS_BLOCK: usize = 1024;

/// An instruction set a kernel table is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust, always available; the reference.
    Scalar,
    /// x86_64 AVX2 + FMA (256-bit).
    Avx2,
    /// x86_64 AVX-512 F + BW + DQ (512-bit, masked tails).
    Avx512,
    /// aarch64 Advanced SIMD (128-bit).
    Neon,
}

impl Isa {
    /// The lower-case name used in flags, logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// What the operator asked for: the best ISA of this CPU, or one ISA in particular.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    Auto,
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl From<Isa> for KernelChoice {
    fn from(isa: Isa) -> Self {
        match isa {
            Isa::Scalar => KernelChoice::Scalar,
            Isa::Avx2 => KernelChoice::Avx2,
            Isa::Avx512 => KernelChoice::Avx512,
            Isa::Neon => KernelChoice::Neon,
        }
    }
}

impl FromStr for KernelChoice {
    type Err = KernelError;

    /// Parses `auto`, `scalar`, `avx2`, `avx512` or `neon` (ASCII case-insensitive).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input.to_ascii_lowercase().as_str() {
            "auto" => Ok(KernelChoice::Auto),
            "scalar" => Ok(KernelChoice::Scalar),
            "avx2" => Ok(KernelChoice::Avx2),
            "avx512" => Ok(KernelChoice::Avx512),
            "neon" => Ok(KernelChoice::Neon),
            _ => Err(KernelError::UnknownChoice {
                input: input.to_owned(),
            }),
        }
    }
}

/// Why a kernel table could not be chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The text is not one of the known kernel names.
    #[error("unknown kernel `{input}`: expected one of auto, scalar, avx2, avx512, neon")]
    UnknownChoice { input: String },
    /// The ISA exists but this CPU (or this build's target architecture) cannot run it.
    #[error("kernel `{requested}` is not supported by this CPU (available: {available})")]
    Unavailable { requested: Isa, available: String },
}

/// Parameters of one affine int8 mapping:
/// `q = clamp(round_ties_even(x * inv_scale) + zero_point, -128, 127)`.
///
/// Callers pass a finite, positive `scale` and `inv_scale == 1 / scale` (finite and non-zero),
/// and a `zero_point` in `-128..=127`. A zero scale must be replaced by the caller (the int8
/// scheme uses 1.0 for all-zero channels); the kernels only check this in debug builds.
#[derive(Clone, Copy, Debug)]
pub struct I8Params {
    pub scale: f32,
    pub inv_scale: f32,
    pub zero_point: i32,
}

impl I8Params {
    /// Checks the preconditions above in debug builds; every `quantize_i8` calls it.
    pub(crate) fn debug_assert_valid(&self) {
        debug_assert!(
            self.scale.is_finite() && self.scale > 0.0,
            "scale must be finite and positive: {self:?}"
        );
        debug_assert!(
            self.inv_scale.is_finite() && self.inv_scale > 0.0,
            "inv_scale must be finite and positive: {self:?}"
        );
        debug_assert!(
            (-128..=127).contains(&self.zero_point),
            "zero_point must be in -128..=127: {self:?}"
        );
    }
}

/// Error statistics of dequantized values against the originals, fused into quantization.
///
/// With `deq = (q - zero_point) as f32 * scale` and `err = deq - x`: `sum_sq_err = Σ err²`,
/// `sum_sq_ref = Σ x²`, `sum_sq_deq = Σ deq²`, `dot = Σ x·deq`, `max_abs_err = max |err|`.
///
/// `max_abs_err` is exact and `sum_sq_deq` is computed exactly as `scale² · Σ (q - zero_point)²`
/// (an integer sum), so both are identical across ISAs. The other sums are accumulated in f32
/// per [`STATS_BLOCK`] and may differ across ISAs by summation order (about 1e-6 relative).
/// Because of those f32 partial sums, elements beyond about 1e17 in magnitude can overflow a
/// sum to +Inf; the quantized bytes are unaffected.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    pub n: u64,
    pub sum_sq_err: f64,
    pub sum_sq_ref: f64,
    pub sum_sq_deq: f64,
    pub dot: f64,
    pub max_abs_err: f32,
}

impl ErrorStats {
    /// Adds the statistics of another, disjoint set of elements.
    pub fn merge(&mut self, other: &ErrorStats) {
        self.n += other.n;
        self.sum_sq_err += other.sum_sq_err;
        self.sum_sq_ref += other.sum_sq_ref;
        self.sum_sq_deq += other.sum_sq_deq;
        self.dot += other.dot;
        self.max_abs_err = self.max_abs_err.max(other.max_abs_err);
    }
}

/// Partial sums of at most one [`STATS_BLOCK`], as the scalar code produces them (the whole
/// scalar kernel, and the tails of the AVX2 and NEON kernels).
///
/// `sum_sq_steps` is `Σ (q - zero_point)²`: at most 1024 · 255² < 2^27, exact in a `u32`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BlockSums {
    pub sum_sq_err: f32,
    pub sum_sq_ref: f32,
    pub dot: f32,
    pub sum_sq_steps: u32,
    pub max_abs_err: f32,
}

/// Running totals of one kernel call, turned into [`ErrorStats`] by [`Totals::finish`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Totals {
    pub sum_sq_err: f64,
    pub sum_sq_ref: f64,
    pub dot: f64,
    /// Exact: below 2^53 for any tensor of fewer than 2^37 elements.
    pub sum_sq_steps: u64,
    pub max_abs_err: f32,
}

impl Totals {
    /// Folds one block's partial sums in.
    pub fn add_block(&mut self, block: &BlockSums) {
        self.sum_sq_err += f64::from(block.sum_sq_err);
        self.sum_sq_ref += f64::from(block.sum_sq_ref);
        self.dot += f64::from(block.dot);
        self.sum_sq_steps += u64::from(block.sum_sq_steps);
        self.max_abs_err = self.max_abs_err.max(block.max_abs_err);
    }

    /// The statistics of `n` elements quantized with `scale`.
    pub fn finish(self, n: usize, scale: f32) -> ErrorStats {
        // The product of two f32 is exact in f64, and so is the integer sum, so every ISA gets
        // the same single rounding here.
        let scale_squared = f64::from(scale) * f64::from(scale);
        ErrorStats {
            n: n as u64,
            sum_sq_err: self.sum_sq_err,
            sum_sq_ref: self.sum_sq_ref,
            sum_sq_deq: self.sum_sq_steps as f64 * scale_squared,
            dot: self.dot,
            max_abs_err: self.max_abs_err,
        }
    }
}

/// A table of kernels for one ISA, chosen once with [`select`].
///
/// The fields are plain `fn` pointers so a call costs one indirect jump and the table can be
/// copied into any thread. Semantics (defined by [`scalar`](mod@scalar)):
/// - `absmax`: `max |x|` computed on bit patterns (`bits & 0x7fff_ffff`, integer max), so it is
///   exact and order-independent. NaN if any NaN is present (the largest NaN payload), +Inf if
///   any ±Inf and no NaN, 0.0 for an empty slice. Callers reject tensors whose absmax is not
///   finite before quantizing.
/// - `min_max`: `(min, max)` in IEEE 754 total order, computed on integer keys so it is exact
///   and identical across ISAs; `(0.0, 0.0)` for an empty slice. For finite data that is the
///   usual min and max (a `-0.0` may stand for `0.0`: they compare equal). Any NaN makes `min`
///   or `max` a NaN and any ±Inf shows as such, so one pass both finds the range and rejects
///   non-finite tensors.
/// - `quantize_i8`: see [`scalar::quantize_i8`]. Requires `dst.len() == src.len()` (panics
///   otherwise), finite input and valid [`I8Params`]; for non-finite input the bytes are
///   unspecified (always in range) and the statistics become non-finite.
/// - `quantize_i8_streaming`: `quantize_i8` for outputs far larger than the caches. It writes
///   `dst` with non-temporal stores (no read of each destination line before writing it) and
///   hints the lines of `prefetch` (any length; never read) into cache, one per line of
///   `src`: passing the next row lets memory fetch it while this row is computed, instead of
///   idling during the compute-bound pass. Same results as `quantize_i8` up to the order of
///   the f32 sums; slower than it when `dst` is small and hot. The scalar and NEON tables
///   ignore both hints.
pub struct Kernels {
    pub isa: Isa,
    pub absmax: fn(&[f32]) -> f32,
    pub min_max: fn(&[f32]) -> (f32, f32),
    pub quantize_i8: fn(src: &[f32], params: I8Params, dst: &mut [i8]) -> ErrorStats,
    pub quantize_i8_streaming:
        fn(src: &[f32], params: I8Params, dst: &mut [i8], prefetch: &[f32]) -> ErrorStats,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Kernels")
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

static SCALAR: Kernels = Kernels {
    isa: Isa::Scalar,
    absmax: scalar::absmax,
    min_max: scalar::min_max,
    quantize_i8: scalar::quantize_i8,
    quantize_i8_streaming: scalar::quantize_i8_streaming,
};

/// The portable reference table; always available.
pub fn scalar() -> &'static Kernels {
    &SCALAR
}

/// Whether this CPU can run the kernels written for `isa`.
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
fn table_for_supported(isa: Isa) -> &'static Kernels {
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

/// Every ISA whose kernels can run on this CPU, best last. Scalar is always first.
pub fn available() -> Vec<Isa> {
    [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&isa| is_supported(isa))
        .collect()
}

/// The fastest ISA this CPU supports, detected at run time (the binary is built for a baseline
/// CPU, so compile-time features say nothing about the machine it runs on).
pub fn detect_best() -> Isa {
    available().last().copied().unwrap_or(Isa::Scalar)
}

/// Resolves a choice to a kernel table, or says why the CPU cannot honour it.
pub fn select(choice: KernelChoice) -> Result<&'static Kernels, KernelError> {
    let requested = match choice {
        KernelChoice::Auto => detect_best(),
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
