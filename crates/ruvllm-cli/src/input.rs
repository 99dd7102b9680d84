//! Reading the files named on the command line. They may be anything: a FIFO that never
//! delivers, `/dev/zero`, a directory, a file far larger than any valid one. Every file the
//! tool reads goes through [`open_input`] or [`read_input`]: opened without blocking, checked
//! to be a regular file no larger than the cap for its kind, and read at most up to that cap.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A model (GGUF image or llama2.c checkpoint): a 1B-parameter f32 checkpoint fits. The chips
/// themselves hold at most 16 MiB of flash.
pub const MAX_MODEL_BYTES: u64 = 4 * GIB;
/// A llama2.c tokenizer.bin: the engine's largest vocabulary (2^20 tokens) at 8 bytes of
/// header and 56 of text a token.
pub const MAX_TOKENIZER_BYTES: u64 = 64 * MIB;
/// A text to score (`eval --text`) or train on (`train --text`).
pub const MAX_TEXT_BYTES: u64 = GIB;
/// A training checkpoint (`train --resume`): weights and Adam's two moments, 12 bytes a
/// parameter, so up to ~89M parameters.
pub const MAX_CHECKPOINT_BYTES: u64 = GIB;
/// A vector dataset (`index bench`), plain or after gunzip: SIFT1M's 1M base vectors (516 MB)
/// fit; an index holds at most 65534 vectors.
pub const MAX_DATASET_BYTES: u64 = GIB;
/// A firmware ELF (`flash --elf`), debug information included.
pub const MAX_ELF_BYTES: u64 = 256 * MIB;

/// Why a file named on the command line was not read.
#[derive(Debug)]
pub enum Refusal {
    Io(std::io::Error),
    Directory,
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    TooLarge {
        size: u64,
        max: u64,
    },
}

/// A refused input: its path, what it was meant to be, and why. The message holds the whole
/// cause (there is no separate `source`), so it is printed once.
#[derive(Debug)]
pub struct InputError {
    pub path: PathBuf,
    pub what: &'static str,
    pub refusal: Refusal,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, what) = (self.path.display(), self.what);
        match &self.refusal {
            Refusal::Io(e) => write!(f, "{path}: cannot read: {e}"),
            Refusal::Directory => write!(f, "{path}: is a directory, not a {what}"),
            Refusal::NotRegular(kind) => write!(f, "{path}: is {kind}; a {what} must be a regular file"),
            Refusal::TooLarge { size, max } => {
                write!(f, "{path}: {size} bytes, more than a {what} can be ({max} bytes)")
            }
        }
    }
}

impl std::error::Error for InputError {}

fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Opens `path` (a `what`, at most `max` bytes) for reading: a FIFO cannot block the open
/// (O_NONBLOCK), and anything but a regular file of at most `max` bytes is refused before a
/// byte is read. Returns the file and its size.
pub fn open_input(path: &Path, what: &'static str, max: u64) -> Result<(File, u64), InputError> {
    let err = |refusal| InputError { path: path.to_path_buf(), what, refusal };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| err(Refusal::Io(e)))?;
    // The opened file's type, not the path's: nothing can be swapped in between.
    let meta = file.metadata().map_err(|e| err(Refusal::Io(e)))?;
    let t = meta.file_type();
    if t.is_dir() {
        return Err(err(Refusal::Directory));
    }
    if !t.is_file() {
        return Err(err(Refusal::NotRegular(kind(t))));
    }
    if meta.len() > max {
        return Err(err(Refusal::TooLarge { size: meta.len(), max }));
    }
    Ok((file, meta.len()))
}

/// The whole of `path` (a `what`, at most `max` bytes), checked as [`open_input`] does. At most
/// `max + 1` bytes are read even if the file grows meanwhile.
pub fn read_input(path: &Path, what: &'static str, max: u64) -> Result<Vec<u8>, InputError> {
    let (file, size) = open_input(path, what, max)?;
    let err = |refusal| InputError { path: path.to_path_buf(), what, refusal };
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| err(Refusal::Io(e)))?;
    if bytes.len() as u64 > max {
        return Err(err(Refusal::TooLarge { size: bytes.len() as u64, max }));
    }
    Ok(bytes)
}
