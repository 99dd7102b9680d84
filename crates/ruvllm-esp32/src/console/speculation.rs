//! `set speculative on|off` on the integer engine: the library's speculative decoder with the
//! self-speculative draft (the model's own first layers and its classifier, so a board needs no
//! second model), run by [`super::IntegerEngine`] when switched on.

use crate::error::{Error, Result};
use crate::infer::IntState;
use crate::model::Model;
use crate::speculative::{self, IntBuffers, Refusal, SpecStats};

/// An early-exit draft's state and the target's verification buffers, in one arena.
pub struct Speculation<'a, 's, const L: usize> {
    pub(super) draft: Model<'a, L>,
    pub(super) state: IntState<'s>,
    pub(super) buf: IntBuffers<'s>,
    pub(super) on: bool,
    /// What the last speculative generation did.
    pub(super) last: Option<SpecStats>,
}

impl<'a, 's, const L: usize> Speculation<'a, 's, L> {
    /// Arena words for a draft of the first `layers` layers proposing `gamma` tokens a pass,
    /// over `seq_len` positions.
    pub fn arena_len(
        model: &Model<'a, L>,
        seq_len: usize,
        layers: usize,
        gamma: usize,
    ) -> core::result::Result<usize, Refusal> {
        let draft = speculative::early_exit(model, layers)?;
        speculative::check_gamma(gamma)?;
        Ok(IntState::arena_len(&draft, seq_len) + IntBuffers::arena_len(model, gamma))
    }

    /// Carves the draft's state and the buffers from `arena` ([`Speculation::arena_len`]);
    /// off until `set speculative on`.
    pub fn new(
        model: &Model<'a, L>,
        arena: &'s mut [i32],
        seq_len: usize,
        layers: usize,
        gamma: usize,
    ) -> Result<Self> {
        let refused = |_| Error::Invalid { what: "early-exit layer or gamma out of range" };
        let need = Self::arena_len(model, seq_len, layers, gamma).map_err(refused)?;
        if arena.len() < need {
            return Err(Error::BufferTooSmall { need: need * 4, have: arena.len() * 4 });
        }
        let draft = speculative::early_exit(model, layers).map_err(refused)?;
        let (a, b) = arena.split_at_mut(IntState::arena_len(&draft, seq_len));
        let state = IntState::new(&draft, a, seq_len)?;
        let buf = IntBuffers::new(model, b, gamma)?;
        Ok(Speculation { draft, state, buf, on: false, last: None })
    }
}
