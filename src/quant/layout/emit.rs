//! The emitter encoders write into: every piece is checked against the declared output tensors
//! (name, then byte count) before it reaches the file, so the declared order holds by
//! construction and a layout bug fails the job instead of writing a corrupt file.

use std::io;

use super::{EncodeError, OutputTensor};

/// Where checked tensor bytes go (the output file's writer).
pub trait TensorSink {
    /// Appends `bytes` to the data of tensor `name` (possibly one of several pieces).
    fn write_tensor_data(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
}

/// An encoder emitted something other than what its layout declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layout mismatch: {got_bytes} bytes emitted for '{got}' while {expected}")]
pub struct LayoutMismatch {
    /// What the declaration expected at this point.
    pub expected: String,
    pub got: String,
    pub got_bytes: u64,
}

/// Emits the declared output tensors of one input tensor, in order, each in one or more
/// consecutive pieces.
pub struct Emitter<'s> {
    declared: &'s [OutputTensor],
    /// The declared tensor being written (or next to be started).
    current: usize,
    /// Bytes of `declared[current]` emitted so far.
    written: u64,
    /// Bytes emitted over all declared tensors.
    total: u64,
    sink: &'s mut dyn TensorSink,
}

impl<'s> Emitter<'s> {
    pub fn new(declared: &'s [OutputTensor], sink: &'s mut dyn TensorSink) -> Self {
        Emitter {
            declared,
            current: 0,
            written: 0,
            total: 0,
            sink,
        }
    }

    /// Writes the next piece of tensor `name`: the current declared tensor's, or, once that one
    /// is complete, the next one's. Anything else is a [`LayoutMismatch`] and nothing is written.
    pub fn emit(&mut self, name: &str, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = bytes.len() as u64;
        loop {
            let Some(tensor) = self.declared.get(self.current) else {
                return Err(self.mismatch("every declared tensor is complete", name, len));
            };
            if tensor.name == name && self.written + len <= tensor.n_bytes {
                break;
            }
            if self.written < tensor.n_bytes {
                let expected = format!(
                    "'{}' still expects {} of its {} bytes",
                    tensor.name,
                    tensor.n_bytes - self.written,
                    tensor.n_bytes
                );
                return Err(self.mismatch(&expected, name, len));
            }
            self.current += 1;
            self.written = 0;
        }
        self.sink
            .write_tensor_data(name, bytes)
            .map_err(EncodeError::Sink)?;
        self.written += len;
        self.total += len;
        Ok(())
    }

    /// Bytes emitted so far.
    pub fn bytes_written(&self) -> u64 {
        self.total
    }

    /// Checks that every declared tensor is complete; returns the bytes emitted.
    pub fn check_complete(&self) -> Result<u64, EncodeError> {
        let mut remaining = self.declared.iter().skip(self.current);
        if let Some(tensor) = remaining.next() {
            if self.written != tensor.n_bytes {
                let expected = format!(
                    "'{}' ends after {} of its {} bytes",
                    tensor.name, self.written, tensor.n_bytes
                );
                return Err(self.mismatch(&expected, &tensor.name, 0));
            }
        }
        if let Some(tensor) = remaining.find(|t| t.n_bytes > 0) {
            let expected = format!(
                "'{}' ({} bytes) was never emitted",
                tensor.name, tensor.n_bytes
            );
            return Err(self.mismatch(&expected, &tensor.name, 0));
        }
        Ok(self.total)
    }

    fn mismatch(&self, expected: &str, got: &str, got_bytes: u64) -> EncodeError {
        EncodeError::Layout(LayoutMismatch {
            expected: expected.to_owned(),
            got: got.to_owned(),
            got_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::safetensors::Dtype;
    use crate::quant::layout::StoredAs;

    #[derive(Default)]
    struct Recorder(Vec<(String, usize)>);

    impl TensorSink for Recorder {
        fn write_tensor_data(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
            self.0.push((name.to_owned(), bytes.len()));
            Ok(())
        }
    }

    fn declared() -> Vec<OutputTensor> {
        let tensor = |name: &str, n_bytes| OutputTensor {
            name: name.into(),
            stored_as: StoredAs::Safetensors(Dtype::U8),
            shape: vec![n_bytes as usize],
            n_bytes,
        };
        vec![tensor("w", 4), tensor("w_empty", 0), tensor("w_scale", 2)]
    }

    #[test]
    fn pieces_in_declared_order_pass() {
        let declared = declared();
        let mut sink = Recorder::default();
        let mut emitter = Emitter::new(&declared, &mut sink);
        emitter.emit("w", &[0; 3]).unwrap();
        emitter.emit("w", &[0; 1]).unwrap();
        emitter.emit("w_scale", &[0; 2]).unwrap();
        assert_eq!(emitter.check_complete().unwrap(), 6);
        assert_eq!(sink.0.len(), 3);
    }

    #[test]
    fn wrong_order_extra_bytes_and_missing_tensors_fail_before_writing() {
        let declared = declared();
        let mut sink = Recorder::default();
        let mut emitter = Emitter::new(&declared, &mut sink);
        // Out of order: `w` is not complete.
        let error = emitter.emit("w_scale", &[0; 2]).unwrap_err();
        assert!(matches!(error, EncodeError::Layout(_)), "{error}");
        emitter.emit("w", &[0; 4]).unwrap();
        // Too many bytes for the next tensor.
        assert!(emitter.emit("w_scale", &[0; 3]).is_err());
        // Missing the last one.
        assert!(emitter.check_complete().is_err());
        assert_eq!(sink.0, vec![("w".to_owned(), 4)]);
    }
}
