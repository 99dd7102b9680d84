//! The QEMU board's flash file: one 32 MiB CFI flash bank (QEMU's riscv `virt` pflash 0,
//! `-drive if=pflash,unit=0,format=raw,file=F`), which QEMU writes through to, so what the
//! board stores survives a restart. See firmware/qemu-c3/src/pflash.rs for the layout: a boot
//! block, then the console's knowledge store, then (optionally) an ESP32-C3 flash image whose
//! `model` partition the board reads its model from.

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

/// Where an ESP32-C3 flash image (`flash --dry-run`'s output) sits in the bank: the board maps
/// this window as the chip's 4 MiB of SPI flash (firmware/qemu-c3 `CHIP_FLASH`).
pub const FLASH_CHIP_IMAGE: std::ops::Range<usize> = 0x40_0000..0x80_0000;

/// Reads the chip flash image at `image`, checking that it is one that fits the board.
pub fn read_chip_image(image: &Path) -> Result<Vec<u8>> {
    // At most the board's chip flash.
    let bytes = crate::input::read_input(image, "chip flash image", FLASH_CHIP_IMAGE.len() as u64)?;
    let table = bytes.get(ruvllm_esp32::partition::TABLE_OFFSET..).unwrap_or(&[]);
    ruvllm_esp32::partition::Table::parse(table).map_err(|e| {
        anyhow::anyhow!("{}: not a chip flash image (partition table at 0x8000: {e})", image.display())
    })?;
    Ok(bytes)
}

/// Writes a chip flash image ([`read_chip_image`]) into the board's flash file at `path`, at
/// [`FLASH_CHIP_IMAGE`].
pub fn put_chip_image(path: &Path, bytes: &[u8]) -> Result<()> {
    let write = || -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.seek(SeekFrom::Start(FLASH_CHIP_IMAGE.start as u64))?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().with_context(|| format!("{}: cannot write the chip image into the board's flash", path.display()))
}

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
