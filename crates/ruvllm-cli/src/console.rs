//! `console`: the library's serial console on this machine's stdin/stdout, with the chip's
//! integer engine and the same knowledge store (`add`, `ask`, `anomaly`), so a session here
//! answers as the board does. `lora save` keeps the MicroLoRA adapter in the knowledge file.

use crate::image::Image;
use anyhow::{Context, Result};
use ruvllm_cli::snapshot::open_knowledge_file;
use ruvllm_esp32::console::{Board, Console, IntegerEngine, Knowledge, Speculation};
use ruvllm_esp32::infer::{IntState, Pattern};
use ruvllm_esp32::lora::{model_id, DeviceLora};
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

/// stdin/stdout as an embedded-io byte stream.
struct Stdio {
    stdin: std::io::Stdin,
    stdout: std::io::Stdout,
}

impl embedded_io::ErrorType for Stdio {
    type Error = std::io::Error;
}

impl embedded_io::Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdin.read(buf)
    }
}

impl embedded_io::ReadReady for Stdio {
    /// Lines typed or piped during a generation wait in the terminal's line buffer or the pipe
    /// (larger than the console's 512-byte type-ahead queue, and lossless) and run in order
    /// once it ends. A terminal turns Ctrl-C into SIGINT, which ends the program.
    fn read_ready(&mut self) -> std::io::Result<bool> {
        Ok(false)
    }
}

impl embedded_io::Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stdout.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stdout.flush()
    }
}

fn micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Runs the console; with `knowledge`, its knowledge is loaded from that snapshot file (if it
/// exists) and the file rewritten atomically after each `add` / `forget`, before the reply.
pub fn run(img: &Image, knowledge_file: Option<&Path>) -> Result<()> {
    let model = img.model()?;
    let seq = model.config.seq_len;
    // Room for every attention pattern (`set attention`) and, with two layers or more, an
    // early-exit draft of all layers but the last (`set speculative on`, gamma 2): the early
    // exit that keeps the most drafts (docs/BENCHMARKS.md, issue 17).
    let mut arena = vec![0i32; IntState::sparse_arena_len(&model, seq, Pattern::Full)];
    let mut lora = Box::new(DeviceLora::EMPTY);
    let engine = IntegerEngine::new(&model, &mut arena, seq)
        .with_context(|| format!("{}: the integer engine needs a q8 image with its RoPE table", img.origin))?
        .with_lora(&mut lora, model_id(img.bytes()));
    let draft = ruvllm_esp32::speculative::early_exit(&model, model.config.n_layers.saturating_sub(1));
    let mut spec_arena = vec![0i32; draft.as_ref().map_or(0, |d| Speculation::arena_len(&model, d, seq, 2))];
    let engine = match draft.as_ref().map(|d| Speculation::new(&model, d, &mut spec_arena, seq, 2)) {
        Ok(Ok(spec)) => engine.with_speculation(spec),
        _ => engine,
    };
    let board = Board { name: "host", counter: Some(micros), counter_unit: "us", ram: None };
    micros();
    let io = Stdio { stdin: std::io::stdin(), stdout: std::io::stdout() };
    let interactive = std::io::stdin().is_terminal();
    let mut knowledge = Box::new(Knowledge::new());
    let mut file = None;
    if let Some(path) = knowledge_file {
        // Read (and refused) before anything is shown or written.
        let (mut store, existed) = open_knowledge_file(path)?;
        if existed {
            let restored = knowledge.restore(&mut store).with_context(|| format!("{}", path.display()))?;
            ruvllm_cli::outln!("{restored} from {}", path.display());
        } else {
            ruvllm_cli::outln!("knowledge: {} does not exist yet; the first add creates it", path.display());
        }
        file = Some(store);
    }
    let mut console = Console::with_knowledge(io, engine, board, &mut knowledge);
    if let Some(store) = file.as_mut() {
        console = console.saving_to(store);
    }
    console.restore_adapter().context("console I/O")?;
    console.set_echo(!interactive);
    console.run().context("console I/O")?;
    Ok(())
}
