//! Streaming safetensors writer: header first, then tensor data in declared order.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use super::elements::{encode_le_into, LittleEndianElement};
use super::validate::{tensor_byte_len, tensor_name_problem};
use super::{Dtype, Header, TensorInfo, LENGTH_PREFIX_BYTES, MAX_RANK, MAX_TENSORS, METADATA_KEY};

/// Why the writer refused a call. These are programming errors of the caller (or I/O
/// failures), never properties of an upload, so they have no slugs.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsWriteError {
    #[error("tensor {name:?} cannot be written: {reason}")]
    InvalidTensor { name: String, reason: String },
    #[error("tensor {name:?} is declared more than once")]
    DuplicateTensor { name: String },
    #[error("{count} tensors declared, more than the {limit} a reader accepts")]
    TooManyTensors { count: usize, limit: usize },
    #[error("tensor {name:?} was not declared")]
    UnknownTensor { name: String },
    #[error("tensor {name:?} was already written completely")]
    AlreadyWritten { name: String },
    #[error("data for tensor {name:?} arrived while tensor {pending:?} still misses {missing_bytes} bytes")]
    OutOfOrder {
        name: String,
        pending: String,
        missing_bytes: u64,
    },
    #[error("tensor {name:?} is declared as {declared} bytes but would receive {received}")]
    TooManyBytes {
        name: String,
        declared: u64,
        received: u64,
    },
    #[error("tensor {name:?} is declared as {dtype}, which {element_type} values cannot hold")]
    DtypeMismatch {
        name: String,
        dtype: Dtype,
        element_type: &'static str,
    },
    #[error("tensor {name:?} is declared as {declared} bytes but received only {received}")]
    Incomplete {
        name: String,
        declared: u64,
        received: u64,
    },
    #[error("an earlier write failed, so the output is incomplete")]
    Poisoned,
    #[error("writing the output failed")]
    Io(#[from] std::io::Error),
}

/// Writes a safetensors file to any `std::io::Write` without holding tensor data in memory.
///
/// The layout follows the reference writer (huggingface/safetensors, `safetensors/src/tensor.rs`,
/// `prepare` and `serialize_to_file`): the 8-byte little-endian header length, the JSON header
/// padded with spaces to a multiple of 8 bytes (so the data section starts 8-aligned), then the
/// tensors' bytes back to back. Unlike the reference, which sorts tensors by dtype and name, the
/// data and the header's keys follow the declaration order, so a caller can stream tensors as
/// it produces them. `__metadata__`, when not empty, comes first, as in the reference.
///
/// The header is written by [`SafetensorsWriter::new`]; each tensor's bytes then arrive through
/// one or more [`write_tensor_data`](Self::write_tensor_data) calls in declared order, and
/// [`finish`](Self::finish) checks that every tensor got exactly its size. Zero-sized tensors
/// need no call.
pub struct SafetensorsWriter<W: Write> {
    sink: W,
    /// The header as written; its tensors are in declaration order, which is offset order.
    header: Header,
    /// Position of each name in `header.tensors`.
    index_by_name: HashMap<String, usize>,
    /// The tensor receiving data now; every tensor before it is complete.
    current_tensor: usize,
    bytes_written_to_current: u64,
    /// Set after a failed write, when the output's length is unknown.
    poisoned: bool,
}

/// Bytes encoded per `write_all` by [`SafetensorsWriter::write_tensor_values`].
const ENCODE_BUFFER_BYTES: usize = 8192;

impl<W: Write> SafetensorsWriter<W> {
    /// Checks the declared tensors, lays them out in the given order and writes the header.
    /// Names must be non-empty, unique, at most 1024 bytes and not `__metadata__`; ranks at most
    /// 8; byte sizes must not overflow. Those are the reader's rules, so whatever this writes,
    /// [`Header::parse_file`] accepts under limits that admit its size.
    pub fn new(
        mut sink: W,
        tensors: Vec<(String, Dtype, Vec<usize>)>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self, SafetensorsWriteError> {
        let tensors = lay_out_tensors(tensors)?;
        let mut index_by_name = HashMap::with_capacity(tensors.len());
        for (tensor_index, tensor) in tensors.iter().enumerate() {
            if index_by_name
                .insert(tensor.name.clone(), tensor_index)
                .is_some()
            {
                return Err(SafetensorsWriteError::DuplicateTensor {
                    name: tensor.name.clone(),
                });
            }
        }

        let header_json = header_json(&tensors, &metadata)?;
        let header_len = header_json.len() as u64;
        sink.write_all(&header_len.to_le_bytes())?;
        sink.write_all(&header_json)?;

        let data_len = tensors.last().map_or(0, |tensor| tensor.data_offsets.1);
        let header = Header {
            tensors,
            metadata,
            header_len,
            data_start: LENGTH_PREFIX_BYTES + header_len,
            data_len,
        };
        Ok(SafetensorsWriter {
            sink,
            header,
            index_by_name,
            current_tensor: 0,
            bytes_written_to_current: 0,
            poisoned: false,
        })
    }

    /// The header that was written: offsets, sizes and the final file size.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Appends `bytes` (little-endian element data) to tensor `name`. Calls must follow the
    /// declared order; a tensor may receive its bytes over several calls, and must be complete
    /// before the next tensor receives any.
    pub fn write_tensor_data(
        &mut self,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), SafetensorsWriteError> {
        self.prepare_write(name, bytes.len() as u64)?;
        self.write_to_sink(bytes)
    }

    /// Appends `values` to tensor `name`, encoded little-endian through a small stack buffer
    /// (see [`LittleEndianElement`]). The element type must hold the tensor's dtype bit for bit
    /// (`f32` for F32, `i8` for I8, `u16` for F16/BF16 bit patterns, ...). Nothing is written
    /// unless all of `values` fits in the tensor.
    pub fn write_tensor_values<T: LittleEndianElement>(
        &mut self,
        name: &str,
        values: &[T],
    ) -> Result<(), SafetensorsWriteError> {
        if let Some(&tensor_index) = self.index_by_name.get(name) {
            let dtype = self.header.tensors[tensor_index].dtype;
            if !T::DTYPES.contains(&dtype) {
                return Err(SafetensorsWriteError::DtypeMismatch {
                    name: name.to_owned(),
                    dtype,
                    element_type: std::any::type_name::<T>(),
                });
            }
        }
        let n_bytes = (values.len() as u64).saturating_mul(T::SIZE_BYTES as u64);
        self.prepare_write(name, n_bytes)?;
        let mut buffer = [0u8; ENCODE_BUFFER_BYTES];
        for values_chunk in values.chunks(ENCODE_BUFFER_BYTES / T::SIZE_BYTES) {
            let encoded = &mut buffer[..values_chunk.len() * T::SIZE_BYTES];
            encode_le_into(values_chunk, encoded);
            self.write_to_sink(encoded)?;
        }
        Ok(())
    }

    /// Checks that every tensor received exactly its declared bytes, flushes, and returns the
    /// sink.
    pub fn finish(mut self) -> Result<W, SafetensorsWriteError> {
        if self.poisoned {
            return Err(SafetensorsWriteError::Poisoned);
        }
        for (tensor_index, tensor) in self
            .header
            .tensors
            .iter()
            .enumerate()
            .skip(self.current_tensor)
        {
            let received = if tensor_index == self.current_tensor {
                self.bytes_written_to_current
            } else {
                0
            };
            if received != tensor.n_bytes() {
                return Err(SafetensorsWriteError::Incomplete {
                    name: tensor.name.clone(),
                    declared: tensor.n_bytes(),
                    received,
                });
            }
        }
        self.sink.flush()?;
        Ok(self.sink)
    }

    /// Moves the cursor to tensor `name` and checks that `n_bytes` more bytes fit in it. Only
    /// the counters change; the caller writes the bytes.
    fn prepare_write(&mut self, name: &str, n_bytes: u64) -> Result<(), SafetensorsWriteError> {
        if self.poisoned {
            return Err(SafetensorsWriteError::Poisoned);
        }
        let Some(&target_index) = self.index_by_name.get(name) else {
            return Err(SafetensorsWriteError::UnknownTensor {
                name: name.to_owned(),
            });
        };
        if target_index < self.current_tensor {
            return Err(SafetensorsWriteError::AlreadyWritten {
                name: name.to_owned(),
            });
        }
        // Tensors between the cursor and the target must be complete (or zero-sized).
        while self.current_tensor < target_index {
            let pending = &self.header.tensors[self.current_tensor];
            if self.bytes_written_to_current < pending.n_bytes() {
                return Err(SafetensorsWriteError::OutOfOrder {
                    name: name.to_owned(),
                    pending: pending.name.clone(),
                    missing_bytes: pending.n_bytes() - self.bytes_written_to_current,
                });
            }
            self.current_tensor += 1;
            self.bytes_written_to_current = 0;
        }
        let declared = self.header.tensors[target_index].n_bytes();
        let received = self.bytes_written_to_current.saturating_add(n_bytes);
        if received > declared {
            return Err(SafetensorsWriteError::TooManyBytes {
                name: name.to_owned(),
                declared,
                received,
            });
        }
        self.bytes_written_to_current = received;
        Ok(())
    }

    fn write_to_sink(&mut self, bytes: &[u8]) -> Result<(), SafetensorsWriteError> {
        self.sink.write_all(bytes).map_err(|io_error| {
            self.poisoned = true;
            SafetensorsWriteError::Io(io_error)
        })
    }
}

/// Checks the declared tensors and assigns back-to-back offsets in declaration order.
fn lay_out_tensors(
    tensors: Vec<(String, Dtype, Vec<usize>)>,
) -> Result<Vec<TensorInfo>, SafetensorsWriteError> {
    if tensors.len() > MAX_TENSORS {
        return Err(SafetensorsWriteError::TooManyTensors {
            count: tensors.len(),
            limit: MAX_TENSORS,
        });
    }
    let mut next_offset = 0u64;
    let mut laid_out = Vec::with_capacity(tensors.len());
    for (name, dtype, shape) in tensors {
        if let Some(reason) = tensor_name_problem(&name) {
            return Err(SafetensorsWriteError::InvalidTensor { name, reason });
        }
        if shape.len() > MAX_RANK {
            let reason = format!("rank {} exceeds {MAX_RANK}", shape.len());
            return Err(SafetensorsWriteError::InvalidTensor { name, reason });
        }
        let end =
            tensor_byte_len(dtype, &shape).and_then(|n_bytes| next_offset.checked_add(n_bytes));
        let Some(end) = end else {
            let reason = format!("shape {shape:?} of {dtype} overflows the file size");
            return Err(SafetensorsWriteError::InvalidTensor { name, reason });
        };
        laid_out.push(TensorInfo {
            name,
            dtype,
            shape,
            data_offsets: (next_offset, end),
        });
        next_offset = end;
    }
    Ok(laid_out)
}

/// The JSON header, padded with spaces so that `8 + len` is a multiple of 8.
fn header_json(
    tensors: &[TensorInfo],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, SafetensorsWriteError> {
    let mut json = Vec::with_capacity(64 + 96 * tensors.len());
    json.push(b'{');
    let mut needs_comma = false;
    if !metadata.is_empty() {
        write!(json, "\"{METADATA_KEY}\":")?;
        serde_json::to_writer(&mut json, metadata).map_err(std::io::Error::from)?;
        needs_comma = true;
    }
    for tensor in tensors {
        if needs_comma {
            json.push(b',');
        }
        needs_comma = true;
        // serde_json escapes the name; everything else is ASCII we format ourselves.
        serde_json::to_writer(&mut json, &tensor.name).map_err(std::io::Error::from)?;
        write!(
            json,
            ":{{\"dtype\":\"{}\",\"shape\":[",
            tensor.dtype.as_str()
        )?;
        for (dim_index, dim) in tensor.shape.iter().enumerate() {
            if dim_index > 0 {
                json.push(b',');
            }
            write!(json, "{dim}")?;
        }
        let (begin, end) = tensor.data_offsets;
        write!(json, "],\"data_offsets\":[{begin},{end}]}}")?;
    }
    json.push(b'}');
    let padding = (8 - json.len() % 8) % 8;
    json.resize(json.len() + padding, b' ');
    Ok(json)
}
