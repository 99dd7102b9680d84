//! The virt board's first CFI parallel flash bank as an `embedded-storage` NOR flash: the
//! board's persistent storage, standing in for the ESP32-C3's SPI flash.
//!
//! QEMU's riscv `virt` machine maps two `pflash_cfi01` banks (Intel command set) of 32 MiB at
//! 0x2000_0000 and 0x2200_0000, each built of two x16 chips side by side (bank width 4 bytes,
//! device width 2) with 256 KiB erase blocks. QEMU (7.2) backs bank 0 with the file of
//! `-drive if=pflash,unit=0,format=raw,file=F` and writes every program and erase through to
//! it, so what the board stores survives a restart. (Bank 1 is no use: given a file for it,
//! QEMU boots S-mode firmware from it instead of the `-kernel` ELF.) Given bank 0, QEMU starts
//! the CPU at its base, so its first erase block is the boot block: a two-instruction jump to
//! the ELF at 0x8000_0000 ([`BOOT_BLOCK`], written by the host when it creates the file), as
//! the chip's flash starts with its bootloader. The store lives in the blocks after it.
//!
//! Commands go to both chips at once (the command byte in each 16-bit half): program
//! (`0x40`, then the data word), block erase (`0x20`, `0xD0`), read status (`0x70`; bit 7
//! ready, bits 5/4/1 erase / program / lock errors), clear status (`0x50`) and read array
//! (`0xFF`), after which the bank reads as memory again.
//!
//! A program on NOR flash can only clear bits. QEMU's model stores the written word as it is,
//! so the driver writes `old & new`: the result is what real NOR flash gives, and the store may
//! write a word again (`MultiwriteNorFlash`).

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Base address of pflash bank 0.
pub const BASE: usize = 0x2000_0000;
/// Bytes in the bank.
pub const CAPACITY: usize = 32 * 1024 * 1024;
/// Erase block of the bank (both chips' blocks side by side).
pub const SECTOR: usize = 256 * 1024;
/// Bank width: every program writes one such word.
const WORD: usize = 4;

/// A command byte for both x16 chips of the bank.
const fn cmd(c: u8) -> u32 {
    (c as u32) * 0x0001_0001
}
const PROGRAM: u32 = cmd(0x40);
const ERASE: u32 = cmd(0x20);
const CONFIRM: u32 = cmd(0xD0);
const READ_STATUS: u32 = cmd(0x70);
const CLEAR_STATUS: u32 = cmd(0x50);
const READ_ARRAY: u32 = cmd(0xFF);
/// Status: ready (both chips).
const READY: u32 = cmd(0x80);
/// Status: erase error, program error, block locked (either chip).
const FAILED: u32 = cmd(0x32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PFlashError {
    NotAligned,
    OutOfBounds,
    /// The chip reported a failed program or erase (or a locked block).
    Device,
}

impl NorFlashError for PFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            PFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            PFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            PFlashError::Device => NorFlashErrorKind::Other,
        }
    }
}

/// The first bytes of the bank: `lui t0, 0x80000; jr t0` (jump to the ELF at 0x8000_0000).
/// The host writes them into a new flash file (crates/ruvllm-cli/src/board.rs).
#[allow(dead_code)] // the firmware only runs them
pub const BOOT_BLOCK: [u8; 8] = [0xB7, 0x02, 0x00, 0x80, 0x67, 0x80, 0x02, 0x00];

/// The one pflash bank 0.
pub struct PFlash(());

impl PFlash {
    /// # Safety
    /// At most one `PFlash` may exist: it owns the bank's command interface.
    pub unsafe fn new() -> PFlash {
        PFlash(())
    }

    fn reg(offset: usize) -> *mut u32 {
        (BASE + offset) as *mut u32
    }

    fn command(offset: usize, c: u32) {
        // SAFETY: a word inside the bank (checked by the callers); writes there are commands.
        unsafe { core::ptr::write_volatile(Self::reg(offset), c) };
    }

    /// Waits for the ready bit, checks the error bits, returns the bank to read-array mode.
    fn finish(offset: usize) -> Result<(), PFlashError> {
        Self::command(offset, READ_STATUS);
        let status = loop {
            // SAFETY: in status mode a read of the bank returns the status register.
            let s = unsafe { core::ptr::read_volatile(Self::reg(offset)) };
            if s & READY == READY {
                break s;
            }
        };
        let failed = status & FAILED != 0;
        if failed {
            Self::command(offset, CLEAR_STATUS);
        }
        Self::command(offset, READ_ARRAY);
        if failed {
            Err(PFlashError::Device)
        } else {
            Ok(())
        }
    }

    fn check(offset: u32, len: usize, align: usize) -> Result<usize, PFlashError> {
        let at = offset as usize;
        if !at.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(PFlashError::NotAligned);
        }
        match at.checked_add(len) {
            Some(end) if end <= CAPACITY => Ok(at),
            _ => Err(PFlashError::OutOfBounds),
        }
    }
}

impl ErrorType for PFlash {
    type Error = PFlashError;
}

impl ReadNorFlash for PFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), PFlashError> {
        let at = Self::check(offset, bytes.len(), 1)?;
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: inside the bank, which is in read-array mode between operations.
            *b = unsafe { core::ptr::read_volatile((BASE + at + i) as *const u8) };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }
}

impl NorFlash for PFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), PFlashError> {
        let at = Self::check(from, (to as usize).saturating_sub(from as usize), SECTOR)?;
        if to < from {
            return Err(PFlashError::OutOfBounds);
        }
        for block in (at..to as usize).step_by(SECTOR) {
            Self::command(block, ERASE);
            Self::command(block, CONFIRM);
            Self::finish(block)?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), PFlashError> {
        let at = Self::check(offset, bytes.len(), WORD)?;
        for (i, chunk) in bytes.chunks_exact(WORD).enumerate() {
            let word = at + i * WORD;
            let new = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            // SAFETY: inside the bank, in read-array mode.
            let old = unsafe { core::ptr::read_volatile(Self::reg(word)) };
            if old & new == old {
                continue; // nothing to clear
            }
            Self::command(word, PROGRAM);
            Self::command(word, old & new);
            Self::finish(word)?;
        }
        Ok(())
    }
}

/// A program can clear bits of a word already written (see the module docs).
impl MultiwriteNorFlash for PFlash {}
