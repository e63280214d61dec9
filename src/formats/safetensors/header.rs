//! The validated header of a safetensors file and the limits it was read under.

use std::collections::BTreeMap;
use std::ops::Range;

use super::Dtype;

/// Size limits applied while reading an untrusted file. There is deliberately no `Default`:
/// the service decides them from its settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted JSON header (the `N` of the 8-byte prefix). The reference reader
    /// refuses more than [`REFERENCE_MAX_HEADER_BYTES`](super::REFERENCE_MAX_HEADER_BYTES).
    pub max_header_bytes: u64,
    /// Largest accepted whole file: 8 + header + data section.
    pub max_file_bytes: u64,
}

/// One tensor of a validated header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The key in the header JSON (non-empty, at most [`MAX_NAME_BYTES`](super::MAX_NAME_BYTES)).
    pub name: String,
    pub dtype: Dtype,
    /// Row-major ("C") shape; at most [`MAX_RANK`](super::MAX_RANK) dimensions, may contain 0.
    pub shape: Vec<usize>,
    /// `[begin, end)` byte offsets relative to the start of the data section.
    pub data_offsets: (u64, u64),
}

impl TensorInfo {
    /// Number of elements, `product(shape)` (1 for a scalar of rank 0). Validation guarantees it
    /// does not overflow; for a hand-built `TensorInfo` it saturates at `u64::MAX`.
    pub fn n_elements(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(1u64, |product, &dim| product.checked_mul(dim as u64))
            .unwrap_or(u64::MAX)
    }

    /// Number of data bytes, `end − begin` (equal to `n_elements × dtype size` once validated).
    pub fn n_bytes(&self) -> u64 {
        self.data_offsets.1.saturating_sub(self.data_offsets.0)
    }

    /// Whether the tensor holds no bytes (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.n_bytes() == 0
    }
}

/// A safetensors header that passed every check in
/// [`parse_header_bytes`](super::parse_header_bytes): names are unique, dtypes known, sizes
/// consistent, and the tensors tile the data section `[0, data_len)` without gaps or overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Tensors sorted by `data_offsets` (begin, then end), i.e. in file order.
    pub tensors: Vec<TensorInfo>,
    /// The optional `__metadata__` object (empty when absent).
    pub metadata: BTreeMap<String, String>,
    /// `N`, the JSON header length from the 8-byte prefix (padding included).
    pub header_len: u64,
    /// Absolute file offset of the data section, `8 + header_len`.
    pub data_start: u64,
    /// Length of the data section: the largest `end` offset (0 without tensors).
    pub data_len: u64,
}

impl Header {
    /// Exact size of a well-formed file with this header: `data_start + data_len`. Validation
    /// guarantees it fits in `u64` (and within `Limits::max_file_bytes`).
    pub fn total_file_size(&self) -> u64 {
        self.data_start.saturating_add(self.data_len)
    }

    /// Total number of elements over all tensors (saturating).
    pub fn n_parameters(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |sum, tensor| sum.saturating_add(tensor.n_elements()))
    }

    /// Number of tensors per dtype.
    pub fn dtype_counts(&self) -> BTreeMap<Dtype, usize> {
        let mut counts = BTreeMap::new();
        for tensor in &self.tensors {
            *counts.entry(tensor.dtype).or_insert(0) += 1;
        }
        counts
    }

    /// The tensor called `name`. This is a linear scan (tensors are kept in file order); build
    /// [`Header::by_name`] once when looking up many names.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }

    /// An index from tensor name to tensor, for repeated lookups.
    pub fn by_name(&self) -> std::collections::HashMap<&str, &TensorInfo> {
        self.tensors
            .iter()
            .map(|tensor| (tensor.name.as_str(), tensor))
            .collect()
    }

    /// Whether the file holds no tensors at all (legal, but useless to a quantizer).
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Absolute byte range of `tensor`'s data in the file, for reading it from an mmap or a
    /// ranged GET.
    pub fn file_range(&self, tensor: &TensorInfo) -> Range<u64> {
        let begin = self.data_start.saturating_add(tensor.data_offsets.0);
        let end = self.data_start.saturating_add(tensor.data_offsets.1);
        begin..end
    }

    /// The bytes of `tensor` within a whole file held in memory (e.g. an mmap), or `None` when
    /// `file` is too short for it.
    pub fn tensor_bytes<'file>(
        &self,
        file: &'file [u8],
        tensor: &TensorInfo,
    ) -> Option<&'file [u8]> {
        let range = self.file_range(tensor);
        let begin = usize::try_from(range.start).ok()?;
        let end = usize::try_from(range.end).ok()?;
        file.get(begin..end)
    }
}
