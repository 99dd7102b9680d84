//! Speculative decoding: a cheap draft proposes `gamma` tokens, the target checks all of them
//! in one batched pass over its weights ([`State::forward_batch`]), and keeps the longest run it
//! agrees with plus one token of its own. Every target pass then yields between 1 and
//! `gamma + 1` tokens; on a chip that streams its weights from flash, that pass is the cost.
//!
//! - Greedy: a draft token is kept when it is the target's argmax, so the text is exactly the
//!   target's own greedy text.
//! - Sampling: rejection sampling (Leviathan et al. 2023; Chen et al. 2023): draft token `d`
//!   drawn from the draft's distribution `q` is kept with probability `min(1, p(d) / q(d))`,
//!   else replaced by a draw from `max(0, p - q)` renormalized, so every emitted token follows
//!   the target's distribution `p` (temperature only: top-p and top-k are not supported here).
//!
//! Two kinds of draft, both a [`Model`] run by its own [`State`]: a smaller model with the
//! same tokenizer ([`check_draft`]), or the target's own first layers and classifier
//! ([`early_exit`]). Rolling back after a rejection is only a position: both caches are
//! indexed by position and read up to the current one, so the rejected tail is overwritten.
//!
//! Gamma is fixed per run, chosen by measurement (docs/BENCHMARKS.md), at most [`MAX_GAMMA`].

use crate::error::{Error, Result};
use crate::infer::{emit, Batch, GenStats, IntBatch, IntState, State, Step, TokenFlow};
use crate::model::Model;
use crate::sample::{argmax, random_f32, random_u32, sample_mult, softmax};
use core::fmt;

#[cfg(test)]
mod tests;

/// The largest gamma: drafts per target pass (the batch buffers grow with it).
pub const MAX_GAMMA: usize = 16;

/// Why a speculative setting cannot run; each names the values that disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The draft's vocabulary has another size than the target's.
    VocabSize { target: usize, draft: usize },
    /// Same size, but token `id` is another piece (another tokenizer).
    Tokenizer { id: u32 },
    /// An early-exit layer outside `1..n_layers - 1`.
    EarlyExit { layer: usize, n_layers: usize },
    /// Gamma 0 or above [`MAX_GAMMA`].
    Gamma { gamma: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::VocabSize { target, draft } => write!(
                f,
                "the draft's vocabulary has {draft} tokens and the target's {target}: use a draft trained with the target's tokenizer"
            ),
            Refusal::Tokenizer { id } => write!(
                f,
                "the draft's tokenizer differs from the target's (token {id} is another piece): use a draft trained with the target's tokenizer"
            ),
            Refusal::EarlyExit { layer, n_layers } => write!(
                f,
                "early-exit layer {layer} is outside 1..={}, the target's {n_layers} layers less one",
                n_layers.saturating_sub(1)
            ),
            Refusal::Gamma { gamma } => write!(f, "gamma {gamma} is outside 1..={MAX_GAMMA}"),
        }
    }
}

/// Gamma within `1..=MAX_GAMMA`.
pub fn check_gamma(gamma: usize) -> core::result::Result<(), Refusal> {
    if gamma == 0 || gamma > MAX_GAMMA {
        return Err(Refusal::Gamma { gamma });
    }
    Ok(())
}

/// A draft must speak the target's tokens: the same vocabulary, piece for piece.
pub fn check_draft<const L: usize>(
    target: &Model<'_, L>,
    draft: &Model<'_, L>,
) -> core::result::Result<(), Refusal> {
    let (t, d) = (&target.vocab, &draft.vocab);
    if target.config.vocab_size != draft.config.vocab_size || t.len() != d.len() {
        return Err(Refusal::VocabSize { target: target.config.vocab_size, draft: draft.config.vocab_size });
    }
    match (0..t.len() as u32).find(|&id| t.piece(id) != d.piece(id)) {
        Some(id) => Err(Refusal::Tokenizer { id }),
        None if t.bos() != d.bos() => Err(Refusal::Tokenizer { id: t.bos() }),
        None => Ok(()),
    }
}

/// The self-speculative draft: the target's first `layers` layers, then its output norm and
/// classifier. The weights are the target's own (nothing is copied).
pub fn early_exit<'a, const L: usize>(
    target: &Model<'a, L>,
    layers: usize,
) -> core::result::Result<Model<'a, L>, Refusal> {
    let n_layers = target.config.n_layers;
    if layers == 0 || layers >= n_layers {
        return Err(Refusal::EarlyExit { layer: layers, n_layers });
    }
    let mut draft = target.clone();
    draft.layers.truncate(layers);
    draft.config.n_layers = layers;
    Ok(draft)
}

/// How tokens are chosen; `T` is the temperature: `f32` on the float path, thousandths
/// (`u32`, as [`crate::infer::integer::sample_int`]) on the integer path.
pub enum Mode<'r, T> {
    /// The target's argmax: the target's own greedy text.
    Greedy,
    /// Temperature sampling with rejection sampling; `rng` is the sampler's state
    /// ([`crate::sample::random_u32`]) and moves on.
    Sample { temp: T, rng: &'r mut u64 },
}

/// What a speculative generation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecStats {
    pub gen: GenStats,
    /// Batched target passes (prompt prefill not counted).
    pub target_passes: usize,
    /// Draft tokens proposed, and how many the target kept.
    pub drafted: usize,
    pub accepted: usize,
}

impl SpecStats {
    /// Kept draft tokens per proposed one.
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }

    /// Generated tokens per target pass (1 without speculation).
    pub fn tokens_per_pass(&self) -> f64 {
        self.gen.generated as f64 / self.target_passes.max(1) as f64
    }
}

/// A batched pass of the target over several positions: [`Batch`] for [`State`],
/// [`IntBatch`] for [`IntState`].
pub trait Verifier<'s, S: Step>: Sized {
    /// Arena length in `S::Logit` words for `positions`.
    fn arena_len<const L: usize>(model: &Model<'_, L>, positions: usize) -> usize;
    fn carve<const L: usize>(
        model: &Model<'_, L>,
        arena: &'s mut [S::Logit],
        positions: usize,
    ) -> Result<Self>;
    fn capacity(&self) -> usize;
    /// `tokens` at `pos..` in one pass over the weights (see [`State::forward_batch`]).
    fn pass<const L: usize>(
        &mut self,
        state: &mut S,
        model: &Model<'_, L>,
        tokens: &[u32],
        pos: usize,
        logits: bool,
    ) -> Result<()>;
    /// The logits after the `i`-th token of the last pass.
    fn logits(&mut self, i: usize) -> &mut [S::Logit];
}

/// The float and the integer batches implement [`Verifier`] with their own methods.
macro_rules! verifier {
    ($batch:ident, $state:ident, $word:ty) => {
        impl<'s, 'a> Verifier<'s, $state<'a>> for $batch<'s> {
            fn arena_len<const L: usize>(model: &Model<'_, L>, positions: usize) -> usize {
                $batch::arena_len(model, positions)
            }
            fn carve<const L: usize>(
                model: &Model<'_, L>,
                arena: &'s mut [$word],
                positions: usize,
            ) -> Result<Self> {
                $batch::new(model, arena, positions)
            }
            fn capacity(&self) -> usize {
                $batch::capacity(self)
            }
            fn pass<const L: usize>(
                &mut self,
                state: &mut $state<'a>,
                model: &Model<'_, L>,
                tokens: &[u32],
                pos: usize,
                logits: bool,
            ) -> Result<()> {
                state.forward_batch(model, self, tokens, pos, logits)
            }
            fn logits(&mut self, i: usize) -> &mut [$word] {
                $batch::logits(self, i)
            }
        }
    };
}
verifier!(Batch, State, f32);
verifier!(IntBatch, IntState, i32);

/// The target's batch buffers for `gamma + 1` positions and the draft's distributions, in
/// one arena of the target's logit words.
pub struct Buffers<'s, W, B> {
    gamma: usize,
    batch: B,
    /// `gamma` rows of draft laws (sampling mode).
    q: &'s mut [W],
}

/// The float path's buffers.
pub type FloatBuffers<'s> = Buffers<'s, f32, Batch<'s>>;
/// The integer path's buffers.
pub type IntBuffers<'s> = Buffers<'s, i32, IntBatch<'s>>;

impl<'s, W: Copy, B> Buffers<'s, W, B> {
    /// Arena length (words) for `gamma` drafts per pass of a target run by `S`.
    pub fn arena_len<S: Step<Logit = W>, const L: usize>(target: &Model<'_, L>, gamma: usize) -> usize
    where
        B: Verifier<'s, S>,
    {
        B::arena_len(target, gamma + 1) + gamma * target.config.vocab_size
    }

    pub fn new<S: Step<Logit = W>, const L: usize>(
        target: &Model<'_, L>,
        arena: &'s mut [W],
        gamma: usize,
    ) -> Result<Self>
    where
        B: Verifier<'s, S>,
    {
        check_gamma(gamma).map_err(|_| Error::Invalid { what: "gamma outside 1..=MAX_GAMMA" })?;
        let need = Self::arena_len::<S, L>(target, gamma);
        if arena.len() < need {
            return Err(Error::BufferTooSmall { need: need * 4, have: arena.len() * 4 });
        }
        let (b, q) = arena.split_at_mut(B::arena_len(target, gamma + 1));
        let batch = B::carve(target, b, gamma + 1)?;
        Ok(Buffers { gamma, batch, q: &mut q[..gamma * target.config.vocab_size] })
    }
}

/// What a logit type's sampler needs: the greedy pick, and its law at a temperature (float
/// probabilities, or the integer sampler's Q2.30 weights), drawn from and verified against.
pub trait Law: Copy {
    type Temp: Copy;
    fn greedy(logits: &[Self]) -> u32;
    /// The logits replaced, in place, by the law the sampler draws from at `temp`.
    fn to_law(logits: &mut [Self], temp: Self::Temp);
    fn draw(law: &[Self], rng: &mut u64) -> u32;
    /// Rejection sampling of draft token `d` drawn from `q` against the target's `p`: `None`
    /// keeps it; `Some(t)` rejects it, `t` drawn from `max(0, p - q)` renormalized.
    fn verify(p: &[Self], q: &[Self], d: u32, rng: &mut u64) -> Option<u32>;
}

impl Law for f32 {
    type Temp = f32;
    fn greedy(logits: &[f32]) -> u32 {
        argmax(logits) as u32
    }
    fn to_law(logits: &mut [f32], temp: f32) {
        probs(logits, temp)
    }
    fn draw(law: &[f32], rng: &mut u64) -> u32 {
        sample_mult(law, random_f32(rng)) as u32
    }
    fn verify(p: &[f32], q: &[f32], d: u32, rng: &mut u64) -> Option<u32> {
        verify_draw(p, q, d, rng)
    }
}

/// The integer path: weights as [`crate::infer::integer::sample_int`] gives them (at most
/// 2^30 each), every comparison exact in u128, no float.
impl Law for i32 {
    type Temp = u32;
    fn greedy(logits: &[i32]) -> u32 {
        crate::infer::integer::argmax(logits)
    }
    fn to_law(logits: &mut [i32], temp_milli: u32) {
        let weight = crate::infer::integer::weigher(logits, temp_milli);
        for l in logits.iter_mut() {
            *l = weight(*l) as i32;
        }
    }
    fn draw(law: &[i32], rng: &mut u64) -> u32 {
        draw_weighted(law.len(), |i| law[i] as u128, rng).unwrap_or(0)
    }
    fn verify(p: &[i32], q: &[i32], d: u32, rng: &mut u64) -> Option<u32> {
        let sum = |w: &[i32]| w.iter().map(|&x| x as u128).sum::<u128>();
        let (sp, sq) = (sum(p), sum(q));
        let (pd, qd) = (p[d as usize] as u128, q[d as usize] as u128);
        // Keep with probability min(1, (pd / sp) / (qd / sq)): u * qd * sp < pd * sq, u < 2^32.
        if random_u32(rng) as u128 * qd * sp < (pd * sq) << 32 {
            return None;
        }
        let residual = |i: usize| (p[i] as u128 * sq).saturating_sub(q[i] as u128 * sp);
        draw_weighted(p.len(), residual, rng).or_else(|| Some(Self::draw(p, rng)))
    }
}

/// A draw from `n` integer weights (`None` when all are 0): one RNG word scaled to their sum,
/// then the first index whose running sum exceeds it.
fn draw_weighted(n: usize, w: impl Fn(usize) -> u128, rng: &mut u64) -> Option<u32> {
    let total: u128 = (0..n).map(&w).sum();
    if total == 0 {
        return None;
    }
    let r = (random_u32(rng) as u128 * total) >> 32;
    let mut cdf = 0u128;
    for i in 0..n {
        cdf += w(i);
        if r < cdf {
            return Some(i as u32);
        }
    }
    (0..n).rev().find(|&i| w(i) > 0).map(|i| i as u32)
}

/// `logits / temp`, softmaxed in place: the distribution the float sampler draws from.
fn probs(logits: &mut [f32], temp: f32) {
    for v in logits.iter_mut() {
        *v /= temp;
    }
    softmax(logits);
}

/// One verification of draft token `d` drawn from `q` against the target's `p`: `None` keeps
/// it; `Some(t)` rejects it, `t` drawn from `max(0, p - q)` renormalized.
pub fn verify_draw(p: &[f32], q: &[f32], d: u32, rng: &mut u64) -> Option<u32> {
    let (pd, qd) = (p[d as usize], q[d as usize]);
    // Keep with probability min(1, p/q), without dividing.
    if random_f32(rng) * qd < pd {
        return None;
    }
    let residual = |i: usize| (p[i] - q[i]).max(0.0);
    let total: f32 = (0..p.len()).map(residual).sum();
    if total <= 0.0 {
        // p <= q everywhere only when p == q (both sum to 1), where nothing is ever rejected:
        // rounding got here, and p itself is the right law.
        return Some(sample_mult(p, random_f32(rng)) as u32);
    }
    let r = random_f32(rng) * total;
    let mut cdf = 0.0f32;
    for i in 0..p.len() {
        cdf += residual(i);
        if r < cdf {
            return Some(i as u32);
        }
    }
    (0..p.len()).rev().find(|&i| residual(i) > 0.0).map(|i| i as u32)
}

/// Generates like [`crate::infer::generate`] (positions `0..steps` from `prompt`, which starts
/// with BOS; `on_token(bytes, forced)` gets each printable piece; a BOS from the model or a
/// `Break` from the callback stops it), with `draft` proposing `gamma` tokens per target pass.
/// Both states must hold `steps` positions. The float path ([`State`], [`FloatBuffers`]) and
/// the integer path ([`IntState`], [`IntBuffers`]) run the same loop.
#[allow(clippy::too_many_arguments)]
pub fn generate<'s, S, D, B, F, const L: usize>(
    target: &Model<'_, L>,
    tstate: &mut S,
    draft: &Model<'_, L>,
    dstate: &mut D,
    buf: &mut Buffers<'s, S::Logit, B>,
    mode: Mode<'_, <S::Logit as Law>::Temp>,
    prompt: &[u32],
    steps: usize,
    mut on_token: impl FnMut(&[u8], bool) -> F,
) -> Result<SpecStats>
where
    S: Step,
    S::Logit: Law,
    D: Step<Logit = S::Logit>,
    B: Verifier<'s, S>,
    F: TokenFlow,
{
    let vocab = &target.vocab;
    let sink = |prev: u32, next: u32, forced: bool| emit(vocab, prev, next, forced, &mut on_token);
    run(target, tstate, draft, dstate, buf, mode, prompt, steps, sink)
}

/// [`generate`] that hands each generated token id to `on_token` (the prompt's are not), for
/// callers that count tokens rather than print them.
#[allow(clippy::too_many_arguments)]
pub fn generate_tokens<'s, S, D, B, F, const L: usize>(
    target: &Model<'_, L>,
    tstate: &mut S,
    draft: &Model<'_, L>,
    dstate: &mut D,
    buf: &mut Buffers<'s, S::Logit, B>,
    mode: Mode<'_, <S::Logit as Law>::Temp>,
    prompt: &[u32],
    steps: usize,
    mut on_token: impl FnMut(u32) -> F,
) -> Result<SpecStats>
where
    S: Step,
    S::Logit: Law,
    D: Step<Logit = S::Logit>,
    B: Verifier<'s, S>,
    F: TokenFlow,
{
    let sink = |_: u32, next: u32, forced: bool| !forced && on_token(next).stops();
    run(target, tstate, draft, dstate, buf, mode, prompt, steps, sink)
}

/// The loop both share; `sink(prev, next, forced)` emits a token and says whether to stop.
#[allow(clippy::too_many_arguments)]
fn run<'s, S, D, B, const L: usize>(
    target: &Model<'_, L>,
    tstate: &mut S,
    draft: &Model<'_, L>,
    dstate: &mut D,
    buf: &mut Buffers<'s, S::Logit, B>,
    mut mode: Mode<'_, <S::Logit as Law>::Temp>,
    prompt: &[u32],
    steps: usize,
    mut sink: impl FnMut(u32, u32, bool) -> bool,
) -> Result<SpecStats>
where
    S: Step,
    S::Logit: Law,
    D: Step<Logit = S::Logit>,
    B: Verifier<'s, S>,
{
    let vocab = &target.vocab;
    let Some(&first) = prompt.first() else {
        return Err(Error::Invalid { what: "empty prompt (it must hold at least BOS)" });
    };
    let capacity = tstate.capacity().min(dstate.capacity());
    if steps > capacity {
        return Err(Error::ContextFull { need: steps, capacity });
    }
    if prompt.len() > steps {
        return Err(Error::ContextFull { need: prompt.len(), capacity: steps });
    }
    if draft.config.vocab_size != target.config.vocab_size {
        return Err(Error::Invalid { what: "draft vocabulary differs from the target's" });
    }
    let mut stats =
        SpecStats { gen: GenStats { prompt_tokens: prompt.len(), generated: 0 }, ..SpecStats::default() };
    // The prompt: its pieces, then both caches filled (the target's in batches).
    for w in prompt.windows(2) {
        if w[1] == vocab.bos() || sink(w[0], w[1], true) {
            return Ok(stats);
        }
    }
    let m = prompt.len();
    let cap = buf.batch.capacity();
    for (i, chunk) in prompt[..m - 1].chunks(cap).enumerate() {
        buf.batch.pass(tstate, target, chunk, i * cap, false)?;
    }
    for (pos, &t) in prompt[..m - 1].iter().enumerate() {
        dstate.prefill_token(draft, t, pos)?;
    }
    let n_vocab = target.config.vocab_size;
    let (mut tok, mut pos) = (prompt[m - 1], m - 1);
    // A fully accepted draft's last token, which the draft has not run yet.
    let mut draft_behind: Option<(u32, usize)> = None;
    let mut seq = [first; MAX_GAMMA + 1];
    let mut out = [0u32; MAX_GAMMA + 1];
    while pos < steps {
        let g = buf.gamma.min(steps - 1 - pos);
        if let Some((t, p)) = draft_behind.take() {
            dstate.prefill_token(draft, t, p)?;
        }
        seq[0] = tok;
        for j in 0..g {
            let logits = dstate.logits(draft, seq[j], pos + j)?;
            seq[j + 1] = match &mut mode {
                Mode::Greedy => Law::greedy(logits),
                Mode::Sample { temp, rng } => {
                    let q = &mut buf.q[j * n_vocab..(j + 1) * n_vocab];
                    q.copy_from_slice(logits);
                    Law::to_law(q, *temp);
                    Law::draw(q, rng)
                }
            };
        }
        buf.batch.pass(tstate, target, &seq[..=g], pos, true)?;
        stats.target_passes += 1;
        stats.drafted += g;
        // The longest agreeing run, then the target's own token.
        let mut n_out = 0;
        for j in 0..=g {
            let logits = buf.batch.logits(j);
            let kept = match &mut mode {
                Mode::Greedy => {
                    let t = Law::greedy(logits);
                    out[n_out] = t;
                    j < g && t == seq[j + 1]
                }
                Mode::Sample { temp, rng } => {
                    Law::to_law(logits, *temp);
                    let verdict = if j < g {
                        Law::verify(logits, &buf.q[j * n_vocab..(j + 1) * n_vocab], seq[j + 1], rng)
                    } else {
                        Some(Law::draw(logits, rng))
                    };
                    out[n_out] = verdict.unwrap_or(seq[j + 1]);
                    verdict.is_none()
                }
            };
            n_out += 1;
            if !kept {
                break;
            }
        }
        let accepted = n_out - 1;
        stats.accepted += accepted;
        let mut prev = tok;
        for &t in &out[..n_out] {
            stats.gen.generated += 1;
            if t == vocab.bos() || sink(prev, t, false) {
                return Ok(stats);
            }
            prev = t;
        }
        // Both caches now hold `tok` and the kept drafts, through pos + accepted; the draft
        // ran only up to its second-to-last proposal.
        if accepted == g && g > 0 {
            draft_behind = Some((seq[g], pos + g));
        }
        tok = prev;
        pos += n_out;
    }
    Ok(stats)
}
