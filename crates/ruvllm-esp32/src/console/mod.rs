//! The serial console: one line-oriented command interpreter over any byte stream
//! (`embedded-io` [`Read`] + [`ReadReady`] + [`Write`]), shared by the QEMU board, the chip
//! firmware and host tests. `no_std`, no allocation: one fixed line buffer, and every reply is
//! written straight to the stream.
//!
//! With a [`Knowledge`] ([`Console::with_knowledge`]) it also keeps short texts: `add` stores
//! one and teaches the anomaly detector that it is normal, `ask` retrieves the best matches and
//! (with a model) continues the best text plus the question like `gen`, `anomaly` scores a text
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
//! Every byte that arrives is untrusted: an overlong line, invalid UTF-8, an unknown command or
//! bytes typed while a generation runs each get one `error: ...` line, and the console keeps
//! answering.

mod engine;
mod knowledge;
mod saved;
#[cfg(test)]
mod tests;

pub use engine::{Engine, IntegerEngine, NoModel, ReferenceEngine};
pub use knowledge::{
    Knowledge, KnowledgeDetector, KnowledgeError, KnowledgeRag, ANOMALY_CAP, ANOMALY_PRIOR,
    ASK_MIN_SIMILARITY, ASK_RESULTS, KNOWLEDGE_CAP, KNOWLEDGE_DIM, KNOWLEDGE_TEXT,
};
pub use saved::{KnowledgeStore, Restored, SavingOff};

use core::fmt;
use embedded_io::{Read, ReadReady, Write};

/// Longest command line, in bytes.
pub const MAX_LINE: usize = 255;

/// Positions whose cost `bench` reports (0-based; the last is clamped to the context).
pub const BENCH_POSITIONS: [usize; 5] = [1, 64, 128, 256, 511];
/// `bench` also reports the average over positions `0..BENCH_AVERAGE`.
pub const BENCH_AVERAGE: usize = 128;

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
    /// Positions and counter ticks of the last generation.
    last_positions: u64,
    last_ticks: u64,
    /// Counter ticks of the last `add`, `ask` (embedding and retrieval, without the
    /// generation) and `anomaly` that succeeded.
    last_add: Option<u64>,
    last_ask: Option<u64>,
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
    echo: bool,
    steps: usize,
    totals: Totals,
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

const HELP: &str = "commands:\r
  gen <text>     continue <text> greedily (prints the prompt, then the continuation)\r
  add <text>     store <text> as knowledge (at most 128 bytes) and learn it as normal\r
  ask <query>    retrieve the best-matching knowledge; with a model, continue from\r
                 the best text plus the query like gen (set steps bounds it)\r
  anomaly <text> is <text> unlike the knowledge added? (needs 2 adds first; score and\r
                 threshold are cosine distances in hundredths)\r
  forget <id>    drop knowledge #<id> from retrieval (the anomaly detector keeps it)\r
                 knowledge is embedded by hashed character 3-grams (a table learned\r
                 on the corpus for ask, a random projection for anomaly), not the\r
                 model: each did its task better in the project's evaluation\r
  stats          RAM, tokens generated, cost per token, knowledge in use\r
  bench          greedy positions 0..context: cost per token by position, peak RAM\r
  set steps <n>  positions per generation, prompt included (1..=context)\r
  set echo on|off\r
  help           this text\r
  quit           leave (the QEMU board exits)";

impl<'k, IO: Read + ReadReady + Write, E: Engine> Console<'k, IO, E> {
    /// A console without knowledge: `add`, `ask`, `anomaly` and `forget` answer with an error.
    pub fn new(io: IO, engine: E, board: Board) -> Self {
        let steps = engine.context_len().min(256);
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
            echo: true,
            steps,
            totals: Totals::default(),
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

    /// Serves commands until `quit` or the end of input (a read of 0 bytes).
    pub fn run(&mut self) -> Result<(), IO::Error> {
        self.banner()?;
        // One byte at a time: whatever follows a command stays in the stream, so bytes typed
        // during a generation are drained and reported rather than run as the next command.
        let mut byte = [0u8; 1];
        loop {
            if self.io.read(&mut byte)? == 0 || self.feed(byte[0])? == Flow::Quit {
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

    pub fn banner(&mut self) -> Result<(), IO::Error> {
        let (ctx, arena) = (self.engine.context_len(), self.engine.arena_bytes());
        sayln!(&mut self.io, "ruvllm-esp32 console on {} ({})", self.board.name, self.engine.name())?;
        sayln!(&mut self.io, "context {ctx} positions, arena {arena} bytes; type help")?;
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
            0x03 => {
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
        match word {
            "" => {}
            "help" => sayln!(&mut self.io, "{HELP}")?,
            "gen" => self.gen(rest.trim_start_matches([' ', '\t']))?,
            "add" | "ask" | "anomaly" | "forget" => {
                self.knowledge(word, rest.trim_start_matches([' ', '\t']))?
            }
            "stats" => self.stats()?,
            "bench" => self.bench()?,
            "set" => self.set(rest)?,
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
                    _ => sayln!(&mut self.io, "error: steps must be a number in 1..={ctx}"),
                }
            }
            (Some("echo"), Some(v @ ("on" | "off")), None) => {
                self.echo = v == "on";
                sayln!(&mut self.io, "echo {v}")
            }
            _ => sayln!(&mut self.io, "error: usage: set steps <n> | set echo on|off"),
        }
    }

    /// Reads and drops whatever arrived while the console was busy; returns how many bytes.
    fn drain(io: &mut IO) -> Result<usize, IO::Error> {
        let mut dropped = 0;
        let mut buf = [0u8; 16];
        while io.read_ready()? {
            dropped += io.read(&mut buf)?;
        }
        Ok(dropped)
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

    fn report_dropped(&mut self, dropped: usize) -> Result<(), IO::Error> {
        if dropped > 0 {
            sayln!(&mut self.io, "error: {dropped} input bytes arrived while busy and were ignored")?;
        }
        Ok(())
    }

    fn gen(&mut self, prompt: &str) -> Result<(), IO::Error> {
        if self.engine.context_len() == 0 {
            return sayln!(&mut self.io, "error: no language model on this board");
        }
        let steps = self.steps;
        let counter = self.board.counter;
        let (io, engine) = (&mut self.io, &mut self.engine);
        let mut io_err = None;
        let mut dropped = 0usize;
        let start = counter.map_or(0, |f| f());
        let result = engine.generate(prompt.as_bytes(), steps, &mut |piece: &[u8]| {
            if io_err.is_some() {
                return;
            }
            let r = io.write_all(piece).and_then(|_| io.flush()).and_then(|_| Self::drain(io));
            match r {
                Ok(n) => dropped += n,
                Err(e) => io_err = Some(e),
            }
        });
        let ticks = counter.map_or(0, |f| f()).wrapping_sub(start);
        if let Some(e) = io_err {
            return Err(e);
        }
        dropped += Self::drain(&mut self.io)?;
        self.io.write_all(b"\r\n")?;
        match result {
            Ok(s) => {
                self.totals.generations += 1;
                self.totals.tokens_generated += s.generated as u64;
                self.totals.last_positions = (s.prompt_tokens.saturating_sub(1) + s.generated) as u64;
                self.totals.last_ticks = ticks;
            }
            Err(e) => sayln!(&mut self.io, "error: {e}")?,
        }
        self.report_dropped(dropped)
    }

    /// `add`, `ask`, `anomaly` and `forget`: one line each (and the streamed answer of `ask`).
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
            "anomaly" => match k.anomaly(text) {
                Ok(r) => {
                    t.last_anomaly = counter.map(|_| ticks());
                    sayln!(&mut self.io, "{r}")
                }
                Err(e) => sayln!(&mut self.io, "error: {e}"),
            },
            "forget" => match text.parse::<u32>() {
                Ok(id) => match k.forget_with(id, self.saved.as_deref_mut()) {
                    Ok(()) => sayln!(&mut self.io, "Forgot knowledge #{id}"),
                    Err(e) => sayln!(&mut self.io, "error: {e}"),
                },
                Err(_) => sayln!(&mut self.io, "error: usage: forget <id> (the number add printed)"),
            },
            _ => {
                // The prompt: the best text, then the question, cut to one line's worth.
                let mut prompt = [0u8; MAX_LINE];
                let mut len = 0;
                match k.ask(text) {
                    Ok(found) => {
                        t.last_ask = counter.map(|_| ticks());
                        if found.is_empty() {
                            return sayln!(&mut self.io, "Found: nothing");
                        }
                        for r in &found {
                            let similarity = libm::roundf(r.score.clamp(-1.0, 1.0) * 100.0) as i32;
                            sayln!(&mut self.io, "Found: {} (#{}, similarity {similarity}%)", r.text, r.id)?;
                        }
                        if let Some(best) = found.first() {
                            len = fill_prompt(&mut prompt, best.text, text);
                        }
                    }
                    Err(e) => return sayln!(&mut self.io, "error: {e}"),
                }
                if self.engine.context_len() == 0 {
                    return Ok(());
                }
                // Both pieces are whole `&str`s cut at character boundaries.
                let prompt = core::str::from_utf8(prompt.get(..len).unwrap_or_default()).unwrap_or_default();
                self.gen(prompt)
            }
        }
    }

    fn stats(&mut self) -> Result<(), IO::Error> {
        let t = self.totals;
        let arena = self.engine.arena_bytes();
        sayln!(&mut self.io, "engine: {}", self.engine.name())?;
        sayln!(
            &mut self.io,
            "arena RAM: {arena} bytes (activations + KV cache, {} positions)",
            self.engine.context_len()
        )?;
        self.report_peak_ram()?;
        sayln!(&mut self.io, "generations: {}, tokens generated: {}", t.generations, t.tokens_generated)?;
        if self.board.counter.is_some() && t.last_positions > 0 {
            sayln!(
                &mut self.io,
                "last generation: {} positions, {} {}/token",
                t.last_positions,
                t.last_ticks / t.last_positions,
                self.board.counter_unit
            )?;
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
            let unit = self.board.counter_unit;
            for (what, ticks) in [
                ("add", t.last_add),
                ("ask (embedding + retrieval)", t.last_ask),
                ("anomaly", t.last_anomaly),
            ] {
                if let Some(n) = ticks {
                    sayln!(&mut self.io, "last {what}: {n} {unit}")?;
                }
            }
        }
        sayln!(&mut self.io, "steps: {}", self.steps)
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
        let (mut sum, mut dropped) = (0u64, 0usize);
        for pos in 0..ctx {
            let start = counter();
            let next = self.engine.step(token, pos);
            let ticks = counter().wrapping_sub(start);
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
            dropped += Self::drain(&mut self.io)?;
        }
        let n = ctx.clamp(1, BENCH_AVERAGE) as u64;
        sayln!(
            &mut self.io,
            "{}/token average over positions 0-{}: {}",
            self.board.counter_unit,
            n - 1,
            sum / n
        )?;
        self.report_peak_ram()?;
        self.report_dropped(dropped)
    }
}

/// Writes `text`, a space and `question` into `buf`, the question cut at a character boundary
/// when both do not fit; returns the bytes written.
fn fill_prompt(buf: &mut [u8; MAX_LINE], text: &str, question: &str) -> usize {
    let mut len = 0;
    for piece in [text, " ", question] {
        let mut n = piece.len().min(MAX_LINE - len);
        while !piece.is_char_boundary(n) {
            n -= 1;
        }
        if let (Some(dst), Some(src)) = (buf.get_mut(len..len + n), piece.get(..n)) {
            dst.copy_from_slice(src.as_bytes());
        }
        len += n;
    }
    len
}
