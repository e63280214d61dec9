//! Double quantization of NF4 absmax values: bitsandbytes' signed 8-bit dynamic map and its
//! CUDA blockwise quantizer (`kQuantizeBlockwise<General8bit>` with `dQuantize<0>`).

use super::{NestedAbsmax, NESTED_BLOCK_SIZE};

/// `torch.linspace(start, end, steps)` in f32 as torch's scalar CPU kernel computes it: the
/// first half counts up from `start`, the second half down from `end`, with
/// `step = (end - start) / (steps - 1)` in f32.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|idx| {
            if idx < halfway {
                start + step * idx as f32
            } else {
                end - step * (steps - idx - 1) as f32
            }
        })
        .collect()
}

/// `functional.py::create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`: for
/// each decade `i` in 0..7, `2^i` fraction values (midpoints of `linspace(0.1, 1, 2^i + 1)`)
/// scaled by `10^(i - 6)`, both signs; plus 0 and 1; sorted. 256 values from about -0.993 to 1.
///
/// Values follow torch's f32 arithmetic (the Python scalar cast to f32, then an f32 multiply).
/// torch's vectorized `linspace` can place a few of them one ulp differently; the map is
/// stored in `nested_quant_map` and readers use the stored copy, so this cannot skew a
/// reconstruction.
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

/// `dQuantize<0>` from `csrc/kernels.cu`: a 7-step binary search from the middle of the map
/// (`pivot` 127, steps 64 down to 1, `x > code[pivot]` goes up), then a choice between the
/// landing entry and the last entry passed on the side of `x`, by comparing `x` with their f32
/// midpoint (`> midpoint` above, `< midpoint` below; a value on the midpoint stays on the
/// landing entry). NaN goes down every step and lands on index 0.
pub(crate) fn dynamic_index(code: &[f32; 256], x: f32) -> u8 {
    let mut pivot = 127usize;
    let mut upper_pivot = 255usize;
    let mut lower_pivot = 0usize;
    let mut lower = -1.0f32;
    let mut upper = 1.0f32;
    let mut value = code[pivot];
    let mut step = 64usize;
    while step > 0 {
        if x > value {
            lower_pivot = pivot;
            lower = value;
            pivot += step;
        } else {
            upper_pivot = pivot;
            upper = value;
            pivot -= step;
        }
        value = code[pivot];
        step >>= 1;
    }
    if upper_pivot == 255 {
        upper = code[upper_pivot];
    }
    if lower_pivot == 0 {
        lower = code[lower_pivot];
    }
    // Indices stay within 0..=255, so the casts are exact.
    if x > value {
        let midpoint = (upper + value) * 0.5;
        if x > midpoint {
            upper_pivot as u8
        } else {
            pivot as u8
        }
    } else {
        let midpoint = (lower + value) * 0.5;
        if x < midpoint {
            lower_pivot as u8
        } else {
            pivot as u8
        }
    }
}

/// `quantize_4bit(compress_statistics=True)` on the block absmax values: subtract their mean,
/// then quantize in blocks of 256 with the dynamic map (absmax per block, values times its
/// f32 reciprocal, `dQuantize<0>`).
pub(crate) fn quantize(absmax: &[f32]) -> NestedAbsmax {
    let code = dynamic_map();
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
        // As the kernel: an all-equal block has block_max 0, x = 0 · inf = NaN, index 0, and
        // reconstructs to code[0] · 0 + offset = offset exactly.
        let reciprocal = 1.0 / block_max;
        quantized.extend(
            centered
                .iter()
                .map(|&v| dynamic_index(&code, v * reciprocal)),
        );
        nested_absmax.push(block_max);
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
