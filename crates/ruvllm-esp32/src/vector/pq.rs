//! Product quantization: a `dim`-float vector becomes `num_subspaces` one-byte codes, each the
//! index of the nearest of `num_centroids` centroids learned for that slice of the vector.
//! Search is asymmetric (ADC): the query stays in f32, one table of query-to-centroid squared
//! distances is built per query, and a code's distance is a sum of table lookups.
//!
//! Nothing here allocates. The codebook lives in caller storage (`S: AsRef<[f32]>`, a static
//! array on the chip, a `Vec` on the host); training runs k-means over caller scratch so it fits
//! on the chip for small samples. The `alloc` feature only adds owning conveniences.
//!
//! **The default codebook.** [`ProductQuantizer::new`] needs no training data: it fills an
//! inline codebook ([`DefaultCodebook`], up to [`DEFAULT_CODEBOOK_FLOATS`] floats) in which,
//! in every subspace, centroid 0 is the zero vector and centroids `1..num_centroids` are points
//! drawn uniformly from `[-1, 1]^sub_dim` by splitmix64 seeded with [`DEFAULT_SEED`] (subspaces
//! in order, then centroids, then coordinates). It is the same for every run and every build.
//! Data-independent, it only makes `encode` usable at once: each slice maps to its nearest
//! such point, never further than the zero vector, so a slice's squared reconstruction error
//! is at most its squared norm. Train ([`ProductQuantizer::train_with_scratch`]) for codes that
//! keep neighbours apart.

use crate::error::{Error, Result};

/// Largest number of subspaces: the capacity of the code returned by [`ProductQuantizer::encode`].
pub const MAX_SUBSPACES: usize = 256;
/// Codes are u8.
pub const MAX_CENTROIDS: usize = 256;
/// Bounds a header read from untrusted bytes (well above any embedding we would store).
pub const MAX_DIM: usize = 1 << 16;

/// One vector's codes.
pub type Code = heapless::Vec<u8, MAX_SUBSPACES>;

/// Largest codebook [`ProductQuantizer::new`] holds inline (16 KiB: 64 dimensions with 64
/// centroids, or 256 with 16); larger ones go in caller storage ([`ProductQuantizer::with_storage`]).
pub const DEFAULT_CODEBOOK_FLOATS: usize = 4096;
/// The storage of [`ProductQuantizer::new`]'s quantizer.
pub type DefaultCodebook = [f32; DEFAULT_CODEBOOK_FLOATS];
/// Seed of the default codebook (module docs).
pub const DEFAULT_SEED: u64 = 0x5eed_c0de;

const MAGIC: &[u8; 4] = b"RVPQ";
const VERSION: u32 = 1;
/// magic, version, dim, subspaces, centroids, flags.
const HEADER_LEN: usize = 24;
const FLAG_TRAINED: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PQConfig {
    pub dim: usize,
    pub num_subspaces: usize,
    pub num_centroids: usize,
}

impl PQConfig {
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(Error::Invalid { what: "PQ dimension must be 1..=65536" });
        }
        if self.num_subspaces == 0 || self.num_subspaces > MAX_SUBSPACES {
            return Err(Error::Invalid { what: "PQ subspaces must be 1..=256" });
        }
        if !self.dim.is_multiple_of(self.num_subspaces) {
            return Err(Error::Invalid { what: "PQ dimension is not divisible by the subspace count" });
        }
        if self.num_centroids == 0 || self.num_centroids > MAX_CENTROIDS {
            return Err(Error::Invalid { what: "PQ centroids must be 1..=256 (codes are u8)" });
        }
        Ok(())
    }

    pub fn sub_dim(&self) -> usize {
        self.dim / self.num_subspaces
    }

    /// Floats of codebook storage: every subspace holds `num_centroids` centroids of `sub_dim`.
    pub fn codebook_len(&self) -> usize {
        self.num_centroids * self.dim
    }

    /// Floats of ADC table: one distance per (subspace, centroid).
    pub fn table_len(&self) -> usize {
        self.num_subspaces * self.num_centroids
    }

    /// Bytes per encoded vector.
    pub fn code_len(&self) -> usize {
        self.num_subspaces
    }

    /// f32 vector bytes over code bytes (the codebook, shared by all vectors, is not counted).
    pub fn compression_ratio(&self) -> f32 {
        (self.dim * 4) as f32 / self.num_subspaces as f32
    }

    /// Floats of scratch [`ProductQuantizer::train_with_scratch`] needs for `n` training vectors:
    /// k-means++ distances (n) plus per-centroid sums and counts.
    pub fn train_scratch_len(&self, n: usize) -> usize {
        n + self.num_centroids * (self.sub_dim() + 1)
    }

    /// Bytes of [`ProductQuantizer::write_bytes`] output.
    pub fn serialized_len(&self) -> usize {
        HEADER_LEN + self.codebook_len() * 4 + 4
    }
}

/// A product quantizer over codebook storage `S` (`num_centroids * dim` floats, laid out
/// subspace-major: subspace s, centroid c starts at `(s * num_centroids + c) * sub_dim`);
/// `ProductQuantizer` alone is [`ProductQuantizer::new`]'s, with the default codebook.
#[derive(Debug, Clone)]
pub struct ProductQuantizer<S = DefaultCodebook> {
    config: PQConfig,
    codebook: S,
    trained: bool,
}

/// Deterministic generator for initialisation.
struct Rng(SplitMix);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

use super::metric::{l2_squared as sq_l2, SplitMix};

fn check_finite(v: &[f32]) -> Result<()> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(Error::Invalid { what: "non-finite value (NaN or infinity) in vector" })
    }
}

/// Index and squared distance of the centroid nearest to `x` among `k` centroids of `x.len()`.
fn nearest(centroids: &[f32], k: usize, x: &[f32]) -> (usize, f32) {
    let sd = x.len();
    let mut best = (0, f32::INFINITY);
    for c in 0..k {
        let d = sq_l2(&centroids[c * sd..(c + 1) * sd], x);
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

impl<S: AsRef<[f32]>> ProductQuantizer<S> {
    /// Wraps caller storage (at least `config.codebook_len()` floats; only that prefix is used).
    /// The quantizer is untrained until [`Self::train_with_scratch`] or a load fills it.
    pub fn with_storage(config: PQConfig, storage: S) -> Result<Self> {
        config.validate()?;
        let have = storage.as_ref().len();
        if have < config.codebook_len() {
            return Err(Error::BufferTooSmall { need: config.codebook_len() * 4, have: have * 4 });
        }
        Ok(Self { config, codebook: storage, trained: false })
    }

    pub fn config(&self) -> &PQConfig {
        &self.config
    }

    /// Whether the codebook is usable: trained, loaded, or [`ProductQuantizer::new`]'s default.
    pub fn is_trained(&self) -> bool {
        self.trained
    }

    pub fn compression_ratio(&self) -> f32 {
        self.config.compression_ratio()
    }

    /// The codebook (see the type's layout).
    pub fn codebook(&self) -> &[f32] {
        &self.codebook.as_ref()[..self.config.codebook_len()]
    }

    fn centroids(&self, s: usize) -> &[f32] {
        let len = self.config.num_centroids * self.config.sub_dim();
        &self.codebook()[s * len..(s + 1) * len]
    }

    fn ready(&self) -> Result<()> {
        if self.trained {
            Ok(())
        } else {
            Err(Error::Missing { what: "trained PQ codebook (train or load it first)" })
        }
    }

    fn check_vector(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.config.dim {
            return Err(Error::Invalid { what: "vector length differs from the PQ dimension" });
        }
        check_finite(v)
    }

    /// Writes `num_subspaces` codes for `v` into `out[..num_subspaces]`.
    pub fn encode_into(&self, v: &[f32], out: &mut [u8]) -> Result<()> {
        self.ready()?;
        self.check_vector(v)?;
        let m = self.config.num_subspaces;
        if out.len() < m {
            return Err(Error::BufferTooSmall { need: m, have: out.len() });
        }
        let sd = self.config.sub_dim();
        for (s, code) in out[..m].iter_mut().enumerate() {
            *code = nearest(self.centroids(s), self.config.num_centroids, &v[s * sd..(s + 1) * sd]).0 as u8;
        }
        Ok(())
    }

    /// The codes of `v`, by value (at most [`MAX_SUBSPACES`] bytes, on the stack).
    pub fn encode(&self, v: &[f32]) -> Result<Code> {
        let mut code = Code::new();
        // Cannot fail: validate() caps num_subspaces at the capacity.
        let _ = code.resize(self.config.num_subspaces, 0);
        self.encode_into(v, &mut code)?;
        Ok(code)
    }

    /// The reconstruction of `codes` (each subspace's centroid) into `out[..dim]`.
    pub fn decode(&self, codes: &[u8], out: &mut [f32]) -> Result<()> {
        self.ready()?;
        self.check_codes(codes)?;
        let dim = self.config.dim;
        if out.len() < dim {
            return Err(Error::BufferTooSmall { need: dim * 4, have: out.len() * 4 });
        }
        let sd = self.config.sub_dim();
        for (s, &c) in codes.iter().enumerate() {
            let c = c as usize;
            out[s * sd..(s + 1) * sd].copy_from_slice(&self.centroids(s)[c * sd..(c + 1) * sd]);
        }
        Ok(())
    }

    fn check_codes(&self, codes: &[u8]) -> Result<()> {
        if codes.len() != self.config.num_subspaces {
            return Err(Error::Invalid { what: "code length differs from the PQ subspace count" });
        }
        if codes.iter().any(|&c| c as usize >= self.config.num_centroids) {
            return Err(Error::Invalid { what: "PQ code names a centroid past num_centroids" });
        }
        Ok(())
    }

    /// Fills `table[s * num_centroids + c]` with the squared distance from the query's subspace
    /// `s` to centroid `c`: built once per query, it makes every code's distance m lookups.
    pub fn distance_table(&self, query: &[f32], table: &mut [f32]) -> Result<()> {
        self.ready()?;
        self.check_vector(query)?;
        let (k, sd) = (self.config.num_centroids, self.config.sub_dim());
        let need = self.config.table_len();
        if table.len() < need {
            return Err(Error::BufferTooSmall { need: need * 4, have: table.len() * 4 });
        }
        for s in 0..self.config.num_subspaces {
            let q = &query[s * sd..(s + 1) * sd];
            let cents = self.centroids(s);
            for c in 0..k {
                table[s * k + c] = sq_l2(q, &cents[c * sd..(c + 1) * sd]);
            }
        }
        Ok(())
    }

    /// The approximate squared distance of one code from the query of `table`.
    pub fn adc_distance(&self, table: &[f32], codes: &[u8]) -> f32 {
        let k = self.config.num_centroids;
        // Codes past num_centroids would index another subspace: clamp instead of trusting them.
        codes
            .iter()
            .enumerate()
            .map(|(s, &c)| table.get(s * k + c as usize).copied().unwrap_or(f32::INFINITY))
            .sum()
    }

    /// ADC search: scores every code in `codes` (`n` vectors of `num_subspaces` bytes each) and
    /// keeps the nearest `out.len()` as (index, approximate squared distance), ascending.
    /// Returns how many were written (fewer when there are fewer vectors).
    pub fn search_adc(&self, table: &[f32], codes: &[u8], out: &mut [(u32, f32)]) -> Result<usize> {
        self.ready()?;
        let m = self.config.num_subspaces;
        if table.len() < self.config.table_len() {
            return Err(Error::BufferTooSmall { need: self.config.table_len() * 4, have: table.len() * 4 });
        }
        if !codes.len().is_multiple_of(m) {
            return Err(Error::Invalid { what: "code buffer is not a whole number of codes" });
        }
        if codes.len() / m > u32::MAX as usize {
            return Err(Error::Invalid { what: "more than u32::MAX codes" });
        }
        let mut len = 0;
        for (i, code) in codes.chunks_exact(m).enumerate() {
            let d = self.adc_distance(table, code);
            push_top(out, &mut len, (i as u32, d));
        }
        Ok(len)
    }
}

/// Inserts into the ascending list `out[..*len]` capped at `out.len()`; ties keep the earlier
/// index first so results are deterministic.
fn push_top(out: &mut [(u32, f32)], len: &mut usize, item: (u32, f32)) {
    let cap = out.len();
    if cap == 0 || (*len == cap && item.1 >= out[cap - 1].1) {
        return;
    }
    let mut pos = if *len < cap { *len } else { cap - 1 };
    while pos > 0 && item.1 < out[pos - 1].1 {
        out[pos] = out[pos - 1];
        pos -= 1;
    }
    out[pos] = item;
    if *len < cap {
        *len += 1;
    }
}

/// Exact re-ranking: replaces each candidate's distance with the true squared Euclidean distance
/// from `query` to `vectors[index]` (`vectors` holds `dim`-float rows) and sorts ascending.
/// ADC shortlists cheaply; re-ranking a short list with the originals recovers most lost recall.
pub fn rerank_exact(query: &[f32], vectors: &[f32], candidates: &mut [(u32, f32)]) -> Result<()> {
    let dim = query.len();
    if dim == 0 || !vectors.len().is_multiple_of(dim) {
        return Err(Error::Invalid { what: "vector storage is not a whole number of query-sized rows" });
    }
    let n = vectors.len() / dim;
    for cand in candidates.iter_mut() {
        let i = cand.0 as usize;
        if i >= n {
            return Err(Error::Invalid { what: "candidate index past the stored vectors" });
        }
        cand.1 = sq_l2(query, &vectors[i * dim..(i + 1) * dim]);
    }
    // Insertion sort: no allocation, lists are short, and it is stable (ties keep ADC order).
    for i in 1..candidates.len() {
        let mut j = i;
        while j > 0 && candidates[j].1 < candidates[j - 1].1 {
            candidates.swap(j, j - 1);
            j -= 1;
        }
    }
    Ok(())
}

impl ProductQuantizer {
    /// A quantizer with the default codebook (module docs): `encode` works at once, and
    /// training replaces the codebook.
    ///
    /// # Panics
    /// When `config` is invalid or its codebook exceeds [`DEFAULT_CODEBOOK_FLOATS`] floats:
    /// [`Self::try_new`] returns those as errors.
    pub fn new(config: PQConfig) -> Self {
        match Self::try_new(config) {
            Ok(pq) => pq,
            Err(e) => panic!("ProductQuantizer::new: {e}"),
        }
    }

    /// [`Self::new`], with an invalid or too large `config` an error.
    pub fn try_new(config: PQConfig) -> Result<Self> {
        let mut pq = Self::with_storage(config, [0.0; DEFAULT_CODEBOOK_FLOATS])?;
        pq.fill_default_codebook();
        Ok(pq)
    }
}

impl<S: AsRef<[f32]> + AsMut<[f32]>> ProductQuantizer<S> {
    /// Replaces the codebook with the default one (module docs); the quantizer is then usable.
    pub fn fill_default_codebook(&mut self) {
        let cfg = self.config;
        let (k, sd) = (cfg.num_centroids, cfg.sub_dim());
        let mut rng = Rng(SplitMix(DEFAULT_SEED));
        for cents in self.codebook.as_mut()[..cfg.codebook_len()].chunks_exact_mut(k * sd) {
            cents[..sd].fill(0.0);
            for x in &mut cents[sd..] {
                *x = (2.0 * rng.unit() - 1.0) as f32;
            }
        }
        self.trained = true;
    }

    /// [`Self::train_with_scratch`] with scratch allocated here.
    #[cfg(feature = "alloc")]
    pub fn train(&mut self, data: &[f32], n: usize, iters: usize, seed: u64) -> Result<()> {
        let mut scratch = alloc::vec![0.0; self.config.train_scratch_len(n)];
        self.train_with_scratch(data, n, iters, seed, &mut scratch)
    }

    /// k-means per subspace over `n` training vectors (`data` holds `n * dim` floats): k-means++
    /// initialisation from `seed`, then `iters` Lloyd steps. Deterministic for a given seed.
    /// `scratch` needs [`PQConfig::train_scratch_len`] floats. An empty cluster keeps its
    /// previous centroid. Fails (and leaves the quantizer untrained) on bad input.
    pub fn train_with_scratch(
        &mut self,
        data: &[f32],
        n: usize,
        iters: usize,
        seed: u64,
        scratch: &mut [f32],
    ) -> Result<()> {
        let cfg = self.config;
        let (dim, k, sd) = (cfg.dim, cfg.num_centroids, cfg.sub_dim());
        if n.checked_mul(dim) != Some(data.len()) {
            return Err(Error::Invalid { what: "training data length is not n * dim" });
        }
        if n < k {
            return Err(Error::Invalid { what: "fewer training vectors than centroids" });
        }
        // Counts live in f32 scratch: exact only up to 2^24.
        if n > 1 << 24 {
            return Err(Error::Invalid { what: "more than 2^24 training vectors" });
        }
        check_finite(data)?;
        let need = cfg.train_scratch_len(n);
        if scratch.len() < need {
            return Err(Error::BufferTooSmall { need: need * 4, have: scratch.len() * 4 });
        }
        self.trained = false;
        let (mind, rest) = scratch.split_at_mut(n);
        let (sums, rest) = rest.split_at_mut(k * sd);
        let counts = &mut rest[..k];
        let mut rng = Rng(SplitMix(seed));
        let sub = |i: usize, s: usize| &data[i * dim + s * sd..i * dim + (s + 1) * sd];
        for s in 0..cfg.num_subspaces {
            let cents = &mut self.codebook.as_mut()[s * k * sd..(s + 1) * k * sd];
            // k-means++: each next centroid is a point drawn with probability ~ squared distance
            // to the nearest centroid so far, which spreads them over the data.
            let first = rng.below(n);
            cents[..sd].copy_from_slice(sub(first, s));
            for (i, d) in mind.iter_mut().enumerate() {
                *d = sq_l2(sub(i, s), &cents[..sd]);
            }
            for c in 1..k {
                let total: f64 = mind.iter().map(|&d| d as f64).sum();
                let pick = if total > 0.0 {
                    let mut r = rng.unit() * total;
                    let mut pick = n - 1;
                    for (i, &d) in mind.iter().enumerate() {
                        r -= d as f64;
                        if r < 0.0 {
                            pick = i;
                            break;
                        }
                    }
                    pick
                } else {
                    // Every point already sits on a centroid: duplicates are harmless.
                    rng.below(n)
                };
                cents[c * sd..(c + 1) * sd].copy_from_slice(sub(pick, s));
                let new_c = &cents[c * sd..(c + 1) * sd];
                for (i, d) in mind.iter_mut().enumerate() {
                    let e = sq_l2(sub(i, s), new_c);
                    if e < *d {
                        *d = e;
                    }
                }
            }
            for _ in 0..iters {
                sums.fill(0.0);
                counts.fill(0.0);
                for i in 0..n {
                    let x = sub(i, s);
                    let (c, _) = nearest(cents, k, x);
                    for (acc, &v) in sums[c * sd..(c + 1) * sd].iter_mut().zip(x) {
                        *acc += v;
                    }
                    counts[c] += 1.0;
                }
                let mut moved = false;
                for c in 0..k {
                    if counts[c] > 0.0 {
                        for j in 0..sd {
                            let v = sums[c * sd + j] / counts[c];
                            moved |= v != cents[c * sd + j];
                            cents[c * sd + j] = v;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        self.trained = true;
        Ok(())
    }

    /// Reads a quantizer written by [`ProductQuantizer::write_bytes`] into `storage`.
    /// Every corruption (wrong magic, bad header, length, checksum, non-finite floats) is a
    /// typed error.
    pub fn read_bytes(bytes: &[u8], storage: S) -> Result<Self> {
        let (config, trained, floats) = parse(bytes)?;
        let mut pq = Self::with_storage(config, storage)?;
        for (dst, src) in pq.codebook.as_mut().iter_mut().zip(floats.chunks_exact(4)) {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
        pq.trained = trained;
        Ok(pq)
    }
}

impl<S: AsRef<[f32]>> ProductQuantizer<S> {
    /// Serializes into `out` (at least [`PQConfig::serialized_len`] bytes): header, little-endian
    /// codebook, CRC-32 of everything before it. Returns the bytes written.
    pub fn write_bytes(&self, out: &mut [u8]) -> Result<usize> {
        let cfg = self.config;
        let len = cfg.serialized_len();
        if out.len() < len {
            return Err(Error::BufferTooSmall { need: len, have: out.len() });
        }
        out[..4].copy_from_slice(MAGIC);
        let flags = if self.trained { FLAG_TRAINED } else { 0 };
        let header = [VERSION, cfg.dim as u32, cfg.num_subspaces as u32, cfg.num_centroids as u32, flags];
        for (i, v) in header.iter().enumerate() {
            out[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        for (i, v) in self.codebook().iter().enumerate() {
            out[HEADER_LEN + 4 * i..HEADER_LEN + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[..len - 4]);
        out[len - 4..len].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }
}

fn parse(bytes: &[u8]) -> Result<(PQConfig, bool, &[u8])> {
    if bytes.len() < 4 {
        return Err(Error::Truncated { what: "PQ magic" });
    }
    if &bytes[..4] != MAGIC {
        return Err(Error::BadMagic { expected: "ruvllm PQ (RVPQ)" });
    }
    if bytes.len() < HEADER_LEN {
        return Err(Error::Truncated { what: "PQ header" });
    }
    let word =
        |i: usize| u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    if word(1) != VERSION {
        return Err(Error::Unsupported { what: "PQ format version" });
    }
    let config =
        PQConfig { dim: word(2) as usize, num_subspaces: word(3) as usize, num_centroids: word(4) as usize };
    config.validate()?;
    let flags = word(5);
    if flags & !FLAG_TRAINED != 0 {
        return Err(Error::Invalid { what: "unknown PQ flags" });
    }
    // validate() bounds dim and centroids, so this cannot overflow.
    let len = config.serialized_len();
    if bytes.len() < len {
        return Err(Error::Truncated { what: "PQ codebook" });
    }
    if bytes.len() > len {
        return Err(Error::Invalid { what: "trailing bytes after the PQ checksum" });
    }
    let stored = u32::from_le_bytes([bytes[len - 4], bytes[len - 3], bytes[len - 2], bytes[len - 1]]);
    let computed = crc32fast::hash(&bytes[..len - 4]);
    if stored != computed {
        return Err(Error::Checksum { stored, computed });
    }
    let floats = &bytes[HEADER_LEN..len - 4];
    if floats.chunks_exact(4).any(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()) {
        return Err(Error::Invalid { what: "non-finite value in the PQ codebook" });
    }
    Ok((config, flags & FLAG_TRAINED != 0, floats))
}

#[cfg(feature = "alloc")]
impl ProductQuantizer<alloc::vec::Vec<f32>> {
    /// An untrained quantizer owning a codebook of any size (train or load it before use).
    pub fn untrained(config: PQConfig) -> Result<Self> {
        config.validate()?;
        Self::with_storage(config, alloc::vec![0.0; config.codebook_len()])
    }

    pub fn to_bytes(&self) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec![0; self.config.serialized_len()];
        // Cannot fail: the buffer has exactly serialized_len bytes.
        let _ = self.write_bytes(&mut out);
        out
    }

    /// Reads a serialized quantizer; the header is validated before the codebook is allocated.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (config, _, _) = parse(bytes)?;
        Self::read_bytes(bytes, alloc::vec![0.0; config.codebook_len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CFG: PQConfig = PQConfig { dim: 8, num_subspaces: 4, num_centroids: 4 };

    /// Two well-separated clusters per subspace, fixed by the index.
    fn data(n: usize) -> [f32; 8 * 64] {
        let mut d = [0.0; 8 * 64];
        for i in 0..n {
            for j in 0..8 {
                d[i * 8 + j] = if (i + j) % 2 == 0 { 10.0 } else { -10.0 } + (i % 5) as f32 * 0.01;
            }
        }
        d
    }

    fn trained() -> ProductQuantizer<[f32; 32]> {
        let mut pq = ProductQuantizer::with_storage(CFG, [0.0; 32]).unwrap();
        let d = data(64);
        let mut scratch = [0.0; 64 + 4 * 3];
        pq.train_with_scratch(&d, 64, 10, 7, &mut scratch).unwrap();
        pq
    }

    #[test]
    fn config_is_validated() {
        let bad = |dim, num_subspaces, num_centroids| {
            ProductQuantizer::with_storage(PQConfig { dim, num_subspaces, num_centroids }, [0.0; 4096])
                .is_err()
        };
        assert!(bad(10, 3, 4)); // not divisible
        assert!(bad(8, 4, 257)); // codes would not fit u8
        assert!(bad(0, 1, 1));
        assert!(bad(8, 0, 4));
        assert!(bad(8, 4, 0));
        assert!(bad(512, 512, 2)); // more subspaces than a Code holds
        assert_eq!(
            ProductQuantizer::with_storage(CFG, [0.0; 31]).unwrap_err(),
            Error::BufferTooSmall { need: 128, have: 124 }
        );
        assert_eq!(CFG.compression_ratio(), 8.0);
    }

    #[test]
    fn untrained_and_bad_vectors_are_refused() {
        let pq = ProductQuantizer::with_storage(CFG, [0.0; 32]).unwrap();
        assert!(matches!(pq.encode(&[0.0; 8]), Err(Error::Missing { .. })));
        let pq = trained();
        assert!(matches!(pq.encode(&[0.0; 7]), Err(Error::Invalid { .. })));
        let mut v = [0.0; 8];
        v[3] = f32::NAN;
        assert!(matches!(pq.encode(&v), Err(Error::Invalid { .. })));
        v[3] = f32::INFINITY;
        assert!(matches!(pq.encode(&v), Err(Error::Invalid { .. })));
        let mut out = [0.0; 8];
        assert!(pq.decode(&[0, 1, 2, 4], &mut out).is_err()); // centroid 4 of 4
        assert!(pq.decode(&[0, 1, 2], &mut out).is_err());
        let mut pq2 = ProductQuantizer::with_storage(CFG, [0.0; 32]).unwrap();
        let mut scratch = [0.0; 64 + 12];
        assert!(pq2.train_with_scratch(&data(64)[..8 * 3], 3, 5, 1, &mut scratch).is_err()); // n < k
        assert!(pq2.train_with_scratch(&data(64), 64, 5, 1, &mut scratch[..10]).is_err());
        let mut d = data(64);
        d[5] = f32::NAN;
        assert!(pq2.train_with_scratch(&d, 64, 5, 1, &mut scratch).is_err());
        assert!(!pq2.is_trained());
    }

    #[test]
    fn encode_decode_search_and_rerank() {
        let pq = trained();
        let d = data(64);
        let mut codes = [0u8; 64 * 4];
        for i in 0..64 {
            let c = pq.encode(&d[i * 8..i * 8 + 8]).unwrap();
            codes[i * 4..i * 4 + 4].copy_from_slice(&c);
            let mut back = [0.0; 8];
            pq.decode(&c, &mut back).unwrap();
            // Clusters are 20 apart and 0.04 wide: the reconstruction is within the cluster.
            assert!(sq_l2(&back, &d[i * 8..i * 8 + 8]) < 0.1, "vector {i}");
        }
        let q = &d[3 * 8..4 * 8];
        let mut table = [0.0; 16];
        pq.distance_table(q, &mut table).unwrap();
        let mut top = [(0u32, 0.0f32); 5];
        assert_eq!(pq.search_adc(&table, &codes, &mut top).unwrap(), 5);
        assert!(top.windows(2).all(|w| w[0].1 <= w[1].1));
        rerank_exact(q, &d[..64 * 8], &mut top).unwrap();
        assert_eq!(top[0], (3, 0.0));
        assert!(rerank_exact(q, &d[..64 * 8], &mut [(64, 0.0)]).is_err());
        // Same seed, same codebook.
        assert_eq!(trained().codebook(), pq.codebook());
    }

    #[test]
    fn bytes_round_trip_and_corruption() {
        let pq = trained();
        let mut buf = [0u8; 24 + 128 + 4];
        assert_eq!(pq.write_bytes(&mut buf).unwrap(), buf.len());
        let back = ProductQuantizer::read_bytes(&buf, [0.0; 32]).unwrap();
        assert!(back.is_trained());
        assert_eq!(back.codebook(), pq.codebook());
        let mut bad = buf;
        bad[0] = b'X';
        assert!(matches!(ProductQuantizer::read_bytes(&bad, [0.0; 32]), Err(Error::BadMagic { .. })));
        let mut bad = buf;
        bad[30] ^= 1;
        assert!(matches!(ProductQuantizer::read_bytes(&bad, [0.0; 32]), Err(Error::Checksum { .. })));
        assert!(matches!(ProductQuantizer::read_bytes(&buf[..100], [0.0; 32]), Err(Error::Truncated { .. })));
    }

    /// `new`'s default codebook: fixed (two builds agree, zero first centroid, the rest in
    /// [-1, 1]), `encode` works untrained, and the round trip is each slice's nearest centroid:
    /// never further than the zero vector, exact for a vector made of centroids.
    #[test]
    fn default_codebook_round_trip_is_bounded() {
        let cfg = PQConfig { dim: 64, num_subspaces: 8, num_centroids: 16 };
        let pq = ProductQuantizer::new(cfg);
        assert!(pq.is_trained());
        assert_eq!(pq.codebook(), ProductQuantizer::try_new(cfg).unwrap().codebook());
        assert!(pq.codebook().iter().all(|x| (-1.0..=1.0).contains(x)));
        assert!(pq.codebook().iter().filter(|&&x| x != 0.0).count() > 1024 - 8 * 8 - 8);
        let sd = cfg.sub_dim();
        let mut rng = SplitMix(11);
        for _ in 0..200 {
            let v: [f32; 64] = core::array::from_fn(|_| (rng.next_u64() >> 40) as f32 / 8e6 - 1.0);
            let code = pq.encode(&v).unwrap();
            let mut back = [0.0; 64];
            pq.decode(&code, &mut back).unwrap();
            for s in 0..8 {
                let (x, y) = (&v[s * sd..(s + 1) * sd], &back[s * sd..(s + 1) * sd]);
                let err = sq_l2(x, y);
                let best = (0..16)
                    .map(|c| sq_l2(x, &pq.centroids(s)[c * sd..(c + 1) * sd]))
                    .fold(f32::MAX, f32::min);
                assert_eq!(err, best);
                assert!(err <= sq_l2(x, &[0.0; 8]));
            }
            // A vector of centroids comes back exactly.
            let again = pq.encode(&back).unwrap();
            assert_eq!(again, code);
        }
        // Training replaces the default codebook; an oversize config is an error, not a panic.
        assert!(
            ProductQuantizer::try_new(PQConfig { dim: 512, num_subspaces: 8, num_centroids: 16 }).is_err()
        );
        assert!(ProductQuantizer::try_new(PQConfig { dim: 10, num_subspaces: 3, num_centroids: 4 }).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Any mutation of a valid image is either refused with a typed error or reads back
        /// something that is still internally consistent; never a panic.
        #[test]
        fn corrupt_bytes_never_panic(
            flips in proptest::collection::vec((0usize..156, any::<u8>()), 0..6),
            cut in 0usize..=156,
        ) {
            let pq = trained();
            let mut buf = [0u8; 156];
            pq.write_bytes(&mut buf).unwrap();
            for (at, x) in flips {
                buf[at] ^= x;
            }
            if let Ok(back) = ProductQuantizer::read_bytes(&buf[..cut], [0.0f32; 4096]) {
                let v = [1.0; 8];
                if back.is_trained() && back.config().dim == 8 {
                    prop_assert!(back.encode(&v).is_ok());
                }
            }
        }

        #[test]
        fn random_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = bytes;
            if b.len() >= 4 {
                b[..4].copy_from_slice(MAGIC);
            }
            let _ = ProductQuantizer::read_bytes(&b, [0.0f32; 64]);
        }
    }
}
