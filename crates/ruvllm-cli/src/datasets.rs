//! Vector-search datasets: the TexMex `.fvecs` / `.bvecs` / `.ivecs` formats (SIFT, GIST,
//! ground truth) and MNIST's IDX files, plain or gzipped, plus exact brute-force ground truth.
//! Inputs are untrusted: every size a header announces is checked against the bytes actually
//! present before anything is allocated, a file is read (and gunzipped) only as far as its
//! format allows, and every failure names the file.

use crate::input::{self, InputError, MAX_DATASET_BYTES};
use std::fmt;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// Largest dimension accepted from a header: far above any real dataset (GIST is 960), low
/// enough that a hostile value cannot make a record size overflow.
pub const MAX_DIM: usize = 1 << 20;

#[derive(Debug)]
pub enum Problem {
    /// Not opened: a missing file, a directory, a FIFO, a file over the cap.
    Input(InputError),
    Io(std::io::Error),
    Gzip(std::io::Error),
    /// More than [`MAX_DATASET_BYTES`] of data (after gunzip).
    TooLarge,
    /// An IDX header announcing more data than [`MAX_DATASET_BYTES`].
    HeaderTooLarge {
        need: u64,
    },
    /// More data than the IDX header announces.
    LongerThanHeader {
        need: u64,
    },
    BadMagic {
        found: u32,
        expected: &'static str,
    },
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    TrailingBytes {
        extra: u64,
    },
    BadDim {
        dim: i64,
    },
    InconsistentDim {
        index: usize,
        dim: i64,
        first: usize,
    },
    Empty,
}

/// A dataset read failure and the file it came from.
#[derive(Debug)]
pub struct DatasetError {
    pub path: PathBuf,
    pub problem: Problem,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Input(e) => write!(f, "{e}"),
            Problem::Io(e) => write!(f, "cannot read: {e}"),
            Problem::Gzip(e) => write!(f, "corrupt gzip stream: {e}"),
            Problem::TooLarge => {
                write!(f, "more than {MAX_DATASET_BYTES} bytes of data, the most a dataset may hold")
            }
            Problem::HeaderTooLarge { need } => write!(
                f,
                "the header announces {need} bytes, more than the {MAX_DATASET_BYTES} a dataset may hold"
            ),
            Problem::LongerThanHeader { need } => {
                write!(f, "more data than the {need} bytes its header announces")
            }
            Problem::BadMagic { found, expected } => {
                write!(f, "wrong magic {found:#010x}: not {expected}")
            }
            Problem::Truncated { what, need, have } => {
                write!(f, "truncated: {what} needs {need} bytes, the file has {have}")
            }
            Problem::TrailingBytes { extra } => write!(f, "{extra} unexpected bytes after the data"),
            Problem::BadDim { dim } => write!(f, "absurd dimension {dim} (allowed 1..={MAX_DIM})"),
            Problem::InconsistentDim { index, dim, first } => {
                write!(f, "vector {index} has dimension {dim}, the first has {first}")
            }
            Problem::Empty => write!(f, "no vectors"),
        }
    }
}

impl fmt::Display for DatasetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Input(e) => write!(f, "{e}"), // names the path itself
            p => write!(f, "{}: {p}", self.path.display()),
        }
    }
}

/// The message holds every cause (no `source`), so it is printed once.
impl std::error::Error for DatasetError {}

pub type Result<T> = std::result::Result<T, DatasetError>;

/// `n` vectors of `dim` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors<T> {
    pub dim: usize,
    pub data: Vec<T>,
}

impl<T> Vectors<T> {
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

impl<T: Copy + Into<f32>> Vectors<T> {
    pub fn to_f32(&self) -> Vectors<f32> {
        Vectors { dim: self.dim, data: self.data.iter().map(|&x| x.into()).collect() }
    }
}

/// The file's data, gunzipped when it starts with the gzip magic 1f 8b, read as [`decode`]
/// does. `elem` is the element size of a `.fvecs`/`.bvecs`/`.ivecs` file (4, 1, 4).
pub fn read_maybe_gz(path: &Path, elem: usize) -> Result<Vec<u8>> {
    let err = |problem| DatasetError { path: path.to_path_buf(), problem };
    let (file, size) =
        input::open_input(path, "vector dataset", MAX_DATASET_BYTES).map_err(|e| err(Problem::Input(e)))?;
    decode_sized(std::io::BufReader::new(file), elem, size as usize).map_err(err)
}

/// Bytes decoded at a time: the format checks run between chunks.
const CHUNK: u64 = 1 << 20;

/// A dataset's data from `src`, gunzipped when it starts with the gzip magic, read only as far
/// as the format allows, so a gzip bomb costs at most what a valid file of its header would:
/// an IDX file up to the size its header announces, a vecs file (elements of `elem` bytes)
/// until a record's dimension differs from the first's (the parser then reports it), and
/// never more than [`MAX_DATASET_BYTES`].
pub fn decode(src: impl BufRead, elem: usize) -> std::result::Result<Vec<u8>, Problem> {
    decode_sized(src, elem, 0)
}

/// [`decode`] of a source of `size` bytes (a plain file's data is read into exactly that).
fn decode_sized(mut src: impl BufRead, elem: usize, size: usize) -> std::result::Result<Vec<u8>, Problem> {
    let gz = src.fill_buf().map_err(Problem::Io)?.starts_with(&[0x1f, 0x8b]);
    if gz {
        read_checked(flate2::bufread::MultiGzDecoder::new(src), elem, 0, Problem::Gzip)
    } else {
        read_checked(src, elem, size, Problem::Io)
    }
}

fn read_checked(
    mut src: impl Read,
    elem: usize,
    size: usize,
    io: fn(std::io::Error) -> Problem,
) -> std::result::Result<Vec<u8>, Problem> {
    let mut out = Vec::with_capacity(size);
    // The most bytes the data may have: the cap, then what an IDX header announces.
    let mut limit = MAX_DATASET_BYTES;
    let mut header_limit = false;
    // The next vecs record whose dimension is still to be compared with the first's.
    let mut next_record = 0usize;
    loop {
        let want = (limit + 1 - out.len() as u64).min(CHUNK);
        let got = (&mut src).take(want).read_to_end(&mut out).map_err(io)?;
        if got == 0 {
            return Ok(out);
        }
        if !header_limit {
            if let Some(need) = idx_len(&out) {
                if need > MAX_DATASET_BYTES {
                    return Err(Problem::HeaderTooLarge { need });
                }
                (limit, header_limit) = (need, true);
            }
        }
        if out.len() as u64 > limit {
            return Err(if header_limit {
                Problem::LongerThanHeader { need: limit }
            } else {
                Problem::TooLarge
            });
        }
        if out.len() >= 4 && !is_idx(&out) {
            let first = i32::from_le_bytes([out[0], out[1], out[2], out[3]]);
            if first < 1 || first as usize > MAX_DIM {
                return Ok(out); // the parser reports the dimension
            }
            let record = 4 + first as usize * elem;
            while next_record + 4 <= out.len() {
                let at = &out[next_record..next_record + 4];
                if i32::from_le_bytes([at[0], at[1], at[2], at[3]]) != first {
                    out.truncate(next_record + 4); // the parser reports this record
                    return Ok(out);
                }
                next_record += record;
            }
        }
    }
}

fn is_idx(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && matches!(be_u32(bytes, 0), IDX_IMAGES | IDX_LABELS)
}

/// The whole length an IDX header announces, once the header is there (a bad header gets
/// no limit here: the parser reports it).
fn idx_len(bytes: &[u8]) -> Option<u64> {
    match (bytes.len(), is_idx(bytes).then(|| be_u32(bytes, 0))) {
        (8.., Some(IDX_LABELS)) => Some(8 + be_u32(bytes, 4) as u64),
        (16.., Some(IDX_IMAGES)) => {
            let dim = be_u32(bytes, 8) as u64 * be_u32(bytes, 12) as u64;
            // n < 2^32, dim <= 2^20: the product fits u64.
            (1..=MAX_DIM as u64).contains(&dim).then(|| 16 + be_u32(bytes, 4) as u64 * dim)
        }
        _ => None,
    }
}

/// Element types of the TexMex formats.
pub trait VecsElem: Copy {
    const SIZE: usize;
    fn from_le(b: &[u8]) -> Self;
}

impl VecsElem for f32 {
    const SIZE: usize = 4;
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl VecsElem for u8 {
    const SIZE: usize = 1;
    fn from_le(b: &[u8]) -> Self {
        b[0]
    }
}

impl VecsElem for i32 {
    const SIZE: usize = 4;
    fn from_le(b: &[u8]) -> Self {
        i32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// Parses `.fvecs` (f32), `.bvecs` (u8) or `.ivecs` (i32): per vector a little-endian i32
/// dimension, then that many values. All vectors must share the first one's dimension.
pub fn parse_vecs<T: VecsElem>(bytes: &[u8]) -> std::result::Result<Vectors<T>, Problem> {
    let have = bytes.len() as u64;
    if bytes.is_empty() {
        return Err(Problem::Empty);
    }
    if bytes.len() < 4 {
        return Err(Problem::Truncated { what: "the first dimension", need: 4, have });
    }
    let dim_at =
        |off: usize| i32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]);
    let d = dim_at(0);
    if d < 1 || d as usize > MAX_DIM {
        return Err(Problem::BadDim { dim: d as i64 });
    }
    let dim = d as usize;
    let record = 4 + dim * T::SIZE;
    if bytes.len() < record {
        return Err(Problem::Truncated { what: "the first vector", need: record as u64, have });
    }
    // Bounded by the file: n * dim elements occupy fewer bytes than the file itself.
    let n = bytes.len() / record;
    let mut data = Vec::with_capacity(n * dim);
    // In file order, so the first problem is the one reported.
    for (i, at) in (0..bytes.len()).step_by(record).enumerate() {
        let Some(di) = bytes.get(at..at + 4).map(|_| dim_at(at)) else {
            return Err(Problem::Truncated { what: "a dimension", need: at as u64 + 4, have });
        };
        if di as i64 != dim as i64 {
            return Err(Problem::InconsistentDim { index: i, dim: di as i64, first: dim });
        }
        let Some(rec) = bytes.get(at + 4..at + record) else {
            return Err(Problem::Truncated { what: "the last vector", need: (at + record) as u64, have });
        };
        data.extend(rec.chunks_exact(T::SIZE).map(T::from_le));
    }
    Ok(Vectors { dim, data })
}

pub fn read_fvecs(path: &Path) -> Result<Vectors<f32>> {
    read_with(path, 4, parse_vecs::<f32>)
}

pub fn read_bvecs(path: &Path) -> Result<Vectors<u8>> {
    read_with(path, 1, parse_vecs::<u8>)
}

/// Ground-truth neighbour lists (one row of ids per query).
pub fn read_ivecs(path: &Path) -> Result<Vectors<i32>> {
    read_with(path, 4, parse_vecs::<i32>)
}

fn read_with<T>(
    path: &Path,
    elem: usize,
    parse: impl Fn(&[u8]) -> std::result::Result<T, Problem>,
) -> Result<T> {
    let bytes = read_maybe_gz(path, elem)?;
    parse(&bytes).map_err(|problem| DatasetError { path: path.to_path_buf(), problem })
}

/// Vectors as f32 from any supported file: MNIST IDX images (recognised by their magic), else
/// `.bvecs` by name, else `.fvecs`; a `.gz` suffix or gzip magic is handled first.
pub fn read_vectors(path: &Path) -> Result<Vectors<f32>> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let bytes = read_maybe_gz(path, if name.ends_with(".bvecs") { 1 } else { 4 })?;
    let parsed = if bytes.len() >= 4 && be_u32(&bytes, 0) == IDX_IMAGES {
        parse_idx_images(&bytes).map(|v| v.to_f32())
    } else if name.ends_with(".bvecs") {
        parse_vecs::<u8>(&bytes).map(|v| v.to_f32())
    } else {
        parse_vecs::<f32>(&bytes)
    };
    parsed.map_err(|problem| DatasetError { path: path.to_path_buf(), problem })
}

const IDX_IMAGES: u32 = 0x0000_0803;
const IDX_LABELS: u32 = 0x0000_0801;

fn be_u32(bytes: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
}

/// Wrong magic is reported before any length problem: a short file of another kind is a
/// wrong file, not a truncated one.
fn check_magic(bytes: &[u8], magic: u32, expected: &'static str) -> std::result::Result<(), Problem> {
    if bytes.len() < 4 {
        return Err(Problem::Truncated { what: "the IDX magic", need: 4, have: bytes.len() as u64 });
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(Problem::BadMagic { found, expected });
    }
    Ok(())
}

/// Checks that `bytes` is exactly a header of `header` bytes plus `count` u8 values.
fn check_exact(
    bytes: &[u8],
    header: usize,
    count: u64,
    what: &'static str,
) -> std::result::Result<(), Problem> {
    let need = header as u64 + count;
    let have = bytes.len() as u64;
    if have < need {
        return Err(Problem::Truncated { what, need, have });
    }
    if have > need {
        return Err(Problem::TrailingBytes { extra: have - need });
    }
    Ok(())
}

/// MNIST IDX images (magic 0x00000803, big-endian count, rows, cols): one row of
/// `rows * cols` u8 pixels per image.
pub fn parse_idx_images(bytes: &[u8]) -> std::result::Result<Vectors<u8>, Problem> {
    let have = bytes.len() as u64;
    check_magic(bytes, IDX_IMAGES, "an IDX image file (0x00000803)")?;
    if bytes.len() < 16 {
        return Err(Problem::Truncated { what: "the IDX image header", need: 16, have });
    }
    let (n, rows, cols) = (be_u32(bytes, 4) as u64, be_u32(bytes, 8) as u64, be_u32(bytes, 12) as u64);
    let dim = rows * cols;
    if dim == 0 || dim > MAX_DIM as u64 {
        return Err(Problem::BadDim { dim: dim as i64 });
    }
    // n < 2^32 and dim <= 2^20: the product fits u64.
    check_exact(bytes, 16, n * dim, "the IDX pixels")?;
    if n == 0 {
        return Err(Problem::Empty);
    }
    Ok(Vectors { dim: dim as usize, data: bytes[16..].to_vec() })
}

/// MNIST IDX labels (magic 0x00000801, big-endian count, one u8 per item).
pub fn parse_idx_labels(bytes: &[u8]) -> std::result::Result<Vec<u8>, Problem> {
    let have = bytes.len() as u64;
    check_magic(bytes, IDX_LABELS, "an IDX label file (0x00000801)")?;
    if bytes.len() < 8 {
        return Err(Problem::Truncated { what: "the IDX label header", need: 8, have });
    }
    check_exact(bytes, 8, be_u32(bytes, 4) as u64, "the IDX labels")?;
    Ok(bytes[8..].to_vec())
}

pub fn read_idx_images(path: &Path) -> Result<Vectors<u8>> {
    read_with(path, 1, parse_idx_images)
}

pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    read_with(path, 1, parse_idx_labels)
}

use ruvllm_esp32::vector::metric::{cosine_from_parts, dot, l2_squared};
pub use ruvllm_esp32::vector::Metric;

/// The distance `metric` ranks by (smaller is nearer). `qn`, `vn` are the vectors' squared L2
/// norms, used by cosine only (computed once per vector, not per pair).
fn distance(metric: Metric, q: &[f32], qn: f32, v: &[f32], vn: f32) -> f32 {
    match metric {
        Metric::Euclidean => l2_squared(q, v),
        Metric::Dot => -dot(q, v),
        Metric::Cosine => cosine_from_parts(dot(q, v), qn, vn),
    }
}

/// Base and queries that cannot be compared (the files came from different datasets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub dim: usize,
    pub base_len: usize,
    pub queries_len: usize,
}

impl fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "base ({} floats) and queries ({} floats) are not both rows of dimension {}",
            self.base_len, self.queries_len, self.dim
        )
    }
}

impl std::error::Error for ShapeMismatch {}

/// Exact top-`k` neighbours of every query among `base` (both `dim`-float rows), by brute force,
/// queries split over the available cores. Row `i` of the result (`k.min(n)` ids) is query `i`'s
/// neighbours, nearest first; ties go to the lower id so the result is deterministic.
pub fn ground_truth(
    base: &[f32],
    queries: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
) -> std::result::Result<Vectors<u32>, ShapeMismatch> {
    if dim == 0 || !base.len().is_multiple_of(dim) || !queries.len().is_multiple_of(dim) {
        return Err(ShapeMismatch { dim, base_len: base.len(), queries_len: queries.len() });
    }
    let n = base.len() / dim;
    let nq = queries.len() / dim;
    let k = k.min(n);
    let mut out = vec![0u32; nq * k];
    if k == 0 || nq == 0 {
        return Ok(Vectors { dim: k, data: out });
    }
    let sq_norm = |v: &[f32]| dot(v, v);
    let base_norms: Vec<f32> =
        if metric == Metric::Cosine { base.chunks_exact(dim).map(sq_norm).collect() } else { vec![0.0; n] };
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(nq);
    let per = nq.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, chunk) in out.chunks_mut(per * k).enumerate() {
            let base_norms = &base_norms;
            scope.spawn(move || {
                let mut scored: Vec<(f32, u32)> = Vec::with_capacity(n);
                for (j, row) in chunk.chunks_exact_mut(k).enumerate() {
                    let q = &queries[(t * per + j) * dim..(t * per + j + 1) * dim];
                    let qn = if metric == Metric::Cosine { sq_norm(q) } else { 0.0 };
                    scored.clear();
                    scored.extend(
                        base.chunks_exact(dim)
                            .zip(base_norms)
                            .enumerate()
                            .map(|(i, (v, &vn))| (distance(metric, q, qn, v, vn), i as u32)),
                    );
                    let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                    if k < n {
                        scored.select_nth_unstable_by(k - 1, cmp);
                    }
                    scored[..k].sort_unstable_by(cmp);
                    for (slot, s) in row.iter_mut().zip(&scored) {
                        *slot = s.1;
                    }
                }
            });
        }
    });
    Ok(Vectors { dim: k, data: out })
}

/// Mean over queries of |found ∩ truth[..k]| / k, comparing each query's first `k` results.
pub fn recall_at_k(found: &Vectors<u32>, truth: &Vectors<u32>, k: usize) -> f64 {
    let nq = truth.len().min(found.len());
    if nq == 0 || k == 0 {
        return 0.0;
    }
    let mut hits = 0usize;
    for q in 0..nq {
        let t = &truth.row(q)[..k.min(truth.dim)];
        hits += found.row(q)[..k.min(found.dim)].iter().filter(|id| t.contains(id)).count();
    }
    hits as f64 / (nq * k) as f64
}

#[cfg(test)]
mod tests;
