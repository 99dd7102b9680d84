//! What the console knows: short texts for `ask` ([`MicroRAG`]), the anomaly detector that
//! `anomaly` asks ([`AnomalyDetector`]) and the two embedders that turn texts into vectors.
//! `anomaly` first asks whether the text is language at all ([`language`]: the model's view of
//! its tokens, or without a model its characters), which needs no references; the detector's
//! distance to the texts added joins in once it has 2.
//!
//! Two embedders, each the winner of its evaluation, neither of them the language model (its
//! pooled hidden states, with or without a learned projection, lost both; see
//! docs/BENCHMARKS.md):
//! - `ask` retrieves with [`TableEmbedder<64>`](TableEmbedder) over the built-in learned table
//!   ([`BUILTIN_TABLE`], trained on the corpus's fact topics and WordNet's synonym sets): the
//!   best hit@1/hit@3 on the paraphrased-question set; its cosine is combined with BM25 over
//!   the words ([`MicroRAG::retrieve_hybrid`]), so that "team meeting" outweighs "when", and
//!   the best few entries are scored again word by word ([`MicroRAG::retrieve_matched`],
//!   [`QuestionWords`]), so that "kitty" still meets "cat" in a long fact.
//! - `anomaly`'s distance to knowledge uses the random-projection [`NgramEmbedder<64>`](NgramEmbedder): the
//!   learned table folds text towards the corpus's topics, which hides what is foreign, so its
//!   ROC AUC is lower.
//!
//! Both need no model (a chip without one still has `add`/`ask`/`anomaly`) and cost a fraction
//! of a forward pass.
//!
//! One fixed-size value, no allocation: a board keeps it in a `static` (its RAM is then part
//! of the linker's figure), a host on the stack or in a `Box`.

use core::mem::{size_of, MaybeUninit};
use core::ptr::addr_of_mut;

use super::anomaly::{ANOMALY_LANGUAGE, ANOMALY_TEXT, ANOMALY_TEXT_CERTAIN, ANOMALY_TEXT_CLEAR};
use super::memory::{new_memory, KnowledgeMemory};
use super::saved::{roll_back, KnowledgeStore};
use crate::embed::{has_word, Embedder, NgramEmbedder, TableEmbedder};
use crate::error::Error;
use crate::knowledge::{
    language, AnomalyConfig, AnomalyDetector, AnomalyPrior, AnomalyResult, Learned, MicroRAG, QuestionWords,
    RAGConfig, Retrieved, TokenStats,
};

/// What the model makes of a text's tokens, asked only when needed (`anomaly_with`).
pub type TokenStatsFn<'a> = dyn FnMut(&str) -> Option<TokenStats> + 'a;

/// Dimensions of every embedding the console stores.
pub const KNOWLEDGE_DIM: usize = 64;
/// Texts `add` can hold on a chip: every ESP32 gets the published `MicroRAG<64, 64>`, inside
/// the RAM the chip plan reserves for the knowledge ([`crate::model::chips::KNOWLEDGE_RESERVE`]).
pub const CHIP_KNOWLEDGE_CAP: usize = 64;
/// Texts `add` can hold in a host build (feature `std`: the CLI's console), which has the RAM.
pub const HOST_KNOWLEDGE_CAP: usize = 256;
/// Texts `add` can hold in this build: [`HOST_KNOWLEDGE_CAP`] with the `std` feature, else
/// [`CHIP_KNOWLEDGE_CAP`]. One constant, so every per-entry array follows it.
pub const KNOWLEDGE_CAP: usize = if cfg!(feature = "std") { HOST_KNOWLEDGE_CAP } else { CHIP_KNOWLEDGE_CAP };
/// Longest text `add` takes, in bytes.
pub const KNOWLEDGE_TEXT: usize = 128;
/// Reference embeddings the anomaly detector keeps (a uniform sample of every text added).
pub const ANOMALY_CAP: usize = 64;
/// What the detector's threshold leans on while it has few references (see
/// [`AnomalyPrior`]): measured for `NgramEmbedder<64>` on the generated story corpus, the
/// built-in model's domain, by
/// `cargo test --release -p ruvllm-cli --test anomaly_eval calibrated -- --nocapture`
/// ("measured prior"; that test fails if these differ from its measurement).
pub const ANOMALY_PRIOR: AnomalyPrior =
    AnomalyPrior { thresholds: [1.12, 1.03, 0.94, 0.87, 0.81], floor: 0.70 };
/// Most entries `ask` retrieves.
pub const ASK_RESULTS: usize = 3;
/// Entries whose score (words and meaning, 0..=1: [`MicroRAG::retrieve_matched`]) for
/// the question is below this are not retrieved; with none above it `ask` says
/// `No results found`. Chosen on the knowledge development set (`testdata/knowledge/dev.tsv`)
/// and half of the off-topic questions (`cargo test -p ruvllm-esp32 --features std --test
/// knowledge_retrieval threshold -- --nocapture`).
pub const ASK_MIN_SIMILARITY: f32 = 0.39;

/// The learned n-gram table `ask` embeds with (`ruvllm-esp32 train-embedder --wordnet
/// /usr/share/wordnet -o crates/ruvllm-esp32/data/ngram-table.bin` rebuilds it byte for byte): 16384 x 64 int8 (1 MiB of flash), read in place.
pub static BUILTIN_TABLE: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/ngram-table.bin"));

/// Why a knowledge command did nothing; the console prints each as one `error:` line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KnowledgeError {
    /// No text after the command.
    Empty,
    /// The text holds a control character other than tab (NUL, an escape sequence, ...) at
    /// byte `at`: refused, so that no stored text can replay terminal control to whoever
    /// `ask`s.
    Control { at: usize, code: u32 },
    /// The text is longer than [`KNOWLEDGE_TEXT`].
    TooLong { len: usize, max: usize },
    /// The text has no word to store or search by (symbols or punctuation only).
    NoWords,
    /// Every one of `capacity` entries is in use.
    Full { capacity: usize },
    /// `forget` of an id that holds nothing.
    UnknownId(u32),
    /// The embedder or a store refused (e.g. a text with no word).
    Other(Error),
    /// Saving the change failed; it was undone in RAM (write-then-acknowledge).
    NotSaved(Error),
    /// `clear` removed `cleared` of `of` entries (each one saved) before a save failed; the
    /// rest, and the detector's references, are kept.
    ClearStopped { cleared: usize, of: usize, error: Error },
}

impl core::fmt::Display for KnowledgeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KnowledgeError::Empty => write!(f, "no text given"),
            KnowledgeError::Control { at, code } => {
                write!(f, "text holds control character U+{code:04X} at byte {at}")
            }
            KnowledgeError::TooLong { len, max } => {
                write!(f, "text is {len} bytes, a fact holds at most {max}: shorten it or split it in two")
            }
            KnowledgeError::NoWords => {
                write!(
                    f,
                    "nothing stored: the text has no words, only symbols (write it with letters or digits)"
                )
            }
            KnowledgeError::Full { capacity } => write!(
                f,
                "knowledge is full ({capacity} of {capacity} entries): forget <id> or clear makes room"
            ),
            KnowledgeError::UnknownId(id) => write!(f, "no knowledge #{id}"),
            KnowledgeError::Other(Error::Invalid { what }) => write!(f, "{what}"),
            KnowledgeError::Other(e) => write!(f, "{e}"),
            KnowledgeError::NotSaved(e) => write!(f, "not saved, nothing changed: {e}"),
            KnowledgeError::ClearStopped { cleared, of, error } => write!(
                f,
                "clear stopped after {cleared} of {of} entries, the rest are kept: not saved: {error}"
            ),
        }
    }
}

impl From<Error> for KnowledgeError {
    fn from(e: Error) -> Self {
        KnowledgeError::Other(e)
    }
}

/// The retrieval store inside [`Knowledge`].
pub type KnowledgeRag = MicroRAG<KNOWLEDGE_DIM, KNOWLEDGE_CAP, KNOWLEDGE_TEXT>;
/// The anomaly detector inside [`Knowledge`].
pub type KnowledgeDetector = AnomalyDetector<KNOWLEDGE_DIM, ANOMALY_CAP>;

/// The console's detector, empty: the default settings with the measured [`ANOMALY_PRIOR`].
fn new_detector() -> KnowledgeDetector {
    AnomalyDetector::with_config(AnomalyConfig { prior: Some(ANOMALY_PRIOR), ..AnomalyConfig::default() })
}

/// Refuses an empty text and one holding a control character other than tab.
fn check_text(text: &str) -> Result<(), KnowledgeError> {
    if text.is_empty() {
        return Err(KnowledgeError::Empty);
    }
    match text.char_indices().find(|&(_, c)| c.is_control() && c != '\t') {
        Some((at, c)) => Err(KnowledgeError::Control { at, code: u32::from(c) }),
        None => Ok(()),
    }
}

/// The console's knowledge store, anomaly detector and embedder. See the module docs.
pub struct Knowledge {
    rag: KnowledgeRag,
    detector: KnowledgeDetector,
    /// Retrieval; `None` when the built-in table is refused (damaged flash): retrieval then
    /// falls back to `hashed`.
    learned: Option<TableEmbedder<'static, KNOWLEDGE_DIM>>,
    /// The detector's embedder.
    hashed: NgramEmbedder<KNOWLEDGE_DIM>,
    /// The `gen` and `ask` exchanges, episodic memories that later `ask`s recall
    /// ([`super::memory`]).
    pub(super) memory: KnowledgeMemory,
}

impl Default for Knowledge {
    fn default() -> Self {
        Self::new()
    }
}

/// The retrieval store's settings.
fn rag_config() -> RAGConfig {
    RAGConfig {
        max_text_bytes: KNOWLEDGE_TEXT,
        top_k: ASK_RESULTS,
        min_similarity: ASK_MIN_SIMILARITY,
        ..RAGConfig::default()
    }
}

impl Knowledge {
    pub fn new() -> Self {
        Knowledge {
            rag: MicroRAG::new(rag_config()),
            detector: new_detector(),
            learned: TableEmbedder::from_bytes(BUILTIN_TABLE).ok(),
            hashed: NgramEmbedder::new(),
            memory: new_memory(),
        }
    }

    /// [`Self::new`] built in `slot` (a board's `static`) one part at a time: the whole value
    /// built on the stack and then moved would take twice its 30 KB of stack at boot.
    pub fn init_in(slot: &mut MaybeUninit<Self>) -> &mut Self {
        let p = slot.as_mut_ptr();
        // SAFETY: `p` is valid for writes and aligned (it comes from `slot`); every field is
        // written once before `assume_init_mut` (the exhaustive pattern below stops the build
        // when a field is added without a line here).
        let k = unsafe {
            MicroRAG::init_in(&mut *addr_of_mut!((*p).rag).cast::<MaybeUninit<KnowledgeRag>>(), rag_config());
            addr_of_mut!((*p).detector).write(new_detector());
            addr_of_mut!((*p).learned).write(TableEmbedder::from_bytes(BUILTIN_TABLE).ok());
            addr_of_mut!((*p).hashed).write(NgramEmbedder::new());
            addr_of_mut!((*p).memory).write(new_memory());
            slot.assume_init_mut()
        };
        let Knowledge { rag: _, detector: _, learned: _, hashed: _, memory: _ } = k;
        k
    }

    /// What `ask` embeds with, for `stats`.
    pub fn retrieval_embedder(&self) -> &'static str {
        match self.learned {
            Some(_) => "learned n-gram table",
            None => "hashed n-grams (built-in table refused)",
        }
    }

    /// The retrieval embedding of `text`.
    pub(super) fn embed(&mut self, text: &str) -> Result<[f32; KNOWLEDGE_DIM], KnowledgeError> {
        check_text(text)?;
        let mut v = [0.0f32; KNOWLEDGE_DIM];
        match &mut self.learned {
            Some(t) => t.embed(text, &mut v)?,
            None => self.hashed.embed(text, &mut v)?,
        }
        Ok(v)
    }

    /// The detector's embedding of `text`.
    fn embed_hashed(&mut self, text: &str) -> Result<[f32; KNOWLEDGE_DIM], KnowledgeError> {
        check_text(text)?;
        let mut v = [0.0f32; KNOWLEDGE_DIM];
        self.hashed.embed(text, &mut v)?;
        Ok(v)
    }

    /// Stores `text` and teaches the detector that it is normal; returns its id (1-based, as
    /// the console shows it; a forgotten id is reused).
    pub fn add(&mut self, text: &str) -> Result<u32, KnowledgeError> {
        self.add_with(text, None)
    }

    /// [`Self::add`], acknowledged only once `store` holds it durably: the entry, the
    /// detector's changed reference and header, then [`KnowledgeStore::flush`]. If a save
    /// fails the add is undone in RAM (and, as far as the store still works, in the store)
    /// and [`KnowledgeError::NotSaved`] returned.
    pub fn add_saved(&mut self, text: &str, store: &mut dyn KnowledgeStore) -> Result<u32, KnowledgeError> {
        self.add_with(text, Some(store))
    }

    pub(super) fn add_with(
        &mut self,
        text: &str,
        store: Option<&mut (dyn KnowledgeStore + '_)>,
    ) -> Result<u32, KnowledgeError> {
        if text.len() > KNOWLEDGE_TEXT {
            return Err(KnowledgeError::TooLong { len: text.len(), max: KNOWLEDGE_TEXT });
        }
        if self.rag.len() >= self.rag.capacity() {
            return Err(KnowledgeError::Full { capacity: self.rag.capacity() });
        }
        if !has_word(text) {
            // Checked here, not by the embedder's error, so that the user reads what to do.
            check_text(text)?;
            return Err(KnowledgeError::NoWords);
        }
        let v = self.embed(text)?;
        // Both embedders see the same words, so one that succeeds means the other does.
        let h = self.embed_hashed(text)?;
        let slot = self.rag.add_knowledge(text, &v)?;
        // A unit vector of the right size: the detector accepts it.
        let (learned, undo) = match self.detector.learn_undoable(&h) {
            Ok(l) => l,
            Err(e) => {
                let _ = self.rag.forget(slot);
                return Err(e.into());
            }
        };
        if let Some(store) = store {
            let saved = store
                .save_entry(&self.rag, slot)
                .and_then(|()| store.save_learned(&self.detector, learned))
                .and_then(|()| store.flush());
            if let Err(e) = saved {
                let _ = self.rag.forget(slot);
                self.detector.undo(&undo);
                roll_back(store, self, Some(slot), Some(learned));
                return Err(KnowledgeError::NotSaved(e));
            }
        }
        Ok(u32::from(slot) + 1)
    }

    /// The entries best matching `query` by words and meaning (at most [`ASK_RESULTS`], none
    /// below [`ASK_MIN_SIMILARITY`]), best first, each with its 1-based id.
    pub fn ask(&mut self, query: &str) -> Result<heapless::Vec<Retrieved<'_>, ASK_RESULTS>, KnowledgeError> {
        let mut out = heapless::Vec::new();
        if self.rag.is_empty() {
            // Nothing could match, whatever the question: `No results found`, not an error.
            check_text(query)?;
            return Ok(out);
        }
        let v = self.embed(query)?;
        let found = match &self.learned {
            Some(table) => {
                let words = QuestionWords::new(table, query);
                self.rag.retrieve_matched(query, &v, ASK_RESULTS, |text| words.score(table, text))?
            }
            None => self.rag.retrieve_hybrid(query, &v, ASK_RESULTS)?,
        };
        for r in found {
            let _ = out.push(Retrieved { id: r.id + 1, ..r });
        }
        Ok(out)
    }

    /// Whether `text` is unlike language or, once the detector has 2 references, unlike the
    /// texts added ([`language::verdict`]). This is the check without a model: the language
    /// score sees the text's characters alone ([`ANOMALY_TEXT`]).
    pub fn anomaly(&mut self, text: &str) -> Result<AnomalyResult, KnowledgeError> {
        self.anomaly_with(text, None)
    }

    /// [`Self::anomaly`] with a model at hand: `token_stats` gives what the model makes of the
    /// text's tokens ([`Engine::token_stats`](super::Engine::token_stats); [`ANOMALY_LANGUAGE`]),
    /// as the console asks it. It is not called when the text alone decides: certainly no
    /// language (its text-only score above [`ANOMALY_TEXT_CERTAIN`]) or clearly language
    /// (below [`ANOMALY_TEXT_CLEAR`]). That saves the forward passes, tens of millions of
    /// instructions on a chip, for the few lines that need them. The verdict is then on the
    /// model's threshold, as every other line of that console.
    pub fn anomaly_with(
        &mut self,
        text: &str,
        token_stats: Option<&mut TokenStatsFn<'_>>,
    ) -> Result<AnomalyResult, KnowledgeError> {
        check_text(text)?;
        let by_text = ANOMALY_TEXT.score(&language::features(text, None));
        let (score, threshold) = match token_stats {
            Some(_) if !(ANOMALY_TEXT_CLEAR..=ANOMALY_TEXT_CERTAIN).contains(&by_text) => {
                (by_text, ANOMALY_LANGUAGE.threshold)
            }
            Some(stats) => match stats(text) {
                Some(t) => {
                    (ANOMALY_LANGUAGE.score(&language::features(text, Some(&t))), ANOMALY_LANGUAGE.threshold)
                }
                None => (by_text, ANOMALY_TEXT.threshold),
            },
            None => (by_text, ANOMALY_TEXT.threshold),
        };
        // A text without words to embed (symbols only) has no distance: language alone.
        let distance = match self.detector.len() {
            0 | 1 => None,
            _ => self.embed_hashed(text).ok().and_then(|v| self.detector.try_check(&v).ok()),
        };
        Ok(language::verdict(score, threshold, distance))
    }

    /// Removes entry `id` (1-based) from retrieval. The detector keeps what it learned from it.
    pub fn forget(&mut self, id: u32) -> Result<(), KnowledgeError> {
        self.forget_with(id, None)
    }

    /// [`Self::forget`], acknowledged only once the entry's record is removed from `store`.
    /// If that fails the entry is put back in RAM (same id, same embedding) and
    /// [`KnowledgeError::NotSaved`] returned.
    pub fn forget_saved(&mut self, id: u32, store: &mut dyn KnowledgeStore) -> Result<(), KnowledgeError> {
        self.forget_with(id, Some(store))
    }

    pub(super) fn forget_with(
        &mut self,
        id: u32,
        store: Option<&mut (dyn KnowledgeStore + '_)>,
    ) -> Result<(), KnowledgeError> {
        let slot = id.checked_sub(1).and_then(|s| u16::try_from(s).ok());
        let Some(slot) = slot.filter(|&s| self.rag.text(s).is_some()) else {
            return Err(KnowledgeError::UnknownId(id));
        };
        if let Some(store) = store {
            // `save_entry` of a slot RAM no longer holds removes its record: forget, save, and
            // put the entry back from this copy if the save fails.
            let (text, emb) = match (self.rag.text(slot), self.rag.embedding(slot)) {
                (Some(t), Some(e)) => {
                    let mut buf = [0u8; KNOWLEDGE_TEXT];
                    let n = t.len().min(KNOWLEDGE_TEXT);
                    buf[..n].copy_from_slice(&t.as_bytes()[..n]);
                    ((buf, n), *e)
                }
                _ => return Err(KnowledgeError::UnknownId(id)),
            };
            self.rag.forget(slot)?;
            if let Err(e) = store.save_entry(&self.rag, slot).and_then(|()| store.flush()) {
                let text = core::str::from_utf8(&text.0[..text.1]).unwrap_or_default();
                let _ = self.rag.restore(slot, text, &emb);
                roll_back(store, self, Some(slot), None);
                return Err(KnowledgeError::NotSaved(e));
            }
            return Ok(());
        }
        Ok(self.rag.forget(slot)?)
    }

    /// Forgets every entry and every reference of the anomaly detector; returns how many of
    /// each. With `store`, each entry's removal and then the detector's empty header are saved
    /// before the next step: a failed save puts that entry (or the detector) back in RAM and
    /// stops with [`KnowledgeError::ClearStopped`] (or [`KnowledgeError::NotSaved`] when no
    /// entry was removed).
    pub fn clear_with(
        &mut self,
        mut store: Option<&mut (dyn KnowledgeStore + '_)>,
    ) -> Result<(usize, usize), KnowledgeError> {
        let of = self.rag.len();
        let mut cleared = 0;
        let stop = |cleared, error| match cleared {
            0 => KnowledgeError::NotSaved(error),
            _ => KnowledgeError::ClearStopped { cleared, of, error },
        };
        for slot in 0..KNOWLEDGE_CAP as u16 {
            if self.rag.text(slot).is_none() {
                continue;
            }
            let id = u32::from(slot) + 1;
            match self.forget_with(id, store.as_deref_mut()) {
                Ok(()) => cleared += 1,
                Err(KnowledgeError::NotSaved(e)) => return Err(stop(cleared, e)),
                Err(e) => return Err(e),
            }
        }
        let refs = self.detector.len();
        let old = core::mem::replace(&mut self.detector, new_detector());
        if let Some(store) = store {
            if let Err(e) = store.save_learned(&self.detector, Learned::Skipped).and_then(|()| store.flush())
            {
                self.detector = old;
                roll_back(store, self, None, Some(Learned::Skipped));
                return Err(stop(cleared, e));
            }
        }
        Ok((cleared, refs))
    }

    /// The text of entry `id` (1-based).
    pub fn text(&self, id: u32) -> Option<&str> {
        let slot = u16::try_from(id.checked_sub(1)?).ok()?;
        self.rag.text(slot)
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.rag.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rag.is_empty()
    }
    pub const fn capacity(&self) -> usize {
        KNOWLEDGE_CAP
    }
    /// RAM of the retrieval store (index, texts, lengths).
    pub const fn rag_ram_bytes(&self) -> usize {
        self.rag.ram_bytes()
    }
    /// References the detector holds and at most keeps.
    pub fn references(&self) -> (usize, usize) {
        (self.detector.len(), self.detector.capacity())
    }
    /// The detector's threshold (cosine distance), once it has 2 references.
    pub fn threshold(&self) -> Option<f32> {
        self.detector.threshold()
    }
    /// RAM of the anomaly detector.
    pub const fn detector_ram_bytes(&self) -> usize {
        self.detector.ram_bytes()
    }
    /// The retrieval store and the detector, for loading them ([`Self::restore`]).
    pub(super) fn parts_mut(&mut self) -> (&mut KnowledgeRag, &mut KnowledgeDetector) {
        (&mut self.rag, &mut self.detector)
    }

    /// RAM of the whole value: store, detector and embedder.
    pub const fn ram_bytes(&self) -> usize {
        size_of::<Self>()
    }
}
