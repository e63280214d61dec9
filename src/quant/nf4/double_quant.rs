//! Double quantization of NF4 absmax values as bitsandbytes 0.50.2 does it on CPU: the signed
//! 8-bit dynamic map (`functional.py::create_dynamic_map`) and the native CPU blockwise
//! quantizer (`csrc/cpu_ops.cpp::quantize_cpu`), which rounds each normalized value to a grid
//! of 65536 points over [-1, 1] and looks the grid point up in a table of nearest map entries.
use super::{NestedAbsmax, NESTED_BLOCK_SIZE};

/// `torch.linspace(start, end, steps)` in f32 as torch's CPU kernel computes it in its AVX2 and
/// AVX-512 builds: `step = (end - start) / (steps - 1)` in f32, then the first half counts up
/// from `start` and the second half down from `end`, each value one fused multiply-add
/// (`start + step · i`, `end - step · (steps - 1 - i)`, rounded once).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|idx| {
            if idx < halfway {
                step.mul_add(idx as f32, start)
            } else {
                (-step).mul_add((steps - idx - 1) as f32, end)
            }
        })
        .collect()
}

/// `functional.py::create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`: for
/// each decade `i` in 0..7, `2^i` fraction values (midpoints of `linspace(0.1, 1, 2^i + 1)`)
/// scaled by `10^(i - 6)`, both signs; plus 0 and 1; sorted. 256 values from about -0.993 to 1.
///
/// Values follow torch's f32 arithmetic (the fused `linspace` above, the Python scalar cast to
/// f32, then an f32 multiply): bit for bit the map `create_dynamic_map()` returns on x86-64
/// with torch's AVX2 or AVX-512 kernels. (Its portable scalar `linspace` rounds twice and
/// places 42 of the 256 values one ulp away.) The map is stored in `nested_quant_map` and
/// readers use the stored copy.
pub fn dynamic_map() -> [f32; 256] {
    // Python's `10 ** (-6 + i)` (a double, 1 for i = 6), which torch casts to f32.
    const DECADES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut values = Vec::with_capacity(256);
    for (decade, &power) in DECADES.iter().enumerate() {
        let boundaries = linspace_f32(0.1, 1.0, (1usize << decade) + 1);
        let magnitude = power as f32;
        for pair in boundaries.windows(2) {
            let mean = (pair[0] + pair[1]) / 2.0;
            values.push(magnitude * mean);
            values.push(-magnitude * mean);
        }
    }
    values.push(0.0);
    values.push(1.0);
    values.sort_by(f32::total_cmp);
    values
        .try_into()
        .expect("the signed dynamic map has 2 * 127 + 2 = 256 entries")
}

/// Points of bitsandbytes' CPU lookup grid over [-1, 1], minus one (`kLUTSize - 1`).
const GRID_INTERVALS: f32 = 65535.0;

/// `norm_to_lut_index`: the grid point nearest to `x` (clamped to [-1, 1]), as
/// `trunc(((x + 1) · 0.5) · 65535 + 0.5)` with every step rounded in f32, as bnb's AVX2
/// quantizer spells the steps out.
fn grid_index(x: f32) -> u16 {
    let x = x.clamp(-1.0, 1.0);
    let scaled = (x + 1.0) * 0.5 * GRID_INTERVALS + 0.5;
    // In [0.5, 65535.5]: the truncating cast is in range.
    scaled as u16
}

/// The value of grid point `index`: `-1 + (2 · index) / 65535` in f32 (`build_quantize_lut`).
fn grid_value(index: u16) -> f32 {
    -1.0 + (2.0 * f32::from(index)) / GRID_INTERVALS
}

/// The f32 midpoints `0.5 · (code[i] + code[i + 1])` the lookup table is built from.
pub(crate) fn midpoints(code: &[f32; 256]) -> [f32; 255] {
    std::array::from_fn(|i| 0.5 * (code[i] + code[i + 1]))
}

/// The map index bitsandbytes' CPU quantizer gives a normalized value `x`: the entry for the
/// grid point nearest to `x`, which `build_quantize_lut` takes to be the number of midpoints
/// strictly below that point's value. This is the nearest map entry to the *grid point*, not
/// to `x`: map entries closer together than the grid spacing (3.05e-5, all those below about
/// 1e-4 in magnitude) are skipped, and `x = 0` maps to 2.125e-5 (index 131), not to 0.
pub(crate) fn dynamic_index(midpoints: &[f32; 255], x: f32) -> u8 {
    let point = grid_value(grid_index(x));
    let below = midpoints.partition_point(|&m| m < point);
    // At most 255 midpoints lie below.
    below as u8
}

/// `quantize_4bit(compress_statistics=True)` on the block absmax values: subtract their mean
/// (`offset`), then `quantize_blockwise(blocksize=256)`: per block of 256 its absmax
/// (`nested_absmax`), each value times the f32 reciprocal of that, clamped to [-1, 1], and
/// [`dynamic_index`]. A block whose values are all equal to the offset has nested absmax 0: bnb
/// writes index 0 for every value, which reconstructs to `code[0] · 0 + offset = offset`.
///
/// The offset is the mean computed in f64 and rounded once to f32. torch's `absmax.mean()`
/// (an f32 cascade sum, then a division) lands up to 2 ulps away from it, about half the time
/// for tensors of a few hundred blocks: that is the only input where this differs from
/// bitsandbytes. Given the same offset, the indices and nested absmax values are bit for bit
/// bitsandbytes' (`tests/interop/check_bnb_nf4.py` checks it). With bnb's own offset `o`
/// instead of ours `o'` (`δ = |o − o'|`), a block of 64 dequantizes with absmax `r` instead of
/// our `r'`, where
///
/// - if the 8-bit index `q` is the same: `r − r' = code[q] · (M − M') + (o − o')` plus the
///   rounding of the two f32 operations; `|M − M'| <= δ` plus one rounding of `a − o` (the
///   nested absmax is a max of those differences), so `|r − r'| <= 2δ + 3 ulp(max(|r|, M))`;
/// - if it differs (the shift by `δ / M` moved `x` across a grid point whose neighbours map to
///   different entries, rare: `δ / M` is about 1e-7 against a grid spacing of 3e-5), it can
///   only be a neighbouring entry, so `|r − r'| <= (code[q + 1] − code[q]) · M` plus the above;
///
/// and each weight differs by `|NF4_CODE[nibble]|` (at most 1) times that. The interop test
/// asserts this bound element by element.
pub(crate) fn quantize(absmax: &[f32]) -> NestedAbsmax {
    let code = dynamic_map();
    let midpoints = midpoints(&code);
    let offset = if absmax.is_empty() {
        0.0
    } else {
        (absmax.iter().map(|&a| f64::from(a)).sum::<f64>() / absmax.len() as f64) as f32
    };
    let mut quantized = Vec::with_capacity(absmax.len());
    let mut nested_absmax = Vec::with_capacity(absmax.len().div_ceil(NESTED_BLOCK_SIZE));
    let mut centered = Vec::with_capacity(NESTED_BLOCK_SIZE);
    for block in absmax.chunks(NESTED_BLOCK_SIZE) {
        centered.clear();
        centered.extend(block.iter().map(|&a| a - offset));
        let block_max = centered.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        nested_absmax.push(block_max);
        if block_max == 0.0 {
            quantized.extend(std::iter::repeat_n(0u8, block.len()));
            continue;
        }
        let reciprocal = 1.0 / block_max;
        quantized.extend(
            centered
                .iter()
                .map(|&v| dynamic_index(&midpoints, v * reciprocal)),
        );
    }
    NestedAbsmax {
        quantized,
        nested_absmax,
        nested_quant_map: Box::new(code),
        offset,
    }
}

/// `dequantize_blockwise(absmax, state2) + offset`, in f32: the absmax each NF4 block is
/// dequantized with.
pub(crate) fn reconstruct(nested: &NestedAbsmax) -> Vec<f32> {
    nested
        .quantized
        .iter()
        .enumerate()
        .map(|(idx, &q)| {
            let scaled = nested.nested_quant_map[usize::from(q)]
                * nested.nested_absmax[idx / NESTED_BLOCK_SIZE];
            scaled + nested.offset
        })
        .collect()
}
