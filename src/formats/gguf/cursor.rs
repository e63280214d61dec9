//! A bounds-checked little-endian cursor over the metadata region of an untrusted file.

use super::GgufError;

/// Reads the header, key-value pairs and tensor infos front to back. Every read checks the
/// remaining length first, with checked arithmetic, so a lying length yields an error instead of
/// a panic or an allocation.
pub(super) struct Cursor<'file> {
    /// The bytes that may be parsed: the file, cut at `max_metadata_bytes`.
    window: &'file [u8],
    /// Offset of the next unread byte, from the start of the file.
    position: usize,
    file_len: u64,
    max_metadata_bytes: u64,
}

impl<'file> Cursor<'file> {
    pub(super) fn new(file: &'file [u8], max_metadata_bytes: u64) -> Cursor<'file> {
        let window_len =
            usize::try_from(max_metadata_bytes).map_or(file.len(), |limit| limit.min(file.len()));
        Cursor {
            window: &file[..window_len],
            position: 0,
            file_len: file.len() as u64,
            max_metadata_bytes,
        }
    }

    /// Offset of the next unread byte, from the start of the file.
    pub(super) fn position(&self) -> u64 {
        self.position as u64
    }

    /// Takes the next `n_bytes` bytes. Fails with [`GgufError::LimitExceeded`] when they lie
    /// beyond `max_metadata_bytes` inside the file, and with [`GgufError::Truncated`] when they
    /// lie beyond the end of the file; `context` says what was being read.
    pub(super) fn take(
        &mut self,
        n_bytes: u64,
        context: &dyn Fn() -> String,
    ) -> Result<&'file [u8], GgufError> {
        self.ensure_available(n_bytes, context)?;
        // ensure_available proved that `position + n_bytes <= window.len()`.
        let end = self.position + n_bytes as usize;
        let bytes = &self.window[self.position..end];
        self.position = end;
        Ok(bytes)
    }

    /// Checks that `n_bytes` more bytes can be read, without reading them: used before
    /// allocating room for a claimed number of array elements.
    pub(super) fn ensure_available(
        &self,
        n_bytes: u64,
        context: &dyn Fn() -> String,
    ) -> Result<(), GgufError> {
        let start = self.position as u64;
        let end = start.saturating_add(n_bytes);
        if end <= self.window.len() as u64 {
            return Ok(());
        }
        if (self.window.len() as u64) < self.file_len {
            // The window was cut at the limit: whether or not the file holds these bytes, they
            // are past what the caller allows the metadata to occupy.
            return Err(GgufError::LimitExceeded {
                what: "metadata region (header, key-value pairs and tensor infos) in bytes",
                value: end,
                limit: self.max_metadata_bytes,
            });
        }
        Err(GgufError::Truncated {
            context: context(),
            offset: start,
            end,
            file_len: self.file_len,
        })
    }

    pub(super) fn read_u8(&mut self, context: &dyn Fn() -> String) -> Result<u8, GgufError> {
        Ok(self.read_array::<1>(context)?[0])
    }

    pub(super) fn read_u32(&mut self, context: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.read_array(context).map(u32::from_le_bytes)
    }

    pub(super) fn read_u64(&mut self, context: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.read_array(context).map(u64::from_le_bytes)
    }

    pub(super) fn read_array<const N: usize>(
        &mut self,
        context: &dyn Fn() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, context)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    /// Reads a `gguf_string_t` (u64 length, bytes) of at most `max_string_bytes` bytes, without
    /// checking UTF-8 (the caller knows which error a bad string is).
    pub(super) fn read_string_bytes(
        &mut self,
        max_string_bytes: u64,
        context: &dyn Fn() -> String,
    ) -> Result<&'file [u8], GgufError> {
        let len = self.read_u64(context)?;
        if len > max_string_bytes {
            return Err(GgufError::LimitExceeded {
                what: "string length in bytes",
                value: len,
                limit: max_string_bytes,
            });
        }
        self.take(len, context)
    }
}
