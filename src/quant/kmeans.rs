//! Weight sharing by k-means, as in Deep Compression: one codebook of `2^bits` f32 centroids per
//! tensor, and each value stored as the `bits`-bit index of its nearest centroid.
//!
//! # Reference
//!
//! Han, Mao and Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
//! Quantization and Huffman Coding" (ICLR 2016, arXiv:1510.00149), §3 "Trained quantization and
//! weight sharing": k-means over the weights of one layer (no sharing across layers), with
//! `k = 2^bits` shared values stored as a codebook plus `bits`-bit indices. §3.2 compares three
//! initialisations (Forgy/random, density-based, linear) and finds linear best: it spreads the
//! centroids evenly over `[min, max]`, so some stay out at the large-magnitude tails. Those
//! weights are few but matter most, and the other two methods crowd the centroids into the dense
//! middle where they matter least. Linear initialisation is also deterministic, which the
//! service needs: the same input gives the same artifact.
//!
//! Not done here: the paper fine-tunes the centroids by gradient descent afterwards (the
//! "trained" part; quantd has no training data) and Huffman-codes the indices (we store them at
//! fixed width so a reader can index into them).
//!
//! # Algorithm
//!
//! 1. A survey pass checks that every value is finite and finds `min`, `max` and whether the
//!    tensor holds at most `2^bits` distinct values. If it does, those values are the codebook
//!    (ascending, padded to `2^bits` by repeating the largest) and no iteration runs: the
//!    reconstruction is exact. Lloyd from a linear start does not guarantee that, because a
//!    centroid left without values stays where it is.
//! 2. Otherwise centroid `j` starts at `min + (max - min) · j / (2^bits - 1)`, computed in f64
//!    and rounded once to f32 (the last is exactly `max`).
//! 3. Lloyd iterations over the whole tensor: assign every value to its nearest centroid (ties
//!    to the lower index; see `kmeans/nearest.rs` for how this is exact in O(log k) per value),
//!    then move each centroid to the mean of its values, rounded to f32. A centroid without
//!    values keeps its place. The codebook is re-sorted ascending after every update.
//! 4. Stop after `max_iterations`, or when an iteration lowers the total squared error by less
//!    than `tolerance` relative to the error before it, or when the error reaches 0, or at a
//!    fixed point. Each Lloyd step cannot raise the error in exact arithmetic; if rounding makes
//!    one do so, the previous codebook is kept and iteration stops. So the error is
//!    non-increasing from one kept codebook to the next.
//! 5. A final pass packs the index of each value's nearest centroid and computes the error
//!    statistics of the decoded values, chunk by chunk.
//!
//! Equal centroids can occur (duplicates from padding, or an empty cluster that another
//! cluster's mean lands on); the tie rule sends every value to the lowest of their indices, so
//! the higher ones are never referenced.
//!
//! # Cost
//!
//! Each pass reads the tensor once and costs `bits` comparisons per value: about
//! `(iterations + 3) · n · bits` comparisons in all. Memory besides the output (`packed`,
//! `n · bits / 8` bytes) is a few KiB of cluster totals and one chunk of 2^16 f32 for the
//! statistics; nothing proportional to `n`.
//!
//! # Layout
//!
//! - `codebook`: `[2^bits]` f32, ascending.
//! - `packed`: the indices as one little-endian bit stream over the whole tensor in row-major
//!   order: value `i` occupies stream bits `[i · bits, (i + 1) · bits)`, least significant bit
//!   first, and byte `k` holds stream bits `8k..8k + 8` (bit `8k` in its least significant
//!   bit). `packed_bytes(n, bits) = ceil(n · bits / 8)`; the unused high bits of the last byte
//!   are zero and readers reject other values ([`try_dequantize_kmeans`]).
//!
//! `docs/quantd-layouts.md` describes how quantd stores both in safetensors, with a numpy
//! decoder.

// Explicit paths: rustc resolves the children of a file included through `#[path]` beside that
// file rather than in `kmeans/`, and these keep both ways of including this module working.
#[path = "kmeans/nearest.rs"]
mod nearest;
#[path = "kmeans/passes.rs"]
mod passes;
#[cfg(test)]
#[path = "kmeans/tests.rs"]
mod tests;

use self::nearest::NearestCentroid;
use self::passes::{assign_and_total, encode, PassTotals};
use crate::quant::int8::QuantError;
use crate::quant::kernels::ErrorStats;

/// Fewest index bits (4 centroids); at one bit per value the binary scheme is the better fit.
pub const MIN_BITS: u8 = 2;
/// Most index bits: 256 centroids, one byte per index.
pub const MAX_BITS: u8 = 8;
/// Default iteration limit; with linear initialisation the error has usually settled well
/// before.
pub const DEFAULT_MAX_ITERATIONS: u32 = 30;
/// Default stopping threshold on the relative decrease of the total squared error.
pub const DEFAULT_TOLERANCE: f64 = 1e-4;

/// Values per chunk of every pass: `should_continue` is called before each chunk, and the final
/// pass measures one chunk at a time. A multiple of 8, so a chunk of indices starts on a byte,
/// and of the 1024-element blocks of `compare`, so chunked statistics group like whole ones.
const CHUNK_ELEMENTS: usize = 1 << 16;

/// How to run the k-means.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KmeansOptions {
    /// Bits per index, [`MIN_BITS`]`..=`[`MAX_BITS`]; the codebook holds `2^bits` centroids.
    pub bits: u8,
    /// Most Lloyd iterations to run; 0 keeps the linear initialisation (a uniform grid over
    /// `[min, max]`).
    pub max_iterations: u32,
    /// Stop once an iteration lowers the total squared error by less than this fraction of it.
    /// Finite and non-negative; 0 runs until a fixed point or `max_iterations`.
    pub tolerance: f64,
}

impl KmeansOptions {
    /// `bits` with the default iteration limit and tolerance, validated.
    pub fn with_bits(bits: u8) -> Result<Self, KmeansError> {
        let options = KmeansOptions {
            bits,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            tolerance: DEFAULT_TOLERANCE,
        };
        options.validate()?;
        Ok(options)
    }

    /// Checks `bits` and `tolerance` (every `max_iterations` is valid).
    pub fn validate(&self) -> Result<(), KmeansError> {
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) {
            return Err(KmeansError::UnsupportedBits { bits: self.bits });
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(KmeansError::InvalidTolerance {
                tolerance: self.tolerance,
            });
        }
        Ok(())
    }

    /// Entries of the codebook: `2^bits`.
    pub fn codebook_len(&self) -> usize {
        1 << self.bits
    }
}

/// A tensor quantized to a shared codebook.
#[derive(Clone, Debug, PartialEq)]
pub struct KmeansTensor {
    /// The indices, `bits` each, as one little-endian bit stream of
    /// [`packed_bytes`]`(n, bits)` bytes; see the module docs.
    pub packed: Vec<u8>,
    /// `2^bits` centroids, ascending. All zeros for an empty tensor.
    pub codebook: Vec<f32>,
    /// Lloyd iterations run (each a centroid update and a pass to assign and measure). Counts
    /// a last iteration whose codebook was dropped for raising the error; 0 when the
    /// codebook is the tensor's own distinct values.
    pub iterations: u32,
    /// Statistics of [`dequantize_kmeans`]'s output against the input.
    pub stats: ErrorStats,
}

/// Why a tensor could not be quantized with k-means.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum KmeansError {
    /// A non-finite value or cancellation (see [`QuantError`]).
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// `bits` is outside [`MIN_BITS`]`..=`[`MAX_BITS`].
    #[error("k-means needs 2 to 8 bits per index, got {bits}")]
    UnsupportedBits { bits: u8 },
    /// `tolerance` is negative, NaN or infinite.
    #[error("k-means tolerance must be finite and non-negative, got {tolerance}")]
    InvalidTolerance { tolerance: f64 },
}

/// Why packed k-means data cannot be decoded (see [`try_dequantize_kmeans`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KmeansLayoutError {
    /// `bits` is outside [`MIN_BITS`]`..=`[`MAX_BITS`].
    #[error("k-means needs 2 to 8 bits per index, got {bits}")]
    UnsupportedBits { bits: u8 },
    /// The codebook does not hold `2^bits` entries.
    #[error("k-means codebook holds {actual} entries but {bits} bits need {expected}")]
    CodebookLength {
        bits: u8,
        expected: usize,
        actual: usize,
    },
    /// A centroid is NaN or infinite; a writer never stores one.
    #[error("k-means codebook entry {index} is not finite")]
    NonFiniteCentroid { index: usize },
    /// `packed` is not `packed_bytes(n, bits)` long.
    #[error("packed k-means data holds {actual} bytes but {expected} are needed")]
    PackedLength { expected: usize, actual: usize },
    /// Bits after the last index are set; a writer stores zeros there, so this means the data
    /// was written with another element count or width.
    #[error("the last byte of packed k-means data has non-zero padding bits")]
    NonZeroPadding,
}

/// Bytes of `n` indices of `bits` bits each: `ceil(n · bits / 8)`, computed without overflow.
///
/// # Panics
/// If `bits > 8`.
pub fn packed_bytes(n: usize, bits: u8) -> usize {
    assert!(bits <= MAX_BITS, "at most 8 bits per index");
    let bits = usize::from(bits);
    // Eight indices fill exactly `bits` bytes.
    n / 8 * bits + (n % 8 * bits).div_ceil(8)
}

/// Quantizes `src` (any shape, flattened row-major) to a codebook of `2^options.bits`
/// centroids and one index per value; see the module docs for the algorithm.
///
/// Errors on invalid options and on any NaN or infinity ([`QuantError::NonFinite`] with the
/// flat index of the first). Calls `should_continue` before every pass and about every 2^16
/// elements within one, and stops with [`QuantError::Cancelled`] once it returns false. An
/// empty tensor gives no packed bytes and an all-zero codebook.
pub fn quantize_kmeans(
    src: &[f32],
    options: KmeansOptions,
    should_continue: &dyn Fn() -> bool,
) -> Result<KmeansTensor, KmeansError> {
    options.validate()?;
    if src.is_empty() {
        return Ok(KmeansTensor {
            packed: Vec::new(),
            codebook: vec![0.0; options.codebook_len()],
            iterations: 0,
            stats: ErrorStats::default(),
        });
    }
    let fit = fit_codebook(src, options, should_continue)?;
    debug_assert!(
        fit.squared_errors.windows(2).all(|pair| pair[1] <= pair[0]),
        "Lloyd raised the error: {:?}",
        fit.squared_errors
    );
    let (packed, stats) = encode(src, &fit.codebook, u32::from(options.bits), should_continue)?;
    Ok(KmeansTensor {
        packed,
        codebook: fit.codebook,
        iterations: fit.iterations,
        stats,
    })
}

/// The codebook a fit ends with, and how it got there.
struct Fit {
    /// `2^bits` centroids, ascending.
    codebook: Vec<f32>,
    /// See [`KmeansTensor::iterations`].
    iterations: u32,
    /// Total squared error of the initial codebook, then of each kept iteration's; never
    /// increases (checked in debug builds and by the tests).
    squared_errors: Vec<f64>,
}

/// Runs steps 1 to 4 of the module docs on a non-empty `src`.
fn fit_codebook(
    src: &[f32],
    options: KmeansOptions,
    should_continue: &dyn Fn() -> bool,
) -> Result<Fit, QuantError> {
    let bits = u32::from(options.bits);
    let codebook_len = options.codebook_len();
    let survey = survey(src, codebook_len, should_continue)?;
    if let Some(mut codebook) = survey.distinct {
        // Repeats of the largest keep the codebook sorted, and are never referenced.
        let largest = *codebook.last().expect("a non-empty tensor has a value");
        codebook.resize(codebook_len, largest);
        return Ok(Fit {
            codebook,
            iterations: 0,
            squared_errors: vec![0.0],
        });
    }
    let mut codebook = linear_codebook(survey.min, survey.max, codebook_len);
    let mut table = NearestCentroid::new(&codebook);
    let mut totals = assign_and_total(src, &table, bits, should_continue)?;
    let mut squared_errors = vec![totals.squared_error];
    let mut iterations = 0;
    while iterations < options.max_iterations && totals.squared_error > 0.0 {
        let candidate = updated_codebook(&codebook, &table, &totals);
        if candidate == codebook {
            // A fixed point: another pass would measure the same error.
            break;
        }
        let candidate_table = NearestCentroid::new(&candidate);
        let candidate_totals = assign_and_total(src, &candidate_table, bits, should_continue)?;
        iterations += 1;
        let previous_error = totals.squared_error;
        if candidate_totals.squared_error > previous_error {
            // Only rounding (of the means to f32, of the sums) can do this; keep the better.
            break;
        }
        (codebook, table, totals) = (candidate, candidate_table, candidate_totals);
        squared_errors.push(totals.squared_error);
        if (previous_error - totals.squared_error) / previous_error < options.tolerance {
            break;
        }
    }
    Ok(Fit {
        codebook,
        iterations,
        squared_errors,
    })
}

/// What the survey pass learns.
struct Survey {
    min: f32,
    max: f32,
    /// The distinct values, ascending (-0.0 counted as 0.0), if there are at most the limit.
    distinct: Option<Vec<f32>>,
}

/// One pass over a non-empty `src`: finiteness, range and distinct values up to `limit`.
fn survey(
    src: &[f32],
    limit: usize,
    should_continue: &dyn Fn() -> bool,
) -> Result<Survey, QuantError> {
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    let mut distinct = Some(Vec::with_capacity(limit));
    for (chunk_idx, chunk) in src.chunks(CHUNK_ELEMENTS).enumerate() {
        if !should_continue() {
            return Err(QuantError::Cancelled);
        }
        if let Some(offset) = chunk.iter().position(|value| !value.is_finite()) {
            return Err(QuantError::NonFinite {
                index_hint: chunk_idx * CHUNK_ELEMENTS + offset,
            });
        }
        for &value in chunk {
            min = min.min(value);
            max = max.max(value);
        }
        if let Some(values) = &mut distinct {
            if !collect_distinct(chunk, values, limit) {
                // Typical weights get here within the first few hundred values.
                distinct = None;
            }
        }
    }
    Ok(Survey { min, max, distinct })
}

/// Adds the values of `chunk` not yet in the sorted `values`; false once there would be more
/// than `limit`.
fn collect_distinct(chunk: &[f32], values: &mut Vec<f32>, limit: usize) -> bool {
    for &value in chunk {
        // -0.0 and 0.0 are one value (and decode alike); keep the positive one.
        let value = value + 0.0;
        if let Err(position) = values.binary_search_by(|probe| probe.total_cmp(&value)) {
            if values.len() == limit {
                return false;
            }
            values.insert(position, value);
        }
    }
    true
}

/// `len` centroids evenly spaced over `[min, max]` (Deep Compression's linear initialisation),
/// computed in f64 and rounded once, so they are ascending; the ends are exactly `min` and `max`.
fn linear_codebook(min: f32, max: f32, len: usize) -> Vec<f32> {
    let (low, high) = (f64::from(min), f64::from(max));
    let last = len - 1;
    (0..len)
        .map(|j| {
            let centroid = if j == last {
                max
            } else {
                (low + (high - low) * (j as f64 / last as f64)) as f32
            };
            // No -0.0 in a codebook: it would sort below 0.0 yet compare equal to it.
            centroid + 0.0
        })
        .collect()
}

/// The Lloyd update: each centroid with values moves to their mean (rounded to f32), the others
/// keep their place; then the codebook is sorted ascending again.
fn updated_codebook(codebook: &[f32], table: &NearestCentroid, totals: &PassTotals) -> Vec<f32> {
    let mut next = codebook.to_vec();
    for rank in 0..table.n_distinct() {
        let count = totals.counts[rank];
        if count == 0 {
            continue;
        }
        let mean = f64::from(table.value(rank)) + totals.residual_sums[rank] / count as f64;
        next[usize::from(table.codebook_index(rank))] = (mean as f32) + 0.0;
    }
    next.sort_by(f32::total_cmp);
    next
}

/// Writes `codebook[index]` for the first `out.len()` indices of a packed stream of `bits`-bit
/// indices (`codebook` holds `2^bits` entries, `packed` at least `packed_bytes(out.len(), bits)`
/// bytes). This is what every reader computes.
fn unpack_values(packed: &[u8], bits: u32, codebook: &[f32], out: &mut [f32]) {
    let mask = (1u32 << bits) - 1;
    let bits = bits as usize;
    for (value_idx, value) in out.iter_mut().enumerate() {
        let bit_offset = value_idx * bits;
        let byte_idx = bit_offset / 8;
        // An index of at most 8 bits spans at most two bytes.
        let low = u32::from(packed[byte_idx]);
        let high = packed.get(byte_idx + 1).map_or(0, |&byte| u32::from(byte));
        let index = ((low | (high << 8)) >> (bit_offset % 8)) & mask;
        *value = codebook[index as usize];
    }
}

/// Decodes `n` values from `packed` and `codebook` as stored by [`quantize_kmeans`], checking
/// the layout first: `bits`, lengths, finite centroids and zero padding bits.
///
/// The element count is bounded by the data itself (`packed` must be `packed_bytes(n, bits)`
/// long), so an untrusted `n` cannot make this allocate more than `4 · packed.len()` values.
pub fn try_dequantize_kmeans(
    packed: &[u8],
    codebook: &[f32],
    bits: u8,
    n: usize,
) -> Result<Vec<f32>, KmeansLayoutError> {
    if !(MIN_BITS..=MAX_BITS).contains(&bits) {
        return Err(KmeansLayoutError::UnsupportedBits { bits });
    }
    let codebook_len = 1usize << bits;
    if codebook.len() != codebook_len {
        return Err(KmeansLayoutError::CodebookLength {
            bits,
            expected: codebook_len,
            actual: codebook.len(),
        });
    }
    if let Some(index) = codebook.iter().position(|centroid| !centroid.is_finite()) {
        return Err(KmeansLayoutError::NonFiniteCentroid { index });
    }
    let expected_bytes = packed_bytes(n, bits);
    if packed.len() != expected_bytes {
        return Err(KmeansLayoutError::PackedLength {
            expected: expected_bytes,
            actual: packed.len(),
        });
    }
    // Bits of the last byte that hold index bits; the others must be zero.
    let used_bits = (n % 8 * usize::from(bits)) % 8;
    if used_bits != 0 && packed.last().is_some_and(|&last| last >> used_bits != 0) {
        return Err(KmeansLayoutError::NonZeroPadding);
    }
    let mut out = vec![0.0f32; n];
    unpack_values(packed, u32::from(bits), codebook, &mut out);
    Ok(out)
}

/// Reference dequantization: `codebook[index]` for each of the `n` indices, exactly the values
/// the statistics of [`quantize_kmeans`] were computed from (so it reproduces them).
///
/// # Panics
/// If the data does not have the layout [`quantize_kmeans`] writes; see
/// [`try_dequantize_kmeans`] for data from outside.
pub fn dequantize_kmeans(packed: &[u8], codebook: &[f32], bits: u8, n: usize) -> Vec<f32> {
    try_dequantize_kmeans(packed, codebook, bits, n)
        .unwrap_or_else(|error| panic!("dequantize_kmeans: {error}"))
}
