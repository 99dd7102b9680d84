//! The one seam between the console and the inference code: another engine (an integer-only
//! forward pass, a different kernel set) replaces [`ReferenceEngine`] by implementing
//! [`Engine`], and the console, the boards and their tests stay as they are.

use super::speculation::Speculation;
use super::MAX_LINE;
use crate::error::Result;
use crate::infer::{self, GenStats, IntState, LogitValue, Pattern, State, Step};
use crate::kernels::Kernels;
use crate::knowledge::answer;
use crate::knowledge::language::{self, TokenStats};
use crate::lora::{DeviceLora, Trained, WithLora};
use crate::model::{Config, Model};
use crate::sample::{Sampler, Sampling};
use crate::speculative::{self, Mode, SpecStats};
use crate::tokenizer;
use core::ops::ControlFlow;

/// What `info` shows about the model an engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// Weight format ("q8", "ternary", ...), always a GGUF image.
    pub format: &'static str,
    pub dim: usize,
    pub hidden_dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    /// Context the model was trained for; the engine may run fewer positions.
    pub trained_context: usize,
    pub parameters: usize,
    /// Bytes of the weights, read in place from the image (flash on a board).
    pub weight_bytes: usize,
}

impl ModelInfo {
    fn of<const L: usize>(model: &Model<'_, L>) -> Self {
        let c = &model.config;
        ModelInfo {
            format: model.precision.name(),
            dim: c.dim,
            hidden_dim: c.hidden_dim,
            layers: c.n_layers,
            heads: c.n_heads,
            kv_heads: c.n_kv_heads,
            vocab: c.vocab_size,
            trained_context: c.seq_len,
            parameters: c.n_params(),
            weight_bytes: model.weight_bytes(),
        }
    }
}

/// What the console needs from an inference engine.
pub trait Engine {
    /// Shown by the banner and `stats`.
    fn name(&self) -> &'static str;
    /// Positions one generation can run.
    fn context_len(&self) -> usize;
    /// RAM of the engine's arena (activations and KV cache), in bytes.
    fn arena_bytes(&self) -> usize;
    /// How this engine samples at a temperature above 0, for `features` ("none": it does not).
    fn sampler(&self) -> &'static str {
        "none"
    }
    /// The model, for `info`; `None` without one.
    fn info(&self) -> Option<ModelInfo> {
        None
    }
    /// Generation of `steps` positions from `prompt` (BOS is added), exactly like the host's
    /// `gen` (greedy at temperature 0): `emit` gets the prompt's pieces, then each generated
    /// piece as soon as it is known, and stops the generation there by returning
    /// `ControlFlow::Break` (Ctrl-C). `sampling.rng` moves on with each sampled token.
    fn generate(
        &mut self,
        prompt: &[u8],
        steps: usize,
        sampling: &mut Sampling,
        emit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<GenStats>;
    /// Runs `token` at `pos` and returns the greedy next token (the benchmark's unit of work).
    fn step(&mut self, token: u32, pos: usize) -> Result<u32>;
    /// The begin-of-sequence token.
    fn bos(&self) -> u32;
    /// The grounded answer to `question`, a span copied from `fact`
    /// ([`crate::knowledge::answer`], greedy whatever the sampling), written to `out`; its
    /// length. An engine without a model answers nothing (0).
    fn answer(&mut self, _fact: &str, _question: &str, _out: &mut [u8]) -> Result<usize> {
        Ok(0)
    }
    /// What the model makes of `text`'s tokens, for `anomaly` ([`language::token_stats`]);
    /// `None` without a model.
    fn token_stats(&mut self, _text: &[u8]) -> Result<Option<TokenStats>> {
        Ok(None)
    }
    /// The device's MicroLoRA adapter and the model's shape, for `lora`; `None` without one.
    fn lora(&mut self) -> Option<(&mut DeviceLora, &Config)> {
        None
    }
    /// `lora train <text>`: up to `steps` steps on `text`'s tokens, `stop` asked after each
    /// ([`DeviceLora::train`]).
    fn lora_train(
        &mut self,
        _text: &[u8],
        _steps: usize,
        _counter: Option<fn() -> u64>,
        _stop: &mut dyn FnMut() -> bool,
    ) -> Result<Trained> {
        Err(NO_ADAPTER)
    }
    /// `set attention`: the pattern of the generations that follow; refused when the engine
    /// has no room for its scratch (`Error::BufferTooSmall`, in bytes) or no model.
    fn set_attention(&mut self, _pattern: Pattern) -> Result<()> {
        Err(crate::Error::Unsupported { what: "attention patterns without a model" })
    }
    /// The attention pattern (full unless `set attention` changed it).
    fn attention(&self) -> Pattern {
        Pattern::Full
    }
    /// `set speculative on|off`: drafts by the model's own first layers, verified in batches.
    fn set_speculative(&mut self, _on: bool) -> Result<()> {
        Err(crate::Error::Unsupported { what: "speculative decoding on this engine (no draft)" })
    }
    /// What the last generation's speculation did, when it ran speculatively.
    fn speculation(&self) -> Option<SpecStats> {
        None
    }
}

/// What `lora` answers on an engine without an adapter.
pub(super) const NO_ADAPTER: crate::Error =
    crate::Error::Unsupported {
        what: "no MicroLoRA adapter here (it needs the integer engine, a model of dim 256 and hidden 512 at most, and a board built without --lean)",
    };

/// The float forward pass ([`State`] + [`infer::generate`]) with the scalar reference
/// kernels: on a chip without an FPU every f32 operation is the same IEEE soft-float
/// arithmetic the host's `--scalar` run does, so both print the same text.
pub struct ReferenceEngine<'m, 'a, 's, const L: usize> {
    model: &'m Model<'a, L>,
    state: State<'s>,
    arena_bytes: usize,
    text: Text,
}

/// An engine's text buffers and what it measured on known text.
struct Text {
    /// Prompt tokens: BOS, the dummy-prefix space and at most one token per byte.
    tokens: [u32; MAX_LINE + 3],
    /// The encoder's work area.
    work: [u32; WORK],
    /// The model's statistics on known text, for `token_stats` (measured on its first call).
    known: Option<TokenStats>,
}

impl Text {
    const EMPTY: Text = Text { tokens: [0; MAX_LINE + 3], work: [0; WORK], known: None };

    /// The tokens of `text`, BOS first.
    fn encode<const L: usize>(&mut self, model: &Model<'_, L>, text: &[u8]) -> Result<&[u32]> {
        let n = tokenizer::encode_with(&model.vocab, text, true, false, &mut self.tokens, &mut self.work)?;
        Ok(self.tokens.get(..n).unwrap_or_default())
    }

    /// [`Engine::answer`] for a model and a forward pass: the prompt, its tokens, the answer.
    fn answer<S: Step, const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut S,
        (fact, question): (&str, &str),
        out: &mut [u8],
    ) -> Result<usize>
    where
        S::Logit: LogitValue,
    {
        let mut prompt = [0u8; MAX_LINE];
        let n = answer::write_prompt(&mut prompt, fact, question);
        let n = self.encode(model, prompt.get(..n).unwrap_or_default())?.len();
        answer::answer(model, state, (&mut self.tokens, n), &mut self.work, (fact, question), out)
    }

    /// What the model makes of `text` relative to what it makes of known text
    /// ([`language::KNOWN_TEXT`], measured on the first call and kept).
    fn stats<S: Step, const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut S,
        text: &[u8],
    ) -> Result<TokenStats>
    where
        S::Logit: LogitValue,
    {
        let known = match self.known {
            Some(k) => k,
            None => {
                let tokens = self.encode(model, language::KNOWN_TEXT.as_bytes())?;
                let k = language::token_stats(model, state, tokens, language::KNOWN_TEXT.len())?;
                *self.known.insert(k)
            }
        };
        let tokens = self.encode(model, text)?;
        Ok(language::token_stats(model, state, tokens, text.len())?.relative_to(&known))
    }
}

/// The [`Engine`] getters that an engine with a model (`model`, `state`, `arena_bytes`)
/// answers the same way on every forward pass.
macro_rules! model_engine_getters {
    () => {
        fn context_len(&self) -> usize {
            self.state.seq_len()
        }

        fn arena_bytes(&self) -> usize {
            self.arena_bytes
        }

        fn info(&self) -> Option<ModelInfo> {
            Some(ModelInfo::of(self.model))
        }

        fn bos(&self) -> u32 {
            self.model.vocab.bos()
        }

        fn attention(&self) -> Pattern {
            self.state.pattern().unwrap_or(Pattern::Full)
        }
    };
}

/// Work words of the prompt encoder for the longest line.
const WORK: usize = tokenizer::WORK_PER_TOKEN * (MAX_LINE + 2);

impl<'m, 'a, 's, const L: usize> ReferenceEngine<'m, 'a, 's, L> {
    /// Builds the state for `seq_len` positions inside `arena` (see [`State::arena_len`]);
    /// an arena of [`State::sparse_arena_len`]`(model, seq_len, Pattern::Full)` also takes
    /// every attention pattern (`set attention`).
    pub fn new(model: &'m Model<'a, L>, arena: &'s mut [f32], seq_len: usize) -> Result<Self> {
        let k = Kernels::REFERENCE;
        let state = if arena.len() >= State::sparse_arena_len(model, seq_len, Pattern::Full) {
            State::sparse(model, arena, seq_len, k, Pattern::Full)?
        } else {
            State::new(model, arena, seq_len, k)?
        };
        // `stats`' arena RAM is the forward pass's activations and cache, a pattern's scratch
        // not counted (`info` shows each pattern's RAM).
        let arena_bytes = State::arena_len(model, seq_len) * 4;
        Ok(ReferenceEngine { model, state, arena_bytes, text: Text::EMPTY })
    }
}

impl<const L: usize> Engine for ReferenceEngine<'_, '_, '_, L> {
    model_engine_getters!();

    fn name(&self) -> &'static str {
        match self.model.precision {
            crate::model::Precision::F32 => "f32 weights, scalar reference kernels",
            crate::model::Precision::Q8 => "q8 weights, scalar reference kernels",
            crate::model::Precision::Ternary => "ternary weights, scalar reference kernels",
            crate::model::Precision::Binary => "binary weights, scalar reference kernels",
        }
    }

    fn sampler(&self) -> &'static str {
        "f32 softmax (crate::sample::Sampler, multinomial)"
    }

    fn generate(
        &mut self,
        prompt: &[u8],
        steps: usize,
        sampling: &mut Sampling,
        emit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<GenStats> {
        let tokens = self.text.encode(self.model, prompt)?;
        // Greedy and plain multinomial sampling (top-p and top-k off) never touch the
        // candidate scratch, so none is kept in RAM.
        let temp = sampling.temp_milli as f32 / 1000.0;
        let mut sampler = Sampler::new(temp, 0.0, 0, sampling.rng);
        let out =
            infer::generate(self.model, &mut self.state, &mut sampler, &mut [], tokens, steps, |piece, _| {
                emit(piece)
            });
        sampling.rng = sampler.rng_state();
        out
    }

    fn step(&mut self, token: u32, pos: usize) -> Result<u32> {
        let logits = self.state.forward(self.model, token, pos)?;
        Ok(Sampler::new(0.0, 0.9, 0, 42).sample(logits, &mut []))
    }

    fn answer(&mut self, fact: &str, question: &str, out: &mut [u8]) -> Result<usize> {
        self.text.answer(self.model, &mut self.state, (fact, question), out)
    }

    fn token_stats(&mut self, text: &[u8]) -> Result<Option<TokenStats>> {
        self.text.stats(self.model, &mut self.state, text).map(Some)
    }

    fn set_attention(&mut self, pattern: Pattern) -> Result<()> {
        self.state.set_pattern(self.model, pattern)
    }
}

/// The integer-only forward pass ([`IntState`] + [`infer::generate_int`]): what a chip without
/// an FPU runs. Pure integer arithmetic, so the host's `gen --int` prints the same text.
pub struct IntegerEngine<'m, 'a, 's, const L: usize> {
    model: &'m Model<'a, L>,
    state: IntState<'s>,
    arena_bytes: usize,
    text: Text,
    /// The MicroLoRA adapter generation applies while it is on ([`Self::with_lora`]).
    lora: Option<&'s mut DeviceLora>,
    speculation: Option<Speculation<'m, 'a, 's, L>>,
}

impl<'m, 'a, 's, const L: usize> IntegerEngine<'m, 'a, 's, L> {
    /// Builds the state for `seq_len` positions inside `arena` (see [`IntState::arena_len`]);
    /// an arena of [`IntState::sparse_arena_len`]`(model, seq_len, Pattern::Full)` also takes
    /// every attention pattern (`set attention`).
    pub fn new(model: &'m Model<'a, L>, arena: &'s mut [i32], seq_len: usize) -> Result<Self> {
        let state = if arena.len() >= IntState::sparse_arena_len(model, seq_len, Pattern::Full) {
            IntState::sparse(model, arena, seq_len, Pattern::Full)?
        } else {
            IntState::new(model, arena, seq_len)?
        };
        // As the float engine's: the forward pass's activations and cache.
        let arena_bytes = IntState::ram_bytes(model, seq_len);
        Ok(IntegerEngine { model, state, arena_bytes, text: Text::EMPTY, lora: None, speculation: None })
    }

    /// With a draft for `set speculative on` (its own arena, not counted in `stats`' arena
    /// RAM, which stays the forward pass's).
    pub fn with_speculation(mut self, speculation: Speculation<'m, 'a, 's, L>) -> Self {
        self.speculation = Some(speculation);
        self
    }

    /// Gives the engine a MicroLoRA adapter (`lora` commands), set up fresh in `lora` for this
    /// model, whose image has [`crate::lora::model_id`] `model_id`. A model too wide for an
    /// adapter runs without one (`lora` then says so).
    pub fn with_lora(mut self, lora: &'s mut DeviceLora, model_id: u32) -> Self {
        self.lora = lora.attach(&self.model.config, model_id).ok().map(|()| lora);
        self
    }
}

/// The forward pass with the adapter while it is on.
fn adapted<'e, 's>(state: &'e mut IntState<'s>, lora: &'e Option<&'s mut DeviceLora>) -> WithLora<'e, 's> {
    WithLora { state, lora: lora.as_deref().and_then(DeviceLora::active) }
}

impl<const L: usize> Engine for IntegerEngine<'_, '_, '_, L> {
    model_engine_getters!();

    fn name(&self) -> &'static str {
        "q8 weights, integer-only path"
    }

    fn sampler(&self) -> &'static str {
        "integer softmax (Q16.16 logits, fixed-point exp, xorshift RNG; no float)"
    }

    fn generate(
        &mut self,
        prompt: &[u8],
        steps: usize,
        sampling: &mut Sampling,
        emit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<GenStats> {
        let tokens = self.text.encode(self.model, prompt)?;
        let adapter = self.lora.as_deref().and_then(DeviceLora::active).is_some();
        // Speculation drafts with the base model's layers: an active adapter generates plainly.
        if adapter {
            if let Some(spec) = self.speculation.as_mut() {
                spec.last = None;
            }
        }
        let Some(spec) = self.speculation.as_mut().filter(|s| s.on && !adapter) else {
            let mut state = adapted(&mut self.state, &self.lora);
            return infer::generate_int_sampled(
                self.model,
                &mut state,
                tokens,
                steps,
                sampling,
                |piece, _| emit(piece),
            );
        };
        let mode = match sampling.temp_milli {
            0 => Mode::Greedy,
            temp => Mode::Sample { temp, rng: &mut sampling.rng },
        };
        let (target, draft) = (self.model, spec.draft);
        let s = speculative::generate(
            target,
            &mut self.state,
            draft,
            &mut spec.state,
            &mut spec.buf,
            mode,
            tokens,
            steps,
            |piece, _| emit(piece),
        )?;
        spec.last = Some(s);
        Ok(s.gen)
    }

    fn step(&mut self, token: u32, pos: usize) -> Result<u32> {
        let logits = self.state.forward(self.model, token, pos)?;
        Ok(crate::infer::integer::argmax(logits))
    }

    fn answer(&mut self, fact: &str, question: &str, out: &mut [u8]) -> Result<usize> {
        let mut state = adapted(&mut self.state, &self.lora);
        self.text.answer(self.model, &mut state, (fact, question), out)
    }

    /// On the base model: the anomaly score compares with what it measured on known text.
    fn token_stats(&mut self, text: &[u8]) -> Result<Option<TokenStats>> {
        self.text.stats(self.model, &mut self.state, text).map(Some)
    }

    fn lora(&mut self) -> Option<(&mut DeviceLora, &Config)> {
        Some((self.lora.as_deref_mut()?, &self.model.config))
    }

    fn lora_train(
        &mut self,
        text: &[u8],
        steps: usize,
        counter: Option<fn() -> u64>,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Trained> {
        let lora = self.lora.as_deref_mut().ok_or(NO_ADAPTER)?;
        let tokens = self.text.encode(self.model, text)?;
        lora.train(self.model, &mut self.state, tokens, steps, counter, stop)
    }

    fn set_attention(&mut self, pattern: Pattern) -> Result<()> {
        if pattern != Pattern::Full && self.speculation.as_ref().is_some_and(|s| s.on) {
            return Err(crate::Error::Unsupported {
                what: "a sparse pattern with speculative decoding: set speculative off first",
            });
        }
        self.state.set_pattern(pattern)
    }

    fn set_speculative(&mut self, on: bool) -> Result<()> {
        let Some(spec) = self.speculation.as_mut() else {
            return Err(crate::Error::Unsupported {
                what: "speculative decoding: this console has no room for a draft",
            });
        };
        if on && self.state.pattern().is_some() {
            return Err(crate::Error::Unsupported {
                what: "speculative decoding with a sparse pattern: set attention full first",
            });
        }
        spec.on = on;
        spec.last = None;
        Ok(())
    }

    fn speculation(&self) -> Option<SpecStats> {
        self.speculation.as_ref().filter(|s| s.on).and_then(|s| s.last)
    }
}

/// No language model: for a board that carries only knowledge. `gen` and `bench` answer with
/// an error, `ask` retrieves without generating.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModel;

impl Engine for NoModel {
    fn name(&self) -> &'static str {
        "no language model"
    }

    fn context_len(&self) -> usize {
        0
    }

    fn arena_bytes(&self) -> usize {
        0
    }

    fn generate(
        &mut self,
        _prompt: &[u8],
        _steps: usize,
        _sampling: &mut Sampling,
        _emit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<GenStats> {
        Err(crate::Error::Invalid { what: "no language model on this board" })
    }

    fn step(&mut self, _token: u32, _pos: usize) -> Result<u32> {
        Err(crate::Error::Invalid { what: "no language model on this board" })
    }

    fn bos(&self) -> u32 {
        0
    }
}
