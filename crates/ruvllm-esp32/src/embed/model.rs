//! The primary embedder: the language model's own final hidden states, pooled.

use super::{has_word, normalize, Embedder};
use crate::error::{Error, Result};
use crate::infer::IntState;
use crate::model::Model;
use crate::tokenizer::{self, truncate};

/// Longest text read, in bytes: a longer text is cut at the last character boundary at or
/// before this many bytes before tokenizing.
pub const MAX_TEXT_BYTES: usize = 256;

/// How the per-position hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the text's positions.
    Mean,
    /// The last position's state alone (it has attended to the whole text).
    Last,
    /// The largest value of each dimension over the positions.
    Max,
}

/// Embeds a text with the model: BOS plus the text's tokens run through the integer-only
/// forward pass ([`IntState::hidden`]), the final RMS-normed hidden states of the text's
/// positions (BOS excluded: it is the same for every text) pooled per [`Pooling`], then scaled
/// to unit length. `D` must equal the model's `dim`.
///
/// Truncation: the text is cut to [`MAX_TEXT_BYTES`] bytes (at a character boundary), then
/// to the first `seq_len - 1` tokens after BOS, `seq_len` being the context the embedder was
/// built for.
///
/// Everything up to the pooling is integer arithmetic (the sums in i64 on Q16.16 values);
/// only the final `D` values are turned into floats.
pub struct ModelEmbedder<'m, 'a, 's, const L: usize> {
    model: &'m Model<'a, L>,
    state: IntState<'s>,
    pooling: Pooling,
    /// Layers run per token (the hidden state is read after the last of them).
    layers: usize,
    /// The unmerged token sequence: BOS, the dummy-prefix space and at most one per byte.
    tokens: [u32; MAX_TEXT_BYTES + 2],
    /// The encoder's work area.
    work: [u32; tokenizer::WORK_PER_TOKEN * (MAX_TEXT_BYTES + 2)],
}

impl<'m, 'a, 's, const L: usize> ModelEmbedder<'m, 'a, 's, L> {
    /// Arena length in i32 words for texts of up to `seq_len` positions (BOS included).
    pub fn arena_len(model: &Model<'_, L>, seq_len: usize) -> usize {
        IntState::arena_len(model, seq_len)
    }

    /// Builds the integer state for `seq_len` positions inside `arena` (see
    /// [`ModelEmbedder::arena_len`]). The model must be q8 with the `ruvllm.rope` table, like
    /// any integer-path model.
    pub fn new(
        model: &'m Model<'a, L>,
        arena: &'s mut [i32],
        seq_len: usize,
        pooling: Pooling,
    ) -> Result<Self> {
        let state = IntState::new(model, arena, seq_len)?;
        Ok(ModelEmbedder {
            model,
            state,
            pooling,
            layers: model.layers.len(),
            tokens: [0; MAX_TEXT_BYTES + 2],
            work: [0; tokenizer::WORK_PER_TOKEN * (MAX_TEXT_BYTES + 2)],
        })
    }

    /// The model's hidden size: the `D` this embedder produces.
    pub fn dim(&self) -> usize {
        self.model.config.dim
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn set_pooling(&mut self, pooling: Pooling) {
        self.pooling = pooling;
    }

    /// Layers whose output is pooled: the first `layers` (1 to the model's count; default all).
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Pools the hidden state after the first `layers` layers instead of the last one
    /// (through the output RMSNorm either way); fewer layers also cost less per token.
    /// [`Error::Invalid`] outside `1..=` the model's layer count.
    pub fn set_layers(&mut self, layers: usize) -> Result<()> {
        if layers == 0 || layers > self.model.layers.len() {
            return Err(Error::Invalid { what: "embedder layer count outside 1..=the model's layers" });
        }
        self.layers = layers;
        Ok(())
    }
}

impl<const D: usize, const L: usize> Embedder<D> for ModelEmbedder<'_, '_, '_, L> {
    fn embed(&mut self, text: &str, out: &mut [f32; D]) -> Result<()> {
        if D != self.model.config.dim {
            return Err(Error::Invalid { what: "embedding size differs from the model's dim" });
        }
        let text = truncate(text, MAX_TEXT_BYTES);
        if !has_word(text) {
            return Err(Error::Invalid { what: "text has nothing to embed (no word)" });
        }
        let n = tokenizer::encode_with(
            &self.model.vocab,
            text.as_bytes(),
            true,
            false,
            &mut self.tokens,
            &mut self.work,
        )?;
        let n = n.min(self.state.seq_len());
        if n < 2 {
            // BOS alone: a context of one position holds no text.
            return Err(Error::ContextFull { need: 2, capacity: self.state.seq_len() });
        }
        let mut sum = [0i64; D];
        let mut max = [i32::MIN; D];
        let mut last = [0i32; D];
        let bos = self.model.vocab.bos();
        for (pos, tok) in self.tokens[..n].iter().enumerate() {
            let h = self.state.hidden_after(self.model, *tok, pos, self.layers)?;
            if pos == 0 && *tok == bos {
                continue;
            }
            for (((s, m), l), v) in sum.iter_mut().zip(max.iter_mut()).zip(last.iter_mut()).zip(h) {
                *s += *v as i64;
                *m = (*m).max(*v);
                *l = *v;
            }
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = match self.pooling {
                Pooling::Mean => sum[i] as f32,
                Pooling::Max => max[i] as f32,
                Pooling::Last => last[i] as f32,
            };
        }
        normalize(out)
    }
}
