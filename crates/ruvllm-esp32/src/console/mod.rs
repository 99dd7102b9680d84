//! The serial console: one line-oriented command interpreter over any byte stream
//! (`embedded-io` [`Read`] + [`ReadReady`] + [`Write`]), shared by the QEMU board, the chip
//! firmware and host tests. `no_std`, no allocation: one fixed line buffer, and every reply is
//! written straight to the stream.
//!
//! With a [`Knowledge`] ([`Console::with_knowledge`]) it also keeps short texts: `add` stores
//! one and teaches the anomaly detector that it is normal, `ask` retrieves the best matches,
//! (with a model) prints `Answer: <span>`, a span of the best text that the model picks for
//! the question ([`crate::knowledge::answer`]), and recalls the most similar earlier `gen`/`ask`
//! exchange (`Recalled:`; every exchange that produced something is kept as an episodic memory,
//! see `memory`), `anomaly` scores a text
//! against what was added, `forget` drops an entry, `stats` shows what is used. Texts are
//! embedded by hashed character n-grams, not the model: for retrieval through the built-in
//! learned table ([`TableEmbedder`](crate::embed::TableEmbedder)), for the anomaly detector
//! through a random projection ([`NgramEmbedder`](crate::embed::NgramEmbedder)); each beat the
//! model's own embedding at its task in the project's evaluation.
//!
//! With a [`KnowledgeStore`] ([`Console::saving_to`], implemented for the flash
//! [`Store`](crate::store::Store)) the knowledge survives a restart: `add` and `forget` reply
//! only after the change is durable, and a failed save is undone and reported in one line
//! (write-then-acknowledge); [`Knowledge::restore`] loads it at boot.
//!
//! `help` lists every command (the `COMMANDS` table is also where the usage in error lines
//! comes from); `info` describes the model, `features` the build, `stats` (or `stats json`, one JSON line)
//! the RAM, tokens and costs; `set temp` / `set seed` make `gen` sample (on the integer engine
//! with integer arithmetic only, see [`Sampling`]); `clear` forgets all knowledge, `reset` the
//! settings and counters.
//!
//! Every byte that arrives is untrusted: an overlong line, invalid UTF-8 or an unknown command
//! each get one `error: ...` line, and the console keeps answering. Lines typed while a
//! generation or `bench` runs are kept (type-ahead, at most [`TYPEAHEAD`] bytes; what does not
//! fit is reported in one line) and run in order afterwards; Ctrl-C stops the generation.
//!
//! A board that serves the console on a port only a host drains (USB-Serial-JTAG) writes to it
//! through [`HostTx`], which never waits long for a host that is not reading.

mod anomaly;
mod engine;
mod host_tx;
mod knowledge;
mod memory;
mod saved;
mod speculation;
#[cfg(test)]
mod tests;
mod typeahead;

pub use crate::sample::Sampling;
pub use anomaly::{ANOMALY_LANGUAGE, ANOMALY_TEXT, ANOMALY_TEXT_CERTAIN, ANOMALY_TEXT_CLEAR};
pub use engine::{Engine, IntegerEngine, ModelInfo, NoModel, ReferenceEngine};
pub use host_tx::{HostTx, TryTx};
pub use knowledge::{
    Knowledge, KnowledgeDetector, KnowledgeError, KnowledgeRag, ANOMALY_CAP, ANOMALY_PRIOR,
    ASK_MIN_SIMILARITY, ASK_RESULTS, CHIP_KNOWLEDGE_CAP, HOST_KNOWLEDGE_CAP, KNOWLEDGE_CAP, KNOWLEDGE_DIM,
    KNOWLEDGE_TEXT,
};
pub use memory::{
    KnowledgeMemory, Memory, MemoryUse, ASK_IMPORTANCE, GEN_IMPORTANCE, GEN_MEMORY_TTL, MEMORY_CAP,
    MEMORY_HALF_LIFE, MEMORY_TEXT, RECALL_MIN_SIMILARITY,
};
#[cfg(feature = "alloc")]
pub use saved::{ImageKnowledge, ImageSink};
pub use saved::{KnowledgeStore, Restored, SavingOff};
pub use speculation::Speculation;
pub use typeahead::TYPEAHEAD;

use crate::infer::integer::profile;
use core::fmt;
use core::mem::size_of;
use core::ops::ControlFlow;
use embedded_io::{Read, ReadReady, Write};
use typeahead::{Lost, TypeAhead, INTERRUPT};

/// Longest command line, in bytes.
pub const MAX_LINE: usize = 255;

/// Positions whose cost `bench` reports (0-based; the last is clamped to the context).
pub const BENCH_POSITIONS: [usize; 5] = [1, 64, 128, 256, 511];
/// `bench` also reports the average over positions `0..BENCH_AVERAGE`.
pub const BENCH_AVERAGE: usize = 128;

/// The sampler's seed until `set seed` (and after `reset`).
pub const DEFAULT_SEED: u64 = 42;
/// Highest `set temp`, in thousandths.
pub const MAX_TEMP_MILLI: u32 = 10_000;
/// Most positions `steps` starts at (and returns to on `reset`).
pub const DEFAULT_STEPS: usize = 256;

/// RAM a board reports for `bench`: static data (.data + .bss, the arena included) and the
/// deepest the stack has been.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamUse {
    pub static_bytes: usize,
    pub stack_bytes: usize,
}

/// What the board under the console offers beyond the byte stream.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    pub name: &'static str,
    /// A monotonic counter (instret, cycles or microseconds) read around each token.
    pub counter: Option<fn() -> u64>,
    /// What one count of `counter` is, plural ("instructions", "cycles", "us").
    pub counter_unit: &'static str,
    /// Static RAM plus stack high-water mark, where the board can measure them.
    pub ram: Option<fn() -> RamUse>,
}

impl Board {
    /// A board with nothing to measure with (host tests).
    pub const PLAIN: Board = Board { name: "host", counter: None, counter_unit: "", ram: None };
}

/// Whether the console should go on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// Figures `stats` reports.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    generations: u64,
    tokens_generated: u64,
    /// Positions and counter ticks of the last generation, and of all of them.
    last_positions: u64,
    last_ticks: u64,
    all_positions: u64,
    all_ticks: u64,
    /// Counter ticks of the last `add`, `ask` (embedding and retrieval, without the
    /// generation) and `anomaly` that succeeded.
    last_add: Option<u64>,
    last_ask: Option<u64>,
    /// ... and of the last `ask` with its answer (retrieval and the model's answer).
    last_answer: Option<u64>,
    last_anomaly: Option<u64>,
}

/// The console over stream `IO` and engine `E`, with the [`Knowledge`] it borrows (`'k`).
pub struct Console<'k, IO, E> {
    io: IO,
    engine: E,
    board: Board,
    knowledge: Option<&'k mut Knowledge>,
    /// Where `add` and `forget` save before they answer ([`Console::saving_to`]).
    saved: Option<&'k mut dyn KnowledgeStore>,
    line: [u8; MAX_LINE],
    len: usize,
    /// The current line outgrew the buffer: its bytes are dropped until the line ends.
    overflow: bool,
    /// The previous byte was '\r', so a following '\n' belongs to the same line end.
    after_cr: bool,
    /// Input that arrived while a command was busy, run after it.
    typeahead: TypeAhead,
    /// Bytes the board's receive buffer dropped since the last call ([`Console::counting_rx_losses`]).
    rx_lost: Option<fn() -> usize>,
    echo: bool,
    steps: usize,
    /// `set temp` and the RNG state; `seed` is what `set seed` last set.
    sampling: Sampling,
    seed: u64,
    totals: Totals,
    /// The start of what the last generation printed (prompt and reply), for its memory.
    heard: heapless::Vec<u8, MEMORY_TEXT>,
}

/// Writes formatted text, keeping the stream's own error instead of `fmt::Error`.
fn say<W: Write>(w: &mut W, args: fmt::Arguments<'_>) -> Result<(), W::Error> {
    struct Out<'a, W: Write> {
        w: &'a mut W,
        err: Option<W::Error>,
    }
    impl<W: Write> fmt::Write for Out<'_, W> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.w.write_all(s.as_bytes()).map_err(|e| {
                self.err = Some(e);
                fmt::Error
            })
        }
    }
    let mut out = Out { w, err: None };
    // Our own arguments never fail to format, so only the stream's error is left to report.
    let _ = fmt::write(&mut out, args);
    out.err.map_or(Ok(()), Err)
}

macro_rules! sayln {
    ($w:expr, $($arg:tt)*) => {
        say($w, format_args!("{}\r\n", format_args!($($arg)*)))
    };
}

mod lora;

/// Every command: its usage and one line of help, in the order `help` lists them.
const COMMANDS: [(&str, &str); 20] = [
    ("gen <text>", "continue <text> (none: from BOS); greedy at temp 0, else sampled"),
    ("add <text>", "store <text> as knowledge (at most 128 bytes) and learn it as normal"),
    ("ask <query>", "matching knowledge; with a model, its answer; a like earlier gen/ask"),
    ("anomaly <text>", "is <text> not language, or unlike the knowledge added? (score %)"),
    ("forget <id>", "drop knowledge #<id> from retrieval (the anomaly detector keeps it)"),
    ("clear", "forget all knowledge, the anomaly detector's references and the memories"),
    ("info", "the model: format, layers, sizes, parameters, weights, engine"),
    ("features", "what this build has: engine, sampler, knowledge, saving, measuring"),
    ("stats [json]", "RAM by part, tokens generated, cost per token, knowledge in use"),
    ("bench", "greedy positions 0..context: cost per token by position, peak RAM"),
    ("lora <what>", "MicroLoRA: train|loss <text>, save, load, on, off, reset [1|2], stats"),
    ("set steps <n>", "positions per generation, prompt included (1..=context)"),
    ("set temp <t>", "sampling temperature 0..10, at most 3 decimals (0 = greedy, default)"),
    ("set seed <n>", "restart the sampler's random numbers from <n> (default 42)"),
    ("set echo on|off", "echo typed bytes (a serial terminal needs it)"),
    ("set attention <p>", "full, window:N, strided:S, dilated:GAP[:COUNT], bigbird:G:L:R[:SEED]"),
    ("set speculative on|off", "draft with the model's first layers, verify in one batched pass"),
    ("reset", "settings back to defaults and counters zeroed (knowledge kept)"),
    ("help", "this text"),
    ("quit", "leave (the QEMU board exits)"),
];

/// The usage of command `word` (its line in [`COMMANDS`]; `exit` is `quit`).
fn usage(word: &str) -> &'static str {
    let word = if word == "exit" { "quit" } else { word };
    COMMANDS.iter().find(|(u, _)| u.split(' ').next() == Some(word)).map_or("help", |(u, _)| *u)
}

/// A temperature in thousandths as a decimal: `0`, `0.8`, `1.25`.
struct Milli(u32);

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, mut frac, mut digits) = (self.0 / 1000, self.0 % 1000, 3);
        write!(f, "{int}")?;
        if frac == 0 {
            return Ok(());
        }
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        write!(f, ".{frac:0digits$}")
    }
}

/// Parses a decimal `0`, `0.8`, `.5`, `1.250` to thousandths: digits only, at most 3
/// decimals, no sign, at most [`MAX_TEMP_MILLI`].
fn parse_milli(t: &str) -> Option<u32> {
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 3 || int.len() > 5
    {
        return None;
    }
    let mut v = if int.is_empty() { 0 } else { int.parse::<u32>().ok()? * 1000 };
    for (i, b) in frac.bytes().enumerate() {
        v += u32::from(b - b'0') * [100, 10, 1][i];
    }
    (v <= MAX_TEMP_MILLI).then_some(v)
}

/// Writes `s` as a JSON string (quotes, backslashes and control characters escaped).
struct Json<'a>(&'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// An optional figure in JSON: the number or `null`.
struct JsonOpt(Option<u64>);

impl fmt::Display for JsonOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("null"),
        }
    }
}

/// Tokens per second from `positions` in `micros`, with one decimal, or `None`.
fn tokens_per_second(positions: u64, micros: u64) -> Option<(u64, u64)> {
    let tenths = (positions.checked_mul(10_000_000)?).checked_div(micros)?;
    Some((tenths / 10, tenths % 10))
}

impl<'k, IO: Read + ReadReady + Write, E: Engine> Console<'k, IO, E> {
    /// A console without knowledge: `add`, `ask`, `anomaly` and `forget` answer with an error.
    pub fn new(io: IO, engine: E, board: Board) -> Self {
        let steps = engine.context_len().min(DEFAULT_STEPS);
        Console {
            io,
            engine,
            board,
            knowledge: None,
            saved: None,
            line: [0; MAX_LINE],
            len: 0,
            overflow: false,
            after_cr: false,
            typeahead: TypeAhead::default(),
            rx_lost: None,
            echo: true,
            steps,
            sampling: Sampling::new(0, DEFAULT_SEED),
            seed: DEFAULT_SEED,
            totals: Totals::default(),
            heard: heapless::Vec::new(),
        }
    }

    /// A console whose `add`, `ask`, `anomaly` and `forget` work on `knowledge`.
    pub fn with_knowledge(io: IO, engine: E, board: Board, knowledge: &'k mut Knowledge) -> Self {
        Console { knowledge: Some(knowledge), ..Self::new(io, engine, board) }
    }

    /// Makes `add` and `forget` save each change to `store` before they acknowledge it
    /// (write-then-acknowledge; a failed save is undone and printed as one `error:` line).
    /// Load the knowledge from the store first ([`Knowledge::restore`]).
    pub fn saving_to(mut self, store: &'k mut dyn KnowledgeStore) -> Self {
        self.saved = Some(store);
        self
    }

    /// Includes the bytes the board's own receive buffer had to drop (`lost` returns how many
    /// since its last call) in the report of lost type-ahead.
    pub fn counting_rx_losses(mut self, lost: fn() -> usize) -> Self {
        self.rx_lost = Some(lost);
        self
    }

    /// Serves commands until `quit` or the end of input (a read of 0 bytes): type-ahead
    /// first, then the stream.
    pub fn run(&mut self) -> Result<(), IO::Error> {
        self.banner()?;
        // One byte at a time: whatever follows a command stays in the stream until the
        // command is done (or busy, and takes it as type-ahead).
        let mut byte = [0u8; 1];
        loop {
            let b = match self.typeahead.next() {
                Some(b) => b,
                None if self.io.read(&mut byte)? == 0 => return Ok(()),
                None if self.typeahead.skips(byte[0]) => continue,
                None => byte[0],
            };
            if self.feed(b)? == Flow::Quit {
                return Ok(());
            }
        }
    }

    /// Echo typed bytes back (a serial terminal needs it; a host terminal in line mode
    /// echoes by itself).
    pub fn set_echo(&mut self, on: bool) {
        self.echo = on;
    }

    /// The stream, the engine and the board back (host tests read what was written).
    pub fn into_parts(self) -> (IO, E, Board) {
        (self.io, self.engine, self.board)
    }

    /// The published README's framed `RuvLLM ESP32 Ready!`, then the board and engine, the
    /// context and arena, and the main commands.
    pub fn banner(&mut self) -> Result<(), IO::Error> {
        const RULE: &str = "========================================";
        let (ctx, arena) = (self.engine.context_len(), self.engine.arena_bytes());
        sayln!(&mut self.io, "{RULE}\r\nRuvLLM ESP32 Ready!\r\n{RULE}")?;
        sayln!(&mut self.io, "ruvllm-esp32 console on {} ({})", self.board.name, self.engine.name())?;
        sayln!(&mut self.io, "context {ctx} positions, arena {arena} bytes")?;
        sayln!(
            &mut self.io,
            "commands: gen <text>, add <text>, ask <query>, anomaly <text>, stats, features; type help"
        )?;
        self.prompt()
    }

    fn prompt(&mut self) -> Result<(), IO::Error> {
        self.io.write_all(b"> ")?;
        self.io.flush()
    }

    /// Takes one input byte: line editing, then the command when the line ends.
    pub fn feed(&mut self, b: u8) -> Result<Flow, IO::Error> {
        let after_cr = core::mem::replace(&mut self.after_cr, b == b'\r');
        match b {
            b'\n' if after_cr => Ok(Flow::Continue),
            b'\r' | b'\n' => {
                if self.echo {
                    self.io.write_all(b"\r\n")?;
                }
                let flow = self.end_line()?;
                self.report_lost()?;
                if flow == Flow::Continue {
                    self.prompt()?;
                }
                Ok(flow)
            }
            0x08 | 0x7f => {
                if !self.overflow && self.len > 0 {
                    // Remove one whole UTF-8 character: continuation bytes, then its lead.
                    while self.len > 0 {
                        self.len -= 1;
                        if self.line.get(self.len).is_none_or(|&c| c & 0xC0 != 0x80) {
                            break;
                        }
                    }
                    if self.echo {
                        self.io.write_all(b"\x08 \x08")?;
                    }
                }
                Ok(Flow::Continue)
            }
            INTERRUPT => {
                // Ctrl-C: drop the line.
                self.len = 0;
                self.overflow = false;
                self.io.write_all(b"^C\r\n")?;
                self.prompt()?;
                Ok(Flow::Continue)
            }
            _ => {
                match self.line.get_mut(self.len) {
                    Some(slot) if !self.overflow => {
                        *slot = b;
                        self.len += 1;
                        // Control bytes are kept (the command then fails) but not echoed.
                        if self.echo && (b >= 0x20) {
                            self.io.write_all(&[b])?;
                        }
                    }
                    _ => self.overflow = true,
                }
                Ok(Flow::Continue)
            }
        }
    }

    fn end_line(&mut self) -> Result<Flow, IO::Error> {
        let (len, overflow) = (core::mem::take(&mut self.len), core::mem::take(&mut self.overflow));
        if overflow {
            sayln!(&mut self.io, "error: line too long (max {MAX_LINE} bytes)")?;
            return Ok(Flow::Continue);
        }
        let mut line = [0u8; MAX_LINE];
        let bytes = line.get_mut(..len).unwrap_or_default();
        bytes.copy_from_slice(self.line.get(..len).unwrap_or_default());
        let text = match core::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let at = e.valid_up_to();
                sayln!(&mut self.io, "error: invalid UTF-8 at byte {at} of the line")?;
                return Ok(Flow::Continue);
            }
        };
        self.command(text)
    }

    fn command(&mut self, text: &str) -> Result<Flow, IO::Error> {
        let text = text.trim_matches(|c: char| c == ' ' || c == '\t');
        let (word, rest) = text.split_once([' ', '\t']).unwrap_or((text, ""));
        let rest = rest.trim_start_matches([' ', '\t']);
        match word {
            "" => {}
            "add" | "ask" | "anomaly" | "forget" if rest.is_empty() => {
                let what = if word == "forget" { "id" } else { "text" };
                sayln!(&mut self.io, "error: no {what} given (usage: {})", usage(word))?
            }
            "help" | "clear" | "info" | "features" | "bench" | "reset" | "quit" | "exit"
                if !rest.is_empty() =>
            {
                sayln!(&mut self.io, "error: {word} takes no argument (usage: {})", usage(word))?
            }
            "help" => self.help()?,
            "gen" => {
                let before = self.totals.generations;
                self.gen(rest)?;
                if self.totals.generations > before {
                    self.remember_gen(rest);
                }
            }
            "add" | "ask" | "anomaly" | "forget" => self.knowledge(word, rest)?,
            "lora" => self.lora(rest)?,
            "clear" => self.clear()?,
            "info" => self.info()?,
            "features" => self.features()?,
            "stats" => match rest {
                "" => self.stats()?,
                "json" | "--json" => self.stats_json()?,
                _ => sayln!(&mut self.io, "error: stats takes nothing or json (usage: {})", usage(word))?,
            },
            "bench" => self.bench()?,
            "set" => self.set(rest)?,
            "reset" => self.reset()?,
            "quit" | "exit" => {
                sayln!(&mut self.io, "bye")?;
                return Ok(Flow::Quit);
            }
            _ => sayln!(&mut self.io, "error: unknown command {word:?} (type help)")?,
        }
        Ok(Flow::Continue)
    }

    fn set(&mut self, args: &str) -> Result<(), IO::Error> {
        let mut it = args.split_ascii_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some("steps"), Some(n), None) => {
                let ctx = self.engine.context_len();
                match n.parse::<usize>() {
                    Ok(n) if (1..=ctx).contains(&n) => {
                        self.steps = n;
                        sayln!(&mut self.io, "steps {n}")
                    }
                    _ => sayln!(
                        &mut self.io,
                        "error: steps must be a number in 1..={ctx} (usage: set steps <n>)"
                    ),
                }
            }
            (Some("temp"), Some(t), None) => match parse_milli(t) {
                Some(m) => {
                    self.sampling.temp_milli = m;
                    let greedy = if m == 0 { " (greedy)" } else { "" };
                    sayln!(&mut self.io, "temp {}{greedy}", Milli(m))
                }
                None => sayln!(
                    &mut self.io,
                    "error: temp must be a number from 0 to {} with at most 3 decimals (usage: set temp <t>)",
                    Milli(MAX_TEMP_MILLI)
                ),
            },
            (Some("seed"), Some(n), None) => match n.parse::<u64>() {
                Ok(n) => {
                    self.seed = n;
                    self.sampling.rng = crate::sample::seed_state(n);
                    sayln!(&mut self.io, "seed {n}")
                }
                Err(_) => sayln!(
                    &mut self.io,
                    "error: seed must be a whole number from 0 to {} (usage: set seed <n>)",
                    u64::MAX
                ),
            },
            (Some("echo"), Some(v @ ("on" | "off")), None) => {
                self.echo = v == "on";
                sayln!(&mut self.io, "echo {v}")
            }
            (Some("attention"), Some(spec), None) => {
                let ctx = self.engine.context_len();
                match crate::infer::Pattern::parse(spec, ctx).map(|p| (p, self.engine.set_attention(p))) {
                    Ok((p, Ok(()))) => sayln!(&mut self.io, "attention {p}"),
                    Ok((_, Err(crate::Error::BufferTooSmall { need, have }))) => sayln!(
                        &mut self.io,
                        "error: attention {spec} needs {need} bytes of scratch, this console has {have}: use full or a smaller pattern"
                    ),
                    Ok((_, Err(e))) => sayln!(&mut self.io, "error: attention {spec}: {e}"),
                    Err(e) => sayln!(&mut self.io, "error: attention {spec}: {e}"),
                }
            }
            (Some("speculative"), Some(v @ ("on" | "off")), None) => match self.engine.set_speculative(v == "on") {
                Ok(()) => sayln!(&mut self.io, "speculative {v}"),
                Err(e) => sayln!(&mut self.io, "error: {e}"),
            },
            _ => sayln!(
                &mut self.io,
                "error: usage: set steps <n> | set temp <t> | set seed <n> | set echo on|off | set attention <pattern> | set speculative on|off"
            ),
        }
    }

    fn help(&mut self) -> Result<(), IO::Error> {
        sayln!(&mut self.io, "commands:")?;
        for (usage, what) in COMMANDS {
            sayln!(&mut self.io, "  {usage:<16} {what}")?;
        }
        Ok(())
    }

    /// `info`: the model and the engine, or that there is none.
    fn info(&mut self) -> Result<(), IO::Error> {
        let Some(m) = self.engine.info() else {
            return sayln!(&mut self.io, "model: none (no language model on this board)");
        };
        sayln!(&mut self.io, "model: llama-architecture GGUF image, {} weights", m.format)?;
        sayln!(
            &mut self.io,
            "layers {}, dim {}, hidden {}, heads {}, kv heads {}, vocab {}",
            m.layers,
            m.dim,
            m.hidden_dim,
            m.heads,
            m.kv_heads,
            m.vocab
        )?;
        sayln!(
            &mut self.io,
            "context: {} positions (trained for {}), parameters: {}, weights: {} bytes",
            self.engine.context_len(),
            m.trained_context,
            m.parameters,
            m.weight_bytes
        )?;
        sayln!(&mut self.io, "engine: {}, arena {} bytes", self.engine.name(), self.engine.arena_bytes())?;
        sayln!(&mut self.io, "attention: {}", self.engine.attention())
    }

    /// `features`: what this build has, as it is configured now.
    fn features(&mut self) -> Result<(), IO::Error> {
        let model = self.engine.context_len() > 0;
        sayln!(&mut self.io, "engine: {}", self.engine.name())?;
        let gen = if model { "gen, bench; greedy or sampled" } else { "none (no language model)" };
        sayln!(&mut self.io, "generation: {gen}")?;
        sayln!(&mut self.io, "sampler: {}", self.engine.sampler())?;
        if self.engine.lora().is_some() {
            sayln!(&mut self.io, "MicroLoRA: lora train, save, load, on, off, reset, stats (rank 1-2)")?;
        }
        match self.knowledge.as_deref() {
            Some(k) => {
                sayln!(
                    &mut self.io,
                    "knowledge: add, ask, anomaly, forget, clear ({} entries)",
                    k.capacity()
                )?;
                sayln!(
                    &mut self.io,
                    "retrieval: {}, {KNOWLEDGE_DIM} dims, int8 vector search",
                    k.retrieval_embedder()
                )?;
                let language =
                    if model { "the model's token surprise and the text" } else { "the text's characters" };
                sayln!(
                    &mut self.io,
                    "anomaly detection: language score from {language}; distance to knowledge by hashed n-grams, {KNOWLEDGE_DIM} dims"
                )?;
                let saving = if self.saved.is_some() { "on" } else { "off (RAM only)" };
                sayln!(&mut self.io, "knowledge saving: {saving}")?;
            }
            None => sayln!(&mut self.io, "knowledge: none")?,
        }
        match self.board.counter {
            Some(_) => sayln!(&mut self.io, "measuring: {} per token", self.board.counter_unit)?,
            None => sayln!(&mut self.io, "measuring: none")?,
        }
        let ram =
            if self.board.ram.is_some() { "static + stack high-water" } else { "arena and stores only" };
        sayln!(&mut self.io, "RAM report: {ram}")
    }

    /// `clear`: every knowledge entry and detector reference, saved first when saving is on.
    fn clear(&mut self) -> Result<(), IO::Error> {
        let Some(k) = self.knowledge.as_deref_mut() else {
            return sayln!(&mut self.io, "error: this console has no knowledge store");
        };
        match k.clear_with(self.saved.as_deref_mut()) {
            Ok((n, refs)) => {
                let m = k.clear_memory();
                let (s, r) = (if n == 1 { "y" } else { "ies" }, if refs == 1 { "" } else { "s" });
                say(
                    &mut self.io,
                    format_args!("Cleared {n} knowledge entr{s} and {refs} anomaly reference{r}"),
                )?;
                match m {
                    0 => sayln!(&mut self.io, ""),
                    1 => sayln!(&mut self.io, "; forgot 1 memory"),
                    _ => sayln!(&mut self.io, "; forgot {m} memories"),
                }
            }
            Err(e) => sayln!(&mut self.io, "error: {e}"),
        }
    }

    /// `reset`: steps, temperature and seed back to their defaults, every counter zeroed.
    fn reset(&mut self) -> Result<(), IO::Error> {
        self.steps = self.engine.context_len().min(DEFAULT_STEPS);
        self.seed = DEFAULT_SEED;
        self.sampling = Sampling::new(0, DEFAULT_SEED);
        self.totals = Totals::default();
        sayln!(
            &mut self.io,
            "reset: steps {}, temp 0 (greedy), seed {DEFAULT_SEED}; counters zeroed (knowledge and echo kept)",
            self.steps
        )
    }

    /// Takes what arrived while the console is busy as type-ahead; true once a Ctrl-C asks
    /// the command to stop. Reads at most `TYPEAHEAD * 4` bytes, so a stream that never runs
    /// dry cannot hold the command up.
    fn poll(io: &mut IO, typeahead: &mut TypeAhead) -> Result<bool, IO::Error> {
        let mut buf = [0u8; 16];
        let mut taken = 0;
        while taken < TYPEAHEAD * 4 && io.read_ready()? {
            let n = io.read(&mut buf)?;
            if n == 0 {
                break;
            }
            taken += n;
            buf.get(..n).unwrap_or_default().iter().for_each(|&b| typeahead.take(b));
        }
        Ok(typeahead.interrupted())
    }

    /// Static RAM plus the stack's high-water mark, where the board can measure them.
    fn report_peak_ram(&mut self) -> Result<(), IO::Error> {
        if let Some(ram) = self.board.ram {
            let r = ram();
            sayln!(
                &mut self.io,
                "peak RAM: {} bytes (static {} + stack high-water {})",
                r.static_bytes + r.stack_bytes,
                r.static_bytes,
                r.stack_bytes
            )?;
        }
        Ok(())
    }

    /// After each command: `^C` if it was interrupted, or one error line for the type-ahead
    /// that did not fit (in the console's queue or the board's receive buffer).
    fn report_lost(&mut self) -> Result<(), IO::Error> {
        let Lost { mut bytes, lines, interrupted } = self.typeahead.report();
        bytes += self.rx_lost.map_or(0, |f| f());
        let (s, was, them) = if lines == 1 { ("", "was", "it") } else { ("s", "were", "them") };
        if interrupted {
            return match lines {
                0 => sayln!(&mut self.io, "^C"),
                _ => sayln!(&mut self.io, "^C (dropped {lines} typed-ahead line{s}, {bytes} bytes)"),
            };
        }
        match (lines, bytes) {
            (_, 0) => Ok(()),
            (0, _) => sayln!(
                &mut self.io,
                "error: {bytes} typed-ahead bytes did not fit the input buffer and were dropped; type them again"
            ),
            _ => sayln!(
                &mut self.io,
                "error: {lines} typed-ahead line{s} ({bytes} bytes) did not fit the {TYPEAHEAD}-byte input buffer and {was} dropped; type {them} again"
            ),
        }
    }

    fn gen(&mut self, prompt: &str) -> Result<(), IO::Error> {
        if self.engine.context_len() == 0 {
            return sayln!(&mut self.io, "error: no language model on this board");
        }
        let steps = self.steps;
        let counter = self.board.counter;
        let (io, engine, sampling) = (&mut self.io, &mut self.engine, &mut self.sampling);
        let typeahead = &mut self.typeahead;
        let heard = &mut self.heard;
        heard.clear();
        let mut io_err = None;
        let start = counter.map_or(0, |f| f());
        // After each piece, what was typed meanwhile is taken as type-ahead; Ctrl-C (or a
        // failing stream) stops the generation.
        let result = engine.generate(prompt.as_bytes(), steps, sampling, &mut |piece: &[u8]| {
            let room = heard.capacity() - heard.len();
            let _ = heard.extend_from_slice(piece.get(..piece.len().min(room)).unwrap_or_default());
            let r = io.write_all(piece).and_then(|_| io.flush()).and_then(|_| Self::poll(io, typeahead));
            match r {
                Ok(false) => ControlFlow::Continue(()),
                Ok(true) => ControlFlow::Break(()),
                Err(e) => {
                    io_err = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        let ticks = counter.map_or(0, |f| f()).wrapping_sub(start);
        if let Some(e) = io_err {
            return Err(e);
        }
        Self::poll(&mut self.io, &mut self.typeahead)?;
        self.io.write_all(b"\r\n")?;
        match result {
            Ok(s) => {
                self.totals.generations += 1;
                self.totals.tokens_generated += s.generated as u64;
                let positions = (s.prompt_tokens.saturating_sub(1) + s.generated) as u64;
                self.totals.last_positions = positions;
                self.totals.last_ticks = ticks;
                self.totals.all_positions += positions;
                self.totals.all_ticks += ticks;
                if let Some(sp) = self.engine.speculation() {
                    // Integers only: a chip's console formats no floats.
                    let per_pass = sp.gen.generated * 100 / sp.target_passes.max(1);
                    sayln!(
                        &mut self.io,
                        "speculative: {} of {} drafts accepted ({}%), {}.{:02} tokens per target pass",
                        sp.accepted,
                        sp.drafted,
                        sp.accepted * 100 / sp.drafted.max(1),
                        per_pass / 100,
                        per_pass % 100
                    )?;
                }
            }
            Err(e) => sayln!(&mut self.io, "error: {e}")?,
        }
        Ok(())
    }

    /// `add`, `ask`, `anomaly` and `forget`: one line each (and `ask`'s `Answer:` line).
    fn knowledge(&mut self, word: &str, text: &str) -> Result<(), IO::Error> {
        let Some(k) = self.knowledge.as_deref_mut() else {
            return sayln!(&mut self.io, "error: this console has no knowledge store");
        };
        let counter = self.board.counter;
        let start = counter.map_or(0, |f| f());
        let ticks = || counter.map_or(0, |f| f()).wrapping_sub(start);
        let t = &mut self.totals;
        match word {
            "add" => match k.add_with(text, self.saved.as_deref_mut()) {
                Ok(id) => {
                    t.last_add = counter.map(|_| ticks());
                    sayln!(&mut self.io, "Added knowledge #{id}")
                }
                Err(e) => sayln!(&mut self.io, "error: {e}"),
            },
            "anomaly" => {
                let has_model = self.engine.info().is_some();
                let engine = &mut self.engine;
                let mut stats = |t: &str| engine.token_stats(t.as_bytes()).ok().flatten();
                let model: Option<&mut knowledge::TokenStatsFn<'_>> =
                    if has_model { Some(&mut stats) } else { None };
                match k.anomaly_with(text, model) {
                    Ok(r) => {
                        t.last_anomaly = counter.map(|_| ticks());
                        sayln!(&mut self.io, "{r}")
                    }
                    Err(e) => sayln!(&mut self.io, "error: {e}"),
                }
            }
            "forget" => match text.parse::<u32>() {
                Ok(id) => match k.forget_fact(id, self.saved.as_deref_mut()) {
                    Ok(0) => sayln!(&mut self.io, "Forgot knowledge #{id}"),
                    Ok(1) => sayln!(&mut self.io, "Forgot knowledge #{id} and the memory that quoted it"),
                    Ok(m) => {
                        sayln!(&mut self.io, "Forgot knowledge #{id} and the {m} memories that quoted it")
                    }
                    Err(e) => sayln!(&mut self.io, "error: {e}"),
                },
                Err(_) => sayln!(&mut self.io, "error: usage: forget <id> (the number add printed)"),
            },
            _ => {
                let found = match k.ask(text) {
                    Ok(found) => found,
                    Err(e) => return sayln!(&mut self.io, "error: {e}"),
                };
                t.last_ask = counter.map(|_| ticks());
                if found.is_empty() {
                    sayln!(&mut self.io, "No results found")?;
                }
                for r in &found {
                    let similarity = libm::roundf(r.score.clamp(-1.0, 1.0) * 100.0) as i32;
                    sayln!(&mut self.io, "Found: {} (#{}, similarity {similarity}%)", r.text, r.id)?;
                }
                // The answer, copied from the best fact by the model (none without a model).
                let mut answer = [0u8; knowledge::KNOWLEDGE_TEXT];
                let mut answer_len = 0;
                let best_id = found.first().map(|best| best.id);
                if let (Some(best), true) = (found.first(), self.engine.context_len() > 0) {
                    match self.engine.answer(best.text, text, &mut answer) {
                        Ok(n) => {
                            answer_len = n;
                            t.last_answer = counter.map(|_| ticks());
                        }
                        Err(e) => sayln!(&mut self.io, "error: {e}")?,
                    }
                }
                // (`found` borrows the store, which `recalled` and `remember_ask` change.)
                drop(found);
                if answer_len > 0 {
                    // A span of a `&str` cut at character boundaries.
                    let answer = core::str::from_utf8(answer.get(..answer_len).unwrap_or_default())
                        .unwrap_or_default();
                    sayln!(&mut self.io, "Answer: {answer}")?;
                }
                // Earlier exchanges after the facts; this one is remembered once it found one.
                self.recalled(text)?;
                if let (Some(id), Some(k)) = (best_id, self.knowledge.as_deref_mut()) {
                    k.remember_ask(text, u32::from(id));
                }
                Ok(())
            }
        }
    }

    /// The `Recalled:` line of `ask`: the earlier exchange most like `question`, if any.
    fn recalled(&mut self, question: &str) -> Result<(), IO::Error> {
        let Some(m) = self.knowledge.as_deref_mut().and_then(|k| k.recall(question)) else { return Ok(()) };
        let s = if m.ago == 1 { "" } else { "s" };
        let similarity = libm::roundf(m.similarity.clamp(-1.0, 1.0) * 100.0) as i32;
        sayln!(
            &mut self.io,
            "Recalled: {} (memory #{}, {} exchange{s} ago, similarity {similarity}%)",
            m.text,
            m.id,
            m.ago
        )
    }

    /// Keeps the generation just printed (prompt and reply) as a memory.
    fn remember_gen(&mut self, prompt: &str) {
        let Some(k) = self.knowledge.as_deref_mut() else { return };
        // The reply may end inside a character: keep its whole characters.
        let heard = match core::str::from_utf8(&self.heard) {
            Ok(t) => t,
            Err(e) => core::str::from_utf8(self.heard.get(..e.valid_up_to()).unwrap_or_default())
                .unwrap_or_default(),
        };
        k.remember("gen", prompt, heard);
    }

    fn stats(&mut self) -> Result<(), IO::Error> {
        let t = self.totals;
        let arena = self.engine.arena_bytes();
        // The published README's summary line first.
        let entries = self.knowledge.as_deref().map_or(0, |k| k.len());
        sayln!(&mut self.io, "Tokens: {}, Knowledge: {entries}", t.tokens_generated)?;
        sayln!(&mut self.io, "engine: {}", self.engine.name())?;
        sayln!(
            &mut self.io,
            "arena RAM: {arena} bytes (activations + KV cache, {} positions)",
            self.engine.context_len()
        )?;
        if let Some(k) = self.knowledge.as_deref() {
            sayln!(
                &mut self.io,
                "knowledge RAM: {} bytes (RAG store {} + anomaly detector {} + memory {} + embedders)",
                k.ram_bytes(),
                k.rag_ram_bytes(),
                k.detector_ram_bytes(),
                k.memory_use().ram_bytes
            )?;
        }
        // The Console value itself (on the stack of a board's main): line buffer, the engine
        // with its prompt-token buffer, settings and counters.
        sayln!(
            &mut self.io,
            "console RAM: {} bytes (line buffer, engine and its prompt tokens, settings)",
            size_of::<Self>()
        )?;
        self.report_peak_ram()?;
        sayln!(&mut self.io, "generations: {}, tokens generated: {}", t.generations, t.tokens_generated)?;
        let unit = self.board.counter_unit;
        if self.board.counter.is_some() {
            for (what, positions, ticks) in [
                ("last generation", t.last_positions, t.last_ticks),
                ("all generations", t.all_positions, t.all_ticks),
            ] {
                if positions == 0 {
                    continue;
                }
                say(
                    &mut self.io,
                    format_args!("{what}: {positions} positions, {} {unit}/token", ticks / positions),
                )?;
                match tokens_per_second(positions, ticks).filter(|_| unit == "us") {
                    Some((int, tenth)) => sayln!(&mut self.io, ", {int}.{tenth} tok/s")?,
                    None => sayln!(&mut self.io, "")?,
                }
            }
        }
        if let Some(k) = self.knowledge.as_deref() {
            sayln!(
                &mut self.io,
                "knowledge: {}/{} entries, RAG store {} bytes RAM ({}, {KNOWLEDGE_DIM} dims)",
                k.len(),
                k.capacity(),
                k.rag_ram_bytes(),
                k.retrieval_embedder()
            )?;
            if self.saved.is_some() {
                sayln!(&mut self.io, "knowledge saving: on (each add/forget is durable before its reply)")?;
            }
            let (refs, cap) = k.references();
            let threshold = k.threshold().map(|t| libm::roundf(t * 100.0) as u32);
            match threshold {
                Some(th) => sayln!(
                    &mut self.io,
                    "anomaly detector: {refs}/{cap} references, threshold {th}, {} bytes RAM (hashed n-grams)",
                    k.detector_ram_bytes()
                )?,
                None => sayln!(
                    &mut self.io,
                    "anomaly detector: {refs}/{cap} references, not calibrated, {} bytes RAM (hashed n-grams)",
                    k.detector_ram_bytes()
                )?,
            }
            let m = k.memory_use();
            sayln!(
                &mut self.io,
                "memory: {}/{} exchanges ({} episodic, {} factual, {} procedural), {} bytes RAM (gen kept {GEN_MEMORY_TTL} exchanges, ask until evicted)",
                m.len,
                m.capacity,
                m.episodic,
                m.factual,
                m.procedural,
                m.ram_bytes
            )?;
            let unit = self.board.counter_unit;
            for (what, ticks) in [
                ("add", t.last_add),
                ("ask (embedding + retrieval)", t.last_ask),
                ("ask with its answer", t.last_answer),
                ("anomaly", t.last_anomaly),
            ] {
                if let Some(n) = ticks {
                    sayln!(&mut self.io, "last {what}: {n} {unit}")?;
                }
            }
        }
        sayln!(
            &mut self.io,
            "settings: steps {}, temp {}, seed {}",
            self.steps,
            Milli(self.sampling.temp_milli),
            self.seed
        )
    }

    /// `stats json`: the figures of `stats` as one JSON line (`null` where the board cannot
    /// measure; `unit` names what the tick counts are).
    fn stats_json(&mut self) -> Result<(), IO::Error> {
        let t = self.totals;
        let ram = self.board.ram.map(|f| f());
        let io = &mut self.io;
        say(
            io,
            format_args!("{{\"board\":{},\"engine\":{},", Json(self.board.name), Json(self.engine.name())),
        )?;
        say(
            io,
            format_args!(
                "\"ram\":{{\"arena\":{},\"console\":{},\"static\":{},\"stack_high_water\":{}",
                self.engine.arena_bytes(),
                size_of::<Self>(),
                JsonOpt(ram.map(|r| r.static_bytes as u64)),
                JsonOpt(ram.map(|r| r.stack_bytes as u64))
            ),
        )?;
        if let Some(k) = self.knowledge.as_deref() {
            say(
                io,
                format_args!(
                    ",\"knowledge\":{},\"rag_store\":{},\"anomaly_detector\":{},\"memory\":{}",
                    k.ram_bytes(),
                    k.rag_ram_bytes(),
                    k.detector_ram_bytes(),
                    k.memory_use().ram_bytes
                ),
            )?;
        }
        let unit = if self.board.counter.is_some() { Some(self.board.counter_unit) } else { None };
        let per_token = |p: u64, ticks: u64| unit.and(ticks.checked_div(p));
        say(
            io,
            format_args!(
                "}},\"generations\":{},\"tokens_generated\":{},\"unit\":{},",
                t.generations,
                t.tokens_generated,
                unit.map_or(Json("none"), Json)
            ),
        )?;
        say(
            io,
            format_args!(
                "\"last_positions\":{},\"last_per_token\":{},\"all_positions\":{},\"all_per_token\":{},",
                t.last_positions,
                JsonOpt(per_token(t.last_positions, t.last_ticks)),
                t.all_positions,
                JsonOpt(per_token(t.all_positions, t.all_ticks))
            ),
        )?;
        match tokens_per_second(t.all_positions, t.all_ticks).filter(|_| unit == Some("us")) {
            Some((int, tenth)) => say(io, format_args!("\"tokens_per_second\":{int}.{tenth},"))?,
            None => say(io, format_args!("\"tokens_per_second\":null,"))?,
        }
        if let Some(k) = self.knowledge.as_deref() {
            let (refs, cap) = k.references();
            let th = k.threshold().map(|t| libm::roundf(t * 100.0) as u64);
            say(
                io,
                format_args!(
                    "\"entries\":{},\"capacity\":{},\"references\":{refs},\"reference_capacity\":{cap},\"threshold\":{},\"saving\":{},\"memories\":{},\"memory_capacity\":{},",
                    k.len(),
                    k.capacity(),
                    JsonOpt(th),
                    self.saved.is_some(),
                    k.memory_use().len,
                    k.memory_use().capacity
                ),
            )?;
        }
        sayln!(
            io,
            "\"steps\":{},\"temp\":{},\"seed\":{}}}",
            self.steps,
            Milli(self.sampling.temp_milli),
            self.seed
        )
    }

    /// Greedy positions 0..context from BOS, timing each one; BOS produced by the model does
    /// not stop it, so every position is measured.
    fn bench(&mut self) -> Result<(), IO::Error> {
        let Some(counter) = self.board.counter else {
            return sayln!(&mut self.io, "error: this board has no counter to measure with");
        };
        let ctx = self.engine.context_len();
        if ctx == 0 {
            return sayln!(&mut self.io, "error: no language model on this board");
        }
        sayln!(&mut self.io, "bench: greedy from BOS, {ctx} positions")?;
        let mut token = self.engine.bos();
        let mut sum = 0u64;
        // Empty unless this build measures kernels: the bench's frame counts in its stack figure.
        let mut kernels = [0u64; if profile::ENABLED { profile::NAMES.len() } else { 0 }];
        for pos in 0..ctx {
            profile::take();
            let start = counter();
            let next = self.engine.step(token, pos);
            let ticks = counter().wrapping_sub(start);
            if pos < BENCH_AVERAGE {
                kernels.iter_mut().zip(profile::take()).for_each(|(k, t)| *k += t as u64);
            }
            token = match next {
                Ok(t) => t,
                Err(e) => return sayln!(&mut self.io, "error: position {pos}: {e}"),
            };
            if pos < BENCH_AVERAGE {
                sum += ticks;
            }
            if BENCH_POSITIONS.contains(&pos) || pos + 1 == ctx {
                let unit = self.board.counter_unit;
                sayln!(&mut self.io, "{unit}/token at position {pos}: {ticks}")?;
            }
            if Self::poll(&mut self.io, &mut self.typeahead)? {
                return Ok(());
            }
        }
        let n = ctx.clamp(1, BENCH_AVERAGE) as u64;
        sayln!(
            &mut self.io,
            "{}/token average over positions 0-{}: {}",
            self.board.counter_unit,
            n - 1,
            sum / n
        )?;
        if profile::ENABLED {
            for (name, k) in profile::NAMES.iter().zip(kernels) {
                sayln!(&mut self.io, "kernel {name}: {}/token", k / n)?;
            }
        }
        self.report_peak_ram()
    }
}

/// Splits the transcript of a console session with echo on into the reply to each of
/// `commands`, in order (the text between the echoed `> command` line and the next prompt);
/// `None` when a command's echo is missing or there are more than 128 commands. For scripted
/// sessions and their tests.
pub fn replies<'t>(transcript: &'t str, commands: &[&str]) -> Option<heapless::Vec<&'t str, 128>> {
    let mut out = heapless::Vec::new();
    let mut rest = transcript;
    for c in commands {
        let mut echo = heapless::String::<{ MAX_LINE + 4 }>::new();
        fmt::Write::write_fmt(&mut echo, format_args!("> {c}\r\n")).ok()?;
        let at = rest.find(echo.as_str())? + echo.len();
        let after = rest.get(at..)?;
        let end = after.find("\r\n> ").map_or(after.len(), |e| e + 2);
        let reply = after.get(..end)?.strip_suffix("\r\n").unwrap_or(after.get(..end)?);
        out.push(reply).ok()?;
        rest = after.get(end..)?;
    }
    Some(out)
}
