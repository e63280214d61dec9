//! Streaming GGUF writer: header, metadata and tensor infos first, then tensor data in declared
//! order, each tensor padded to the alignment.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use super::rules::{
    align_up, alignment_problem, key_problem, tensor_byte_len, tensor_name_problem,
    GGML_MAX_ARRAY_ELEMENTS, GGML_MAX_STRING_BYTES,
};
use super::value::encode_string;
use super::{
    ggml_type_name, type_size_info, GgufArray, GgufTensorInfo, GgufValue, GgufWriteError,
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, KEY_GENERAL_ALIGNMENT,
};

/// A tensor to be written. The quantization layer knows the block sizes; the writer checks
/// `n_bytes` against the shape and the type's block geometry, since a mismatch would give a
/// file that llama.cpp misreads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorSpec {
    /// Non-empty, at most 63 bytes, unique.
    pub name: String,
    /// Row-major (PyTorch) shape, at most 4 dimensions, none zero; the writer stores it
    /// reversed, in ggml order. An empty shape is a scalar.
    pub shape: Vec<u64>,
    /// The ggml type id (see [`type_size_info`]).
    pub ggml_type: u32,
    /// Bytes of data the tensor will receive.
    pub n_bytes: u64,
}

/// Writes a GGUF v3 file to any `std::io::Write` without holding tensor data in memory.
///
/// The layout is gguf-py's (`GGUFWriter.write_header_to_file`, `write_kv_data_to_file`,
/// `write_ti_data_to_file`, `write_tensors_to_file` in `gguf-py/gguf/gguf_writer.py`) and
/// ggml's (`gguf_write_to_buf` in `src/gguf.cpp`): the header, the key-value pairs in the given
/// order, the tensor infos with offsets from the start of the data section, zero padding to the
/// alignment, then each tensor's bytes followed by zero padding to the alignment, the last one
/// included. A file whose tensors follow its infos' order therefore comes out byte for byte as
/// gguf-py writes it.
///
/// Everything before the data is written by [`GgufWriter::new`]; the tensors' bytes then arrive
/// through one or more [`write_tensor_data`](Self::write_tensor_data) calls in declared order,
/// and [`finish`](Self::finish) checks that every tensor got exactly its size.
pub struct GgufWriter<W: Write> {
    sink: W,
    /// The tensor infos as written, in declaration order, which is data order.
    tensors: Vec<GgufTensorInfo>,
    /// `n_bytes` of each tensor, parallel to `tensors`.
    byte_lengths: Vec<u64>,
    /// Position of each name in `tensors`.
    index_by_name: HashMap<String, usize>,
    alignment: u32,
    /// Absolute offset of the data section (the padded length of everything before it).
    data_start: u64,
    /// The tensor receiving data now; every tensor before it is complete and padded.
    current_tensor: usize,
    bytes_written_to_current: u64,
    /// Set after a failed write, when the output's length is unknown.
    poisoned: bool,
}

impl<W: Write> GgufWriter<W> {
    /// Checks the metadata and the declared tensors, lays the tensors out in the given order and
    /// writes everything up to the data section.
    ///
    /// `alignment` must be a power of two from 8 to 1 MiB (the spec asks for a multiple of 8,
    /// ggml for a power of two); when it is not 32 and `metadata` has no `general.alignment`,
    /// that key is appended as a `u32`. Keys must be non-empty ASCII of at most 65,535 bytes and
    /// unique; strings and arrays must stay within ggml's 64 Mi ceilings. Tensor names must be
    /// non-empty, at most 63 bytes and unique; shapes at most 4-D without zeros, rows (the last
    /// dimension) whole blocks of the type, and `n_bytes` exactly the type's size for the shape.
    pub fn new(
        mut sink: W,
        metadata: Vec<(String, GgufValue)>,
        tensors: Vec<GgufTensorSpec>,
        alignment: u32,
    ) -> Result<Self, GgufWriteError> {
        if let Some(reason) = writer_alignment_problem(alignment) {
            return Err(GgufWriteError::InvalidAlignment { alignment, reason });
        }
        let metadata = checked_metadata(metadata, alignment)?;
        let (tensors, byte_lengths) = lay_out_tensors(tensors, alignment)?;
        let mut index_by_name = HashMap::with_capacity(tensors.len());
        for (tensor_index, tensor) in tensors.iter().enumerate() {
            index_by_name.insert(tensor.name.clone(), tensor_index);
        }

        let header = encode_header(&metadata, &tensors, alignment);
        sink.write_all(&header)?;
        Ok(GgufWriter {
            sink,
            tensors,
            byte_lengths,
            index_by_name,
            alignment,
            data_start: header.len() as u64,
            current_tensor: 0,
            bytes_written_to_current: 0,
            poisoned: false,
        })
    }

    /// The tensor infos as written: dimensions in ggml order and offsets from
    /// [`data_start`](Self::data_start).
    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// Absolute offset of the data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// Size of the finished file: the data section ends with the last tensor's padding.
    pub fn file_size(&self) -> u64 {
        let data_len = self
            .tensors
            .last()
            .zip(self.byte_lengths.last())
            .and_then(|(tensor, &n_bytes)| align_up(tensor.offset + n_bytes, self.alignment))
            .unwrap_or(0);
        self.data_start.saturating_add(data_len)
    }

    /// Appends `bytes` to tensor `name`. Calls must follow the declared order; a tensor may
    /// receive its bytes over several calls, and must be complete before the next tensor
    /// receives any. The padding after a tensor is written as soon as it is complete.
    pub fn write_tensor_data(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufWriteError> {
        self.prepare_write(name, bytes.len() as u64)?;
        self.write_to_sink(bytes)?;
        let declared = self.byte_lengths[self.current_tensor];
        if !bytes.is_empty() && self.bytes_written_to_current == declared {
            let padding = align_up(declared, self.alignment).unwrap_or(declared) - declared;
            self.write_zeros(padding)?;
        }
        Ok(())
    }

    /// Checks that every tensor received exactly its declared bytes, flushes, and returns the
    /// sink.
    pub fn finish(mut self) -> Result<W, GgufWriteError> {
        if self.poisoned {
            return Err(GgufWriteError::Poisoned);
        }
        for tensor_index in self.current_tensor..self.tensors.len() {
            let received = if tensor_index == self.current_tensor {
                self.bytes_written_to_current
            } else {
                0
            };
            let declared = self.byte_lengths[tensor_index];
            if received != declared {
                return Err(GgufWriteError::Incomplete {
                    name: self.tensors[tensor_index].name.clone(),
                    declared,
                    received,
                });
            }
        }
        self.sink.flush()?;
        Ok(self.sink)
    }

    /// Moves the cursor to tensor `name` and checks that `n_bytes` more bytes fit in it. Only
    /// the counters change; the caller writes the bytes.
    fn prepare_write(&mut self, name: &str, n_bytes: u64) -> Result<(), GgufWriteError> {
        if self.poisoned {
            return Err(GgufWriteError::Poisoned);
        }
        let Some(&target_index) = self.index_by_name.get(name) else {
            return Err(GgufWriteError::UnknownTensor {
                name: name.to_owned(),
            });
        };
        if target_index < self.current_tensor {
            return Err(GgufWriteError::AlreadyWritten {
                name: name.to_owned(),
            });
        }
        if target_index > self.current_tensor {
            // Every tensor holds at least one byte, so the only tensor that may receive data
            // next is the current one while it is incomplete, and the one after it otherwise.
            let current_complete =
                self.bytes_written_to_current == self.byte_lengths[self.current_tensor];
            let (pending_index, pending_received) = if current_complete {
                (self.current_tensor + 1, 0)
            } else {
                (self.current_tensor, self.bytes_written_to_current)
            };
            if target_index != pending_index {
                return Err(GgufWriteError::OutOfOrder {
                    name: name.to_owned(),
                    pending: self.tensors[pending_index].name.clone(),
                    missing_bytes: self.byte_lengths[pending_index] - pending_received,
                });
            }
            self.current_tensor = target_index;
            self.bytes_written_to_current = 0;
        }
        let declared = self.byte_lengths[target_index];
        let received = self.bytes_written_to_current.saturating_add(n_bytes);
        if received > declared {
            return Err(GgufWriteError::TooManyBytes {
                name: name.to_owned(),
                declared,
                received,
            });
        }
        self.bytes_written_to_current = received;
        Ok(())
    }

    fn write_to_sink(&mut self, bytes: &[u8]) -> Result<(), GgufWriteError> {
        self.sink.write_all(bytes).map_err(|io_error| {
            self.poisoned = true;
            GgufWriteError::Io(io_error)
        })
    }

    fn write_zeros(&mut self, n_bytes: u64) -> Result<(), GgufWriteError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut remaining = n_bytes;
        while remaining > 0 {
            let chunk = remaining.min(ZEROS.len() as u64) as usize;
            self.write_to_sink(&ZEROS[..chunk])?;
            remaining -= chunk as u64;
        }
        Ok(())
    }
}

/// The reader's alignment rule plus the spec's "multiple of 8".
fn writer_alignment_problem(alignment: u32) -> Option<String> {
    alignment_problem(alignment)
        .or_else(|| (alignment < 8).then(|| "the GGUF spec requires a multiple of 8".to_owned()))
}

/// Checks keys and values, and appends `general.alignment` when the alignment is not the
/// default.
fn checked_metadata(
    mut metadata: Vec<(String, GgufValue)>,
    alignment: u32,
) -> Result<Vec<(String, GgufValue)>, GgufWriteError> {
    let mut seen_keys = HashSet::with_capacity(metadata.len());
    let mut has_alignment_key = false;
    for (key, value) in &metadata {
        let key_problem = key_problem(key)
            .or_else(|| (!key.is_ascii()).then(|| "GGUF keys must be ASCII".to_owned()));
        if let Some(reason) = key_problem {
            let key = key.clone();
            return Err(GgufWriteError::InvalidKey { key, reason });
        }
        if !seen_keys.insert(key.as_str()) {
            let key = key.clone();
            return Err(GgufWriteError::DuplicateKey { key });
        }
        if key == KEY_GENERAL_ALIGNMENT {
            if *value != GgufValue::U32(alignment) {
                let reason = format!("must be U32({alignment}), the writer's alignment");
                let key = key.clone();
                return Err(GgufWriteError::InvalidValue { key, reason });
            }
            has_alignment_key = true;
        }
        if let Some(reason) = value_problem(value) {
            let key = key.clone();
            return Err(GgufWriteError::InvalidValue { key, reason });
        }
    }
    if !has_alignment_key && alignment != DEFAULT_ALIGNMENT {
        metadata.push((KEY_GENERAL_ALIGNMENT.to_owned(), GgufValue::U32(alignment)));
    }
    Ok(metadata)
}

/// Strings and arrays that ggml would refuse to read.
fn value_problem(value: &GgufValue) -> Option<String> {
    let too_long = |text: &String| text.len() as u64 > GGML_MAX_STRING_BYTES;
    match value {
        GgufValue::String(text) if too_long(text) => Some(format!(
            "a string of {} bytes exceeds ggml's {GGML_MAX_STRING_BYTES}",
            text.len()
        )),
        GgufValue::Array(array) if array.len() as u64 > GGML_MAX_ARRAY_ELEMENTS => Some(format!(
            "an array of {} elements exceeds ggml's {GGML_MAX_ARRAY_ELEMENTS}",
            array.len()
        )),
        GgufValue::Array(GgufArray::String(strings)) if strings.iter().any(too_long) => Some(
            format!("an array element exceeds ggml's {GGML_MAX_STRING_BYTES} bytes"),
        ),
        _ => None,
    }
}

/// Checks the declared tensors and assigns offsets in declaration order, each tensor starting
/// at the previous one's end rounded up to the alignment (what ggml's reader requires).
fn lay_out_tensors(
    specs: Vec<GgufTensorSpec>,
    alignment: u32,
) -> Result<(Vec<GgufTensorInfo>, Vec<u64>), GgufWriteError> {
    let mut seen_names = HashSet::with_capacity(specs.len());
    let mut tensors = Vec::with_capacity(specs.len());
    let mut byte_lengths = Vec::with_capacity(specs.len());
    let mut next_offset = 0u64;
    for spec in specs {
        let invalid = |reason: String| GgufWriteError::InvalidTensor {
            name: spec.name.clone(),
            reason,
        };
        if let Some(reason) = tensor_name_problem(&spec.name) {
            return Err(invalid(reason));
        }
        if !seen_names.insert(spec.name.clone()) {
            return Err(GgufWriteError::DuplicateTensor { name: spec.name });
        }
        let Some((block_elements, block_bytes)) = type_size_info(spec.ggml_type) else {
            return Err(invalid(format!("unknown ggml type {}", spec.ggml_type)));
        };
        let dims: Vec<u64> = spec.shape.iter().rev().copied().collect();
        let expected_bytes = tensor_byte_len(&dims, block_elements, block_bytes)
            .map_err(|reason| invalid(format!("shape {:?}: {reason}", spec.shape)))?;
        if spec.n_bytes != expected_bytes {
            let type_name = ggml_type_name(spec.ggml_type).unwrap_or("?");
            return Err(invalid(format!(
                "declared as {} bytes, but shape {:?} of {type_name} takes {expected_bytes}",
                spec.n_bytes, spec.shape
            )));
        }
        let offset = next_offset;
        next_offset = offset
            .checked_add(spec.n_bytes)
            .and_then(|end| align_up(end, alignment))
            .ok_or_else(|| invalid("the data section overflows u64".to_owned()))?;
        tensors.push(GgufTensorInfo {
            name: spec.name,
            dims,
            ggml_type: spec.ggml_type,
            offset,
        });
        byte_lengths.push(spec.n_bytes);
    }
    Ok((tensors, byte_lengths))
}

/// Header, key-value pairs and tensor infos, zero-padded to the alignment.
fn encode_header(
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorInfo],
    alignment: u32,
) -> Vec<u8> {
    let mut header = Vec::with_capacity(4096);
    header.extend_from_slice(&GGUF_MAGIC);
    header.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        encode_string(key, &mut header);
        header.extend_from_slice(&value.value_type().id().to_le_bytes());
        value.encode_into(&mut header);
    }
    for tensor in tensors {
        encode_string(&tensor.name, &mut header);
        header.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
        for dim in &tensor.dims {
            header.extend_from_slice(&dim.to_le_bytes());
        }
        header.extend_from_slice(&tensor.ggml_type.to_le_bytes());
        header.extend_from_slice(&tensor.offset.to_le_bytes());
    }
    let padded_len = align_up(header.len() as u64, alignment).unwrap_or(header.len() as u64);
    header.resize(padded_len as usize, 0);
    header
}
