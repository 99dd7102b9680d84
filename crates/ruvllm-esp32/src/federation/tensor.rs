//! Tensor parallelism over the links: every node holds some heads and FFN rows of every layer
//! ([`crate::infer::shard`]); the coordinator holds the residual stream, the embeddings and the
//! classifier. Each half-layer is one [`Round`]: the coordinator sends the residual stream to
//! the nodes holding a part of it, each answers with its [`Partial`] accumulators, and the
//! coordinator adds them in node order and rounds once ([`crate::infer::reduce`]), which is
//! the single-node matmul's own arithmetic: the tokens are those of one node, bit for bit.

use super::wire::{Body, FailReason, Partial, Partials, Residual, Round, MAX_PARTIAL};
use crate::error::{Error, Result};
use crate::infer::integer::sample_int;
use crate::infer::{reduce, IntState, Shard, TensorState};
use crate::model::Model;
use crate::sample::Sampling;

/// One node of a tensor-parallel split: its shard, for up to `slots.len()` sequences.
pub struct TensorNode<'a, 'm, 's, const L: usize = { crate::model::weights::DEFAULT_MAX_LAYERS }> {
    pub node: u8,
    model: &'a Model<'m, L>,
    slots: &'a mut [TensorState<'s>],
    /// One partial accumulator per residual value.
    acc: &'a mut [i64],
}

impl<'a, 'm, 's, const L: usize> TensorNode<'a, 'm, 's, L> {
    /// `acc` holds at least the model's `dim` values, at most [`MAX_PARTIAL`].
    pub fn new(
        node: u8,
        model: &'a Model<'m, L>,
        slots: &'a mut [TensorState<'s>],
        acc: &'a mut [i64],
    ) -> Result<Self> {
        let dim = model.config.dim;
        if dim > MAX_PARTIAL {
            return Err(Error::Unsupported { what: "tensor parallelism on models wider than 512" });
        }
        if acc.len() < dim {
            return Err(Error::BufferTooSmall { need: dim * 8, have: acc.len() * 8 });
        }
        Ok(TensorNode { node, model, slots, acc })
    }

    /// The answer to `body` from the coordinator: a [`Round`]'s partials; a start or the end of
    /// a run echoed; anything else a failure naming this node (its state untouched).
    pub fn handle(&mut self, body: Body) -> Body {
        let node = self.node;
        let fail = |reason| Body::Fail { node, reason };
        match body {
            Body::Start { stream, .. } if (stream as usize) < self.slots.len() => body,
            Body::Start { .. } => fail(FailReason::BadStream),
            Body::Round(r) => self.round(r).unwrap_or_else(fail),
            b @ (Body::Stats(_) | Body::Finish) => b,
            _ => fail(FailReason::Unexpected),
        }
    }

    fn round(&mut self, r: Round) -> core::result::Result<Body, FailReason> {
        let dim = self.model.config.dim;
        if r.residual.len() != dim {
            return Err(FailReason::BadResidual);
        }
        let slot = self.slots.get_mut(r.stream as usize).ok_or(FailReason::BadStream)?;
        let (layer, pos, acc) = (r.layer as usize, r.pos as usize, &mut self.acc[..dim]);
        slot.round(self.model, layer, r.ffn, pos, &r.residual, acc).map_err(|_| FailReason::BadStep)?;
        let part = if r.ffn { &slot.shard().hidden } else { &slot.shard().heads };
        let acc =
            if part.is_empty() { Partials::new() } else { Partials::from_slice(acc).unwrap_or_default() };
        Ok(Body::Partial(Partial { stream: r.stream, pos: r.pos, layer: r.layer, ffn: r.ffn, acc }))
    }
}

/// The coordinator's arithmetic for one sequence: the residual stream (in an [`IntState`] of
/// one position, which embeds and classifies), the [`Round`]s of a position, and the sum of
/// the nodes' partials.
pub struct TensorLead<'a, 'm, 's, const L: usize = { crate::model::weights::DEFAULT_MAX_LAYERS }> {
    model: &'a Model<'m, L>,
    state: IntState<'s>,
    shards: &'a [Shard],
    total: &'a mut [i64],
}

impl<'a, 'm, 's, const L: usize> TensorLead<'a, 'm, 's, L> {
    /// Arena length (i32 words) of the coordinator's state.
    pub fn arena_len(model: &Model<'_, L>) -> usize {
        IntState::arena_len(model, 1)
    }

    /// `shards`: every node's, in node order; `total` at least `dim` values.
    pub fn new(
        model: &'a Model<'m, L>,
        arena: &'s mut [i32],
        shards: &'a [Shard],
        total: &'a mut [i64],
    ) -> Result<Self> {
        if total.len() < model.config.dim {
            return Err(Error::BufferTooSmall { need: model.config.dim * 8, have: total.len() * 8 });
        }
        Ok(TensorLead { model, state: IntState::new(model, arena, 1)?, shards, total })
    }

    /// The half-layers of a position in order: (layer, FFN?).
    pub fn rounds(&self) -> impl Iterator<Item = (u16, bool)> {
        (0..self.model.config.n_layers as u16).flat_map(|l| [(l, false), (l, true)])
    }

    /// The nodes holding a part of the attention (`ffn` false) or of the FFN.
    pub fn takers(&self, ffn: bool) -> impl Iterator<Item = usize> + '_ {
        self.shards
            .iter()
            .enumerate()
            .filter(move |(_, s)| if ffn { !s.hidden.is_empty() } else { !s.heads.is_empty() })
            .map(|(i, _)| i)
    }

    /// Begins a position: the residual stream is `token`'s embedding.
    pub fn embed(&mut self, token: u32) -> Result<()> {
        self.state.embed_residual(self.model, token)?;
        self.total[..self.model.config.dim].fill(0);
        Ok(())
    }

    /// The message of one round, for every taker.
    pub fn round(&mut self, stream: u8, pos: u32, layer: u16, ffn: bool) -> Body {
        let residual = Residual::from_slice(self.state.residual_mut()).unwrap_or_default();
        Body::Round(Round { stream, pos, layer, ffn, residual })
    }

    /// Adds a taker's answer to `want` (the round sent) to the sum; answers in node order.
    pub fn absorb(&mut self, want: &Body, answer: &Body) -> Result<()> {
        let (Body::Round(w), Body::Partial(p)) = (want, answer) else {
            return Err(Error::Invalid { what: "a node answered a round out of turn" });
        };
        let dim = self.model.config.dim;
        if (p.stream, p.pos, p.layer, p.ffn) != (w.stream, w.pos, w.layer, w.ffn) || p.acc.len() != dim {
            return Err(Error::Invalid { what: "a node answered a round out of turn" });
        }
        for (t, a) in self.total.iter_mut().zip(&p.acc) {
            *t = t.saturating_add(*a);
        }
        Ok(())
    }

    /// Ends a round: its sum into the residual stream.
    pub fn reduce(&mut self) {
        let dim = self.model.config.dim;
        reduce(self.state.residual_mut(), &self.total[..dim]);
        self.total[..dim].fill(0);
    }

    /// After a position's last round: the next token, as the single-node tail samples it.
    pub fn sample(&mut self, sampling: &mut Sampling) -> Result<u32> {
        let logits = self.state.classify(self.model)?;
        Ok(sample_int(logits, sampling.temp_milli, &mut sampling.rng))
    }
}
