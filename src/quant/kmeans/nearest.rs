//! Exact nearest-centroid lookup in `bits` comparisons per value.
//!
//! In one dimension the values nearest to each centroid of a sorted codebook form intervals
//! separated by the midpoints of neighbouring centroids, so finding the nearest centroid is a
//! binary search among the midpoints: O(log k) instead of O(k) distance computations.
//!
//! Exactness: a midpoint `(a + b) / 2` computed in floating point can be off by one rounding,
//! and a value sitting exactly on the computed midpoint would then go to the wrong side. So the
//! table does not store midpoints. It stores, for each pair of neighbouring distinct centroids
//! `a < b`, the smallest f32 whose exact distance to `b` is strictly less than to `a`
//! ([`upper_threshold`]); a value goes to `b` or beyond exactly when it is at least that
//! threshold. Comparing f32 with f32 is exact, so the search returns the true nearest centroid
//! with ties (a value exactly halfway) to the lower one. Equal centroids are looked up as one:
//! the tie rule sends every value to the lowest index among them.

/// Slots of each table: 256 distinct centroids and their 255 thresholds, the most `bits = 8`
/// allows. One fixed size for every `bits` lets a mask stand in for bounds checks.
const TABLE_SLOTS: usize = 256;

/// The lookup table of one sorted codebook.
pub(super) struct NearestCentroid {
    /// `thresholds[r]` is the smallest f32 nearer to `values[r + 1]` than to `values[r]`;
    /// slots past the last pair hold +∞, which no finite value reaches. Strictly increasing
    /// over the used slots (each lies in `(values[r], values[r + 1]]`).
    thresholds: [f32; TABLE_SLOTS],
    /// The distinct centroids, ascending; `values[rank]` for `rank < n_distinct`.
    values: [f32; TABLE_SLOTS],
    /// For each rank, the lowest codebook index holding `values[rank]`.
    codebook_index: [u8; TABLE_SLOTS],
    n_distinct: usize,
}

impl NearestCentroid {
    /// Builds the table of `codebook`, which must be sorted ascending, finite, and hold 1 to 256
    /// entries.
    ///
    /// # Panics
    /// If `codebook` is empty, longer than 256 entries or not sorted.
    pub fn new(codebook: &[f32]) -> Self {
        assert!(
            (1..=TABLE_SLOTS).contains(&codebook.len()),
            "a codebook holds 1 to 256 centroids"
        );
        let mut table = NearestCentroid {
            thresholds: [f32::INFINITY; TABLE_SLOTS],
            values: [0.0; TABLE_SLOTS],
            codebook_index: [0; TABLE_SLOTS],
            n_distinct: 0,
        };
        for (index, &value) in codebook.iter().enumerate() {
            debug_assert!(value.is_finite(), "centroids are finite");
            if let Some(last_rank) = table.n_distinct.checked_sub(1) {
                let previous = table.values[last_rank];
                assert!(previous <= value, "the codebook must be sorted ascending");
                if previous == value {
                    // A duplicate never wins a tie against the lower index already in place.
                    continue;
                }
                table.thresholds[last_rank] = upper_threshold(previous, value);
            }
            table.values[table.n_distinct] = value;
            // `codebook.len() <= 256`, so the index fits.
            table.codebook_index[table.n_distinct] = index as u8;
            table.n_distinct += 1;
        }
        table
    }

    /// Number of distinct centroids.
    pub fn n_distinct(&self) -> usize {
        self.n_distinct
    }

    /// The centroid of rank `rank` (`rank < n_distinct()`).
    #[inline(always)]
    pub fn value(&self, rank: usize) -> f32 {
        self.values[rank % TABLE_SLOTS]
    }

    /// The codebook index of rank `rank` (`rank < n_distinct()`).
    #[inline(always)]
    pub fn codebook_index(&self, rank: usize) -> u8 {
        self.codebook_index[rank % TABLE_SLOTS]
    }

    /// The rank of the distinct centroid nearest to `value` (ties to the lower), for a table
    /// built from a codebook of at most `2^BITS` entries.
    ///
    /// Counts the thresholds `<= value` with a fixed-depth binary search over the
    /// `2^BITS - 1` first slots: `BITS` steps, each a load, a compare and a conditional add
    /// the compiler emits without a branch (the outcome is data-dependent and would mispredict
    /// about half the time). `BITS` is a constant, so the loop unrolls.
    #[inline(always)]
    pub fn rank<const BITS: u32>(&self, value: f32) -> usize {
        let mut rank = 0usize;
        let mut step = 1usize << (BITS - 1);
        while step > 0 {
            // rank + step - 1 <= 2^BITS - 2 < TABLE_SLOTS; the mask only spares the bounds check.
            let threshold = self.thresholds[(rank + step - 1) % TABLE_SLOTS];
            rank += step * usize::from(value >= threshold);
            step >>= 1;
        }
        rank
    }
}

/// The smallest f32 whose exact distance to `upper` is strictly less than to `lower`
/// (`lower < upper`, both finite): the first value that belongs to `upper` when ties go to
/// `lower`. It lies in `(lower, upper]`.
///
/// The exact midpoint `m = (lower + upper) / 2` is `sum / 2 + error / 2` with `(sum, error)` the
/// error-free sum of the two (f32 values are exact in f64, so [`two_sum`] loses nothing, and
/// halving is exact). Because `sum` is the f64 nearest to `lower + upper`, no f64 lies strictly
/// between `m` and `sum / 2`: any f64 `v` other than `sum / 2` is above `m` exactly when it is
/// above `sum / 2`, and `sum / 2` itself is above `m` exactly when the rounding went up
/// (`error < 0`). That decides "nearer to `upper`" exactly for every f32, and the answer is a
/// step or two from `sum / 2` rounded to f32.
pub(super) fn upper_threshold(lower: f32, upper: f32) -> f32 {
    debug_assert!(lower < upper && lower.is_finite() && upper.is_finite());
    let (sum, error) = two_sum(f64::from(lower), f64::from(upper));
    let half_sum = sum / 2.0;
    let is_nearer_upper = |value: f32| {
        let value = f64::from(value);
        value > half_sum || (value == half_sum && error < 0.0)
    };
    // Rounding is monotonic, so the start lies in [lower, upper]: `upper` passes the test and
    // `lower` fails it, which bounds both walks.
    let mut threshold = half_sum as f32;
    if is_nearer_upper(threshold) {
        while is_nearer_upper(threshold.next_down()) {
            threshold = threshold.next_down();
        }
    } else {
        while !is_nearer_upper(threshold) {
            threshold = threshold.next_up();
        }
    }
    threshold
}

/// Knuth's error-free sum: `a + b == sum + error` exactly, with `sum` the rounded f64 sum.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let sum = a + b;
    let b_part = sum - a;
    let a_part = sum - b_part;
    let error = (a - a_part) + (b - b_part);
    (sum, error)
}
