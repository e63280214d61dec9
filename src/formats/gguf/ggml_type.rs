//! ggml tensor type ids and their block geometry.
//!
//! The ids are `enum ggml_type` of ggml's `include/ggml.h` (also `GGMLQuantizationType` in
//! gguf-py's `gguf/constants.py`); the sizes are gguf-py's `GGML_QUANT_SIZES`, which mirrors the
//! block structs of ggml's `ggml-common.h` (`block_q4_0` is an f16 `d` and 16 bytes of nibbles,
//! and so on). Ids that ggml removed (4, 5, 31..=33, 36..=38) have no entry, so ggml rejects them
//! and so does this crate.

pub const GGML_TYPE_F32: u32 = 0;
pub const GGML_TYPE_F16: u32 = 1;
pub const GGML_TYPE_Q4_0: u32 = 2;
pub const GGML_TYPE_Q4_1: u32 = 3;
pub const GGML_TYPE_Q5_0: u32 = 6;
pub const GGML_TYPE_Q5_1: u32 = 7;
pub const GGML_TYPE_Q8_0: u32 = 8;
pub const GGML_TYPE_Q8_1: u32 = 9;
pub const GGML_TYPE_Q2_K: u32 = 10;
pub const GGML_TYPE_Q3_K: u32 = 11;
pub const GGML_TYPE_Q4_K: u32 = 12;
pub const GGML_TYPE_Q5_K: u32 = 13;
pub const GGML_TYPE_Q6_K: u32 = 14;
pub const GGML_TYPE_Q8_K: u32 = 15;
pub const GGML_TYPE_I8: u32 = 24;
pub const GGML_TYPE_I16: u32 = 25;
pub const GGML_TYPE_I32: u32 = 26;
pub const GGML_TYPE_I64: u32 = 27;
pub const GGML_TYPE_F64: u32 = 28;
pub const GGML_TYPE_BF16: u32 = 30;

/// Elements per super-block of the k-quants (`QK_K` in ggml).
const QK_K: usize = 256;

/// One row of the table: id, ggml's name, elements per block, bytes per block.
struct GgmlTypeInfo {
    id: u32,
    name: &'static str,
    block_elements: usize,
    block_bytes: usize,
}

const fn info(
    id: u32,
    name: &'static str,
    block_elements: usize,
    block_bytes: usize,
) -> GgmlTypeInfo {
    GgmlTypeInfo {
        id,
        name,
        block_elements,
        block_bytes,
    }
}

/// Every type a GGUF v3 file may hold, as of ggml's `GGML_TYPE_COUNT = 40`. The byte sizes are
/// written as sums of the block fields, like gguf-py writes them, so they can be checked
/// against `ggml-common.h` line by line.
const GGML_TYPES: &[GgmlTypeInfo] = &[
    info(GGML_TYPE_F32, "F32", 1, 4),
    info(GGML_TYPE_F16, "F16", 1, 2),
    info(GGML_TYPE_Q4_0, "Q4_0", 32, 2 + 16),
    info(GGML_TYPE_Q4_1, "Q4_1", 32, 2 + 2 + 16),
    info(GGML_TYPE_Q5_0, "Q5_0", 32, 2 + 4 + 16),
    info(GGML_TYPE_Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16),
    info(GGML_TYPE_Q8_0, "Q8_0", 32, 2 + 32),
    info(GGML_TYPE_Q8_1, "Q8_1", 32, 4 + 4 + 32),
    info(GGML_TYPE_Q2_K, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
    info(GGML_TYPE_Q3_K, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
    info(GGML_TYPE_Q4_K, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12),
    info(
        GGML_TYPE_Q5_K,
        "Q5_K",
        QK_K,
        2 + 2 + QK_K / 2 + QK_K / 8 + 12,
    ),
    info(
        GGML_TYPE_Q6_K,
        "Q6_K",
        QK_K,
        2 + QK_K / 2 + QK_K / 4 + QK_K / 16,
    ),
    info(GGML_TYPE_Q8_K, "Q8_K", QK_K, 4 + QK_K + QK_K / 8),
    info(16, "IQ2_XXS", QK_K, 2 + QK_K / 4),
    info(17, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32),
    info(18, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8),
    info(19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
    info(20, "IQ4_NL", 32, 2 + 16),
    info(21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
    info(22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16),
    info(23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
    info(GGML_TYPE_I8, "I8", 1, 1),
    info(GGML_TYPE_I16, "I16", 1, 2),
    info(GGML_TYPE_I32, "I32", 1, 4),
    info(GGML_TYPE_I64, "I64", 1, 8),
    info(GGML_TYPE_F64, "F64", 1, 8),
    info(29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
    info(GGML_TYPE_BF16, "BF16", 1, 2),
    info(34, "TQ1_0", QK_K, 2 + 4 * 13),
    info(35, "TQ2_0", QK_K, 2 + 64),
    info(39, "MXFP4", 32, 1 + 16),
];

fn lookup(ggml_type: u32) -> Option<&'static GgmlTypeInfo> {
    GGML_TYPES.iter().find(|info| info.id == ggml_type)
}

/// `(elements per block, bytes per block)` of a ggml type, or `None` for an id ggml does not
/// define (or no longer supports). A row of `ne[0]` elements must be a whole number of blocks.
pub fn type_size_info(ggml_type: u32) -> Option<(usize, usize)> {
    lookup(ggml_type).map(|info| (info.block_elements, info.block_bytes))
}

/// ggml's name of a type (`"Q8_0"`, `"BF16"`), for messages and reports.
pub fn ggml_type_name(ggml_type: u32) -> Option<&'static str> {
    lookup(ggml_type).map(|info| info.name)
}
