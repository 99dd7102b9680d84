//! Host snapshots of the knowledge stores: one file holding the chip's own store format.
//!
//! A snapshot is a flash image: a [`Store`] over a [`RamFlash`] of `sectors` 4 KiB sectors,
//! filled by the same write-through functions the chip uses ([`ruvllm_esp32::knowledge::persist`]),
//! so there is one record format for chip and host, and the image can be mounted by either.
//! The file wraps the image in a 16-byte header so that a truncated or damaged file is
//! refused as a whole rather than loaded in part:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `RVKSNAP1` |
//! | 8..12 | image length, `u32` little-endian (a multiple of 4096, at least two sectors) |
//! | 12..16 | CRC-32 of the image, `u32` little-endian |
//! | 16.. | the image |
//!
//! [`save_snapshot`] writes the file with `ruvllm_train::run::checkpoint::write_atomic`
//! (temporary file, fsync, rename; a symbolic link is written through): a crash, a full disk
//! or a failed save leaves the previous file as it was. [`load_snapshot`] never writes the
//! file, and reads only a regular file of at most [`MAX_SNAPSHOT_FILE`] bytes.
//! [`FileKnowledge`] keeps the host console's knowledge in such a file, rewritten after each
//! change and read back before the change is acknowledged.

use std::fmt;
use std::path::{Path, PathBuf};

use ruvllm_esp32::console::{ImageKnowledge, ImageSink};
use ruvllm_esp32::knowledge::persist::{
    load_detector, load_memory, load_rag, save_detector, save_memory, save_rag, LoadReport,
};
use ruvllm_esp32::knowledge::{AnomalyDetector, MicroRAG, SemanticMemory};
use ruvllm_esp32::store::{BootReport, RamFlash, Store, RAM_SECTOR};
use ruvllm_train::run::TrainError;

use crate::input::{InputError, Refusal};

/// Magic bytes at the start of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"RVKSNAP1";
/// Header bytes before the image.
pub const SNAPSHOT_HEADER: usize = 16;

/// Largest image a snapshot holds: 256 sectors (1 MiB), the largest region whose page chain
/// the store's boot check repairs. A console knowledge file has [`KNOWLEDGE_FILE_SECTORS`].
pub const MAX_SNAPSHOT_SECTORS: usize = 256;
/// Largest snapshot file read: the header and the largest image.
pub const MAX_SNAPSHOT_FILE: usize = SNAPSHOT_HEADER + MAX_SNAPSHOT_SECTORS * RAM_SECTOR;

/// Why a snapshot could not be saved or loaded.
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading the file failed.
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not one to read: a device, FIFO or directory, larger than any snapshot, or
    /// unreadable.
    Input(crate::input::InputError),
    /// Another console holds the knowledge file (its advisory lock on `lock`).
    InUse { path: PathBuf, lock: PathBuf },
    /// Writing the file failed (the previous file, if any, is unchanged).
    Write(TrainError),
    /// The file is not a whole, intact snapshot (`what` says what is wrong); nothing loaded.
    Format { path: PathBuf, what: &'static str },
    /// The store in the image refused an operation (for a save: usually an image too small
    /// for the entries, `Storage { "store full ..." }`).
    Store(ruvllm_esp32::Error),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Read { path, source } => write!(f, "{}: {source}", path.display()),
            SnapshotError::Input(e) => write!(f, "{e}"),
            SnapshotError::InUse { path, lock } => write!(
                f,
                "{}: in use by another console (it holds {}); quit that one first",
                path.display(),
                lock.display()
            ),
            SnapshotError::Write(e) => write!(f, "{e}"),
            SnapshotError::Format { path, what } => {
                write!(f, "{}: not a valid snapshot: {what}", path.display())
            }
            SnapshotError::Store(e) => write!(f, "snapshot store: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<ruvllm_esp32::Error> for SnapshotError {
    fn from(e: ruvllm_esp32::Error) -> Self {
        SnapshotError::Store(e)
    }
}

/// What [`load_snapshot`] found: the store's boot check and each load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotReport {
    pub boot: BootReport,
    pub knowledge: LoadReport,
    pub memory: LoadReport,
    pub detector: LoadReport,
}

/// The flash image of the three stores in a region of `sectors` 4 KiB sectors.
pub fn snapshot_image<
    const D: usize,
    const RC: usize,
    const T: usize,
    const MC: usize,
    const TOK: usize,
    const DC: usize,
>(
    sectors: usize,
    rag: &MicroRAG<D, RC, T>,
    memory: &SemanticMemory<D, MC, TOK>,
    detector: &AnomalyDetector<D, DC>,
) -> Result<Vec<u8>, SnapshotError> {
    if !(2..=MAX_SNAPSHOT_SECTORS).contains(&sectors) {
        return Err(SnapshotError::Store(ruvllm_esp32::Error::Invalid {
            what: "a snapshot image has 2 to 256 sectors of 4 KiB",
        }));
    }
    let len = (sectors * RAM_SECTOR) as u32;
    let (mut store, _) = Store::open(RamFlash::new(vec![0xFF; len as usize]), 0..len)?;
    save_rag(&mut store, rag)?;
    save_memory(&mut store, memory)?;
    save_detector(&mut store, detector)?;
    Ok(store.into_flash().into_inner())
}

/// The file bytes for `image`: header (magic, length, CRC-32) and image.
pub fn encode_snapshot(image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER + image.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&(image.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(image).to_le_bytes());
    out.extend_from_slice(image);
    out
}

/// The image inside snapshot file bytes, checked whole: magic, length and CRC-32.
pub fn decode_snapshot<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], SnapshotError> {
    let bad = |what| SnapshotError::Format { path: path.to_path_buf(), what };
    let header = bytes.get(..SNAPSHOT_HEADER).ok_or(bad("shorter than the snapshot header (truncated)"))?;
    if &header[..8] != SNAPSHOT_MAGIC {
        return Err(bad("missing RVKSNAP1 magic"));
    }
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let (len, crc) = (word(8) as usize, word(12));
    let image = &bytes[SNAPSHOT_HEADER..];
    if image.len() < len {
        return Err(bad("image shorter than its header says (truncated)"));
    }
    if image.len() > len {
        return Err(bad("bytes after the image"));
    }
    if !len.is_multiple_of(RAM_SECTOR) || !(2..=MAX_SNAPSHOT_SECTORS).contains(&(len / RAM_SECTOR)) {
        return Err(bad("image length is not 2 to 256 sectors of 4096 bytes"));
    }
    if crc32fast::hash(image) != crc {
        return Err(bad("image CRC-32 mismatch (damaged)"));
    }
    Ok(image)
}

/// The flash image in the snapshot file at `path`, checked whole (magic, length, CRC-32).
/// The file is only read.
pub fn read_snapshot_image(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let bytes = read_snapshot_file(path)?;
    Ok(decode_snapshot(path, &bytes)?.to_vec())
}

/// The bytes of the regular file at `path`, at most [`MAX_SNAPSHOT_FILE`] of them: a device,
/// FIFO or directory is refused (on the opened file, which a FIFO cannot hold up), a larger
/// file too, before anything is read.
pub fn read_snapshot_file(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    crate::input::read_input(path, "knowledge file", MAX_SNAPSHOT_FILE as u64).map_err(SnapshotError::Input)
}

/// Writes `image` to `path` atomically as a snapshot file (header and image): a failed write
/// leaves the previous file as it was.
pub fn write_snapshot_image(path: &Path, image: &[u8]) -> Result<(), SnapshotError> {
    ruvllm_train::run::checkpoint::write_atomic(path, &encode_snapshot(image)).map_err(SnapshotError::Write)
}

/// Writes the three stores to `path` atomically as a snapshot of a `sectors`-sector image.
/// On any error the previous file at `path` is unchanged.
pub fn save_snapshot<
    const D: usize,
    const RC: usize,
    const T: usize,
    const MC: usize,
    const TOK: usize,
    const DC: usize,
>(
    path: &Path,
    sectors: usize,
    rag: &MicroRAG<D, RC, T>,
    memory: &SemanticMemory<D, MC, TOK>,
    detector: &AnomalyDetector<D, DC>,
) -> Result<(), SnapshotError> {
    write_snapshot_image(path, &snapshot_image(sectors, rag, memory, detector)?)
}

/// Loads a snapshot into three empty stores. A truncated or damaged file is an error
/// ([`SnapshotError::Format`]) and loads nothing; corrupt records inside an intact image are
/// skipped and counted in the report. The file is only read.
pub fn load_snapshot<
    const D: usize,
    const RC: usize,
    const T: usize,
    const MC: usize,
    const TOK: usize,
    const DC: usize,
>(
    path: &Path,
    rag: &mut MicroRAG<D, RC, T>,
    memory: &mut SemanticMemory<D, MC, TOK>,
    detector: &mut AnomalyDetector<D, DC>,
) -> Result<SnapshotReport, SnapshotError> {
    let image = read_snapshot_image(path)?;
    let len = image.len() as u32;
    let (mut store, boot) = Store::open(RamFlash::new(image), 0..len)?;
    Ok(SnapshotReport {
        boot,
        knowledge: load_rag(&mut store, rag)?,
        memory: load_memory(&mut store, memory)?,
        detector: load_detector(&mut store, detector)?,
    })
}

/// Sectors of a new knowledge file's image (256 KiB: a full host console, 256 entries of the
/// longest facts and 64 detector references, takes about 62 KiB).
pub const KNOWLEDGE_FILE_SECTORS: usize = 64;
/// Sectors of the files the 32-entry console made: such a file is grown to
/// [`KNOWLEDGE_FILE_SECTORS`] when opened (the added sectors are blank, the records kept).
pub const OLD_KNOWLEDGE_FILE_SECTORS: usize = 16;

/// The console's knowledge kept in a snapshot file (`ruvllm-esp32 console --knowledge FILE`):
/// a [`Store`] over a [`RamFlash`] holding the file's image, written to the file atomically
/// on every [`KnowledgeStore::flush`], which the console calls once per `add` / `forget`
/// before it replies. The flush reads the file back and acknowledges only an exact copy; a
/// failed save drops the unsaved writes ([`KnowledgeStore::revert`]) and leaves the file
/// byte for byte as it was. An advisory lock on `FILE.lock` (next to the file, or to its
/// target when `FILE` is a symbolic link), held while this lives, keeps a second console off.
pub type FileKnowledge = ImageKnowledge<KnowledgeFile>;

/// The file an [`ImageKnowledge`] of the console keeps its image in, and its lock.
pub struct KnowledgeFile {
    path: PathBuf,
    /// Holds the advisory lock.
    _lock: std::fs::File,
}

impl KnowledgeFile {
    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the knowledge snapshot at `path`, or starts a blank image of [`KNOWLEDGE_FILE_SECTORS`]
/// when there is no file (nothing is written until the first change). A file that is not an
/// intact snapshot, or whose store cannot be repaired, is an error naming it; so is a file
/// another console holds. The file is only read. Returns whether the file existed.
pub fn open_knowledge_file(path: &Path) -> Result<(FileKnowledge, bool), SnapshotError> {
    let lock = lock_file(path)?;
    let (image, existed) = match read_snapshot_image(path) {
        Ok(mut image) => {
            // A file of the 32-entry console's size gets blank sectors for a full one.
            if image.len() == OLD_KNOWLEDGE_FILE_SECTORS * RAM_SECTOR {
                image.resize(KNOWLEDGE_FILE_SECTORS * RAM_SECTOR, 0xFF);
            }
            (image, true)
        }
        Err(SnapshotError::Input(InputError { refusal: Refusal::Io(e), .. }))
            if e.kind() == std::io::ErrorKind::NotFound =>
        {
            (vec![0xFF; KNOWLEDGE_FILE_SECTORS * RAM_SECTOR], false)
        }
        Err(e) => return Err(e),
    };
    let file = KnowledgeFile { path: path.to_path_buf(), _lock: lock };
    match ImageKnowledge::open(image, file) {
        Ok(store) => Ok((store, existed)),
        Err(ruvllm_esp32::Error::Corrupt { .. }) => {
            Err(SnapshotError::Format { path: path.to_path_buf(), what: DAMAGED_FILE })
        }
        Err(e) => Err(e.into()),
    }
}

/// What the user reads when the store inside a knowledge file cannot be used.
const DAMAGED_FILE: &str =
    "its store is damaged beyond repair; it is left as it is: start the console with a new --knowledge file";

/// Takes the advisory lock of the knowledge file `path` for as long as the returned file
/// lives: an exclusive lock on `FILE.lock` beside the file (beside the target of a symbolic
/// link, so two links to one file share it). A lock on the knowledge file itself would not
/// do: each save replaces that file with a new one.
fn lock_file(path: &Path) -> Result<std::fs::File, SnapshotError> {
    use std::os::unix::fs::OpenOptionsExt;
    let read_error = |source| SnapshotError::Read { path: path.to_path_buf(), source };
    let target = ruvllm_train::run::checkpoint::resolve_symlinks(path).map_err(read_error)?;
    // No lock file beside a device, FIFO or directory (/dev/zero.lock, say): the reader
    // refuses those.
    if std::fs::metadata(&target).is_ok_and(|m| !m.is_file()) {
        read_snapshot_file(path)?;
    }
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock = target.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&lock)
        .map_err(|source| SnapshotError::Read { path: lock.clone(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(SnapshotError::InUse { path: path.to_path_buf(), lock })
        }
        Err(std::fs::TryLockError::Error(source)) => Err(SnapshotError::Read { path: lock, source }),
    }
}

/// The one-line reason a knowledge file could not be written (`e` from the atomic writer):
/// the previous file is always left as it was.
fn write_failure(e: &TrainError) -> &'static str {
    use std::io::ErrorKind as K;
    match e {
        TrainError::Io { error, .. } => match error.kind() {
            K::StorageFull | K::QuotaExceeded => "the disk is full; the knowledge file is left as it was",
            K::PermissionDenied | K::ReadOnlyFilesystem => {
                "no permission to write the knowledge file; it is left as it was"
            }
            K::InvalidInput => "the knowledge file is not a regular file; it is left as it was",
            _ => "writing the knowledge file failed; it is left as it was",
        },
        _ => "writing the knowledge file failed; it is left as it was",
    }
}

/// A store error on the host: a store damaged beyond repair gets the user's way out.
fn on_host(e: ruvllm_esp32::Error) -> ruvllm_esp32::Error {
    match e {
        ruvllm_esp32::Error::Corrupt { .. } => ruvllm_esp32::Error::Corrupt {
            what: "the knowledge file is damaged beyond repair and is left as it is: start the console with a new --knowledge file",
        },
        e => e,
    }
}

impl ImageSink for KnowledgeFile {
    /// Writes the image atomically, then reads the file back: `Ok` only when it holds
    /// exactly what was written (else `previous` is put back).
    fn keep(&mut self, image: &[u8], previous: &[u8]) -> ruvllm_esp32::Result<()> {
        let bytes = encode_snapshot(image);
        ruvllm_train::run::checkpoint::write_atomic(&self.path, &bytes)
            .map_err(|e| ruvllm_esp32::Error::Storage { what: write_failure(&e) })?;
        if read_snapshot_file(&self.path).ok().as_deref() != Some(bytes.as_slice()) {
            // Put the previous contents back, so that the reply's "nothing changed" holds.
            let _ = ruvllm_train::run::checkpoint::write_atomic(&self.path, &encode_snapshot(previous));
            return Err(ruvllm_esp32::Error::Storage {
                what: "the knowledge file did not read back as written (a failing disk?); its previous contents were put back",
            });
        }
        Ok(())
    }

    fn user_error(&self, e: ruvllm_esp32::Error) -> ruvllm_esp32::Error {
        on_host(e)
    }
}
