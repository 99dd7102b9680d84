//! `MicroRAG`: short texts retrieved by the cosine similarity of their embeddings.
//!
//! ```
//! use ruvllm_esp32::knowledge::{MicroRAG, RAGConfig};
//! # fn main() -> ruvllm_esp32::Result<()> {
//! let mut rag = MicroRAG::<64, 64>::new(RAGConfig::default());
//! let mut embedding = [0.0f32; 64];
//! embedding[3] = 1.0;
//! let text = "The ESP32-S3 has 512 KB of SRAM.";
//! rag.add_knowledge(text, &embedding)?;
//! let mut q = embedding;
//! q[4] = 0.2;
//! // `retrieve` takes `&mut self` (the index marks visited nodes during a search) and returns
//! // a `Result` (a query of the wrong length, with NaN or all zero is an error, not a panic).
//! let results = rag.retrieve(&q, 3)?;
//! assert_eq!(results[0].text, text);
//! assert!(results[0].score > 0.9);
//! # Ok(()) }
//! ```
//!
//! The published README's calls (`MicroRAG<64, 64>::new(RAGConfig::default())`,
//! `rag.add_knowledge(text, &embedding)?`, `rag.retrieve(&q, 3)`) are kept; in expression
//! position Rust needs the turbofish `MicroRAG::<64, 64>::new`, and `retrieve` returns a
//! `Result` as above.

use core::mem::{size_of, MaybeUninit};
use core::ptr::addr_of_mut;

use super::answer_type;
use super::lexical::{bm25_normalized, Terms};
use super::{check_embedding, prepare, query_distance, MAX_RESULTS};
use crate::error::{Error, Result};
use crate::vector::hnsw::I8Vector;
use crate::vector::{HNSWConfig, Metric, MicroHNSW, SearchResult, I8};

/// Level-0 links a node of the RAG index (upper levels get half).
pub const RAG_M0: usize = 16;
/// Upper-level link pool of the RAG index, in ids: the upper links of 16 nodes at `m = 8`.
/// About one node in 8 reaches level 1, so stores up to ~128 entries get a full hierarchy;
/// larger ones get fewer levels (search still runs over the complete level 0).
pub const RAG_UP: usize = 128;

/// Default [`RAGConfig::lexical_weight`]: chosen on the knowledge development set
/// `testdata/knowledge/dev.tsv` (`tests/knowledge_retrieval.rs`, `choose_weight`).
pub const LEXICAL_WEIGHT: f32 = 0.1;

/// Default [`RAGConfig::word_match_weight`], chosen with [`LEXICAL_WEIGHT`] on the same
/// development set.
pub const WORD_MATCH_WEIGHT: f32 = 0.5;

/// Default [`RAGConfig::answer_type_weight`], chosen with the two weights above on the same
/// development set.
pub const ANSWER_TYPE_WEIGHT: f32 = 0.1;

/// Entries [`MicroRAG::retrieve_matched`] reranks word by word: the best of the hybrid score.
pub const RERANK: usize = 8;

type Index<const DIM: usize, const CAP: usize> = MicroHNSW<DIM, CAP, I8, RAG_M0, RAG_UP>;

/// Retrieval parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RAGConfig {
    /// Longest text stored, in bytes (clamped to the store's `TEXT` buffer). Longer texts are
    /// refused by [`MicroRAG::add_knowledge`] and cut at a character boundary by
    /// [`MicroRAG::add_knowledge_truncated`].
    pub max_text_bytes: usize,
    /// Results of [`MicroRAG::retrieve_default`].
    pub top_k: usize,
    /// Results with a cosine similarity below this are dropped.
    pub min_similarity: f32,
    /// Candidate list of the index search (raised to `k`).
    pub ef_search: usize,
    /// Share of the word match in [`MicroRAG::retrieve_hybrid`]'s score (0..=1; the rest is
    /// the cosine).
    pub lexical_weight: f32,
    /// Weight of the word-by-word match beside the cosine in [`MicroRAG::retrieve_matched`]'s
    /// meaning part: `(cos + w * words) / (1 + w)` (0 leaves the cosine alone).
    pub word_match_weight: f32,
    /// Weight of the answer type in [`MicroRAG::retrieve_matched`]: when the question asks
    /// for a kind of answer ([`super::answer_type`]: a time, a name, a place, a number), its
    /// score becomes `(score + w * holds) / (1 + w)`, `holds` 1 when the entry has one (0
    /// leaves the score alone).
    pub answer_type_weight: f32,
}

impl Default for RAGConfig {
    fn default() -> Self {
        RAGConfig {
            max_text_bytes: 128,
            top_k: 3,
            min_similarity: 0.0,
            ef_search: 32,
            lexical_weight: LEXICAL_WEIGHT,
            word_match_weight: WORD_MATCH_WEIGHT,
            answer_type_weight: ANSWER_TYPE_WEIGHT,
        }
    }
}

/// An entry among the best of the hybrid score, with its parts.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u16,
    /// The normalized BM25 (0..=1).
    lexical: f32,
    /// The cosine of the int8 vectors (-1..=1).
    cosine: f32,
    score: f32,
}

/// One retrieved entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrieved<'a> {
    pub id: u16,
    pub text: &'a str,
    /// Similarity to the query: the cosine of the int8-quantized vectors (-1..=1) from
    /// [`MicroRAG::retrieve`], the hybrid score (0..=1) from [`MicroRAG::retrieve_hybrid`].
    pub score: f32,
}

/// Up to `CAP` texts of at most `TEXT` bytes each with their `DIM`-dimensional embeddings,
/// indexed by a [`MicroHNSW`] with int8 storage and the cosine metric. See the module docs.
///
/// Why int8: a vector costs `DIM + 4` bytes instead of `4 * DIM` (68 instead of 256 at 64
/// dimensions), distances are integer dot products (the C3/C6 have no FPU), and cosine ignores
/// the per-vector scale, so only rounding is lost. Measured (`tests/knowledge.rs`,
/// `rag_int8_retrieval_agrees_with_f32_cosine`): top-1 always agrees with exact f32 cosine,
/// and the results it swaps are near-ties.
///
/// The results of [`Self::retrieve`] borrow the texts, so the store cannot be changed while
/// they are alive (`drop` them first).
pub struct MicroRAG<const DIM: usize, const CAP: usize, const TEXT: usize = 128> {
    cfg: RAGConfig,
    index: Index<DIM, CAP>,
    texts: [[u8; TEXT]; CAP],
    lens: [u16; CAP],
    /// Each entry's word terms, for [`Self::retrieve_hybrid`]; recomputed from the text on
    /// [`Self::restore`], so nothing of them is persisted.
    terms: [Terms; CAP],
}

impl<const DIM: usize, const CAP: usize, const TEXT: usize> MicroRAG<DIM, CAP, TEXT> {
    const TEXT_OK: () = assert!(TEXT > 0 && TEXT <= u16::MAX as usize, "MicroRAG: TEXT not in 1..=65535");

    /// An empty store (`max_text_bytes` is clamped to `1..=TEXT`).
    pub fn new(cfg: RAGConfig) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::TEXT_OK;
        let cfg = RAGConfig { max_text_bytes: cfg.max_text_bytes.clamp(1, TEXT), ..cfg };
        let index = Self::new_index(&cfg);
        MicroRAG { cfg, index, texts: [[0; TEXT]; CAP], lens: [0; CAP], terms: [Terms::default(); CAP] }
    }

    /// [`Self::new`] written into `slot` field by field: a board keeps the store in a `static`,
    /// and a `new()` value built on the stack and moved there would take its size in stack
    /// (twice, where the compiler copies it).
    pub fn init_in(slot: &mut MaybeUninit<Self>, cfg: RAGConfig) -> &mut Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::TEXT_OK;
        let cfg = RAGConfig { max_text_bytes: cfg.max_text_bytes.clamp(1, TEXT), ..cfg };
        let p = slot.as_mut_ptr();
        // SAFETY: `p` is valid for writes and aligned (it comes from `slot`); every field is
        // written before `assume_init_mut`: the byte arrays are zeroed (a valid value of them),
        // `terms` entry by entry (the exhaustive pattern below stops the build when a field is
        // added without a line here).
        let rag = unsafe {
            addr_of_mut!((*p).cfg).write(cfg);
            addr_of_mut!((*p).index).write(Self::new_index(&cfg));
            addr_of_mut!((*p).texts).write_bytes(0, 1);
            addr_of_mut!((*p).lens).write_bytes(0, 1);
            let terms = addr_of_mut!((*p).terms).cast::<Terms>();
            for i in 0..CAP {
                terms.add(i).write(Terms::default());
            }
            slot.assume_init_mut()
        };
        let MicroRAG { cfg: _, index: _, texts: _, lens: _, terms: _ } = rag;
        rag
    }

    fn new_index(cfg: &RAGConfig) -> Index<DIM, CAP> {
        Index::<DIM, CAP>::new(HNSWConfig {
            m: RAG_M0 / 2,
            ef_construction: 64,
            ef_search: cfg.ef_search,
            metric: Metric::Cosine,
            seed: 0x7261_6721,
        })
    }

    pub fn config(&self) -> &RAGConfig {
        &self.cfg
    }

    /// Stores `text` with its embedding and returns its id (a slot freed by [`Self::forget`]
    /// is reused). Errors: empty text or a bad embedding ([`Error::Invalid`]), a text longer
    /// than `max_text_bytes` ([`Error::BufferTooSmall`]: the embedding describes the whole
    /// text, so a cut text could be retrieved for words it no longer holds; use
    /// [`Self::add_knowledge_truncated`] to accept that), a full store ([`Error::Full`]).
    pub fn add_knowledge(&mut self, text: &str, embedding: &[f32]) -> Result<u16> {
        if text.len() > self.cfg.max_text_bytes {
            return Err(Error::BufferTooSmall { need: text.len(), have: self.cfg.max_text_bytes });
        }
        self.add(text, embedding)
    }

    /// As [`Self::add_knowledge`], but a text longer than `max_text_bytes` is cut at the last
    /// character boundary that fits. Returns the id and the number of bytes stored.
    pub fn add_knowledge_truncated(&mut self, text: &str, embedding: &[f32]) -> Result<(u16, usize)> {
        let cut = crate::tokenizer::truncate(text, self.cfg.max_text_bytes);
        let id = self.add(cut, embedding)?;
        Ok((id, cut.len()))
    }

    fn add(&mut self, text: &str, embedding: &[f32]) -> Result<u16> {
        if text.is_empty() {
            return Err(Error::Invalid { what: "knowledge text is empty" });
        }
        check_embedding(embedding, DIM)?;
        let id = self.index.insert(embedding)?;
        let i = id as usize;
        self.texts[i][..text.len()].copy_from_slice(text.as_bytes());
        self.lens[i] = text.len() as u16;
        self.terms[i] = Terms::of(text);
        Ok(id)
    }

    /// Puts `text` with its int8 `embedding` back in slot `id`: how a store is rebuilt from
    /// its persisted entries ([`super::persist`]) with the ids it had. The same checks as
    /// [`Self::add_knowledge`] apply (the embedding must decode to a valid one); `id` must be
    /// below the capacity and free ([`Error::Invalid`]).
    pub fn restore(&mut self, id: u16, text: &str, embedding: &I8Vector<DIM>) -> Result<()> {
        if text.is_empty() {
            return Err(Error::Invalid { what: "knowledge text is empty" });
        }
        if text.len() > self.cfg.max_text_bytes {
            return Err(Error::BufferTooSmall { need: text.len(), have: self.cfg.max_text_bytes });
        }
        let mut v = [0.0f32; DIM];
        for (x, &q) in v.iter_mut().zip(&embedding.q) {
            *x = f32::from(q) * embedding.scale;
        }
        check_embedding(&v, DIM)?;
        self.index.insert_at(id, &v)?;
        let i = id as usize;
        self.texts[i][..text.len()].copy_from_slice(text.as_bytes());
        self.lens[i] = text.len() as u16;
        self.terms[i] = Terms::of(text);
        Ok(())
    }

    /// The stored int8 embedding of `id`, if it is stored.
    pub fn embedding(&self, id: u16) -> Option<&I8Vector<DIM>> {
        self.index.get(id)
    }

    /// The text of `id`, if it is stored.
    pub fn text(&self, id: u16) -> Option<&str> {
        if !self.index.contains(id) {
            return None;
        }
        let i = id as usize;
        // Only whole `&str`s (or prefixes cut at a char boundary) are ever stored.
        core::str::from_utf8(&self.texts[i][..self.lens[i] as usize]).ok()
    }

    /// Up to `k` (at most [`MAX_RESULTS`]) entries most similar to `query`, most similar
    /// first, those below `min_similarity` left out.
    pub fn retrieve(&mut self, query: &[f32], k: usize) -> Result<heapless::Vec<Retrieved<'_>, MAX_RESULTS>> {
        check_embedding(query, DIM)?;
        let mut hits = [SearchResult { id: 0, distance: 0.0 }; MAX_RESULTS];
        let n = self.index.search_into(query, &mut hits[..k.min(MAX_RESULTS)])?;
        let mut out = heapless::Vec::new();
        for h in &hits[..n] {
            let score = 1.0 - h.distance;
            if score < self.cfg.min_similarity {
                continue;
            }
            if let Some(text) = self.text(h.id) {
                let _ = out.push(Retrieved { id: h.id, text, score });
            }
        }
        Ok(out)
    }

    /// Up to `k` (at most [`MAX_RESULTS`]) entries best matching the question `query_text`
    /// with embedding `query`, best first, those scoring below `min_similarity` left out.
    ///
    /// The score weighs words and meaning: `w * bm25 + (1 - w) * max(cosine, 0)` with `w` =
    /// `lexical_weight` and `bm25` the entry's BM25 for the question's words, normalized to
    /// 0..=1 ([`bm25_normalized`], IDF over the stored entries now). The embedder sees
    /// character n-grams, where "when" can outweigh "team meeting"; the word score weighs the
    /// rare words, the cosine still finds a fact asked in other words. Every entry is scored
    /// (no index search: the word score needs each entry anyway); no allocation.
    pub fn retrieve_hybrid(
        &self,
        query_text: &str,
        query: &[f32],
        k: usize,
    ) -> Result<heapless::Vec<Retrieved<'_>, MAX_RESULTS>> {
        let w = self.cfg.lexical_weight.clamp(0.0, 1.0);
        let best = self.best_hybrid(query_text, query, k)?;
        Ok(self.results(best.iter().map(|c| (c.id, w * c.lexical + (1.0 - w) * c.cosine.max(0.0)))))
    }

    /// [`Self::retrieve_hybrid`] with its best [`RERANK`] entries (or `k`, if more) scored
    /// again, the meaning part now `(cos + m * words) / (1 + m)` with `m` the
    /// [`RAGConfig::word_match_weight`] and `words` what `word_score` gives the entry's text
    /// (0..=1; [`QuestionWords::score`](super::word_match::QuestionWords::score) is the one
    /// the console uses); when the question asks for a kind of answer, weighed by the
    /// [`RAGConfig::answer_type_weight`] ([`super::answer_type`]); then the best `k` of them.
    /// A store of any size costs the hybrid score plus `RERANK` word matches.
    pub fn retrieve_matched(
        &self,
        query_text: &str,
        query: &[f32],
        k: usize,
        mut word_score: impl FnMut(&str) -> f32,
    ) -> Result<heapless::Vec<Retrieved<'_>, MAX_RESULTS>> {
        let w = self.cfg.lexical_weight.clamp(0.0, 1.0);
        let m = if self.cfg.word_match_weight > 0.0 { self.cfg.word_match_weight } else { 0.0 };
        let t = if self.cfg.answer_type_weight > 0.0 { self.cfg.answer_type_weight } else { 0.0 };
        let wanted = if t > 0.0 { answer_type::expected(query_text) } else { None };
        let best = self.best_hybrid(query_text, query, k.max(RERANK))?;
        let mut scored: heapless::Vec<(u16, f32), MAX_RESULTS> = heapless::Vec::new();
        for c in &best {
            let text = self.text(c.id);
            let words = match text {
                Some(text) if m > 0.0 => word_score(text).clamp(0.0, 1.0),
                _ => 0.0,
            };
            let meaning = (c.cosine.max(0.0) + m * words) / (1.0 + m);
            let mut score = w * c.lexical + (1.0 - w) * meaning;
            if let Some(kind) = wanted {
                let holds = text.is_some_and(|text| answer_type::holds(text, kind));
                score = (score + if holds { t } else { 0.0 }) / (1.0 + t);
            }
            // Insertion by score; on a tie the hybrid's order stands.
            let mut j = scored.len();
            let _ = scored.push((c.id, score));
            while j > 0 && score > scored[j - 1].1 {
                scored.swap(j, j - 1);
                j -= 1;
            }
        }
        Ok(self.results(scored.iter().take(k.min(MAX_RESULTS)).copied()))
    }

    /// The `k` (at most [`MAX_RESULTS`]) entries with the best hybrid score, best first, with
    /// their two parts; no threshold applied.
    fn best_hybrid(
        &self,
        query_text: &str,
        query: &[f32],
        k: usize,
    ) -> Result<heapless::Vec<Candidate, MAX_RESULTS>> {
        check_embedding(query, DIM)?;
        let live = |i: usize| self.lens[i] > 0;
        let mut lex = [0.0f32; CAP];
        bm25_normalized(&Terms::of(query_text), &self.terms, live, &mut lex);
        let w = self.cfg.lexical_weight.clamp(0.0, 1.0);
        let q = prepare::<DIM>(query);
        let none = Candidate { id: 0, lexical: 0.0, cosine: 0.0, score: f32::NEG_INFINITY };
        let mut best = [none; MAX_RESULTS];
        let k = k.min(MAX_RESULTS);
        for (i, &l) in lex.iter().enumerate() {
            let Some(e) = self.index.get(i as u16) else { continue };
            let cosine = 1.0 - query_distance(&q, e);
            let score = w * l + (1.0 - w) * cosine.max(0.0);
            // Insertion into the k best; an earlier id wins a tie.
            if k > 0 && score > best[k - 1].score {
                let mut j = k - 1;
                while j > 0 && score > best[j - 1].score {
                    best[j] = best[j - 1];
                    j -= 1;
                }
                best[j] = Candidate { id: i as u16, lexical: l, cosine, score };
            }
        }
        Ok(best[..k].iter().filter(|c| c.score != f32::NEG_INFINITY).copied().collect())
    }

    /// `(id, score)` pairs as results, best first, those below the threshold dropped.
    fn results(&self, scored: impl Iterator<Item = (u16, f32)>) -> heapless::Vec<Retrieved<'_>, MAX_RESULTS> {
        let mut out = heapless::Vec::new();
        for (id, score) in scored {
            // NaN `min_similarity` drops nothing, as in `retrieve`.
            if score < self.cfg.min_similarity {
                continue;
            }
            if let Some(text) = self.text(id) {
                let _ = out.push(Retrieved { id, text, score });
            }
        }
        out
    }

    /// [`Self::retrieve`] with the configured `top_k`.
    pub fn retrieve_default(&mut self, query: &[f32]) -> Result<heapless::Vec<Retrieved<'_>, MAX_RESULTS>> {
        self.retrieve(query, self.cfg.top_k)
    }

    /// Removes `id` (the index relinks its neighbours); its slot is reused by a later add.
    pub fn forget(&mut self, id: u16) -> Result<()> {
        self.index.delete(id)?;
        self.lens[id as usize] = 0;
        self.terms[id as usize] = Terms::default();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    pub const fn capacity(&self) -> usize {
        CAP
    }
    /// RAM of the whole store (index, texts, lengths): `size_of::<Self>()`.
    pub const fn ram_bytes(&self) -> usize {
        size_of::<Self>()
    }
}
