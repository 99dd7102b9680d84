//! `set speculative on|off` on the integer engine: the library's speculative decoder, run by
//! [`super::IntegerEngine`] when switched on, with a draft the caller keeps (the model's own
//! first layers, [`crate::speculative::early_exit`], so a board needs no second model; or a
//! smaller model with the same tokenizer).

use crate::error::{Error, Result};
use crate::infer::IntState;
use crate::model::Model;
use crate::speculative::{self, IntBuffers, SpecStats};

/// The draft, its state and the target's verification buffers (both in one arena).
pub struct Speculation<'m, 'a, 's, const L: usize> {
    pub(super) draft: &'m Model<'a, L>,
    pub(super) state: IntState<'s>,
    pub(super) buf: IntBuffers<'s>,
    pub(super) on: bool,
    /// What the last speculative generation did.
    pub(super) last: Option<SpecStats>,
}

impl<'m, 'a, 's, const L: usize> Speculation<'m, 'a, 's, L> {
    /// Arena words for `draft` proposing `gamma` tokens a pass to `target`, over `seq_len`
    /// positions.
    pub fn arena_len(target: &Model<'_, L>, draft: &Model<'_, L>, seq_len: usize, gamma: usize) -> usize {
        IntState::arena_len(draft, seq_len) + IntBuffers::arena_len(target, gamma)
    }

    /// Carves the draft's state and the buffers from `arena` ([`Speculation::arena_len`]);
    /// off until `set speculative on`. The draft must speak the target's tokens.
    pub fn new(
        target: &Model<'_, L>,
        draft: &'m Model<'a, L>,
        arena: &'s mut [i32],
        seq_len: usize,
        gamma: usize,
    ) -> Result<Self> {
        speculative::check_draft(target, draft)
            .map_err(|_| Error::Invalid { what: "the draft's tokenizer differs from the model's" })?;
        speculative::check_gamma(gamma).map_err(|_| Error::Invalid { what: "gamma outside 1..=16" })?;
        let need = Self::arena_len(target, draft, seq_len, gamma);
        if arena.len() < need {
            return Err(Error::BufferTooSmall { need: need * 4, have: arena.len() * 4 });
        }
        let (a, b) = arena.split_at_mut(IntState::arena_len(draft, seq_len));
        let state = IntState::new(draft, a, seq_len)?;
        let buf = IntBuffers::new(target, b, gamma)?;
        Ok(Speculation { draft, state, buf, on: false, last: None })
    }
}
