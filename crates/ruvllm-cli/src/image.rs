//! Turning whatever model file the user has into the engine's GGUF image, in memory.

use anyhow::{bail, Context, Result};
use ruvllm_cli::input;
use ruvllm_esp32::convert::{self, HostModel, Quant};
use ruvllm_esp32::gguf::{Gguf, CHECKSUM_MISSING, CHECKSUM_OLD};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::prune::Pruning;
use ruvllm_esp32::Error;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--allow-unverified`: run an image of this engine that lost its checksum key. Set once by
/// `main` before any model loads.
pub static ALLOW_UNVERIFIED: AtomicBool = AtomicBool::new(false);

/// The project's own model (crates/ruvllm-cli/data/default.gguf, trained by `ruvllm-esp32 train`
/// on the generated corpus: see docs/MODELS.md), used when no `--model` is given.
pub static BUILTIN_MODEL: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf"));

/// A model image whose tensors can be read in place: a read-only mapping of the file (page
/// aligned, no copy), the file read onto huge pages (a file of 1 to 64 MB), or a 64-byte
/// aligned buffer for an image converted in memory.
pub struct Image {
    storage: Storage,
    /// How the image was obtained, for messages.
    pub origin: String,
}

enum Storage {
    Mapped(memmap2::Mmap),
    /// A file read into anonymous memory on 2 MB pages: `len` bytes from `start`, then zeros
    /// to `start + span` (what [`Image::model_and_spare`] hands out).
    Huge {
        map: memmap2::MmapMut,
        start: usize,
        len: usize,
        span: usize,
    },
    Owned {
        lines: Vec<Line>,
        len: usize,
    },
    /// A converted image kept in the buffer it was written to, when that buffer happens to
    /// start on a cache line: no second copy of the image.
    Written(Vec<u8>),
}

/// 64 bytes on a cache line: an image copied into these has its tensors (64-byte aligned
/// within the image) on whole lines, so a 512-bit load of a row never spans two (the f32 loop
/// about 10% faster than at 16 bytes past a line, where a large allocation starts).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

// SAFETY: 64 bytes, no padding, any bit pattern valid.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above.
unsafe impl bytemuck::Pod for Line {}

impl Image {
    /// An image written in memory: kept as it is when it starts on a cache line, else copied
    /// onto lines.
    fn from_vec(bytes: Vec<u8>, origin: String) -> Image {
        if bytes.as_ptr().align_offset(64) == 0 {
            return Image { storage: Storage::Written(bytes), origin };
        }
        Image::from_bytes(&bytes, origin)
    }

    fn from_bytes(bytes: &[u8], origin: String) -> Image {
        let mut lines = vec![Line([0; 64]); bytes.len().div_ceil(64)];
        bytemuck::cast_slice_mut::<Line, u8>(&mut lines)[..bytes.len()].copy_from_slice(bytes);
        let len = bytes.len();
        Image { storage: Storage::Owned { lines, len }, origin }
    }

    /// The engine's view of the image. [`load`] already verified the checksum of a file (or
    /// wrote the image itself), so it is not read a second time.
    pub fn model(&self) -> Result<Model<'_>> {
        Model::from_gguf_unverified(self.bytes()).with_context(|| self.origin.clone())
    }

    /// The engine's view of the image, the image's bytes, and the zeroed rest of its last huge
    /// page (64-byte aligned; empty unless the file was read onto huge pages): room for the
    /// working memory of a run, already in place.
    pub fn model_and_spare(&mut self) -> Result<(Model<'_>, &[u8], &mut [u8])> {
        let (bytes, spare): (&[u8], &mut [u8]) = match &mut self.storage {
            Storage::Huge { map, start, len, span } => {
                let used = len.next_multiple_of(64).min(*span);
                let (image, spare) = map[*start..*start + *span].split_at_mut(used);
                (&image[..*len], spare)
            }
            Storage::Mapped(m) => (m, &mut []),
            Storage::Owned { lines, len } => (&bytemuck::cast_slice::<Line, u8>(lines)[..*len], &mut []),
            Storage::Written(v) => (v, &mut []),
        };
        let model = Model::from_gguf_unverified(bytes).with_context(|| self.origin.clone())?;
        Ok((model, bytes, spare))
    }

    /// The built-in model compiled into this binary.
    pub fn builtin() -> Image {
        Image::from_bytes(BUILTIN_MODEL, "built-in model".to_string())
    }

    fn map(path: &Path) -> Result<Image> {
        let err = || format!("{}: cannot read", path.display());
        // Only a regular file is mapped: a FIFO, a device or a directory is refused first.
        let (mut file, size) = input::open_input(path, "model file", input::MAX_MODEL_BYTES)?;
        if (HUGE_COPY_MIN..=HUGE_COPY_MAX).contains(&size) {
            if let Some(storage) = read_huge(&mut file, size as usize).with_context(err)? {
                return Ok(Image { storage, origin: path.display().to_string() });
            }
        }
        // SAFETY: the mapping is read-only and private to this short-lived process; like
        // llama.cpp, we accept that someone truncating the file meanwhile would fault us.
        // Populated: every page is read anyway (the checksum), and one call maps them all
        // instead of a page fault per few pages.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.with_context(err)?;
        Ok(Image { storage: Storage::Mapped(map), origin: path.display().to_string() })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Huge { map, start, len, .. } => &map[*start..*start + *len],
            Storage::Owned { lines, len } => &bytemuck::cast_slice::<Line, u8>(lines)[..*len],
            Storage::Written(v) => v,
        }
    }
}

/// A transparent huge page.
const HUGE_PAGE: usize = 2 << 20;

/// A model file of this size range is read onto huge pages rather than mapped (Linux). How
/// fast a mapping runs depends on where the page cache happens to hold the file: copies of the
/// same f32 stories260K image ran its loop up to 15% slower than others, one 75% slower, and
/// read onto a huge page none was (docs/BENCHMARKS.md, "f32 start-up"). Below half a huge
/// page, zeroing the 2 MB costs more than that saves (the q8 image, 332 KB: whole process 0.3
/// ms slower); above the top, the copy would double the memory a large model takes.
const HUGE_COPY_MIN: u64 = (HUGE_PAGE / 2) as u64;
const HUGE_COPY_MAX: u64 = 64 << 20;

/// Reads `size` bytes of `file` into anonymous memory aligned to 2 MB and advised onto huge
/// pages; `None` where the kernel gives no huge pages on advice (the file is then mapped: on
/// 4 KB pages the copy cost 0.8 ms more than the mapping).
#[cfg(target_os = "linux")]
fn read_huge(file: &mut std::fs::File, size: usize) -> std::io::Result<Option<Storage>> {
    use std::io::Read;
    // "always [madvise] never": the bracketed mode is the one in force.
    let mut mode = [0u8; 64];
    let n = std::fs::File::open("/sys/kernel/mm/transparent_hugepage/enabled")
        .and_then(|mut f| f.read(&mut mode))
        .unwrap_or(0);
    if n == 0 || mode[..n].windows(7).any(|w| w == b"[never]") {
        return Ok(None);
    }
    let span = size.div_ceil(HUGE_PAGE).max(1) * HUGE_PAGE;
    let mut map = memmap2::MmapOptions::new().len(span + HUGE_PAGE).map_anon()?;
    let start = map.as_ptr().align_offset(HUGE_PAGE);
    if map.advise_range(memmap2::Advice::HugePage, start, span).is_err() {
        return Ok(None);
    }
    file.read_exact(&mut map[start..start + size])?;
    Ok(Some(Storage::Huge { map, start, len: size, span }))
}

#[cfg(not(target_os = "linux"))]
fn read_huge(_: &mut std::fs::File, _: usize) -> std::io::Result<Option<Storage>> {
    Ok(None)
}

/// The image format that holds weights trained for `format`.
pub fn quant_of(format: ruvllm_esp32::quant::WeightFormat) -> Quant {
    use ruvllm_esp32::quant::WeightFormat as W;
    match format {
        W::F32 => Quant::F32,
        W::Q8 => Quant::Q8,
        W::Ternary => Quant::Ternary,
        W::Binary => Quant::Binary,
    }
}

pub fn parse_quant(s: &str) -> Result<Quant> {
    match Quant::from_name(s) {
        Some(q) => Ok(q),
        None => bail!("unknown quantization '{s}' (use f32, q8, ternary or binary)"),
    }
}

pub fn quant_name(q: Quant) -> &'static str {
    q.name()
}

/// Refuses a damaged image (the checksum covers header and data). A GGUF of another tool has
/// none and runs with a note; an image of this engine without one only with the user's flag.
fn verify(g: &Gguf<'_>, name: &str) -> Result<()> {
    match g.verify_checksum() {
        Ok(true) => Ok(()),
        Ok(false) => {
            eprintln!(
                "note: {name} has no checksum (a GGUF from another tool): its contents are not verified"
            );
            Ok(())
        }
        Err(e @ (Error::Missing { what: CHECKSUM_MISSING } | Error::Unsupported { what: CHECKSUM_OLD })) => {
            if !ALLOW_UNVERIFIED.load(Ordering::Relaxed) {
                bail!("{name}: {e} (or pass --allow-unverified to run it anyway)");
            }
            eprintln!("warning: {name}: {e}; running it unverified (--allow-unverified)");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| name.to_string()),
    }
}

/// Magic of llama2.c's versioned exports ("ak42", little-endian u32 0x616b3432).
const AK42: [u8; 4] = 0x616b_3432u32.to_le_bytes();

/// Loads `model` (llama2.c .bin with `tokenizer`, or any llama GGUF) as an engine image at the
/// requested precision. An engine GGUF already at that precision is used as it is.
pub fn load(model: Option<&Path>, tokenizer: Option<&Path>, quant: Option<Quant>) -> Result<Image> {
    load_as(model, tokenizer, quant, false, Edits::default())
}

/// As [`load`], but always converts, even an engine GGUF already at `quant` (to add what an
/// older image lacks, like the integer path's RoPE table).
/// Changes `convert` makes to a model before writing it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Edits {
    /// Widen the feed-forward layer to a multiple of it with zero weights
    /// ([`HostModel::pad_hidden`]).
    pub pad_ffn: Option<usize>,
    /// Magnitude pruning to this sparsity ([`ruvllm_esp32::prune`]), before any padding.
    pub prune: Option<(f32, Pruning)>,
    /// Store q8 matrices at or past the sparse kernel's break-even as sparse rows.
    pub sparse: bool,
    /// Key/value heads to remove from every layer ([`ruvllm_esp32::prune::prune_heads`]).
    pub heads: Option<usize>,
}

/// As [`load`], always rebuilt in this version's format, with `edits` applied.
/// One line naming what the engine runs, for a GGUF of another architecture or tokenizer.
fn supported(g: &Gguf<'_>, name: &str, own_tokenizer: bool) -> Result<()> {
    if g.get(ruvllm_esp32::model::SHARD_KEY).is_some() {
        bail!("{name}: this image holds only one shard of a model's layers (one board's part of a tensor-parallel split): it does not run alone; use the whole model");
    }
    if g.get(ruvllm_esp32::model::CUT_FIRST_KEY).is_some() {
        bail!("{name}: this image holds only some layers of a model (one board's part of a pipeline): it does not run alone; use the whole model");
    }
    match g.get_str("general.architecture") {
        Ok("llama") => {}
        Ok(arch) => bail!(
            "{name}: architecture \"{arch}\" is not supported: this engine runs llama-architecture models (general.architecture = \"llama\")"
        ),
        Err(_) => bail!("{name}: no general.architecture: this engine runs llama-architecture GGUF models"),
    }
    match g.get_str("tokenizer.ggml.model") {
        Ok("llama") => Ok(()),
        _ if own_tokenizer => Ok(()),
        Ok(other) => bail!(
            "{name}: tokenizer model \"{other}\" is not supported: this engine reads SentencePiece vocabularies (tokenizer.ggml.model = \"llama\"), or llama2.c's tokenizer.bin given with --tokenizer"
        ),
        Err(_) => bail!("{name}: the GGUF carries no tokenizer: pass --tokenizer tokenizer.bin (llama2.c's)"),
    }
}

pub fn load_converted(
    model: Option<&Path>,
    tokenizer: Option<&Path>,
    quant: Quant,
    edits: Edits,
) -> Result<Image> {
    load_as(model, tokenizer, Some(quant), true, edits)
}

fn load_as(
    model: Option<&Path>,
    tokenizer: Option<&Path>,
    quant: Option<Quant>,
    // Rebuild even an engine image that could be used as it is.
    reconvert: bool,
    edits: Edits,
) -> Result<Image> {
    let file = match model {
        Some(path) => Image::map(path)?,
        None => Image::builtin(),
    };
    let bytes = file.bytes();
    let name = file.origin.clone();
    let says_gguf = model.is_none_or(|m| m.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")));
    if says_gguf && !bytes.starts_with(b"GGUF") {
        bail!("{name}: wrong magic: not a GGUF file");
    }
    let (host, default_quant): (HostModel, Quant) = if bytes.starts_with(b"GGUF") {
        let g = Gguf::parse(bytes).with_context(|| name.clone())?;
        // Whatever happens next (used as is, or converted), a corrupt image is refused.
        verify(&g, &name)?;
        supported(&g, &name, tokenizer.is_some())?;
        let stored = g.get_str("ruvllm.quant").ok().and_then(Quant::from_name);
        let engine_ready = g.get("ruvllm.tokenizer.index").is_some() && stored.is_some();
        if engine_ready && !reconvert && tokenizer.is_none() && (quant.is_none() || quant == stored) {
            return Ok(file);
        }
        let host = convert::load_gguf(bytes).with_context(|| name.clone())?;
        (host, stored.unwrap_or(Quant::F32))
    } else {
        let default_quant = if bytes.starts_with(&AK42) { Quant::Q8 } else { Quant::F32 };
        let host = convert::load_llama2c(bytes).with_context(|| name.clone())?;
        (host, default_quant)
    };
    let mut host = host;
    if let Some(tok) = tokenizer {
        let tb = input::read_input(tok, "tokenizer file", input::MAX_TOKENIZER_BYTES)?;
        let vocab = convert::load_tokenizer_bin(&tb, host.config.vocab_size)
            .with_context(|| tok.display().to_string())?;
        host.vocab = Some(vocab);
    } else if host.vocab.is_none() {
        bail!("{name}: a llama2.c checkpoint carries no tokenizer: pass --tokenizer tokenizer.bin");
    }
    if let Some(n) = edits.heads {
        let (before, kv_before) = (host.config.n_heads, host.config.n_kv_heads);
        ruvllm_esp32::prune::prune_heads(&mut host, n).with_context(|| format!("{name}: removing heads"))?;
        eprintln!(
            "attention heads {before} -> {} (key/value heads {kv_before} -> {}), head size {}",
            host.config.n_heads,
            host.config.n_kv_heads,
            host.config.head_size()
        );
    }
    if let Some((sparsity, how)) = edits.prune {
        let r = ruvllm_esp32::prune::prune(&mut host, sparsity, how)
            .with_context(|| format!("{name}: pruning"))?;
        eprintln!(
            "pruned {} of {} block weights ({:.1}%); feed-forward width {} -> {}",
            r.pruned,
            r.weights_before,
            100.0 * r.pruned as f64 / r.weights_before.max(1) as f64,
            r.hidden_before,
            r.hidden_after
        );
    }
    if let Some(multiple) = edits.pad_ffn {
        host.pad_hidden(multiple).with_context(|| format!("{name}: padding the feed-forward width"))?;
    }
    let quant = quant.unwrap_or(default_quant);
    let (image, sparse) = host
        .to_gguf_sparse(quant, edits.sparse)
        .with_context(|| format!("{name}: converting to {}", quant_name(quant)))?;
    if sparse > 0 {
        eprintln!(
            "stored {sparse} of {} block matrices as sparse rows (at least {}% of their codes zero, the board's break-even; the rest dense): every path of this engine reads them, llama.cpp does not (--dense keeps them dense)",
            7 * host.config.n_layers,
            ruvllm_esp32::infer::integer::sparse::BREAK_EVEN
        );
    } else if edits.sparse && quant == Quant::Q8 {
        eprintln!(
            "every block matrix stays dense: none has {}% of its codes zero (the sparse kernel's break-even on the board)",
            ruvllm_esp32::infer::integer::sparse::BREAK_EVEN
        );
    }
    Ok(Image::from_vec(image, format!("{name} (converted to {})", quant_name(quant))))
}
