//! Float tensor bytes (little-endian safetensors data) as f32 values: the one decoder the
//! quantization pipeline and the serving loaders share.

use crate::formats::safetensors::Dtype;

/// The values of a float tensor (`F32`, `F16`, `BF16`, `F64`) as f32; `None` for other dtypes.
/// Trailing bytes that do not form a whole element are ignored (callers pass validated ranges).
pub fn float_values(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_float_dtype_decodes_and_others_are_refused() {
        assert_eq!(
            float_values(Dtype::F32, &1.5f32.to_le_bytes()),
            Some(vec![1.5])
        );
        assert_eq!(
            float_values(Dtype::F64, &(-2.25f64).to_le_bytes()),
            Some(vec![-2.25])
        );
        assert_eq!(
            float_values(Dtype::F16, &half::f16::from_f32(0.5).to_le_bytes()),
            Some(vec![0.5])
        );
        assert_eq!(
            float_values(Dtype::BF16, &half::bf16::from_f32(3.0).to_le_bytes()),
            Some(vec![3.0])
        );
        assert_eq!(float_values(Dtype::I8, &[1, 2]), None);
    }
}
