//! Training checkpoints: everything a run needs to continue exactly where it stopped, written
//! atomically (temporary file, fsync, rename) so an interruption never leaves a torn file.
//!
//! File: `RVTRAIN1`, then a postcard-encoded [`Checkpoint`], then the CRC-32 of that encoding.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;

const MAGIC: &[u8; 8] = b"RVTRAIN1";

/// The model's shape as stored in a checkpoint (a resume must match it exactly).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub dim: u32,
    pub hidden_dim: u32,
    pub n_layers: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub vocab_size: u32,
    pub seq_len: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LossPoint {
    pub step: u64,
    pub train: f32,
    pub val: f32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub shape: Shape,
    /// Weight format trained against ("f32", "q8", "ternary", "binary").
    pub format: String,
    pub batch: u32,
    pub seed: u64,
    /// CRC-32 of the corpus bytes: resuming on another corpus is refused.
    pub corpus_crc: u32,
    /// Steps completed.
    pub step: u64,
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam_t: u64,
    pub pieces: Vec<Vec<u8>>,
    pub scores: Vec<f32>,
    pub history: Vec<LossPoint>,
    pub tokens_seen: u64,
    /// Training losses summed since the last validation, and how many: the next history
    /// point's mean, so a resume mid-interval reports what the uninterrupted run would.
    pub pending_loss: (f64, u64),
}

impl Checkpoint {
    /// Writes `path` atomically: a reader sees the old checkpoint or the new one, never a mix.
    /// On failure (a full disk, say) the temporary file is removed and the old one is intact.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let body = postcard::to_allocvec(self).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            why: format!("cannot encode: {e}"),
        })?;
        let mut bytes = Vec::with_capacity(body.len() + 12);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        write_atomic(path, &bytes)
    }

    pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
        let bytes = fs::read(path).map_err(|e| TrainError::io(path, e))?;
        Checkpoint::from_bytes(path, &bytes)
    }

    /// A checkpoint from the bytes of the file at `path` (named in errors), for a caller that
    /// reads the file itself.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint, TrainError> {
        let bad = |why: &str| TrainError::Checkpoint { path: path.to_path_buf(), why: why.to_string() };
        if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not a ruvllm-esp32 training checkpoint"));
        }
        let (body, crc) = bytes[MAGIC.len()..].split_at(bytes.len() - MAGIC.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(bad("checksum mismatch (truncated or corrupt)"));
        }
        let ck: Checkpoint = postcard::from_bytes(body).map_err(|e| bad(&format!("cannot decode: {e}")))?;
        let n = ck.params.len();
        if ck.adam_m.len() != n || ck.adam_v.len() != n || ck.pieces.len() != ck.scores.len() {
            return Err(bad("inconsistent sizes"));
        }
        Ok(ck)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsynced before the
/// rename, so a crash or a full disk never leaves a partial `path`. A symbolic link is
/// followed: its target gets the new bytes and the link stays. Only a regular file is
/// replaced (or a new one made): a device, FIFO or directory at `path` is refused before
/// anything is written. On every failure the temporary file is removed and `path` is as it
/// was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    write_atomic_with(path, bytes, |f, b| f.write_all(b))
}

/// Symbolic-link hops [`resolve_symlinks`] follows before it gives up (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// `path` with every symbolic link in its last component followed, even a dangling one (its
/// target is where a new file goes). Directories on the way are left as they are.
pub fn resolve_symlinks(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// [`write_atomic`] with the write itself supplied (tests inject a full disk).
pub(crate) fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut fs::File, &[u8]) -> std::io::Result<()>,
) -> Result<(), TrainError> {
    let fail = |e| TrainError::io(path, e);
    let target = resolve_symlinks(path).map_err(fail)?;
    let existing = match fs::metadata(&target) {
        Ok(m) if !m.is_file() => {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a device, FIFO or directory): give the path of a file to write",
            )))
        }
        Ok(m) => Some(m),
        Err(_) => None,
    };
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = target.file_name().ok_or_else(|| fail(std::io::ErrorKind::InvalidInput.into()))?;
    // One name per target: a writer killed mid-write leaves its temporary file, and the next
    // write to the target replaces it instead of leaving another.
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Some(m) = &existing {
            f.set_permissions(m.permissions())?;
        }
        write(&mut f, bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(e)
    })
}
