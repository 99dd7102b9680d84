//! A simulated NOR flash for the store's tests, shaped like the ESP32's SPI flash as
//! esp-storage presents it: 4-byte read and write words, 4096-byte erase sectors, erase sets
//! every bit to 1, a write can only clear bits (the stored word becomes `old & new`).
//!
//! Power loss: [`SimFlash::cut_at`] arms a cut at the k-th primitive operation, counting
//! from 0 since the flash was made. A primitive operation is the programming of one word or
//! the erase of one sector. The operation hit by the cut is torn, and from then on every
//! access fails until [`SimFlash::power_on`]:
//! * a torn word write programs an arbitrary part of the word: none of it, all of it, a
//!   prefix of its bytes, or a random subset of the bits it should clear;
//! * a torn sector erase erases a prefix of the sector's words, and sets a random subset of
//!   the bits of the word where it stopped (the rest of the sector keeps its old bytes).
//!
//! The parts are drawn from a generator seeded with the cut index, so each cut point is
//! reproducible.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// The ESP32's flash geometry, as `RamFlash` has it.
pub use super::ram::{RAM_SECTOR as SECTOR, RAM_WORD as WORD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimError {
    PowerLost,
    NotAligned,
    OutOfBounds,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimError::PowerLost => NorFlashErrorKind::Other,
            SimError::NotAligned => NorFlashErrorKind::NotAligned,
            SimError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

/// The deterministic generator of the torn operations (the vector code's splitmix64).
pub use crate::vector::metric::SplitMix as Rng;

pub struct SimFlash {
    pub data: Vec<u8>,
    /// Primitive operations started so far (the torn one included).
    pub ops: usize,
    /// Sector erases completed so far.
    pub erases: usize,
    cut: Option<usize>,
    powered: bool,
}

impl SimFlash {
    /// A flash of `sectors` erase sectors, fully erased.
    pub fn new(sectors: usize) -> Self {
        Self { data: vec![0xFF; sectors * SECTOR], ops: 0, erases: 0, cut: None, powered: true }
    }

    /// Tears the `k`-th primitive operation (counting from 0) and cuts the power there.
    pub fn cut_at(&mut self, k: usize) {
        self.cut = Some(k);
    }

    /// True once the armed cut has happened.
    pub fn power_lost(&self) -> bool {
        !self.powered
    }

    /// Power comes back (a reboot): accesses work again, no cut is armed.
    pub fn power_on(&mut self) {
        self.powered = true;
        self.cut = None;
    }

    /// Starts a primitive operation: true when it is the one the cut tears.
    fn start_op(&mut self) -> bool {
        let torn = self.cut == Some(self.ops);
        self.ops += 1;
        torn
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<usize, SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        let offset = offset as usize;
        if !offset.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(SimError::NotAligned);
        }
        if offset + len > self.data.len() {
            return Err(SimError::OutOfBounds);
        }
        Ok(offset)
    }

    fn rng(&self) -> Rng {
        Rng(self.ops as u64 ^ 0x5EED_F1A5)
    }
}

impl ErrorType for SimFlash {
    type Error = SimError;
}

impl ReadNorFlash for SimFlash {
    const READ_SIZE: usize = WORD;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        let at = self.check(offset, bytes.len(), WORD)?;
        bytes.copy_from_slice(&self.data[at..at + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl NorFlash for SimFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        if from > to {
            return Err(SimError::OutOfBounds);
        }
        let start = self.check(from, (to - from) as usize, SECTOR)?;
        for sector in (start..to as usize).step_by(SECTOR) {
            if self.start_op() {
                let mut rng = self.rng();
                let words = rng.below(SECTOR / WORD + 1);
                self.data[sector..sector + words * WORD].fill(0xFF);
                if words < SECTOR / WORD {
                    let at = sector + words * WORD;
                    for b in &mut self.data[at..at + WORD] {
                        *b |= rng.next_u64() as u8;
                    }
                }
                self.powered = false;
                return Err(SimError::PowerLost);
            }
            self.data[sector..sector + SECTOR].fill(0xFF);
            self.erases += 1;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let start = self.check(offset, bytes.len(), WORD)?;
        for (i, word) in bytes.chunks_exact(WORD).enumerate() {
            let at = start + i * WORD;
            if self.start_op() {
                let mut rng = self.rng();
                // Bits set in `unprogrammed` are left as they were.
                let unprogrammed: [u8; WORD] = match rng.below(4) {
                    0 => [0xFF; WORD],
                    1 => [0x00; WORD],
                    2 => {
                        let prefix = rng.below(WORD);
                        core::array::from_fn(|b| if b < prefix { 0x00 } else { 0xFF })
                    }
                    _ => core::array::from_fn(|_| rng.next_u64() as u8),
                };
                for ((cell, new), keep) in self.data[at..at + WORD].iter_mut().zip(word).zip(unprogrammed) {
                    *cell &= new | keep;
                }
                self.powered = false;
                return Err(SimError::PowerLost);
            }
            for (cell, new) in self.data[at..at + WORD].iter_mut().zip(word) {
                *cell &= new;
            }
        }
        Ok(())
    }
}

/// NOR flash: programming an already-programmed word clears more bits, which the store uses
/// to mark an item removed.
impl MultiwriteNorFlash for SimFlash {}
