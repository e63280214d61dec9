//! Plain number types and their little-endian byte encoding, for writing tensor data.
//!
//! safetensors stores every element little-endian. This layer has no `unsafe`, so instead of
//! reinterpreting a `&[f32]` as bytes (zero-copy on little-endian targets) it encodes through a
//! small buffer: on little-endian targets `to_le_bytes` is a plain copy that compiles to a
//! vectorised loop, negligible next to the I/O it feeds, and on big-endian targets it swaps.

use super::Dtype;

/// A number type whose values are stored bit-for-bit as elements of some safetensors dtypes.
pub trait LittleEndianElement: Copy {
    /// Bytes per value.
    const SIZE_BYTES: usize;
    /// The dtypes whose elements this type holds bit-for-bit (e.g. `u16` holds F16 and BF16
    /// bit patterns as well as U16).
    const DTYPES: &'static [Dtype];
    /// Writes `self` little-endian into `out`, which is exactly `SIZE_BYTES` long.
    fn write_le_bytes(self, out: &mut [u8]);
}

macro_rules! little_endian_element {
    ($type:ty, [$($dtype:ident),+]) => {
        impl LittleEndianElement for $type {
            const SIZE_BYTES: usize = std::mem::size_of::<$type>();
            const DTYPES: &'static [Dtype] = &[$(Dtype::$dtype),+];
            fn write_le_bytes(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
        }
    };
}

little_endian_element!(u8, [U8, BOOL, F8_E4M3, F8_E5M2]);
little_endian_element!(i8, [I8]);
little_endian_element!(u16, [U16, F16, BF16]);
little_endian_element!(i16, [I16]);
little_endian_element!(u32, [U32]);
little_endian_element!(i32, [I32]);
little_endian_element!(f32, [F32]);
little_endian_element!(u64, [U64]);
little_endian_element!(i64, [I64]);
little_endian_element!(f64, [F64]);

/// Encodes `values` into `out` (whose length must be `values.len() × T::SIZE_BYTES`).
pub fn encode_le_into<T: LittleEndianElement>(values: &[T], out: &mut [u8]) {
    assert_eq!(
        out.len(),
        values.len() * T::SIZE_BYTES,
        "output buffer does not match the number of values"
    );
    for (value, bytes) in values.iter().zip(out.chunks_exact_mut(T::SIZE_BYTES)) {
        value.write_le_bytes(bytes);
    }
}

/// The little-endian bytes of `values` as a new vector (for small tensors and tests; the
/// writer's [`write_tensor_values`] streams without allocating).
///
/// [`write_tensor_values`]: super::SafetensorsWriter::write_tensor_values
pub fn to_le_bytes<T: LittleEndianElement>(values: &[T]) -> Vec<u8> {
    let mut bytes = vec![0u8; values.len() * T::SIZE_BYTES];
    encode_le_into(values, &mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_little_endian_whatever_the_target() {
        assert_eq!(
            to_le_bytes(&[1.0f32, -2.5]),
            [0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]
        );
        assert_eq!(to_le_bytes(&[-1i8, 5]), [0xff, 5]);
        // 0x3c00 is 1.0 in IEEE half precision.
        assert_eq!(to_le_bytes(&[0x3c00u16]), [0x00, 0x3c]);
        assert!(to_le_bytes::<f32>(&[]).is_empty());
    }
}
