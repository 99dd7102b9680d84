//! [`RamFlash`]: a NOR flash held in a byte buffer, shaped like the ESP32's SPI flash.
//!
//! It lets the host keep the very bytes the chip keeps: a [`super::Store`] over a `RamFlash`
//! is a flash image that can be written to a file and mounted again (on the host, or flashed
//! into the chip's store partition). Erase sets bytes to `0xFF`; a write can only clear bits
//! (the cell becomes `old & new`), as on NOR flash.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Read and write granularity of [`RamFlash`] (the ESP32's 4-byte words).
pub const RAM_WORD: usize = 4;
/// Erase sector of [`RamFlash`] (the ESP32's 4096 bytes).
pub const RAM_SECTOR: usize = 4096;

/// A misaligned or out-of-bounds access to a [`RamFlash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamFlashError {
    NotAligned,
    OutOfBounds,
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RamFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            RamFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

/// A NOR flash in the byte buffer `B` (`[u8; N]`, `&mut [u8]`, `Vec<u8>`): 4-byte words,
/// 4096-byte erase sectors. See the module docs.
pub struct RamFlash<B> {
    bytes: B,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> RamFlash<B> {
    /// A flash holding `bytes` as they are (an image read back, or erased `0xFF`s).
    pub fn new(bytes: B) -> Self {
        Self { bytes }
    }

    /// The flash contents.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> B {
        self.bytes
    }

    fn span(&self, offset: u32, len: usize, align: usize) -> Result<core::ops::Range<usize>, RamFlashError> {
        let at = offset as usize;
        if !at.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(RamFlashError::NotAligned);
        }
        let end = at.checked_add(len).ok_or(RamFlashError::OutOfBounds)?;
        if end > self.bytes.as_ref().len() {
            return Err(RamFlashError::OutOfBounds);
        }
        Ok(at..end)
    }
}

impl<B> ErrorType for RamFlash<B> {
    type Error = RamFlashError;
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> ReadNorFlash for RamFlash<B> {
    const READ_SIZE: usize = RAM_WORD;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
        let span = self.span(offset, bytes.len(), RAM_WORD)?;
        bytes.copy_from_slice(&self.bytes.as_ref()[span]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.as_ref().len()
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> NorFlash for RamFlash<B> {
    const WRITE_SIZE: usize = RAM_WORD;
    const ERASE_SIZE: usize = RAM_SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
        let len = to.checked_sub(from).ok_or(RamFlashError::OutOfBounds)? as usize;
        let span = self.span(from, len, RAM_SECTOR)?;
        self.bytes.as_mut()[span].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
        let span = self.span(offset, bytes.len(), RAM_WORD)?;
        for (cell, new) in self.bytes.as_mut()[span].iter_mut().zip(bytes) {
            *cell &= new;
        }
        Ok(())
    }
}

/// Programming a programmed word clears more bits, as on NOR flash.
impl<B: AsRef<[u8]> + AsMut<[u8]>> MultiwriteNorFlash for RamFlash<B> {}
