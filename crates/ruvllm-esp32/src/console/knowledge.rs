//! What the console knows: short texts for `ask` ([`MicroRAG`]), the anomaly detector that
//! `anomaly` asks ([`AnomalyDetector`]) and the embedder that turns both into vectors.
//!
//! The embedder is [`NgramEmbedder<64>`](NgramEmbedder), not the language model: on the
//! project's evaluation sets the hashed character n-grams beat the model's pooled hidden states
//! both at retrieval (hit@3) and at telling in-domain text from other text (ROC AUC of the
//! detector), they need no model at all (a chip without one still has `add`/`ask`/`anomaly`),
//! and they cost a fraction of a forward pass.
//!
//! One fixed-size value, no allocation: a board keeps it in a `static` (its RAM is then part
//! of the linker's figure), a host on the stack or in a `Box`.

use core::mem::size_of;

use crate::embed::{Embedder, NgramEmbedder};
use crate::error::Error;
use crate::knowledge::{
    AnomalyConfig, AnomalyDetector, AnomalyPrior, AnomalyResult, MicroRAG, RAGConfig, Retrieved,
};

/// Dimensions of every embedding the console stores.
pub const KNOWLEDGE_DIM: usize = 64;
/// Texts `add` can hold.
pub const KNOWLEDGE_CAP: usize = 32;
/// Longest text `add` takes, in bytes.
pub const KNOWLEDGE_TEXT: usize = 128;
/// Reference embeddings the anomaly detector keeps (a uniform sample of every text added).
pub const ANOMALY_CAP: usize = 32;
/// What the detector's threshold leans on while it has few references (see
/// [`AnomalyPrior`]): measured for `NgramEmbedder<64>` on the generated story corpus, the
/// built-in model's domain, by
/// `cargo test --release -p ruvllm-cli --test anomaly_eval calibrated -- --nocapture`
/// ("measured prior"; that test fails if these differ from its measurement).
pub const ANOMALY_PRIOR: AnomalyPrior =
    AnomalyPrior { thresholds: [1.12, 1.03, 0.94, 0.87, 0.81], floor: 0.70 };
/// Most entries `ask` retrieves.
pub const ASK_RESULTS: usize = 3;
/// Entries whose cosine similarity to the question is below this are not retrieved.
pub const ASK_MIN_SIMILARITY: f32 = 0.1;

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
    /// Every one of `capacity` entries is in use.
    Full { capacity: usize },
    /// `forget` of an id that holds nothing.
    UnknownId(u32),
    /// `anomaly` before the detector has two references.
    NotCalibrated { references: usize },
    /// The embedder or a store refused (e.g. a text with no word).
    Other(Error),
}

impl core::fmt::Display for KnowledgeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KnowledgeError::Empty => write!(f, "no text given"),
            KnowledgeError::Control { at, code } => {
                write!(f, "text holds control character U+{code:04X} at byte {at}")
            }
            KnowledgeError::TooLong { len, max } => {
                write!(f, "text is {len} bytes, knowledge holds at most {max}")
            }
            KnowledgeError::Full { capacity } => {
                write!(f, "knowledge is full (capacity {capacity}); forget <id> makes room")
            }
            KnowledgeError::UnknownId(id) => write!(f, "no knowledge #{id}"),
            KnowledgeError::NotCalibrated { references } => write!(
                f,
                "the anomaly detector needs 2 texts to compare with, it has {references}: add knowledge first"
            ),
            KnowledgeError::Other(Error::Invalid { what }) => write!(f, "{what}"),
            KnowledgeError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl From<Error> for KnowledgeError {
    fn from(e: Error) -> Self {
        KnowledgeError::Other(e)
    }
}

/// The console's knowledge store, anomaly detector and embedder. See the module docs.
pub struct Knowledge {
    rag: MicroRAG<KNOWLEDGE_DIM, KNOWLEDGE_CAP, KNOWLEDGE_TEXT>,
    detector: AnomalyDetector<KNOWLEDGE_DIM, ANOMALY_CAP>,
    embedder: NgramEmbedder<KNOWLEDGE_DIM>,
}

impl Default for Knowledge {
    fn default() -> Self {
        Self::new()
    }
}

impl Knowledge {
    pub fn new() -> Self {
        let cfg = RAGConfig {
            max_text_bytes: KNOWLEDGE_TEXT,
            top_k: ASK_RESULTS,
            min_similarity: ASK_MIN_SIMILARITY,
            ..RAGConfig::default()
        };
        Knowledge {
            rag: MicroRAG::new(cfg),
            detector: AnomalyDetector::new(AnomalyConfig {
                prior: Some(ANOMALY_PRIOR),
                ..AnomalyConfig::default()
            }),
            embedder: NgramEmbedder::new(),
        }
    }

    fn embed(&mut self, text: &str) -> Result<[f32; KNOWLEDGE_DIM], KnowledgeError> {
        if text.is_empty() {
            return Err(KnowledgeError::Empty);
        }
        if let Some((at, c)) = text.char_indices().find(|&(_, c)| c.is_control() && c != '\t') {
            return Err(KnowledgeError::Control { at, code: u32::from(c) });
        }
        let mut v = [0.0f32; KNOWLEDGE_DIM];
        self.embedder.embed(text, &mut v)?;
        Ok(v)
    }

    /// Stores `text` and teaches the detector that it is normal; returns its id (1-based, as
    /// the console shows it; a forgotten id is reused).
    pub fn add(&mut self, text: &str) -> Result<u32, KnowledgeError> {
        if text.len() > KNOWLEDGE_TEXT {
            return Err(KnowledgeError::TooLong { len: text.len(), max: KNOWLEDGE_TEXT });
        }
        if self.rag.len() >= self.rag.capacity() {
            return Err(KnowledgeError::Full { capacity: self.rag.capacity() });
        }
        let v = self.embed(text)?;
        let slot = self.rag.add_knowledge(text, &v)?;
        // The embedding was just accepted by the store, so the detector accepts it too.
        self.detector.learn(&v)?;
        Ok(u32::from(slot) + 1)
    }

    /// The entries most similar to `query` (at most [`ASK_RESULTS`], none below
    /// [`ASK_MIN_SIMILARITY`]), most similar first, each with its 1-based id.
    pub fn ask(&mut self, query: &str) -> Result<heapless::Vec<Retrieved<'_>, ASK_RESULTS>, KnowledgeError> {
        let v = self.embed(query)?;
        let mut out = heapless::Vec::new();
        for r in self.rag.retrieve_default(&v)? {
            let _ = out.push(Retrieved { id: r.id + 1, ..r });
        }
        Ok(out)
    }

    /// Whether `text` is unlike the texts added so far.
    pub fn anomaly(&mut self, text: &str) -> Result<AnomalyResult, KnowledgeError> {
        if self.detector.len() < 2 {
            // Checked first so that the advice comes even for an odd text.
            if text.is_empty() {
                return Err(KnowledgeError::Empty);
            }
            return Err(KnowledgeError::NotCalibrated { references: self.detector.len() });
        }
        let v = self.embed(text)?;
        Ok(self.detector.check(&v)?)
    }

    /// Removes entry `id` (1-based) from retrieval. The detector keeps what it learned from it.
    pub fn forget(&mut self, id: u32) -> Result<(), KnowledgeError> {
        let slot = id.checked_sub(1).and_then(|s| u16::try_from(s).ok());
        match slot {
            Some(s) if self.rag.text(s).is_some() => Ok(self.rag.forget(s)?),
            _ => Err(KnowledgeError::UnknownId(id)),
        }
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
    /// RAM of the whole value: store, detector and embedder.
    pub const fn ram_bytes(&self) -> usize {
        size_of::<Self>()
    }
}
