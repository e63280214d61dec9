//! Element types a safetensors header may name, spelled exactly as in the JSON.

use serde::{Deserialize, Serialize};

/// The element type of a tensor, with the exact spelling the safetensors JSON header uses.
///
/// The variant order follows the reference `safetensors::Dtype` (huggingface/safetensors,
/// `safetensors/src/tensor.rs`), which lists types by increasing alignment; `Ord` follows it.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dtype {
    /// Boolean stored as one byte.
    BOOL,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float with 5 exponent and 2 mantissa bits.
    F8_E5M2,
    /// 8-bit float with 4 exponent and 3 mantissa bits.
    F8_E4M3,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16 (the upper half of an IEEE 754 single).
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

impl Dtype {
    /// Every dtype, in declaration order.
    pub const ALL: [Dtype; 15] = [
        Dtype::BOOL,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8_E5M2,
        Dtype::F8_E4M3,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            Dtype::BOOL | Dtype::U8 | Dtype::I8 | Dtype::F8_E5M2 | Dtype::F8_E4M3 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// Whether the elements are floating point numbers (the types a quantizer can take as input).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Dtype::F8_E5M2 | Dtype::F8_E4M3 | Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64
        )
    }

    /// The spelling used in the JSON header, e.g. `"F32"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::BOOL => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8_E5M2 => "F8_E5M2",
            Dtype::F8_E4M3 => "F8_E4M3",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// The dtype spelled `name` in a header, or `None` for a name this crate does not know.
    /// Matching is exact and case-sensitive, like the reference reader.
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|dtype| dtype.as_str() == name)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Dtype;

    #[test]
    fn names_round_trip_through_serde_and_from_name() {
        for dtype in Dtype::ALL {
            let json = serde_json::to_string(&dtype).unwrap();
            assert_eq!(json, format!("\"{}\"", dtype.as_str()));
            assert_eq!(serde_json::from_str::<Dtype>(&json).unwrap(), dtype);
            assert_eq!(Dtype::from_name(dtype.as_str()), Some(dtype));
        }
        assert_eq!(Dtype::from_name("f32"), None);
        assert_eq!(Dtype::from_name("F8_E4M3FN"), None);
    }

    #[test]
    fn sizes_and_float_flags_match_the_reference() {
        for dtype in Dtype::ALL {
            let reference: safetensors::Dtype =
                serde_json::from_str(&format!("\"{}\"", dtype.as_str())).unwrap();
            assert_eq!(dtype.size_bytes(), reference.size(), "{dtype}");
        }
        let floats: Vec<Dtype> = Dtype::ALL.into_iter().filter(|d| d.is_float()).collect();
        assert_eq!(
            floats,
            [
                Dtype::F8_E5M2,
                Dtype::F8_E4M3,
                Dtype::F16,
                Dtype::BF16,
                Dtype::F32,
                Dtype::F64
            ]
        );
    }
}
