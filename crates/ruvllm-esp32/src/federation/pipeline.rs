//! Pipeline parallelism on the integer path: what a node does with each message passing down
//! the ring (coordinator -> head -> ... -> tail -> coordinator), and what the coordinator does
//! for each sequence. A stage hands the next one the residual stream itself (Q16.16), so the
//! chain runs exactly the integer work of one [`IntState::forward`], and the tokens are those
//! of [`generate_int_sampled`](crate::infer::generate_int_sampled), bit for bit.

use super::wire::{Body, FailReason, Forward, PlanEntry, Residual, RingPlan};
use crate::error::{Error, Result};
use crate::infer::integer::sample_int;
use crate::infer::IntState;
use crate::model::Model;
use crate::sample::Sampling;
use crate::tokenizer::{self, Vocab, DECODE_MAX};
use core::ops::Range;

/// One sequence's place on a node: its activations and KV cache, and (on the tail) its sampler.
pub struct Slot<'s> {
    pub state: IntState<'s>,
    pub sampling: Sampling,
}

/// One node's part: a contiguous range of the model's layers, for up to `slots.len()`
/// sequences at once. The node holding the last layer is the tail: it samples. The model may
/// be the whole one or an image cut to this node's layers ([`Model::cut`]).
pub struct Stage<'a, 'm, 's, const L: usize = { crate::model::weights::DEFAULT_MAX_LAYERS }> {
    pub node: u8,
    model: &'a Model<'m, L>,
    /// The whole model's layers this node runs.
    layers: Range<usize>,
    /// The whole model's layer count, and the model's first layer in it (0 unless a cut).
    total: usize,
    offset: usize,
    slots: &'a mut [Slot<'s>],
}

/// Whether `model` (the whole model, or a node's cut of it) holds `layers` (numbered in the
/// whole model), a non-empty range: a node re-planned onto other layers checks this first.
pub fn holds<const L: usize>(model: &Model<'_, L>, layers: &Range<usize>) -> bool {
    let n = model.config.n_layers;
    let offset = model.cut.map_or(0, |c| c.first);
    layers.start < layers.end && layers.start >= offset && layers.end <= offset + n
}

/// The whole model's layer count (a cut knows it).
pub fn total_layers<const L: usize>(model: &Model<'_, L>) -> usize {
    model.cut.map_or(model.config.n_layers, |c| c.total)
}

impl<'a, 'm, 's, const L: usize> Stage<'a, 'm, 's, L> {
    /// `layers` (numbered in the whole model) must be a non-empty range of the layers `model`
    /// holds.
    pub fn new(
        node: u8,
        model: &'a Model<'m, L>,
        layers: Range<usize>,
        slots: &'a mut [Slot<'s>],
    ) -> Result<Self> {
        if !holds(model, &layers) {
            return Err(Error::Invalid {
                what: "a node's layers must be a non-empty range of the model's layers",
            });
        }
        let (offset, total) = (model.cut.map_or(0, |c| c.first), total_layers(model));
        Ok(Stage { node, model, layers, total, offset, slots })
    }

    fn tail(&self) -> bool {
        self.layers.end == self.total
    }

    /// What goes on downstream after `body` came from upstream: a position runs through this
    /// node's layers (the tail answers with the token); everything for the coordinator passes.
    pub fn handle(&mut self, body: Body) -> Body {
        let node = self.node;
        let fail = |reason| Body::Fail { node, reason };
        match body {
            Body::Start { stream, temp_milli, seed } => match self.slots.get_mut(stream as usize) {
                Some(slot) => {
                    slot.sampling = Sampling::new(temp_milli, seed);
                    Body::Start { stream, temp_milli, seed }
                }
                None => fail(FailReason::BadStream),
            },
            Body::Forward(f) => self.forward(f).unwrap_or_else(fail),
            b @ (Body::Next { .. } | Body::Stats(_) | Body::Finish | Body::Fail { .. }) => b,
            Body::Ack
            | Body::Hello(_)
            | Body::Welcome(_)
            | Body::Refuse(_)
            | Body::Round(_)
            | Body::Partial(_)
            | Body::Plan { .. } => fail(FailReason::Unexpected),
        }
    }

    fn forward(&mut self, f: Forward) -> core::result::Result<Body, FailReason> {
        let first = self.layers.start == 0;
        let dim = self.model.config.dim;
        if (first && !f.residual.is_empty()) || (!first && f.residual.len() != dim) {
            return Err(FailReason::BadResidual);
        }
        let tail = self.tail();
        let (model, layers) = (self.model, self.layers.start - self.offset..self.layers.end - self.offset);
        let slot = self.slots.get_mut(f.stream as usize).ok_or(FailReason::BadStream)?;
        let input = (!first).then_some(&f.residual[..]);
        let x = slot
            .state
            .run_layers(model, f.token, f.pos as usize, layers, input)
            .map_err(|_| FailReason::BadStep)?;
        if !tail {
            let mut residual = Residual::new();
            residual.extend_from_slice(x).map_err(|_| FailReason::BadResidual)?;
            return Ok(Body::Forward(Forward { residual, ..f }));
        }
        let token = if f.sample {
            let logits = slot.state.classify(model).map_err(|_| FailReason::BadStep)?;
            let Sampling { temp_milli, rng } = &mut slot.sampling;
            Some(sample_int(logits, *temp_milli, rng))
        } else {
            None
        };
        Ok(Body::Next { stream: f.stream, pos: f.pos, token })
    }
}

impl RingPlan {
    /// `layers` layers over `nodes` (id, port) in ring order, as [`plan`](super::plan) splits
    /// them: the first plan of a ring, or the re-plan onto the nodes that survive a failure.
    pub fn over(layers: usize, nodes: &[(u8, u16)]) -> Result<Self> {
        let too_many = Error::Invalid { what: "a plan of more nodes or layers than the protocol carries" };
        let l16 = u16::try_from(layers).map_err(|_| too_many)?;
        let mut out = heapless::Vec::new();
        for (s, &(node, port)) in super::plan(layers, nodes.len())?.zip(nodes) {
            let (first, end) = (s.layers.start as u16, s.layers.end as u16);
            out.push(PlanEntry { node, port, first, end }).map_err(|_| too_many)?;
        }
        Ok(RingPlan { layers: l16, count: out.len() as u8, nodes: out })
    }

    /// A tensor-parallel plan: `nodes` (id, port) each holding a part of all `layers` layers;
    /// node `i` of `n` takes shard `i` of a split into `n` ([`RingPlan::shard_place`]).
    pub fn tensor(layers: usize, nodes: &[(u8, u16)]) -> Result<Self> {
        let too_many = Error::Invalid { what: "a plan of more nodes or layers than the protocol carries" };
        let end = u16::try_from(layers).map_err(|_| too_many)?;
        if nodes.is_empty() || layers == 0 {
            return Err(Error::Invalid { what: "a plan needs at least one node and one layer" });
        }
        let mut out = heapless::Vec::new();
        for &(node, port) in nodes {
            out.push(PlanEntry { node, port, first: 0, end }).map_err(|_| too_many)?;
        }
        Ok(RingPlan { layers: end, count: out.len() as u8, nodes: out })
    }

    /// Node `node`'s place in a tensor plan for a model of `layers` layers: its index and the
    /// node count. A plan whose nodes do not each hold all the layers, or that names `node`
    /// not exactly once, is refused.
    pub fn shard_place(&self, node: u8, layers: usize) -> core::result::Result<(usize, usize), FailReason> {
        let n = &self.nodes;
        let whole = self.layers as usize == layers
            && n.len() == self.count as usize
            && !n.is_empty()
            && n.iter().all(|e| e.first == 0 && e.end as usize == layers);
        let mut mine = n.iter().enumerate().filter(|(_, e)| e.node == node);
        match (mine.next(), mine.next(), whole) {
            (Some((i, _)), None, true) => Ok((i, n.len())),
            _ => Err(FailReason::BadPlan),
        }
    }

    /// The plan's frames: one [`Body::Plan`] a node, in ring order.
    pub fn parts(&self) -> impl Iterator<Item = Body> + '_ {
        let count = self.nodes.len() as u8;
        self.nodes.iter().enumerate().map(move |(i, &entry)| Body::Plan {
            layers: self.layers,
            index: i as u8,
            count,
            entry,
        })
    }

    /// Takes the next of a plan's frames into this plan (start from `RingPlan::default()`):
    /// true once all `count` are in. A frame out of order, of another plan (its layers or
    /// count differ), of more nodes than [`MAX_PLAN`](super::wire::MAX_PLAN), or not a plan
    /// at all is refused.
    pub fn take(&mut self, body: &Body) -> core::result::Result<bool, FailReason> {
        let &Body::Plan { layers, index, count, entry } = body else {
            return Err(FailReason::Unexpected);
        };
        let first = self.nodes.is_empty();
        if count == 0
            || count as usize > super::wire::MAX_PLAN
            || index as usize != self.nodes.len()
            || (!first && (layers != self.layers || count as usize <= self.nodes.len()))
        {
            return Err(FailReason::BadPlan);
        }
        if !first && self.count != count {
            return Err(FailReason::BadPlan);
        }
        self.layers = layers;
        self.count = count;
        self.nodes.push(entry).map_err(|_| FailReason::BadPlan)?;
        Ok(self.nodes.len() == count as usize)
    }

    /// Node `node`'s place in the plan, for a model of `layers` layers: its layers and the
    /// port of the node after it (`None`: it is the tail, and sends on to the coordinator).
    /// A plan that does not cover `0..layers` once, in order with no empty range, or that
    /// names `node` not exactly once, is refused.
    pub fn place(
        &self,
        node: u8,
        layers: usize,
    ) -> core::result::Result<(Range<usize>, Option<u16>), FailReason> {
        let n = &self.nodes;
        let covers = self.layers as usize == layers
            && n.len() == self.count as usize
            && n.first().is_some_and(|e| e.first == 0)
            && n.last().is_some_and(|e| e.end as usize == layers)
            && n.iter().all(|e| e.first < e.end)
            && n.windows(2).all(|w| w[0].end == w[1].first);
        let mut mine = n.iter().enumerate().filter(|(_, e)| e.node == node);
        let (Some((i, e)), None, true) = (mine.next(), mine.next(), covers) else {
            return Err(FailReason::BadPlan);
        };
        Ok((e.first as usize..e.end as usize, n.get(i + 1).map(|next| next.port)))
    }
}

/// The coordinator's side of one sequence, the loop of `generate_int_sampled` split at the
/// network: which position to send next, and what to print when its answer comes back.
#[derive(Debug, Clone)]
pub struct Sequence<'p> {
    prompt: &'p [u32],
    steps: usize,
    pos: usize,
    token: u32,
    done: bool,
    /// Tokens the tail sampled.
    pub generated: usize,
}

/// What a re-formed ring must answer for position `pos` of a sequence replayed from `tokens`
/// (the token at each position so far, the prompt's then the sampled ones; `prompt` tokens
/// long prompt): a prompt position answers nothing, a sampled one the token sampled the
/// first time (the tail's sampler, seeded again, draws the same numbers over the same logits).
pub fn replayed(tokens: &[u32], prompt: usize, pos: usize) -> Option<u32> {
    if pos + 1 < prompt {
        None
    } else {
        tokens.get(pos + 1).copied()
    }
}

impl<'p> Sequence<'p> {
    /// Positions `0..steps` from `prompt` (BOS first, at most `steps` tokens), as `generate`.
    pub fn new(prompt: &'p [u32], steps: usize) -> Result<Self> {
        let Some(&token) = prompt.first() else {
            return Err(Error::Invalid { what: "empty prompt (it must hold at least BOS)" });
        };
        if prompt.len() > steps {
            return Err(Error::ContextFull { need: prompt.len(), capacity: steps });
        }
        Ok(Sequence { prompt, steps, pos: 0, token, done: false, generated: 0 })
    }

    /// Positions answered so far: the ones a re-formed ring replays.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next position to send down the pipeline: (position, token, whether the tail
    /// samples after it); `None` once the sequence is over.
    pub fn next_step(&self) -> Option<(u32, u32, bool)> {
        (!self.done).then_some((self.pos as u32, self.token, self.pos + 1 >= self.prompt.len()))
    }

    /// Takes the answer for the position [`Sequence::next_step`] gave (`sampled`: the tail's
    /// token, `None` for a prompt position) and returns the piece to print, if any.
    pub fn advance<'v>(
        &mut self,
        vocab: &Vocab<'v>,
        sampled: Option<u32>,
        scratch: &'v mut [u8; DECODE_MAX],
    ) -> Result<Option<&'v [u8]>> {
        let forced = self.pos + 1 < self.prompt.len();
        let next = match (forced, sampled) {
            (true, None) => self.prompt[self.pos + 1],
            (false, Some(t)) if (t as usize) < vocab.len() => {
                self.generated += 1;
                t
            }
            _ => return Err(Error::Invalid { what: "the pipeline answered a position out of turn" }),
        };
        self.pos += 1;
        if next == vocab.bos() {
            self.done = true;
            return Ok(None);
        }
        self.done = self.pos == self.steps;
        let piece = tokenizer::decode(vocab, self.token, next, scratch);
        self.token = next;
        Ok(tokenizer::is_printable(piece).then_some(piece))
    }
}
