//! `SemanticMemory`: token sequences recalled by a score combining the similarity of their
//! embedding to a query, their recency and their importance.
//!
//! Time is a caller-supplied logical clock (`u64` ticks, no `std` time): the memory keeps the
//! latest tick it was given ([`SemanticMemory::set_now`], `recall`, `expire` and the `_at`
//! adds advance it; it never goes back) and stamps new entries with it.
//!
//! **Ranking.** For a query `q` at tick `now`, an entry with embedding `e`, written at tick
//! `t` and of importance `i` (0..=1) scores
//!
//! ```text
//! score = w_similarity * cos(q, e) + w_recency * 2^(-(now - t) / half_life) + w_importance * i
//! ```
//!
//! (`cos` of the int8-quantized vectors, -1..=1; the recency term halves every `half_life`
//! ticks). Equal scores are ordered by higher importance, then newer, then lower id.
//!
//! **Expiry.** An entry with a time to live `ttl` expires at tick `t + ttl`: from then on it is
//! never returned, and [`SemanticMemory::expire`] frees its slot.
//!
//! **Eviction.** Adding to a full memory first frees expired entries; if none expired it evicts
//! the stored entry with the lowest *retention* `w_recency * 2^(-(now - t) / half_life) +
//! w_importance * i` (the score without the similarity term: an add has no query), ties going
//! to the older entry, then the lower id. The new entry itself never competes. [`Stored`]
//! names what was evicted.
//!
//! ```
//! use ruvllm_esp32::knowledge::{MemoryType, SemanticMemory};
//! # fn main() -> ruvllm_esp32::Result<()> {
//! let mut memory = SemanticMemory::<64, 32>::default();
//! let mut embedding = [0.0f32; 64];
//! embedding[0] = 1.0;
//! let tokens = [15043u32, 3186];
//! // `add_memory` returns a `Stored` (the id and what was evicted, if anything) rather than
//! // a bare id: eviction must be reported.
//! let stored = memory.add_memory(&embedding, &tokens, MemoryType::Factual)?;
//! let hits = memory.recall(&embedding, 10, 3)?;
//! assert_eq!(hits[0].id, stored.id);
//! assert_eq!(hits[0].tokens, &tokens);
//! # Ok(()) }
//! ```
//!
//! The published README's `SemanticMemory<64, 32>` and `memory.add_memory(&embedding, &tokens,
//! MemoryType::Factual)?` are kept (tokens are `u32`, the engine's token type).

use core::mem::size_of;

use super::{check_embedding, encode, prepare, query_distance, MAX_RESULTS};
use crate::error::{Error, Result};
use crate::vector::hnsw::I8Vector;

/// What a memory is about (stored and returned, not used in ranking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    /// A fact ("the user's name is Ana").
    Factual,
    /// Something that happened.
    Episodic,
    /// How to do something.
    Procedural,
}

/// Ranking weights and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryConfig {
    pub w_similarity: f32,
    pub w_recency: f32,
    pub w_importance: f32,
    /// Ticks after which the recency term has halved (at least 1).
    pub half_life: u64,
    /// Importance of entries added without one.
    pub default_importance: f32,
    /// Time to live of entries added without one (`None`: they never expire).
    pub default_ttl: Option<u64>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            w_similarity: 0.6,
            w_recency: 0.25,
            w_importance: 0.15,
            half_life: 1000,
            default_importance: 0.5,
            default_ttl: None,
        }
    }
}

/// An entry removed to make room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evicted {
    pub id: u16,
    pub kind: MemoryType,
    /// Tick it was written at.
    pub created: u64,
    pub importance: f32,
    /// Its retention when it was evicted (the lowest of the memory).
    pub retention: f32,
}

/// The result of an add: the new entry's id, and the entry evicted for it when the memory was
/// full (expired entries freed on the way are not reported: they were already invisible).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub id: u16,
    pub evicted: Option<Evicted>,
}

/// One recalled entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recalled<'a, T = u32> {
    pub id: u16,
    pub tokens: &'a [T],
    pub kind: MemoryType,
    /// The combined score (see the module docs).
    pub score: f32,
    /// Its cosine similarity term alone.
    pub similarity: f32,
    pub importance: f32,
    pub created: u64,
}

/// One stored entry as [`super::persist`] reads and writes it.
pub(super) struct MemoryEntry<'a, const DIM: usize, T = u32> {
    pub vec: &'a I8Vector<DIM>,
    pub tokens: &'a [T],
    pub kind: MemoryType,
    pub created: u64,
    /// Tick from which the entry is expired (`u64::MAX`: never).
    pub expires: u64,
    pub importance: f32,
}

#[derive(Clone, Copy)]
struct Meta {
    live: bool,
    kind: MemoryType,
    ntok: u16,
    created: u64,
    /// Tick from which the entry is expired (`u64::MAX`: never).
    expires: u64,
    importance: f32,
}

const EMPTY: Meta =
    Meta { live: false, kind: MemoryType::Factual, ntok: 0, created: 0, expires: u64::MAX, importance: 0.0 };

/// Up to `CAP` memories of at most `TOK` tokens (`T`: the engine's `u32` tokens by default;
/// the console keeps the UTF-8 bytes of its exchanges, `u8`) with `DIM`-dimensional int8
/// embeddings.
///
/// Recall scans every entry: the ranking is not a pure similarity, so an index that finds the
/// nearest embeddings could miss a recent or important entry further away; at tens of entries
/// a scan of int8 dot products is also cheaper than graph links would be in memory.
pub struct SemanticMemory<const DIM: usize, const CAP: usize, const TOK: usize = 16, T: Copy = u32> {
    cfg: MemoryConfig,
    now: u64,
    live: usize,
    vecs: [I8Vector<DIM>; CAP],
    tokens: [[T; TOK]; CAP],
    meta: [Meta; CAP],
}

impl<const DIM: usize, const CAP: usize, const TOK: usize, T: Copy + Default> Default
    for SemanticMemory<DIM, CAP, TOK, T>
{
    fn default() -> Self {
        Self::new()
    }
}

fn unit(x: f32, what: &'static str) -> Result<f32> {
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(Error::Invalid { what })
    }
}

impl<const DIM: usize, const CAP: usize, const TOK: usize, T: Copy + Default>
    SemanticMemory<DIM, CAP, TOK, T>
{
    const LAYOUT_OK: () = assert!(
        CAP > 0 && CAP < u16::MAX as usize && TOK <= u16::MAX as usize,
        "SemanticMemory: CAP not in 1..65535 or TOK > 65535"
    );

    /// An empty memory at tick 0 with the default [`MemoryConfig`].
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// An empty memory at tick 0. Non-finite weights are treated as 0, `half_life` as at least
    /// 1 and `default_importance` is clamped to 0..=1.
    pub fn with_config(cfg: MemoryConfig) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::LAYOUT_OK;
        let w = |x: f32| if x.is_finite() { x } else { 0.0 };
        let imp =
            if cfg.default_importance.is_finite() { cfg.default_importance.clamp(0.0, 1.0) } else { 0.5 };
        let cfg = MemoryConfig {
            w_similarity: w(cfg.w_similarity),
            w_recency: w(cfg.w_recency),
            w_importance: w(cfg.w_importance),
            half_life: cfg.half_life.max(1),
            default_importance: imp,
            ..cfg
        };
        SemanticMemory {
            cfg,
            now: 0,
            live: 0,
            vecs: [I8Vector { q: [0; DIM], scale: 0.0 }; CAP],
            tokens: [[T::default(); TOK]; CAP],
            meta: [EMPTY; CAP],
        }
    }

    pub fn config(&self) -> &MemoryConfig {
        &self.cfg
    }
    /// The logical clock: the latest tick seen.
    pub fn now(&self) -> u64 {
        self.now
    }
    /// Advances the clock to `now` (an earlier tick is ignored: the clock never goes back).
    pub fn set_now(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// Adds a memory at the current tick with the default importance and TTL.
    pub fn add_memory(&mut self, embedding: &[f32], tokens: &[T], kind: MemoryType) -> Result<Stored> {
        let (imp, ttl) = (self.cfg.default_importance, self.cfg.default_ttl);
        self.add_memory_at(embedding, tokens, kind, imp, ttl, self.now)
    }

    /// Adds a memory at tick `now` (the clock advances to it; an earlier tick than the clock's
    /// stamps the entry with the clock's) with `importance` (0..=1) and an
    /// optional time to live in ticks. A full memory frees expired entries, then evicts the
    /// lowest-retention one (module docs). Errors ([`Error::Invalid`] /
    /// [`Error::BufferTooSmall`]) leave the memory unchanged.
    pub fn add_memory_at(
        &mut self,
        embedding: &[f32],
        tokens: &[T],
        kind: MemoryType,
        importance: f32,
        ttl: Option<u64>,
        now: u64,
    ) -> Result<Stored> {
        check_embedding(embedding, DIM)?;
        let importance = unit(importance, "memory importance outside 0..=1 (or NaN)")?;
        if tokens.len() > TOK {
            return Err(Error::BufferTooSmall { need: tokens.len(), have: TOK });
        }
        if ttl == Some(0) {
            return Err(Error::Invalid { what: "memory TTL of 0 ticks (it would never be visible)" });
        }
        self.set_now(now);
        let now = self.now;
        if self.live == CAP {
            self.expire(now);
        }
        let mut evicted = None;
        let slot = match self.meta.iter().position(|m| !m.live) {
            Some(s) => s,
            None => {
                let s = self.lowest_retention(now);
                let m = self.meta[s];
                evicted = Some(Evicted {
                    id: s as u16,
                    kind: m.kind,
                    created: m.created,
                    importance: m.importance,
                    retention: self.retention(&m, now),
                });
                self.remove(s);
                s
            }
        };
        self.vecs[slot] = encode::<DIM>(embedding);
        self.tokens[slot][..tokens.len()].copy_from_slice(tokens);
        self.meta[slot] = Meta {
            live: true,
            kind,
            ntok: tokens.len() as u16,
            created: now,
            expires: ttl.map_or(u64::MAX, |t| now.saturating_add(t)),
            importance,
        };
        self.live += 1;
        Ok(Stored { id: slot as u16, evicted })
    }

    fn recency(&self, m: &Meta, now: u64) -> f32 {
        let age = now.saturating_sub(m.created) as f64 / self.cfg.half_life as f64;
        libm::exp2(-age) as f32
    }

    fn retention(&self, m: &Meta, now: u64) -> f32 {
        self.cfg.w_recency * self.recency(m, now) + self.cfg.w_importance * m.importance
    }

    /// The slot to evict: lowest retention, then oldest, then lowest id.
    fn lowest_retention(&self, now: u64) -> usize {
        let mut best = 0;
        let mut best_key = (f32::INFINITY, u64::MAX);
        for (i, m) in self.meta.iter().enumerate() {
            let key = (self.retention(m, now), m.created);
            if key.0 < best_key.0 || (key.0 == best_key.0 && key.1 < best_key.1) {
                best = i;
                best_key = key;
            }
        }
        best
    }

    fn remove(&mut self, slot: usize) {
        self.meta[slot] = EMPTY;
        self.live -= 1;
    }

    /// Removes every entry expired at tick `now` (the clock advances to it); returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        self.set_now(now);
        let now = self.now;
        let mut n = 0;
        for s in 0..CAP {
            if self.meta[s].live && self.meta[s].expires <= now {
                self.remove(s);
                n += 1;
            }
        }
        n
    }

    /// Removes `id`; its slot is reused by a later add.
    pub fn forget(&mut self, id: u16) -> Result<()> {
        let s = id as usize;
        if s >= CAP || !self.meta[s].live {
            return Err(Error::Invalid { what: "memory id not in the memory" });
        }
        self.remove(s);
        Ok(())
    }

    /// Up to `k` (at most [`MAX_RESULTS`]) unexpired entries with the highest score for
    /// `query` at tick `now` (the clock advances to it), best first.
    pub fn recall(
        &mut self,
        query: &[f32],
        now: u64,
        k: usize,
    ) -> Result<heapless::Vec<Recalled<'_, T>, MAX_RESULTS>> {
        check_embedding(query, DIM)?;
        self.set_now(now);
        let now = self.now;
        let q = prepare::<DIM>(query);
        let k = k.min(MAX_RESULTS);
        // (score, slot, similarity), kept sorted best first.
        let mut best: heapless::Vec<(f32, usize, f32), MAX_RESULTS> = heapless::Vec::new();
        for (s, m) in self.meta.iter().enumerate() {
            if !m.live || m.expires <= now || k == 0 {
                continue;
            }
            let sim = 1.0 - query_distance(&q, &self.vecs[s]);
            let score = self.cfg.w_similarity * sim + self.retention(m, now);
            let pos = best
                .iter()
                .position(|&(bs, bslot, _)| self.before(score, s, bs, bslot))
                .unwrap_or(best.len());
            if pos >= k {
                continue;
            }
            if best.len() == k {
                best.pop();
            }
            let _ = best.insert(pos, (score, s, sim));
        }
        let mut out = heapless::Vec::new();
        for &(score, s, similarity) in &best {
            let m = &self.meta[s];
            let _ = out.push(Recalled {
                id: s as u16,
                tokens: &self.tokens[s][..m.ntok as usize],
                kind: m.kind,
                score,
                similarity,
                importance: m.importance,
                created: m.created,
            });
        }
        Ok(out)
    }

    /// Whether (score `a`, slot `sa`) ranks before (`b`, `sb`): higher score, then higher
    /// importance, then newer, then lower id.
    fn before(&self, a: f32, sa: usize, b: f32, sb: usize) -> bool {
        if a != b {
            return a > b;
        }
        let (ma, mb) = (&self.meta[sa], &self.meta[sb]);
        if ma.importance != mb.importance {
            return ma.importance > mb.importance;
        }
        if ma.created != mb.created {
            return ma.created > mb.created;
        }
        sa < sb
    }

    /// Stored entries of `kind` (expired ones not yet removed included).
    pub fn count(&self, kind: MemoryType) -> usize {
        self.meta.iter().filter(|m| m.live && m.kind == kind).count()
    }

    /// The tokens of `id` if it is stored and not expired at the current tick.
    pub fn tokens(&self, id: u16) -> Option<&[T]> {
        let s = id as usize;
        let m = self.meta.get(s)?;
        (m.live && m.expires > self.now).then(|| &self.tokens[s][..m.ntok as usize])
    }

    /// Everything stored about `id` (expired or not), for persisting it ([`super::persist`]).
    pub(super) fn entry(&self, id: u16) -> Option<MemoryEntry<'_, DIM, T>> {
        let s = id as usize;
        let m = self.meta.get(s)?;
        m.live.then(|| MemoryEntry {
            vec: &self.vecs[s],
            tokens: &self.tokens[s][..m.ntok as usize],
            kind: m.kind,
            created: m.created,
            expires: m.expires,
            importance: m.importance,
        })
    }

    /// Puts a persisted entry back in slot `id` (rebuilding a memory, [`super::persist`]).
    /// Errors ([`Error::Invalid`], [`Error::BufferTooSmall`]): a slot outside the capacity or
    /// in use, too many tokens, an importance outside 0..=1, an embedding with a non-finite
    /// or non-positive scale or all-zero codes. The clock advances to the entry's tick.
    pub(super) fn restore_entry(&mut self, id: u16, e: &MemoryEntry<'_, DIM, T>) -> Result<()> {
        let s = id as usize;
        if s >= CAP || self.meta[s].live {
            return Err(Error::Invalid { what: "memory slot outside the capacity or in use" });
        }
        if e.tokens.len() > TOK {
            return Err(Error::BufferTooSmall { need: e.tokens.len(), have: TOK });
        }
        unit(e.importance, "memory importance outside 0..=1 (or NaN)")?;
        if !(e.vec.scale.is_finite() && e.vec.scale > 0.0) || e.vec.q.iter().all(|&q| q == 0) {
            return Err(Error::Invalid { what: "persisted memory embedding is not valid" });
        }
        self.vecs[s] = *e.vec;
        self.tokens[s][..e.tokens.len()].copy_from_slice(e.tokens);
        self.meta[s] = Meta {
            live: true,
            kind: e.kind,
            ntok: e.tokens.len() as u16,
            created: e.created,
            expires: e.expires,
            importance: e.importance,
        };
        self.live += 1;
        self.set_now(e.created);
        Ok(())
    }

    /// Stored entries (expired ones not yet removed by [`Self::expire`] included).
    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    pub const fn capacity(&self) -> usize {
        CAP
    }
    /// RAM of the whole memory: `size_of::<Self>()`.
    pub const fn ram_bytes(&self) -> usize {
        size_of::<Self>()
    }
}
