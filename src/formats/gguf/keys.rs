//! Standard metadata keys and the values llama.cpp gives them.
//!
//! Keys are from ggml's `docs/gguf.md` ("Standardized key-value pairs") and gguf-py's
//! `gguf/constants.py` (`Keys.General`); the file types are `enum llama_ftype` of llama.cpp's
//! `include/llama.h` (gguf-py's `LlamaFileType`).

/// `string`, required: the architecture, lowercase `[a-z0-9]+` (`llama`, `bert`, ...). gguf-py
/// writes it first; llama.cpp looks up every `{arch}.*` key through it.
pub const KEY_GENERAL_ARCHITECTURE: &str = "general.architecture";

/// `string`: a human-readable model name.
pub const KEY_GENERAL_NAME: &str = "general.name";

/// `u32`: the `LLAMA_FTYPE_*` describing most tensors of the file.
pub const KEY_GENERAL_FILE_TYPE: &str = "general.file_type";

/// `u32`, required when any tensor is quantized: [`GGML_QUANTIZATION_VERSION`].
pub const KEY_GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";

/// `u32`: the data alignment; absent means [`DEFAULT_ALIGNMENT`]. ggml reads it with
/// `gguf_get_val_u32` and gguf-py raises on any other type, so it must be a `u32`.
pub const KEY_GENERAL_ALIGNMENT: &str = "general.alignment";

/// The value of `general.quantization_version` for today's block formats (`GGML_QNT_VERSION`
/// in ggml.h, `GGML_QUANT_VERSION` in gguf-py).
pub const GGML_QUANTIZATION_VERSION: u32 = 2;

/// The alignment a reader assumes when `general.alignment` is absent (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// All tensors F32.
pub const LLAMA_FTYPE_ALL_F32: u32 = 0;
/// Mostly F16 (1-D tensors stay F32, as for every `MOSTLY_*` type).
pub const LLAMA_FTYPE_MOSTLY_F16: u32 = 1;
pub const LLAMA_FTYPE_MOSTLY_Q4_0: u32 = 2;
pub const LLAMA_FTYPE_MOSTLY_Q4_1: u32 = 3;
// 4 (MOSTLY_Q4_1_SOME_F16) is retired, 5 and 6 (Q4_2, Q4_3) were removed.
pub const LLAMA_FTYPE_MOSTLY_Q8_0: u32 = 7;
pub const LLAMA_FTYPE_MOSTLY_Q5_0: u32 = 8;
pub const LLAMA_FTYPE_MOSTLY_Q5_1: u32 = 9;
/// Mostly Q4_K (llama.cpp's `Q4_K_S`, the closest label for a file quantized uniformly to Q4_K).
pub const LLAMA_FTYPE_MOSTLY_Q4_K_S: u32 = 14;
pub const LLAMA_FTYPE_MOSTLY_Q6_K: u32 = 18;
pub const LLAMA_FTYPE_MOSTLY_BF16: u32 = 32;
