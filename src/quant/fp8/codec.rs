//! Exact scalar f32 <-> FP8 conversion for both OCP formats; the definition every SIMD encoder
//! reproduces.

use super::Fp8Format;

/// The constants that define one format's bit layout and our rounding policy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FormatSpec {
    /// Mantissa bits (3 for E4M3, 2 for E5M2).
    pub mantissa_bits: u32,
    /// Exponent bias (7, 15).
    pub bias: i32,
    /// Largest finite magnitude code: 0x7E (448) and 0x7B (57344).
    pub max_code: u32,
    /// Magnitude code written for NaN: 0x7F (E4M3's only NaN) and 0x7E (E5M2's quiet NaN).
    pub nan_code: u32,
}

impl FormatSpec {
    /// f32 mantissa bits dropped by the conversion.
    pub const fn shift(self) -> u32 {
        23 - self.mantissa_bits
    }

    /// Subtracted from an f32 bit pattern to move its exponent to the fp8 bias.
    pub const fn rebias(self) -> u32 {
        ((127 - self.bias) as u32) << 23
    }

    /// The smallest normal fp8 magnitude, `2^(1 - bias)`; below it values are subnormal.
    pub fn min_normal(self) -> f32 {
        f32::from_bits(((128 - self.bias) as u32) << 23)
    }

    /// `2^(bias - 1 + mantissa_bits)`: multiplies a subnormal-range magnitude into units of
    /// the smallest subnormal, exactly (a power of two).
    pub fn subnormal_scale(self) -> f32 {
        f32::from_bits(((127 + self.bias - 1 + self.mantissa_bits as i32) as u32) << 23)
    }
}

pub(crate) const E4M3: FormatSpec = FormatSpec {
    mantissa_bits: 3,
    bias: 7,
    max_code: 0x7E,
    nan_code: 0x7F,
};

pub(crate) const E5M2: FormatSpec = FormatSpec {
    mantissa_bits: 2,
    bias: 15,
    max_code: 0x7B,
    nan_code: 0x7E,
};

impl Fp8Format {
    pub(crate) fn spec(self) -> FormatSpec {
        match self {
            Fp8Format::E4M3 => E4M3,
            Fp8Format::E5M2 => E5M2,
        }
    }
}

/// Encodes `x` with round-to-nearest-even and saturation (see [`super::encode`] for the
/// policy). Written as the SIMD encoders compute it: integer rounding on the rebiased bit
/// pattern for normal results, one exact float multiply and rounding for subnormal ones.
#[inline(always)]
pub(crate) fn encode_with(x: f32, spec: FormatSpec) -> u8 {
    let bits = x.to_bits();
    let sign = (bits >> 24) & 0x80;
    let magnitude_bits = bits & 0x7FFF_FFFF;
    if magnitude_bits > 0x7F80_0000 {
        return (sign | spec.nan_code) as u8;
    }
    let magnitude = f32::from_bits(magnitude_bits);
    let code = if magnitude < spec.min_normal() {
        // Subnormal result: count smallest-subnormal units, ties to even. The product is
        // exact (power of two), at most 2^mantissa_bits, which carries into the smallest
        // normal code by itself.
        (magnitude * spec.subnormal_scale()).round_ties_even() as u32
    } else {
        // Normal result: drop `shift` mantissa bits with round-half-even on the integer
        // pattern; a carry out of the mantissa increments the exponent, as it should.
        // ±Inf (0x7F80_0000) stays far below u32 overflow and saturates below.
        let rebiased = magnitude_bits - spec.rebias();
        let shift = spec.shift();
        let half_minus_one = (1u32 << (shift - 1)) - 1;
        let odd = (rebiased >> shift) & 1;
        (rebiased + half_minus_one + odd) >> shift
    };
    (sign | code.min(spec.max_code)) as u8
}

/// Decodes one code exactly; see [`super::decode`].
pub(crate) fn decode_with(code: u8, format: Fp8Format) -> f32 {
    let spec = format.spec();
    let sign = if code & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let magnitude = u32::from(code & 0x7F);
    let exponent = magnitude >> spec.mantissa_bits;
    let mantissa = magnitude & ((1 << spec.mantissa_bits) - 1);
    let exponent_all_ones = (1u32 << (7 - spec.mantissa_bits)) - 1;
    match format {
        Fp8Format::E4M3 if magnitude == 0x7F => return f32::NAN.copysign(sign),
        Fp8Format::E5M2 if exponent == exponent_all_ones => {
            return if mantissa == 0 {
                f32::INFINITY.copysign(sign)
            } else {
                f32::NAN.copysign(sign)
            };
        }
        _ => {}
    }
    if exponent == 0 {
        // Subnormal: mantissa units of 2^(1 - bias - mantissa_bits); exact.
        return sign * mantissa as f32 / spec.subnormal_scale();
    }
    let f32_exponent = (exponent as i32 - spec.bias + 127) as u32;
    let bits = (f32_exponent << 23) | (mantissa << (23 - spec.mantissa_bits));
    sign * f32::from_bits(bits)
}
