//! `index bench`: builds one kind of index over a dataset and measures what a user picks an
//! index by: recall@1 and recall@k against exact search, single-thread queries per second, and
//! memory per vector. [`Searcher`] is the measured interface, so the comparison bench runs
//! other libraries through exactly the same [`measure`].
//!
//! The library's `MicroHNSW` fixes dimension, capacity and level-0 degree at compile time; here
//! one instance per supported (dimension, degree, storage) serves any dataset: vectors are
//! zero-padded up to the next supported dimension (zeros change no distance) and the capacity is
//! the largest a `u16` id allows. Memory is reported per slot, `size_of(index) / CAP`: an index
//! built for exactly `n` vectors takes `n` times that.

use std::time::Instant;

use crate::datasets::{recall_at_k, Vectors};
use ruvllm_esp32::vector::metric::SplitMix;
use ruvllm_esp32::vector::pq::rerank_exact;
use ruvllm_esp32::vector::{
    Binary, HNSWConfig, Metric, MicroHNSW, PQConfig, ProductQuantizer, SearchResult, Storage, F32, I8,
};

/// Slots in a host index: the most `u16` ids can name (one value means "none").
pub const CAP: usize = 65534;
/// The upper-level link pool (shared by the few nodes above level 0): the most `u16` offsets
/// can address.
const UP: usize = 65535;
/// Dimensions with an index instance; a dataset is padded to the next one.
pub const DIMS: [usize; 8] = [32, 64, 128, 256, 512, 784, 960, 1024];
/// Upper-level degrees `m` with an instance (level 0 gets `2 m` links, as in the HNSW paper).
pub const MS: [usize; 6] = [4, 8, 12, 16, 24, 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// HNSW over f32 vectors
    F32,
    /// HNSW over int8 vectors (one scale each)
    I8,
    /// HNSW over 1-bit sign vectors of the mean-centred data (Hamming between stored vectors,
    /// float queries)
    Binary,
    /// Product quantization, exhaustive ADC scan (optionally re-ranked with the originals)
    Pq,
}

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub metric: Metric,
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub seed: u64,
    /// PQ: subspaces (0: one per 8 dimensions) and centroids per subspace.
    pub pq_subspaces: usize,
    pub pq_centroids: usize,
    /// PQ: ADC candidates re-ranked by exact distance (0: ADC alone).
    pub rerank: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            metric: Metric::Euclidean,
            m: 16,
            ef_construction: 64,
            ef_search: 64,
            seed: 0x5eed,
            pq_subspaces: 0,
            pq_centroids: 256,
            rerank: 0,
        }
    }
}

/// An index under measurement.
pub trait Searcher {
    /// Candidate list size for the following searches (where the index has one).
    fn set_ef(&mut self, ef: usize);
    /// The nearest `k` base ids to `q`, nearest first, into `out` (cleared first).
    fn search(&mut self, q: &[f32], k: usize, out: &mut Vec<u32>);
    /// Memory the index needs per stored vector, in bytes.
    fn bytes_per_vector(&self) -> f64;
}

#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub k: usize,
    pub recall_at_1: f64,
    pub recall_at_k: f64,
    /// Queries per second, one thread, the whole query set once.
    pub qps: f64,
    pub bytes_per_vector: f64,
}

impl std::fmt::Display for Measurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "recall@1: {:.4}", self.recall_at_1)?;
        writeln!(f, "recall@{}: {:.4}", self.k, self.recall_at_k)?;
        writeln!(f, "qps: {:.0}", self.qps)?;
        write!(f, "bytes/vector: {:.0}", self.bytes_per_vector)
    }
}

/// Runs every query once through `index` (one thread, timed) and scores the answers against
/// `truth` (rows of at least `k` exact neighbour ids).
pub fn measure(
    index: &mut dyn Searcher,
    queries: &Vectors<f32>,
    truth: &Vectors<u32>,
    k: usize,
) -> Measurement {
    let nq = queries.len();
    let mut found = Vectors { dim: k, data: vec![u32::MAX; nq * k] };
    let mut out = Vec::with_capacity(k);
    let start = Instant::now();
    for i in 0..nq {
        index.search(queries.row(i), k, &mut out);
        for (slot, &id) in found.data[i * k..(i + 1) * k].iter_mut().zip(&out) {
            *slot = id;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Measurement {
        k,
        recall_at_1: recall_at_k(&found, truth, 1),
        recall_at_k: recall_at_k(&found, truth, k),
        qps: nq as f64 / secs,
        bytes_per_vector: index.bytes_per_vector(),
    }
}

/// Why an index cannot be built over a dataset.
#[derive(Debug)]
pub enum BuildError {
    TooMany { n: usize },
    DimTooLarge { dim: usize },
    UnsupportedM { m: usize },
    Empty,
    Library(ruvllm_esp32::Error),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::TooMany { n } => {
                write!(f, "{n} base vectors: an index holds at most {CAP} (u16 ids)")
            }
            BuildError::DimTooLarge { dim } => {
                write!(f, "dimension {dim}: the largest supported is {}", DIMS[DIMS.len() - 1])
            }
            BuildError::UnsupportedM { m } => write!(f, "--m {m}: supported values are {MS:?}"),
            BuildError::Empty => write!(f, "no base vectors"),
            BuildError::Library(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<ruvllm_esp32::Error> for BuildError {
    fn from(e: ruvllm_esp32::Error) -> Self {
        BuildError::Library(e)
    }
}

/// Builds an index of `mode` over `base`, reporting progress as vectors are added.
pub fn build(
    mode: Mode,
    p: &Params,
    base: &Vectors<f32>,
    progress: &mut dyn FnMut(usize),
) -> Result<Box<dyn Searcher>, BuildError> {
    if base.is_empty() {
        return Err(BuildError::Empty);
    }
    if base.len() > CAP {
        return Err(BuildError::TooMany { n: base.len() });
    }
    if mode == Mode::Pq {
        return Ok(Box::new(PqScan::build(p, base)?));
    }
    let dim = *DIMS.iter().find(|&&d| d >= base.dim).ok_or(BuildError::DimTooLarge { dim: base.dim })?;
    if !MS.contains(&p.m) {
        return Err(BuildError::UnsupportedM { m: p.m });
    }
    macro_rules! by_m {
        ($d:literal, $n:literal) => {
            match (mode, p.m) {
                (Mode::F32, 4) => Hnsw::<$d, F32, 8>::build(p, base, progress),
                (Mode::F32, 8) => Hnsw::<$d, F32, 16>::build(p, base, progress),
                (Mode::F32, 12) => Hnsw::<$d, F32, 24>::build(p, base, progress),
                (Mode::F32, 16) => Hnsw::<$d, F32, 32>::build(p, base, progress),
                (Mode::F32, 24) => Hnsw::<$d, F32, 48>::build(p, base, progress),
                (Mode::F32, _) => Hnsw::<$d, F32, 64>::build(p, base, progress),
                (Mode::I8, 4) => Hnsw::<$d, I8, 8>::build(p, base, progress),
                (Mode::I8, 8) => Hnsw::<$d, I8, 16>::build(p, base, progress),
                (Mode::I8, 12) => Hnsw::<$d, I8, 24>::build(p, base, progress),
                (Mode::I8, 16) => Hnsw::<$d, I8, 32>::build(p, base, progress),
                (Mode::I8, 24) => Hnsw::<$d, I8, 48>::build(p, base, progress),
                (Mode::I8, _) => Hnsw::<$d, I8, 64>::build(p, base, progress),
                (_, 4) => Hnsw::<$d, Binary<$n>, 8>::build(p, base, progress),
                (_, 8) => Hnsw::<$d, Binary<$n>, 16>::build(p, base, progress),
                (_, 12) => Hnsw::<$d, Binary<$n>, 24>::build(p, base, progress),
                (_, 16) => Hnsw::<$d, Binary<$n>, 32>::build(p, base, progress),
                (_, 24) => Hnsw::<$d, Binary<$n>, 48>::build(p, base, progress),
                (_, _) => Hnsw::<$d, Binary<$n>, 64>::build(p, base, progress),
            }
        };
    }
    match dim {
        32 => by_m!(32, 4),
        64 => by_m!(64, 8),
        128 => by_m!(128, 16),
        256 => by_m!(256, 32),
        512 => by_m!(512, 64),
        784 => by_m!(784, 98),
        960 => by_m!(960, 120),
        _ => by_m!(1024, 128),
    }
}

/// A `MicroHNSW` on the heap with the dataset's vectors padded to `D`.
struct Hnsw<const D: usize, S: Storage<D>, const M0: usize> {
    index: Box<MicroHNSW<D, CAP, S, M0, UP>>,
    /// Binary storage keeps signs, so its vectors are centred on the base mean first (sign
    /// codes of all-positive data such as pixels would mostly say "non-negative").
    center: Option<Vec<f32>>,
    padded: Vec<f32>,
    results: Vec<SearchResult>,
}

impl<const D: usize, S: Storage<D> + 'static, const M0: usize> Hnsw<D, S, M0> {
    fn build(
        p: &Params,
        base: &Vectors<f32>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Box<dyn Searcher>, BuildError> {
        let cfg = HNSWConfig {
            m: p.m,
            ef_construction: p.ef_construction,
            ef_search: p.ef_search,
            metric: p.metric,
            seed: p.seed,
        };
        let mut slot = Box::<MicroHNSW<D, CAP, S, M0, UP>>::new_uninit();
        MicroHNSW::new_in(&mut slot, cfg);
        // SAFETY: new_in initialized the whole value.
        let index = unsafe { slot.assume_init() };
        let center = (S::KIND == <Binary<1> as Storage<8>>::KIND).then(|| mean(base));
        let mut h = Hnsw { index, center, padded: vec![0.0; D], results: Vec::new() };
        for i in 0..base.len() {
            h.pad(base.row(i));
            h.index.insert(&h.padded)?;
            progress(i + 1);
        }
        Ok(Box::new(h))
    }

    fn pad(&mut self, v: &[f32]) {
        self.padded[..v.len()].copy_from_slice(v);
        self.padded[v.len()..].fill(0.0);
        if let Some(c) = &self.center {
            for (x, m) in self.padded.iter_mut().zip(c) {
                *x -= m;
            }
        }
    }
}

impl<const D: usize, S: Storage<D> + 'static, const M0: usize> Searcher for Hnsw<D, S, M0> {
    fn set_ef(&mut self, ef: usize) {
        // ef_search is the only setting a built index lets change.
        self.index.set_ef_search(ef);
    }

    fn search(&mut self, q: &[f32], k: usize, out: &mut Vec<u32>) {
        out.clear();
        self.pad(q);
        self.results.resize(k, SearchResult { id: 0, distance: 0.0 });
        // Queries come from the same dataset reader as the base: finite and of its dimension.
        let n = self.index.search_into(&self.padded, &mut self.results).unwrap_or(0);
        out.extend(self.results[..n].iter().map(|r| r.id as u32));
    }

    fn bytes_per_vector(&self) -> f64 {
        std::mem::size_of::<MicroHNSW<D, CAP, S, M0, UP>>() as f64 / CAP as f64
    }
}

/// The mean of the rows of `v`.
pub fn mean(v: &Vectors<f32>) -> Vec<f32> {
    let mut m = vec![0.0f64; v.dim];
    for i in 0..v.len() {
        for (s, &x) in m.iter_mut().zip(v.row(i)) {
            *s += x as f64;
        }
    }
    m.iter().map(|s| (s / v.len().max(1) as f64) as f32).collect()
}

/// Product quantization searched exhaustively with ADC tables, optionally re-ranked with the
/// original vectors (which then count in its memory).
struct PqScan {
    pq: ProductQuantizer<Vec<f32>>,
    codes: Vec<u8>,
    n: usize,
    originals: Option<Vec<f32>>,
    rerank: usize,
    table: Vec<f32>,
    cands: Vec<(u32, f32)>,
}

impl PqScan {
    fn build(p: &Params, base: &Vectors<f32>) -> Result<PqScan, BuildError> {
        let dim = base.dim;
        let subspaces = if p.pq_subspaces > 0 { p.pq_subspaces } else { (dim / 8).max(1) };
        let config = PQConfig { dim, num_subspaces: subspaces, num_centroids: p.pq_centroids };
        let mut pq = ProductQuantizer::untrained(config)?;
        pq.train(&base.data, base.len(), 15, p.seed)?;
        let n = base.len();
        let mut codes = vec![0u8; n * subspaces];
        for (i, code) in codes.chunks_exact_mut(subspaces).enumerate() {
            pq.encode_into(base.row(i), code)?;
        }
        let originals = (p.rerank > 0).then(|| base.data.clone());
        let table = vec![0.0; config.table_len()];
        Ok(PqScan { pq, codes, n, originals, rerank: p.rerank, table, cands: Vec::new() })
    }
}

impl Searcher for PqScan {
    fn set_ef(&mut self, ef: usize) {
        if self.originals.is_some() {
            self.rerank = ef;
        }
    }

    fn search(&mut self, q: &[f32], k: usize, out: &mut Vec<u32>) {
        out.clear();
        if self.pq.distance_table(q, &mut self.table).is_err() {
            return;
        }
        self.cands.resize(k.max(self.rerank), (0, 0.0));
        let n = self.pq.search_adc(&self.table, &self.codes, &mut self.cands).unwrap_or(0);
        let cands = &mut self.cands[..n];
        if let Some(v) = &self.originals {
            if rerank_exact(q, v, cands).is_err() {
                return;
            }
        }
        out.extend(cands.iter().take(k).map(|c| c.0));
    }

    fn bytes_per_vector(&self) -> f64 {
        let c = self.pq.config();
        let codebook = (4 * c.codebook_len()) as f64 / self.n as f64;
        let originals = if self.originals.is_some() { 4.0 * c.dim as f64 } else { 0.0 };
        c.num_subspaces as f64 + codebook + originals
    }
}

/// A fixed random projection to `dim` dimensions (entries +-1/sqrt(dim) from `seed`), which
/// keeps distances within a small factor (Johnson-Lindenstrauss): how a 784-pixel dataset
/// becomes 64-dim vectors for a small chip.
pub fn project(v: &Vectors<f32>, dim: usize, seed: u64) -> Vectors<f32> {
    let mut rng = SplitMix(seed);
    let scale = 1.0 / (dim as f32).sqrt();
    let matrix: Vec<f32> =
        (0..v.dim * dim).map(|_| if rng.next_u64() & 1 == 0 { scale } else { -scale }).collect();
    let mut data = vec![0.0; v.len() * dim];
    for (i, out) in data.chunks_exact_mut(dim).enumerate() {
        for (x, row) in v.row(i).iter().zip(matrix.chunks_exact(dim)) {
            for (o, &w) in out.iter_mut().zip(row) {
                *o += x * w;
            }
        }
    }
    Vectors { dim, data }
}
