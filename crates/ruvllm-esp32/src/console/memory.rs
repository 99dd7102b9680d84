//! The console's episodic memory: every `gen` and `ask` exchange that produced something is
//! kept as a [`SemanticMemory`] entry (its text `gen <prompt and reply>` or `ask <question> ->
//! <best fact>`, at most [`MEMORY_TEXT`] bytes), and a later `ask` shows the earlier exchange
//! most like its question on a `Recalled:` line, after the facts it found.
//!
//! **Time** is counted in exchanges: the memory's clock moves one tick per remembered
//! exchange. A chip has no wall clock, and the board's counter would make a memory's life
//! depend on how long the model took to answer.
//!
//! **The published rules** (`knowledge::memory`): recall ranks by similarity, recency
//! (half-life [`MEMORY_HALF_LIFE`] exchanges) and importance; a `gen` exchange (importance
//! [`GEN_IMPORTANCE`]) expires [`GEN_MEMORY_TTL`] exchanges after it was made, an `ask`
//! exchange (importance [`ASK_IMPORTANCE`]) never expires; a full memory frees expired entries
//! first, then evicts the one with the lowest retention (recency and importance).
//!
//! Memories are kept in RAM only: a restart or `clear` forgets them.

use super::knowledge::{Knowledge, KnowledgeError, KNOWLEDGE_DIM, KNOWLEDGE_TEXT};
use super::saved::KnowledgeStore;
use crate::knowledge::{MemoryConfig, MemoryType, SemanticMemory, Stored};

/// Exchanges remembered (the published `SemanticMemory<64, 32>`).
pub const MEMORY_CAP: usize = 32;
/// Bytes of one remembered exchange; a longer one is kept up to here, cut at a character.
pub const MEMORY_TEXT: usize = 128;
/// Exchanges after which a memory's recency term has halved.
pub const MEMORY_HALF_LIFE: u64 = 16;
/// Exchanges a `gen` exchange lives: a story is context for a while, not knowledge.
pub const GEN_MEMORY_TTL: u64 = 16;
/// Importance of a `gen` exchange.
pub const GEN_IMPORTANCE: f32 = 0.25;
/// Importance of an `ask` exchange (a question answered from a fact), kept until evicted.
pub const ASK_IMPORTANCE: f32 = 0.5;
/// `ask` shows a memory from this cosine similarity to its question on.
pub const RECALL_MIN_SIMILARITY: f32 = 0.6;

/// The memory inside [`Knowledge`]: UTF-8 bytes of the exchanges.
pub type KnowledgeMemory = SemanticMemory<KNOWLEDGE_DIM, MEMORY_CAP, MEMORY_TEXT, u8>;

/// An empty memory with the console's half-life.
pub(super) fn new_memory() -> KnowledgeMemory {
    SemanticMemory::with_config(MemoryConfig { half_life: MEMORY_HALF_LIFE, ..MemoryConfig::default() })
}

/// One recalled exchange, for the `Recalled:` line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory<'a> {
    /// 1-based, as `stats` counts them.
    pub id: u32,
    pub text: &'a str,
    /// Exchanges since it was made (1: the one before this).
    pub ago: u64,
    /// Cosine similarity to the question.
    pub similarity: f32,
}

/// What the memory holds, for `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    pub len: usize,
    pub capacity: usize,
    pub episodic: usize,
    pub factual: usize,
    pub procedural: usize,
    pub ram_bytes: usize,
}

/// Writes `pieces` one after the other into `buf`, as much as fits, cut at a character
/// boundary, control characters (a generated line break) as spaces; returns the bytes written.
pub(super) fn join(buf: &mut [u8], pieces: &[&str]) -> usize {
    let mut len = 0;
    for piece in pieces {
        for c in piece.chars() {
            let c = if c.is_control() { ' ' } else { c };
            let Some(dst) = buf.get_mut(len..len + c.len_utf8()) else { return len };
            c.encode_utf8(dst);
            len += c.len_utf8();
        }
    }
    len
}

impl Knowledge {
    /// Remembers one exchange: `word` (`gen` or `ask`), what the user typed and the reply.
    /// `None` when it has no word to embed (nothing is stored then).
    pub fn remember(&mut self, word: &str, prompt: &str, reply: &str) -> Option<Stored> {
        let mut buf = [0u8; MEMORY_TEXT];
        let (importance, ttl) = match word {
            "gen" => (GEN_IMPORTANCE, Some(GEN_MEMORY_TTL)),
            _ => (ASK_IMPORTANCE, None),
        };
        // `gen` shows the prompt as the start of its reply.
        let n = match word {
            "gen" => join(&mut buf, &[word, " ", reply]),
            _ => join(&mut buf, &[word, " ", prompt, " -> ", reply]),
        };
        let text = core::str::from_utf8(buf.get(..n)?).ok()?;
        let v = self.embed(text).ok()?;
        let now = self.memory.now() + 1;
        let stored = self.memory.add_memory_at(&v, &buf[..n], MemoryType::Episodic, importance, ttl, now);
        // Expired entries are invisible already; freeing them keeps `stats` exact.
        self.memory.expire(now);
        stored.ok()
    }

    /// Remembers an `ask` of `question` answered by fact `id` (1-based).
    pub fn remember_ask(&mut self, question: &str, id: u32) -> Option<Stored> {
        let mut fact = [0u8; KNOWLEDGE_TEXT];
        let n = join(&mut fact, &[self.text(id)?]);
        let fact = core::str::from_utf8(fact.get(..n)?).ok()?;
        self.remember("ask", question, fact)
    }

    /// The earlier exchange most like `query` (by the memory's ranking, among those at least
    /// [`RECALL_MIN_SIMILARITY`] similar), if any.
    pub fn recall(&mut self, query: &str) -> Option<Memory<'_>> {
        if self.memory.is_empty() {
            return None;
        }
        let v = self.embed(query).ok()?;
        let now = self.memory.now();
        let hits = self.memory.recall(&v, now, crate::knowledge::MAX_RESULTS).ok()?;
        let r = hits.into_iter().find(|r| r.similarity >= RECALL_MIN_SIMILARITY)?;
        Some(Memory {
            id: u32::from(r.id) + 1,
            text: core::str::from_utf8(r.tokens).ok()?,
            ago: now - r.created + 1,
            similarity: r.similarity,
        })
    }

    /// The text of memory `id` (1-based), if it is held and not expired.
    pub fn memory_text(&self, id: u32) -> Option<&str> {
        let slot = u16::try_from(id.checked_sub(1)?).ok()?;
        core::str::from_utf8(self.memory.tokens(slot)?).ok()
    }

    /// What the memory holds.
    pub fn memory_use(&self) -> MemoryUse {
        MemoryUse {
            len: self.memory.len(),
            capacity: self.memory.capacity(),
            episodic: self.memory.count(MemoryType::Episodic),
            factual: self.memory.count(MemoryType::Factual),
            procedural: self.memory.count(MemoryType::Procedural),
            ram_bytes: self.memory.ram_bytes(),
        }
    }

    /// Forgets fact `id` (1-based) as `forget` does ([`Self::forget_with`]), and with it the
    /// memories of the `ask`s it answered, so that a forgotten fact is not shown again through
    /// them; returns how many memories went with it.
    pub(super) fn forget_fact(
        &mut self,
        id: u32,
        store: Option<&mut (dyn KnowledgeStore + '_)>,
    ) -> Result<usize, KnowledgeError> {
        let mut fact = [0u8; KNOWLEDGE_TEXT];
        let n = join(&mut fact, &[self.text(id).unwrap_or_default()]);
        self.forget_with(id, store)?;
        let fact = core::str::from_utf8(fact.get(..n).unwrap_or_default()).unwrap_or_default();
        let mut dropped = 0;
        for slot in 0..MEMORY_CAP as u16 {
            let quotes =
                self.memory.tokens(slot).and_then(|t| core::str::from_utf8(t).ok()).is_some_and(|t| {
                    // "ask <question> -> <fact, maybe cut>": the reply after some " -> ".
                    t.starts_with("ask ")
                        && t.match_indices(" -> ").any(|(at, _)| {
                            let reply = t.get(at + 4..).unwrap_or_default();
                            !reply.is_empty() && fact.starts_with(reply)
                        })
                });
            if quotes && self.memory.forget(slot).is_ok() {
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Forgets every memory; returns how many there were.
    pub fn clear_memory(&mut self) -> usize {
        let n = self.memory.len();
        self.memory = new_memory();
        n
    }
}
