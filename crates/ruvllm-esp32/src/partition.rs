//! ESP-IDF partition tables: how a chip finds the model partition that `ruvllm-esp32 flash`
//! writes beside the firmware, so a new model can be flashed without rebuilding the firmware.
//!
//! The table sits at flash offset [`TABLE_OFFSET`] and holds up to [`TABLE_LEN`] bytes of
//! 32-byte entries: magic `AA 50`, type, subtype, offset (u32 LE), size (u32 LE), a 16-byte
//! NUL-padded label and flags (u32 LE). An optional entry starting `EB EB` carries the MD5 of
//! the entries before it (ESP-IDF's `gen_esp32part.py` writes one, espflash too); `FF FF` (erased
//! flash) ends the table. The bytes are untrusted flash: every field is checked, nothing panics.

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use md5::{Digest, Md5};

/// Flash offset of the partition table (ESP-IDF's default, what the second-stage bootloader
/// reads).
pub const TABLE_OFFSET: usize = 0x8000;
/// The table's size in flash (ESP-IDF's `ESP_PARTITION_TABLE_MAX_LEN`).
pub const TABLE_LEN: usize = 0xC00;
/// Bytes per entry.
pub const ENTRY_LEN: usize = 32;
/// The label of the data partition that holds the model image.
pub const MODEL_LABEL: &str = "model";

const ENTRY_MAGIC: [u8; 2] = [0xAA, 0x50];
const MD5_MAGIC: [u8; 2] = [0xEB, 0xEB];
const END: [u8; 2] = [0xFF, 0xFF];

/// Partition types (the type byte).
pub const TYPE_APP: u8 = 0x00;
pub const TYPE_DATA: u8 = 0x01;

/// One partition, as the table describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition<'a> {
    pub label: &'a str,
    pub kind: u8,
    pub subtype: u8,
    /// Flash offset of the first byte.
    pub offset: u32,
    pub size: u32,
    pub flags: u32,
}

impl Partition<'_> {
    /// The partition's bytes within `flash` (the whole flash, offset 0 first).
    pub fn bytes<'f>(&self, flash: &'f [u8]) -> Result<&'f [u8]> {
        let start = self.offset as usize;
        let end = start.checked_add(self.size as usize);
        end.and_then(|end| flash.get(start..end)).ok_or(Error::Invalid { what: "partition beyond the flash" })
    }
}

/// A checked partition table: its entries' bytes (the MD5 entry and the end excluded).
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    entries: &'a [u8],
    md5_checked: bool,
}

impl<'a> Table<'a> {
    /// Checks the table in `bytes` (the [`TABLE_LEN`] bytes at [`TABLE_OFFSET`], or fewer):
    /// every entry's magic, label and span, and the MD5 entry when there is one.
    pub fn parse(bytes: &'a [u8]) -> Result<Table<'a>> {
        let bytes = &bytes[..bytes.len().min(TABLE_LEN)];
        let mut n = 0;
        let mut md5_checked = false;
        for e in bytes.chunks_exact(ENTRY_LEN) {
            match [e[0], e[1]] {
                ENTRY_MAGIC => {
                    entry(e)?;
                    n += 1;
                }
                MD5_MAGIC => {
                    if e[2..16].iter().any(|&b| b != 0xFF) {
                        return Err(Error::Invalid { what: "partition table MD5 entry" });
                    }
                    let computed: [u8; 16] = Md5::digest(&bytes[..n * ENTRY_LEN]).into();
                    if computed[..] != e[16..] {
                        return Err(Error::Invalid { what: "partition table MD5 (the table is corrupt)" });
                    }
                    md5_checked = true;
                    break;
                }
                END => break,
                _ => return Err(Error::BadMagic { expected: "ESP-IDF partition table entry" }),
            }
        }
        if n == 0 {
            return Err(Error::Missing { what: "partition table (erased or blank flash)" });
        }
        Ok(Table { entries: &bytes[..n * ENTRY_LEN], md5_checked })
    }

    /// Whether the table carried an MD5 entry (and it matched).
    pub fn md5_checked(&self) -> bool {
        self.md5_checked
    }

    /// The partitions in table order.
    pub fn iter(&self) -> impl Iterator<Item = Partition<'a>> + 'a {
        // parse checked every entry.
        self.entries.chunks_exact(ENTRY_LEN).filter_map(|e| entry(e).ok())
    }

    /// The partition labelled `label`.
    pub fn find(&self, label: &'static str) -> Result<Partition<'a>> {
        self.iter().find(|p| p.label == label).ok_or(Error::Missing { what: label })
    }
}

fn entry(e: &[u8]) -> Result<Partition<'_>> {
    let u32_at = |o: usize| u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]);
    let label = &e[12..28];
    let len = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    let label = core::str::from_utf8(&label[..len])
        .map_err(|_| Error::Invalid { what: "partition label (not UTF-8)" })?;
    let (offset, size) = (u32_at(4), u32_at(8));
    if offset.checked_add(size).is_none() {
        return Err(Error::Invalid { what: "partition span (offset + size overflows)" });
    }
    Ok(Partition { label, kind: e[2], subtype: e[3], offset, size, flags: u32_at(28) })
}

/// The model image in the [`MODEL_LABEL`] data partition of `flash` (the whole flash, read in
/// place: mapped by the chip's MMU, or a file on the host). The partition is larger than the
/// image and its tail erased; the image's own header says where it ends. The caller checks the
/// image itself (`Model::from_gguf` verifies its checksum).
pub fn model_image(flash: &[u8]) -> Result<(Partition<'_>, &[u8])> {
    let table =
        flash.get(TABLE_OFFSET..).ok_or(Error::Truncated { what: "flash before the partition table" })?;
    let part = model_partition(table)?;
    let bytes = part.bytes(flash)?;
    Ok((part, image_in(bytes)?))
}

/// The [`MODEL_LABEL`] data partition of the table in `table` (for a chip that reads the table
/// and then maps only the partition).
pub fn model_partition(table: &[u8]) -> Result<Partition<'_>> {
    let part = Table::parse(table)?
        .find(MODEL_LABEL)
        .map_err(|_| Error::Missing { what: "a `model` partition in the partition table" })?;
    if part.kind != TYPE_DATA {
        return Err(Error::Invalid { what: "the model partition is not a data partition" });
    }
    Ok(part)
}

/// Whether `table` (the bytes at [`TABLE_OFFSET`]) is blank: erased flash, or never written
/// (an emulator's zeroed flash). No table there is no error; a damaged one is.
pub fn is_blank(table: &[u8]) -> bool {
    matches!(table, [0xFF, 0xFF, ..] | [0x00, 0x00, ..] | [] | [_])
}

/// The GGUF image at the start of `bytes` (a partition), without the erased bytes after it.
pub fn image_in(bytes: &[u8]) -> Result<&[u8]> {
    let len = Gguf::parse(bytes)?.image_len();
    Ok(&bytes[..len])
}

#[cfg(test)]
mod tests;
