//! `MicroHNSW`: a hierarchical navigable small world graph in one fixed-size value, no
//! allocation. Nodes are slots `0..CAP` named by `u16` ids; level 0 gives each node `M0` links,
//! the upper levels `config.m` links each, carved from a shared pool of `UP` ids (few nodes
//! reach level 1, so a per-node upper array would waste most of it). Element storage is a type
//! parameter: [`F32`], [`I8`] (quantized on insert, one scale per vector) or [`Binary`] (1 bit
//! per dimension, Hamming).
//!
//! ```
//! use ruvllm_esp32::vector::{BinaryVector, HNSWConfig, MicroHNSW};
//! # fn main() -> ruvllm_esp32::Result<()> {
//! let mut index = MicroHNSW::<64, 256>::new(HNSWConfig::default());
//! let v = [0.5f32; 64];
//! index.insert(&v)?;
//! let q = [0.4f32; 64];
//! // `search` takes `&mut self` (it marks visited nodes in the index, no allocation) and
//! // returns a `Result` (a query of the wrong length or with NaN is an error, not a panic).
//! let results = index.search(&q, 5)?;
//! assert_eq!(results[0].id, 0);
//! let a = BinaryVector::<8>::pack(&v);
//! let b = BinaryVector::<8>::pack(&q);
//! assert_eq!(a.hamming_distance(&b), 0);
//! # Ok(()) }
//! ```
//!
//! Large indexes (MNIST: 9,000 x 784 floats, 29 MB) do not fit on a stack: build them in place
//! with [`MicroHNSW::new_in`] / [`MicroHNSW::from_bytes_in`] on memory from
//! `Box::<MaybeUninit<_>>::new_uninit()` or a `static`.

use core::mem::MaybeUninit;

use super::binary::BinaryVector;
use super::metric::{cosine_from_parts, i8_dot_norm, Metric};
use crate::error::{Error, Result};

/// Empty link slot / no entry point.
const NONE: u16 = u16::MAX;
/// Bit 7 of a node's level byte: the slot is deleted (its level bits stay: they size its
/// upper-link allocation for reuse).
const DELETED: u8 = 0x80;
/// Highest level a node can get (levels above ~log_m(CAP) are empty anyway).
pub const MAX_LEVEL: usize = 15;
/// Largest candidate list (ef) searches use; bounds the stack (two lists of 8-byte entries).
pub const EF_MAX: usize = 256;
/// Most results [`MicroHNSW::search`] returns (use `search_into` for more).
pub const MAX_K: usize = 32;

const MAGIC: &[u8; 4] = b"RVHN";
const VERSION: u16 = 1;
const HEADER: usize = 76;

/// How an index stores its vectors.
///
/// # Safety
/// An all-zero `Elem` must be a valid value: indexes are built in place by zeroing memory.
pub unsafe trait Storage<const DIM: usize> {
    type Elem: Copy;
    /// Tag stored in serialized indexes.
    const KIND: u8;
    /// Serialized size of one element.
    const ELEM_BYTES: usize;
    /// Whether this storage can hold `DIM` dimensions (checked at compile time).
    const FITS: bool;
    /// A query as searches compare it: prepared once per search, then scored against many
    /// elements.
    type Query;
    /// Encode a finite vector of exactly `DIM` values.
    fn encode(v: &[f32]) -> Self::Elem;
    /// Prepare a finite query of exactly `DIM` values.
    fn prepare(q: &[f32]) -> Self::Query;
    /// Distance from a prepared query to a stored element.
    fn query_distance(metric: Metric, q: &Self::Query, e: &Self::Elem) -> f32;
    /// Distance between two stored elements (used to choose and repair links).
    fn distance(metric: Metric, a: &Self::Elem, b: &Self::Elem) -> f32;
    /// Write `ELEM_BYTES` bytes.
    fn write(e: &Self::Elem, out: &mut [u8]);
    /// Read `ELEM_BYTES` bytes; `None` for a value `encode` cannot produce (a NaN).
    fn read(b: &[u8]) -> Option<Self::Elem>;
}

/// Full-precision storage: `4 * DIM` bytes a vector.
pub struct F32;
/// int8 storage: `DIM + 4` bytes a vector (codes and one symmetric scale, `max|v| / 127`).
/// Queries are quantized the same way, so every distance is an integer dot product (what the
/// FPU-less C3/C6 want, and 4x less memory traffic than f32 on the host).
pub struct I8;
/// 1 bit a dimension in `N` bytes (`8 * N >= DIM`); ranks by Hamming distance between stored
/// vectors and by the asymmetric [`BinaryVector::distance_f32`] for float queries, whatever
/// the configured metric.
pub struct Binary<const N: usize>;

/// An int8-quantized vector: `value[i] ~= q[i] as f32 * scale`.
#[derive(Debug, Clone, Copy)]
pub struct I8Vector<const DIM: usize> {
    pub q: [i8; DIM],
    pub scale: f32,
}

/// A prepared [`I8`] query: quantized like a stored vector, with its squared norm.
#[derive(Debug, Clone, Copy)]
pub struct I8Query<const DIM: usize> {
    pub v: I8Vector<DIM>,
    pub sq: i32,
}

/// The metric's distance between int8 vectors with scales `sa`, `sb` from their integer dot
/// product and squared norms.
fn i8_distance(metric: Metric, sa: f32, sb: f32, ab: i32, aa: i32, bb: i32) -> f32 {
    let (ab, aa, bb) = (ab as f32, aa as f32, bb as f32);
    match metric {
        Metric::Euclidean => (sa * sa * aa - 2.0 * sa * sb * ab + sb * sb * bb).max(0.0),
        Metric::Dot => -sa * sb * ab,
        Metric::Cosine => cosine_from_parts(ab, aa, bb),
    }
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[4 * i..4 * i + 4]);
    f32::from_le_bytes(a)
}

unsafe impl<const DIM: usize> Storage<DIM> for F32 {
    type Elem = [f32; DIM];
    type Query = [f32; DIM];
    const KIND: u8 = 0;
    const ELEM_BYTES: usize = 4 * DIM;
    const FITS: bool = true;
    fn encode(v: &[f32]) -> Self::Elem {
        let mut e = [0.0; DIM];
        e.copy_from_slice(&v[..DIM]);
        e
    }
    fn prepare(q: &[f32]) -> Self::Query {
        Self::encode(q)
    }
    fn query_distance(metric: Metric, q: &Self::Query, e: &Self::Elem) -> f32 {
        metric.distance(q, e)
    }
    fn distance(metric: Metric, a: &Self::Elem, b: &Self::Elem) -> f32 {
        metric.distance(a, b)
    }
    fn write(e: &Self::Elem, out: &mut [u8]) {
        for (o, x) in out.chunks_exact_mut(4).zip(e) {
            o.copy_from_slice(&x.to_le_bytes());
        }
    }
    fn read(b: &[u8]) -> Option<Self::Elem> {
        let mut e = [0.0; DIM];
        for (i, x) in e.iter_mut().enumerate() {
            *x = f32_at(b, i);
            if !x.is_finite() {
                return None;
            }
        }
        Some(e)
    }
}

unsafe impl<const DIM: usize> Storage<DIM> for I8 {
    type Elem = I8Vector<DIM>;
    type Query = I8Query<DIM>;
    const KIND: u8 = 1;
    const ELEM_BYTES: usize = DIM + 4;
    const FITS: bool = true;
    fn encode(v: &[f32]) -> Self::Elem {
        let amax = v.iter().fold(0.0f32, |m, x| m.max(libm::fabsf(*x)));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let mut q = [0i8; DIM];
        for (c, x) in q.iter_mut().zip(v) {
            *c = libm::roundf(x * inv).clamp(-127.0, 127.0) as i8;
        }
        I8Vector { q, scale }
    }
    fn prepare(q: &[f32]) -> Self::Query {
        let v = Self::encode(q);
        let sq = i8_dot_norm(&v.q, &v.q).0;
        I8Query { v, sq }
    }
    fn query_distance(metric: Metric, q: &Self::Query, e: &Self::Elem) -> f32 {
        let (ab, bb) = i8_dot_norm(&q.v.q, &e.q);
        i8_distance(metric, q.v.scale, e.scale, ab, q.sq, bb)
    }
    fn distance(metric: Metric, a: &Self::Elem, b: &Self::Elem) -> f32 {
        let (ab, bb) = i8_dot_norm(&a.q, &b.q);
        let aa = i8_dot_norm(&a.q, &a.q).0;
        i8_distance(metric, a.scale, b.scale, ab, aa, bb)
    }
    fn write(e: &Self::Elem, out: &mut [u8]) {
        for (o, &c) in out.iter_mut().zip(&e.q) {
            *o = c as u8;
        }
        out[DIM..DIM + 4].copy_from_slice(&e.scale.to_le_bytes());
    }
    fn read(b: &[u8]) -> Option<Self::Elem> {
        let mut q = [0i8; DIM];
        for (c, &x) in q.iter_mut().zip(b) {
            *c = x as i8;
        }
        let scale = f32_at(&b[DIM..], 0);
        // -128 is outside the symmetric range encode produces (and the distance kernels take).
        let valid = scale.is_finite() && scale >= 0.0 && !q.contains(&i8::MIN);
        valid.then_some(I8Vector { q, scale })
    }
}

unsafe impl<const DIM: usize, const N: usize> Storage<DIM> for Binary<N> {
    type Elem = BinaryVector<N>;
    /// Asymmetric: the query keeps its floats.
    type Query = [f32; DIM];
    const KIND: u8 = 2;
    const ELEM_BYTES: usize = N;
    const FITS: bool = 8 * N >= DIM && DIM + 8 > 8 * N;
    fn encode(v: &[f32]) -> Self::Elem {
        BinaryVector::pack(v)
    }
    fn prepare(q: &[f32]) -> Self::Query {
        F32::encode(q)
    }
    fn query_distance(_: Metric, q: &Self::Query, e: &Self::Elem) -> f32 {
        e.distance_f32(q)
    }
    fn distance(_: Metric, a: &Self::Elem, b: &Self::Elem) -> f32 {
        a.hamming_distance(b) as f32
    }
    fn write(e: &Self::Elem, out: &mut [u8]) {
        out.copy_from_slice(&e.bits);
    }
    fn read(b: &[u8]) -> Option<Self::Elem> {
        let mut bits = [0u8; N];
        bits.copy_from_slice(&b[..N]);
        Some(BinaryVector { bits })
    }
}

/// Index parameters. Out-of-range values are clamped when the index is built: `m` to
/// `1..=M0`, the ef values to `1..=EF_MAX`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HNSWConfig {
    /// Links per node on the upper levels (level 0 has the index's `M0`).
    pub m: usize,
    /// Candidate list size while inserting (bigger: better graph, slower inserts).
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to `k` when smaller).
    pub ef_search: usize,
    pub metric: Metric,
    /// Seed of the level generator: same seed and inserts, same graph.
    pub seed: u64,
}

impl Default for HNSWConfig {
    fn default() -> Self {
        HNSWConfig { m: 8, ef_construction: 64, ef_search: 32, metric: Metric::Euclidean, seed: 0x5eed }
    }
}

/// One search hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchResult {
    pub id: u16,
    pub distance: f32,
}

/// A list of (distance, id) sorted ascending, at most `EF_MAX` long.
struct Sorted {
    items: [(f32, u16); EF_MAX],
    len: usize,
}

impl Sorted {
    fn new() -> Self {
        Sorted { items: [(0.0, 0); EF_MAX], len: 0 }
    }
    fn as_slice(&self) -> &[(f32, u16)] {
        &self.items[..self.len]
    }
    fn worst(&self) -> f32 {
        if self.len == 0 {
            f32::INFINITY
        } else {
            self.items[self.len - 1].0
        }
    }
    /// Insert keeping at most `limit` entries; false when `d` is not better than all of them.
    fn push(&mut self, d: f32, id: u16, limit: usize) -> bool {
        let limit = limit.min(EF_MAX);
        if self.len >= limit && d >= self.worst() {
            return false;
        }
        let pos = self.items[..self.len].partition_point(|e| e.0 <= d);
        let end = if self.len < limit { self.len } else { self.len - 1 };
        self.items.copy_within(pos..end, pos + 1);
        self.items[pos] = (d, id);
        self.len = end + 1;
        true
    }
}

/// A fixed-capacity HNSW index of `CAP` vectors of `DIM` dimensions. See the module docs.
pub struct MicroHNSW<
    const DIM: usize,
    const CAP: usize,
    S: Storage<DIM> = F32,
    const M0: usize = 32,
    const UP: usize = 1024,
> {
    cfg: HNSWConfig,
    /// Slots ever used: ids `0..used`.
    used: usize,
    live: usize,
    entry: u16,
    top: u8,
    epoch: u8,
    rng: u64,
    pool_len: usize,
    elems: [S::Elem; CAP],
    level: [u8; CAP],
    links0: [[u16; M0]; CAP],
    upper_off: [u16; CAP],
    pool: [u16; UP],
    /// Search marks: a node is visited when its byte equals `epoch`.
    visited: [u8; CAP],
}

fn finite(v: &[f32], dim: usize) -> Result<()> {
    if v.len() != dim {
        return Err(Error::Invalid { what: "vector length differs from the index dimension" });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::Invalid { what: "vector holds NaN or infinity" });
    }
    Ok(())
}

impl<const DIM: usize, const CAP: usize, S: Storage<DIM>, const M0: usize, const UP: usize>
    MicroHNSW<DIM, CAP, S, M0, UP>
{
    /// Compile-time layout checks: u16 ids with one value kept for "none", u16 pool offsets.
    const LAYOUT_OK: () = assert!(
        S::FITS && CAP > 0 && CAP < NONE as usize && M0 >= 2 && 2 * M0 <= EF_MAX && UP < 65536,
        "MicroHNSW: storage too small for DIM, CAP not in 1..65535, M0 not in 2..=128 or UP > 65535"
    );

    /// A new empty index, built on the stack (see [`Self::new_in`] for large ones).
    pub fn new(cfg: HNSWConfig) -> Self {
        let mut slot = MaybeUninit::uninit();
        Self::new_in(&mut slot, cfg);
        // SAFETY: new_in initialized every byte to a valid value.
        unsafe { slot.assume_init() }
    }

    /// Builds an empty index in place (e.g. in `Box::<MaybeUninit<Self>>::new_uninit()` or a
    /// `static`), so indexes larger than the stack never pass through it.
    pub fn new_in(slot: &mut MaybeUninit<Self>, cfg: HNSWConfig) -> &mut Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::LAYOUT_OK;
        let p = slot.as_mut_ptr();
        // SAFETY: all-zero is a valid Self: integers, arrays of them, `Metric::Euclidean = 0`,
        // and `S::Elem` by the `Storage` contract.
        let s = unsafe {
            core::ptr::write_bytes(p, 0, 1);
            &mut *p
        };
        s.cfg = HNSWConfig {
            m: cfg.m.clamp(1, M0),
            ef_construction: cfg.ef_construction.clamp(1, EF_MAX),
            ef_search: cfg.ef_search.clamp(1, EF_MAX),
            ..cfg
        };
        s.entry = NONE;
        s.rng = cfg.seed ^ 0x9e37_79b9_7f4a_7c15;
        for l in s.links0.iter_mut() {
            l.fill(NONE);
        }
        s
    }

    pub fn config(&self) -> &HNSWConfig {
        &self.cfg
    }
    /// Sets the search candidate list size (clamped to `1..=EF_MAX`); the graph is unchanged.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.cfg.ef_search = ef.clamp(1, EF_MAX);
    }
    /// Number of vectors in the index (deleted ones excluded).
    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    pub const fn capacity(&self) -> usize {
        CAP
    }
    /// Whether `id` names a vector in the index.
    pub fn contains(&self, id: u16) -> bool {
        (id as usize) < self.used && self.level[id as usize] & DELETED == 0
    }
    /// The stored (encoded) vector of `id`.
    pub fn get(&self, id: u16) -> Option<&S::Elem> {
        self.contains(id).then(|| &self.elems[id as usize])
    }

    fn next_level(&mut self) -> usize {
        let mut g = super::metric::SplitMix(self.rng);
        let z = g.next_u64();
        self.rng = g.0;
        let u = ((z >> 40) as f32 + 1.0) / (1u32 << 24) as f32; // (0, 1]
        let ml = 1.0 / libm::logf(self.cfg.m.max(2) as f32);
        ((-libm::logf(u) * ml) as usize).min(MAX_LEVEL)
    }

    fn node_level(&self, id: usize) -> usize {
        (self.level[id] & !DELETED) as usize
    }

    fn degree(&self, l: usize) -> usize {
        if l == 0 {
            M0
        } else {
            self.cfg.m
        }
    }

    /// Link slots of `id` at level `l` (empty when the node does not reach `l`).
    fn links(&self, id: usize, l: usize) -> &[u16] {
        if l == 0 {
            return &self.links0[id];
        }
        if l > self.node_level(id) {
            return &[];
        }
        let start = self.upper_off[id] as usize + (l - 1) * self.cfg.m;
        self.pool.get(start..start + self.cfg.m).unwrap_or(&[])
    }

    fn links_mut(&mut self, id: usize, l: usize) -> &mut [u16] {
        if l == 0 {
            return &mut self.links0[id];
        }
        if l > self.node_level(id) {
            return &mut [];
        }
        let start = self.upper_off[id] as usize + (l - 1) * self.cfg.m;
        self.pool.get_mut(start..start + self.cfg.m).unwrap_or(&mut [])
    }

    fn next_epoch(&mut self) -> u8 {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.fill(0);
            self.epoch = 1;
        }
        self.epoch
    }

    /// Best-first search of level `l` from `ep`, keeping the `ef` closest in `out`.
    fn search_layer(&mut self, q: &S::Query, ep: u16, ef: usize, l: usize, out: &mut Sorted) {
        let metric = self.cfg.metric;
        let epoch = self.next_epoch();
        // candidates sorted descending, so the closest is popped from the end
        let mut cand = Sorted::new();
        out.len = 0;
        let d = S::query_distance(metric, q, &self.elems[ep as usize]);
        self.visited[ep as usize] = epoch;
        out.push(d, ep, ef);
        cand.push(-d, ep, EF_MAX);
        while cand.len > 0 {
            cand.len -= 1;
            let (nd, c) = cand.items[cand.len];
            if -nd > out.worst() && out.len >= ef {
                break;
            }
            for i in 0..self.degree(l) {
                let Some(&n) = self.links(c as usize, l).get(i) else { break };
                if n == NONE {
                    break;
                }
                let ni = n as usize;
                if ni >= self.used || self.visited[ni] == epoch || self.level[ni] & DELETED != 0 {
                    continue;
                }
                self.visited[ni] = epoch;
                let d = S::query_distance(metric, q, &self.elems[ni]);
                if out.len < ef || d < out.worst() {
                    out.push(d, n, ef);
                    cand.push(-d, n, EF_MAX);
                }
            }
        }
    }

    /// Greedy descent from the entry point to level `stop + 1`; returns the entry for `stop`.
    fn descend(&mut self, q: &S::Query, stop: usize) -> u16 {
        let metric = self.cfg.metric;
        let mut ep = self.entry;
        let mut best = S::query_distance(metric, q, &self.elems[ep as usize]);
        let mut l = self.top as usize;
        while l > stop {
            let mut moved = true;
            while moved {
                moved = false;
                for i in 0..self.cfg.m {
                    let Some(&n) = self.links(ep as usize, l).get(i) else { break };
                    if n == NONE {
                        break;
                    }
                    if n as usize >= self.used || self.level[n as usize] & DELETED != 0 {
                        continue;
                    }
                    let d = S::query_distance(metric, q, &self.elems[n as usize]);
                    if d < best {
                        best = d;
                        ep = n;
                        moved = true;
                    }
                }
            }
            l -= 1;
        }
        ep
    }

    /// The HNSW neighbour heuristic: keep a candidate only if it is closer to the base than to
    /// every kept one (spreads links over directions), then fill up with the rest.
    /// `cands` is sorted ascending by distance to the base.
    fn select(&self, cands: &[(f32, u16)], k: usize, out: &mut [u16]) -> usize {
        let metric = self.cfg.metric;
        let mut n = 0;
        let mut pruned = [NONE; EF_MAX];
        let mut np = 0;
        for &(d, c) in cands {
            if n == k {
                break;
            }
            let ce = &self.elems[c as usize];
            let good = out[..n].iter().all(|&s| S::distance(metric, ce, &self.elems[s as usize]) > d);
            if good {
                out[n] = c;
                n += 1;
            } else if np < EF_MAX {
                pruned[np] = c;
                np += 1;
            }
        }
        for &c in &pruned[..np] {
            if n == k {
                break;
            }
            out[n] = c;
            n += 1;
        }
        n
    }

    /// Replaces `node`'s links at `l` by the best `degree(l)` of `cands` (ids, any order).
    fn relink(&mut self, node: usize, l: usize, cands: &[u16]) {
        let metric = self.cfg.metric;
        let mut sorted = Sorted::new();
        for &c in cands {
            let ci = c as usize;
            if ci == node || sorted.as_slice().iter().any(|e| e.1 == c) {
                continue;
            }
            let d = S::distance(metric, &self.elems[node], &self.elems[ci]);
            sorted.push(d, c, EF_MAX);
        }
        let mut chosen = [NONE; EF_MAX];
        let k = self.select(sorted.as_slice(), self.degree(l), &mut chosen);
        let links = self.links_mut(node, l);
        links.fill(NONE);
        let k = k.min(links.len());
        links[..k].copy_from_slice(&chosen[..k]);
    }

    /// Adds `v` (exactly `DIM` finite values) and returns its id. A full index (no free or
    /// deleted slot) gives [`Error::Full`].
    pub fn insert(&mut self, v: &[f32]) -> Result<u16> {
        finite(v, DIM)?;
        let mu = self.cfg.m;
        let (id, cap_level) = if self.used < CAP {
            (self.used, ((UP - self.pool_len) / mu).min(MAX_LEVEL))
        } else {
            match (0..self.used).find(|&i| self.level[i] & DELETED != 0) {
                Some(i) => (i, self.node_level(i)),
                None => return Err(Error::Full { capacity: CAP }),
            }
        };
        let lvl = self.next_level().min(cap_level);
        if id == self.used {
            self.upper_off[id] = self.pool_len as u16;
            self.pool_len += lvl * mu;
            self.used += 1;
        }
        self.place(id, v, lvl);
        Ok(id as u16)
    }

    /// Adds `v` in slot `id` (used to rebuild an index from persisted entries with their ids
    /// kept). Slots between the highest used one and `id` become free (deleted) slots.
    /// Errors: `id` outside the capacity or already holding a vector ([`Error::Invalid`]), a
    /// bad `v`.
    pub fn insert_at(&mut self, id: u16, v: &[f32]) -> Result<()> {
        finite(v, DIM)?;
        let x = id as usize;
        if x >= CAP {
            return Err(Error::Invalid { what: "vector id outside the index capacity" });
        }
        if self.contains(id) {
            return Err(Error::Invalid { what: "vector id already in the index" });
        }
        let mu = self.cfg.m;
        if x < self.used {
            let lvl = self.node_level(x);
            self.place(x, v, lvl);
            return Ok(());
        }
        // Free slots below `id`: level 0 (no upper links to allocate), deleted.
        while self.used < x {
            self.upper_off[self.used] = self.pool_len as u16;
            self.level[self.used] = DELETED;
            self.links0[self.used].fill(NONE);
            self.used += 1;
        }
        let cap_level = ((UP - self.pool_len) / mu).min(MAX_LEVEL);
        let lvl = self.next_level().min(cap_level);
        self.upper_off[x] = self.pool_len as u16;
        self.pool_len += lvl * mu;
        self.used += 1;
        self.place(x, v, lvl);
        Ok(())
    }

    /// Stores `v` in slot `id` with `lvl` levels (its upper links already allocated) and links
    /// it into the graph.
    fn place(&mut self, id: usize, v: &[f32], lvl: usize) {
        self.elems[id] = S::encode(v);
        self.level[id] = lvl as u8;
        self.links0[id].fill(NONE);
        for l in 1..=lvl {
            self.links_mut(id, l).fill(NONE);
        }
        self.live += 1;
        if self.entry == NONE {
            self.entry = id as u16;
            self.top = lvl as u8;
            return;
        }
        let top = self.top as usize;
        let v = &S::prepare(v);
        let mut ep = self.descend(v, lvl);
        let mut w = Sorted::new();
        for l in (0..=lvl.min(top)).rev() {
            self.search_layer(v, ep, self.cfg.ef_construction, l, &mut w);
            let mut cands = Sorted::new();
            for &(d, c) in w.as_slice() {
                if c as usize != id {
                    cands.push(d, c, EF_MAX);
                }
            }
            if cands.len == 0 {
                continue;
            }
            ep = cands.items[0].1;
            let mut chosen = [NONE; EF_MAX];
            let k = self.select(cands.as_slice(), self.degree(l), &mut chosen);
            let links = self.links_mut(id, l);
            let k = k.min(links.len());
            links[..k].copy_from_slice(&chosen[..k]);
            for &n in &chosen[..k] {
                self.add_link(n as usize, l, id as u16);
            }
        }
        if lvl > top {
            self.entry = id as u16;
            self.top = lvl as u8;
        }
    }

    /// Links `node -> new` at `l`, re-selecting `node`'s links when they are full.
    fn add_link(&mut self, node: usize, l: usize, new: u16) {
        let links = self.links_mut(node, l);
        if let Some(slot) = links.iter_mut().find(|x| **x == NONE) {
            *slot = new;
            return;
        }
        let mut cands = [NONE; EF_MAX];
        let n = links.len();
        cands[..n].copy_from_slice(links);
        cands[n] = new;
        self.relink(node, l, &cands[..n + 1]);
    }

    /// Removes `id`. Every node that linked to it is relinked among its remaining links and the
    /// deleted node's links, so the graph stays navigable. The slot is reused by later inserts.
    pub fn delete(&mut self, id: u16) -> Result<()> {
        if !self.contains(id) {
            return Err(Error::Invalid { what: "vector id not in the index" });
        }
        let x = id as usize;
        let lvl = self.node_level(x);
        self.level[x] |= DELETED;
        self.live -= 1;
        for l in 0..=lvl {
            let mut xl = [NONE; M0];
            let src = self.links(x, l);
            xl[..src.len()].copy_from_slice(src);
            for n in 0..self.used {
                if self.level[n] & DELETED != 0 || self.node_level(n) < l {
                    continue;
                }
                if !self.links(n, l).contains(&id) {
                    continue;
                }
                let mut cands = [NONE; EF_MAX];
                let mut k = 0;
                for &c in self.links(n, l).iter().chain(xl.iter()) {
                    let ci = c as usize;
                    if c != NONE && ci < self.used && self.level[ci] & DELETED == 0 && k < EF_MAX {
                        cands[k] = c;
                        k += 1;
                    }
                }
                self.relink(n, l, &cands[..k]);
            }
            self.links_mut(x, l).fill(NONE);
        }
        if self.entry == id {
            self.entry = NONE;
            self.top = 0;
            for n in 0..self.used {
                if self.level[n] & DELETED == 0
                    && (self.entry == NONE || self.node_level(n) > self.top as usize)
                {
                    self.entry = n as u16;
                    self.top = self.node_level(n) as u8;
                }
            }
        }
        Ok(())
    }

    /// Replaces the vector of `id` (same id afterwards): a delete with link repair, then an
    /// insert into the same slot. `v` is checked first, so an error leaves the index unchanged.
    pub fn update(&mut self, id: u16, v: &[f32]) -> Result<()> {
        finite(v, DIM)?;
        self.delete(id)?;
        let lvl = self.node_level(id as usize);
        self.place(id as usize, v, lvl);
        Ok(())
    }

    /// Up to `k` nearest vectors (at most [`MAX_K`]), closest first.
    pub fn search(&mut self, q: &[f32], k: usize) -> Result<heapless::Vec<SearchResult, MAX_K>> {
        let mut buf = [SearchResult { id: 0, distance: 0.0 }; MAX_K];
        let n = self.search_into(q, &mut buf[..k.min(MAX_K)])?;
        Ok(buf[..n].iter().copied().collect())
    }

    /// Fills `out` with up to `out.len()` (at most [`EF_MAX`]) nearest vectors, closest first;
    /// returns how many.
    pub fn search_into(&mut self, q: &[f32], out: &mut [SearchResult]) -> Result<usize> {
        finite(q, DIM)?;
        if self.entry == NONE || out.is_empty() {
            return Ok(0);
        }
        let ef = self.cfg.ef_search.max(out.len()).min(EF_MAX);
        let q = &S::prepare(q);
        let ep = self.descend(q, 0);
        let mut w = Sorted::new();
        self.search_layer(q, ep, ef, 0, &mut w);
        let n = w.len.min(out.len());
        for (o, &(d, id)) in out.iter_mut().zip(w.as_slice()) {
            *o = SearchResult { id, distance: d };
        }
        Ok(n)
    }

    /// Exact search by scanning every vector (for ground truth and tiny indexes).
    pub fn search_exact(&self, q: &[f32], out: &mut [SearchResult]) -> Result<usize> {
        finite(q, DIM)?;
        let mut w = Sorted::new();
        let k = out.len().min(EF_MAX);
        let q = &S::prepare(q);
        for i in 0..self.used {
            if self.level[i] & DELETED == 0 {
                w.push(S::query_distance(self.cfg.metric, q, &self.elems[i]), i as u16, k);
            }
        }
        for (o, &(d, id)) in out.iter_mut().zip(w.as_slice()) {
            *o = SearchResult { id, distance: d };
        }
        Ok(w.len)
    }

    /// Bytes [`Self::to_bytes`] writes for the current contents.
    pub fn serialized_size(&self) -> usize {
        HEADER + self.used * (S::ELEM_BYTES + 1 + 2 * M0 + 2) + 2 * self.pool_len + 4
    }

    /// Serializes into `out`: header (magic `RVHN`, version, storage kind, DIM, CAP, M0, UP,
    /// config, state), the used slots, the upper-link pool, then a CRC-32 of all that.
    pub fn to_bytes(&self, out: &mut [u8]) -> Result<usize> {
        let need = self.serialized_size();
        if out.len() < need {
            return Err(Error::BufferTooSmall { need, have: out.len() });
        }
        let out = &mut out[..need];
        let mut w = Writer { buf: out, pos: 0 };
        w.bytes(MAGIC);
        w.u16(VERSION);
        w.u8(S::KIND);
        w.u8(0);
        for x in [DIM, CAP, M0, UP, S::ELEM_BYTES, self.cfg.m, self.cfg.ef_construction, self.cfg.ef_search] {
            w.u32(x as u32);
        }
        w.u8(self.cfg.metric as u8);
        w.u8(self.top);
        w.u16(self.entry);
        w.u64(self.cfg.seed);
        w.u64(self.rng);
        w.u32(self.used as u32);
        w.u32(self.live as u32);
        w.u32(self.pool_len as u32);
        w.u32(0);
        debug_assert_eq!(w.pos, HEADER);
        for e in &self.elems[..self.used] {
            S::write(e, &mut w.buf[w.pos..w.pos + S::ELEM_BYTES]);
            w.pos += S::ELEM_BYTES;
        }
        w.bytes(&self.level[..self.used]);
        for l in &self.links0[..self.used] {
            for &x in l {
                w.u16(x);
            }
        }
        for &x in &self.upper_off[..self.used] {
            w.u16(x);
        }
        for &x in &self.pool[..self.pool_len] {
            w.u16(x);
        }
        let crc = crc32fast::hash(&w.buf[..w.pos]);
        w.u32(crc);
        Ok(need)
    }

    /// Reads an index written by [`Self::to_bytes`] onto the stack (see
    /// [`Self::from_bytes_in`] for large ones).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut slot = MaybeUninit::uninit();
        Self::from_bytes_in(&mut slot, bytes)?;
        // SAFETY: from_bytes_in returned Ok, so the slot is initialized.
        Ok(unsafe { slot.assume_init() })
    }

    /// Reads a serialized index in place. Every field is checked (CRC-32, then the shape
    /// against this type, then every link, level and offset), so corrupt or truncated bytes
    /// give an error, never a panic or an index that could panic later. On error the slot is
    /// initialized to an empty index.
    pub fn from_bytes_in<'a>(slot: &'a mut MaybeUninit<Self>, bytes: &[u8]) -> Result<&'a mut Self> {
        let s = Self::new_in(slot, HNSWConfig::default());
        if let Err(e) = s.read_from(bytes) {
            s.reset();
            return Err(e);
        }
        Ok(s)
    }

    /// Back to an empty index with the default config after a failed read.
    fn reset(&mut self) {
        self.cfg = HNSWConfig { m: HNSWConfig::default().m.min(M0), ..HNSWConfig::default() };
        self.used = 0;
        self.live = 0;
        self.pool_len = 0;
        self.entry = NONE;
        self.top = 0;
        self.level.fill(0);
        for l in self.links0.iter_mut() {
            l.fill(NONE);
        }
    }

    fn read_from(&mut self, bytes: &[u8]) -> Result<()> {
        const WHAT: &str = "MicroHNSW index";
        let bad = |what| Err(Error::Invalid { what });
        if bytes.len() < HEADER + 4 {
            return Err(Error::Truncated { what: WHAT });
        }
        if &bytes[..4] != MAGIC {
            return Err(Error::BadMagic { expected: WHAT });
        }
        let mut r = Reader { buf: bytes, pos: 4 };
        if r.u16() != VERSION {
            return Err(Error::Unsupported { what: "MicroHNSW index version" });
        }
        if r.u8() != S::KIND {
            return bad("index storage kind differs from this type's");
        }
        r.u8();
        for x in [DIM, CAP, M0, UP, S::ELEM_BYTES] {
            if r.u32() as usize != x {
                return bad("index DIM, CAP, M0, UP or element size differs from this type's");
            }
        }
        let (m, efc, efs) = (r.u32() as usize, r.u32() as usize, r.u32() as usize);
        let metric = Metric::from_u8(r.u8());
        let top = r.u8();
        let entry = r.u16();
        let seed = r.u64();
        let rng = r.u64();
        let (len, live, pool_len) = (r.u32() as usize, r.u32() as usize, r.u32() as usize);
        r.u32();
        if len > CAP || live > len || pool_len > UP {
            return bad("index counts exceed its capacity");
        }
        let need = HEADER + len * (S::ELEM_BYTES + 1 + 2 * M0 + 2) + 2 * pool_len + 4;
        if bytes.len() < need {
            return Err(Error::Truncated { what: WHAT });
        }
        if bytes.len() > need {
            return bad("trailing bytes after the index");
        }
        let stored = u32::from_le_bytes([bytes[need - 4], bytes[need - 3], bytes[need - 2], bytes[need - 1]]);
        let computed = crc32fast::hash(&bytes[..need - 4]);
        if stored != computed {
            return Err(Error::Checksum { stored, computed });
        }
        let Some(metric) = metric else { return bad("index metric") };
        if !(1..=M0).contains(&m) || !(1..=EF_MAX).contains(&efc) || !(1..=EF_MAX).contains(&efs) {
            return bad("index config out of range");
        }
        self.cfg = HNSWConfig { m, ef_construction: efc, ef_search: efs, metric, seed };
        self.rng = rng;
        for i in 0..len {
            let Some(e) = S::read(&bytes[r.pos..r.pos + S::ELEM_BYTES]) else {
                return bad("index vector holds NaN or infinity");
            };
            self.elems[i] = e;
            r.pos += S::ELEM_BYTES;
        }
        self.level[..len].copy_from_slice(&bytes[r.pos..r.pos + len]);
        r.pos += len;
        for l in self.links0[..len].iter_mut() {
            for x in l.iter_mut() {
                *x = r.u16();
            }
        }
        for i in 0..len {
            self.upper_off[i] = r.u16();
        }
        for i in 0..pool_len {
            self.pool[i] = r.u16();
        }
        self.used = len;
        self.pool_len = pool_len;
        // structure: levels and pool ranges first (links() depends on them), then links
        let mut count = 0;
        for i in 0..len {
            let lvl = self.node_level(i);
            if lvl > MAX_LEVEL || self.upper_off[i] as usize + lvl * m > pool_len {
                return bad("index node level or link offset");
            }
            if self.level[i] & DELETED == 0 {
                count += 1;
            }
        }
        if count != live {
            return bad("index live count");
        }
        self.live = live;
        for i in 0..len {
            let deleted = self.level[i] & DELETED != 0;
            for l in 0..=self.node_level(i) {
                for &x in self.links(i, l) {
                    let xi = x as usize;
                    if x == NONE {
                        continue;
                    }
                    if deleted || xi >= len || xi == i || self.level[xi] & DELETED != 0 {
                        return bad("index link");
                    }
                }
            }
        }
        if live == 0 {
            if entry != NONE {
                return bad("index entry point");
            }
        } else {
            let e = entry as usize;
            if e >= len || self.level[e] & DELETED != 0 || self.node_level(e) != top as usize {
                return bad("index entry point");
            }
            for i in 0..len {
                if self.level[i] & DELETED == 0 && self.node_level(i) > top as usize {
                    return bad("index entry point is not on the top level");
                }
            }
        }
        self.entry = entry;
        self.top = top;
        Ok(())
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u8(&mut self, x: u8) {
        self.bytes(&[x]);
    }
    fn u16(&mut self, x: u16) {
        self.bytes(&x.to_le_bytes());
    }
    fn u32(&mut self, x: u32) {
        self.bytes(&x.to_le_bytes());
    }
    fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }
}

/// Reads little-endian fields; callers check the length first.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}
