//! The QEMU board's flash file: one 32 MiB CFI flash bank (QEMU's riscv `virt` pflash 0,
//! `-drive if=pflash,unit=0,format=raw,file=F`), which QEMU writes through to, so what the
//! board stores survives a restart. See firmware/qemu-c3/src/pflash.rs for the layout: a boot
//! block, then the console's knowledge store.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Bytes of the file: the whole bank.
pub const FLASH_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Erase block of the bank.
pub const FLASH_SECTOR: usize = 256 * 1024;
/// The boot block's code: `lui t0, 0x80000; jr t0`. Given a file for pflash 0, QEMU starts the
/// CPU at the bank; this jumps on to the ELF at 0x8000_0000.
pub const FLASH_BOOT_BLOCK: [u8; 8] = [0xB7, 0x02, 0x00, 0x80, 0x67, 0x80, 0x02, 0x00];
/// The knowledge store's byte range in the file (the two blocks after the boot block).
pub const FLASH_STORE: std::ops::Range<usize> = FLASH_SECTOR..3 * FLASH_SECTOR;

/// Writes a new flash file at `path`: the boot block, then erased (0xFF) boot and store
/// blocks; the rest of the bank is left sparse.
pub fn new_flash_file(path: &Path) -> Result<()> {
    let mut head = vec![0xFFu8; FLASH_STORE.end];
    head[..FLASH_BOOT_BLOCK.len()].copy_from_slice(&FLASH_BOOT_BLOCK);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(&head)?;
        f.set_len(FLASH_FILE_BYTES)?;
        f.sync_all()
    };
    write().with_context(|| format!("{}: cannot write the board's flash file", path.display()))
}
