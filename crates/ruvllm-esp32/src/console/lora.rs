//! `lora`: the device's MicroLoRA adapter ([`crate::lora::DeviceLora`]) from the console, as
//! thin calls of the library. `lora train <text>` takes [`DEVICE_STEPS`] steps on the text and
//! prints its loss before and after (and, on a board with a counter, the cost of a step);
//! `lora loss <text>` prints the text's loss as the adapter is (on or off), training nothing;
//! `lora save` keeps the adapter in the knowledge store (flash on a board), where
//! [`Console::restore_adapter`] finds it at the next boot; `lora load` goes back to the saved
//! one; `lora on` / `lora off` apply it or not; `lora reset [1|2] [<layer>.w2]` starts a fresh
//! one; `lora stats` shows its rank, place, RAM and flash.

use super::{say, usage, Console, Engine};
use crate::lora::{DEVICE_STEPS, MAX_FILE};
use crate::Error;
use embedded_io::{Read, ReadReady, Write};

/// The projections a layer has, as `lora reset` names them.
const PROJECTIONS: [&str; 7] = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"];

impl<IO: Read + ReadReady + Write, E: Engine> Console<'_, IO, E> {
    pub(super) fn lora(&mut self, args: &str) -> Result<(), IO::Error> {
        let (sub, rest) = args.split_once([' ', '\t']).unwrap_or((args, ""));
        let rest = rest.trim_start_matches([' ', '\t']);
        if self.engine.lora().is_none() {
            return sayln!(&mut self.io, "error: {}", super::engine::NO_ADAPTER);
        }
        match (sub, rest) {
            ("train" | "loss", "") => sayln!(&mut self.io, "error: no text given (usage: lora {sub} <text>)"),
            ("train", text) => self.lora_train(text, DEVICE_STEPS),
            ("loss", text) => self.lora_train(text, 0),
            ("save" | "load" | "on" | "off" | "stats", r) if !r.is_empty() => {
                sayln!(&mut self.io, "error: lora {sub} takes no argument (usage: {})", usage("lora"))
            }
            ("save", _) => self.lora_save(),
            ("load", _) => self.lora_load(),
            ("on" | "off", _) => {
                let Some((lora, _)) = self.engine.lora() else { return Ok(()) };
                match lora.set_on(sub == "on") {
                    Ok(()) if sub == "on" => {
                        sayln!(&mut self.io, "lora: on (generation applies the adapter)")
                    }
                    Ok(()) => sayln!(&mut self.io, "lora: off (the base model alone; the adapter is kept)"),
                    Err(e) => sayln!(&mut self.io, "error: {e}"),
                }
            }
            ("reset", r) => self.lora_reset(r),
            ("stats", _) => self.lora_stats(),
            _ => sayln!(&mut self.io, "error: usage: {}", usage("lora")),
        }
    }

    /// `lora train` (`steps` > 0) or `lora loss` (0: the text's loss as the adapter is).
    fn lora_train(&mut self, text: &str, steps: usize) -> Result<(), IO::Error> {
        let counter = self.board.counter;
        let ctx = self.engine.context_len();
        // Lines typed meanwhile are kept as type-ahead; Ctrl-C ends the training after a step.
        let (io, typeahead) = (&mut self.io, &mut self.typeahead);
        let mut io_err = None;
        let mut stop = || match Self::poll(io, typeahead) {
            Ok(stop) => stop,
            Err(e) => {
                io_err = Some(e);
                true
            }
        };
        let trained = self.engine.lora_train(text.as_bytes(), steps, counter, &mut stop);
        if let Some(e) = io_err {
            return Err(e);
        }
        match trained {
            Ok(t) if steps == 0 => sayln!(
                &mut self.io,
                "lora loss: {} tokens: {:.4} nats/token (perplexity {:.2})",
                t.tokens,
                t.before,
                libm::expf(t.before)
            ),
            Ok(t) => {
                sayln!(
                    &mut self.io,
                    "lora train: {} tokens, {} steps{}: loss {:.4} -> {:.4} nats/token (perplexity {:.2} -> {:.2})",
                    t.tokens,
                    t.steps,
                    if t.steps < steps { " (stopped)" } else { "" },
                    t.before,
                    t.after,
                    libm::expf(t.before),
                    libm::expf(t.after)
                )?;
                match t.ticks {
                    Some(ticks) => sayln!(
                        &mut self.io,
                        "lora train: {} {}/step (unsaved: lora save keeps it)",
                        ticks / t.steps.max(1) as u64,
                        self.board.counter_unit
                    ),
                    None => sayln!(&mut self.io, "lora train: unsaved (lora save keeps it)"),
                }
            }
            Err(Error::ContextFull { need, .. }) => sayln!(
                &mut self.io,
                "error: the text is {need} tokens with BOS, longer than the context of {ctx}: train on a shorter text"
            ),
            Err(e) => sayln!(&mut self.io, "error: {e}"),
        }
    }

    fn lora_save(&mut self) -> Result<(), IO::Error> {
        let Some(store) = self.saved.as_deref_mut() else {
            return sayln!(
                &mut self.io,
                "error: saving is off here (no store): the adapter stays in RAM until off"
            );
        };
        let Some((lora, _)) = self.engine.lora() else { return Ok(()) };
        let mut file = [0u8; MAX_FILE];
        let saved = lora.write_file(&mut file).and_then(|n| store.save_adapter(&file[..n]).map(|()| n));
        match saved {
            Ok(n) => {
                lora.mark_saved();
                sayln!(&mut self.io, "lora: saved ({n} bytes; restored at boot)")
            }
            Err(e) => sayln!(&mut self.io, "error: the adapter was not saved: {e}"),
        }
    }

    fn lora_load(&mut self) -> Result<(), IO::Error> {
        let mut file = [0u8; MAX_FILE];
        match self.load_saved(&mut file) {
            Ok(Some(n)) => sayln!(&mut self.io, "lora: loaded the saved adapter ({n} bytes), on"),
            Ok(None) => sayln!(&mut self.io, "error: no adapter saved (lora save keeps one)"),
            Err(e) => sayln!(&mut self.io, "error: the saved adapter is refused: {e}"),
        }
    }

    /// The adapter in the store, taken by the engine's adapter: its length, `None` when the
    /// store holds none (or there is no store).
    fn load_saved(&mut self, file: &mut [u8; MAX_FILE]) -> crate::Result<Option<usize>> {
        let Some(store) = self.saved.as_deref_mut() else { return Ok(None) };
        let Some(n) = store.load_adapter(file)? else { return Ok(None) };
        let (lora, config) = self.engine.lora().ok_or(super::engine::NO_ADAPTER)?;
        lora.load_file(config, file.get(..n).unwrap_or_default())?;
        Ok(Some(n))
    }

    /// At boot, after [`Console::saving_to`]: takes the adapter the store keeps, with one line
    /// (none when there is no adapter, no store or nothing saved).
    pub fn restore_adapter(&mut self) -> Result<(), IO::Error> {
        if self.engine.lora().is_none() {
            return Ok(());
        }
        let mut file = [0u8; MAX_FILE];
        match self.load_saved(&mut file) {
            Ok(Some(n)) => {
                let rank = self.engine.lora().map_or(0, |(l, _)| l.stats().rank);
                sayln!(&mut self.io, "lora: restored the saved adapter (rank {rank}, {n} bytes)")
            }
            Ok(None) => Ok(()),
            Err(e) => sayln!(
                &mut self.io,
                "lora: the saved adapter is refused ({e}); starting without one (lora save replaces it)"
            ),
        }
    }

    fn lora_reset(&mut self, args: &str) -> Result<(), IO::Error> {
        let mut it = args.split_ascii_whitespace();
        let (rank, target) = (it.next(), it.next());
        if it.next().is_some() {
            return sayln!(&mut self.io, "error: usage: lora reset [1|2] [<layer>.w2]");
        }
        let rank = match rank.map(str::parse::<usize>) {
            None => 2,
            Some(Ok(r @ 1..=2)) => r,
            Some(_) => {
                return sayln!(
                    &mut self.io,
                    "error: the rank must be 1 or 2 (a rank-2 adapter fits the fixed memory of every model this build takes)"
                )
            }
        };
        let Some((lora, config)) = self.engine.lora() else { return Ok(()) };
        let last = config.n_layers.saturating_sub(1);
        if let Some(t) = target {
            let (layer, proj) = t.split_once('.').unwrap_or((t, ""));
            let layer = layer.parse::<usize>().ok().filter(|&l| l <= last);
            if layer.is_none() {
                return sayln!(
                    &mut self.io,
                    "error: layer {t:?} does not exist: the model has layers 0 to {last} (write <layer>.<projection>, e.g. {last}.w2)"
                );
            }
            if !PROJECTIONS.contains(&proj) {
                return sayln!(
                    &mut self.io,
                    "error: projection {proj:?} does not exist: a layer has wq, wk, wv, wo, w1, w2, w3"
                );
            }
            if (layer, proj) != (Some(last), "w2") {
                return sayln!(
                    &mut self.io,
                    "error: on this console an adapter goes on the last layer's feed-forward down projection only ({last}.w2): other projections need activations for a backward pass that its RAM plan does not hold (train them on the host: ruvllm-esp32 lora train --layers ... --targets ...)"
                );
            }
        }
        match lora.reset(config, rank) {
            Ok(()) => {
                let s = lora.stats();
                sayln!(
                    &mut self.io,
                    "lora: a fresh rank-{rank} adapter on {}.w2 (changes nothing until trained; {} bytes as saved)",
                    s.layer,
                    s.file_bytes
                )
            }
            Err(e) => sayln!(&mut self.io, "error: {e}"),
        }
    }

    fn lora_stats(&mut self) -> Result<(), IO::Error> {
        let Some((lora, _)) = self.engine.lora() else { return Ok(()) };
        let s = lora.stats();
        let state = if s.on { "on" } else { "off" };
        let saved = if s.unsaved { "unsaved changes" } else { "as loaded or saved" };
        sayln!(
            &mut self.io,
            "lora: {state}, rank {} on {}.w2 (feed-forward down projection), {} steps trained, {saved}",
            s.rank,
            s.layer,
            s.steps
        )?;
        sayln!(
            &mut self.io,
            "lora RAM: {} bytes (int8 adapter {} bytes + f32 weights, AdamW moments, gradient); flash: {} bytes (lora save)",
            s.ram_bytes,
            s.adapter_bytes,
            s.file_bytes
        )
    }
}
