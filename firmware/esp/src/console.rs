//! TEMPORARY line console, to be replaced by the library's `ruvllm_esp32::console` when that
//! lands: the swap is one call in `main` (`run_temporary_console(...)` becomes
//! `Console::new(uart, engine, board).run()` with an engine over `IntState`), after which this
//! file is deleted. Kept deliberately small: echo, a bounded line buffer with an error line for
//! overlong lines, `help`, and `gen <text>` streaming greedy text from the integer path.

use embedded_io::{Read, ReadReady, Write};
use ruvllm_esp32::infer::{generate_int, IntState};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::tokenizer;

/// Longest command line, in bytes (the library console's limit too).
pub const LINE_MAX: usize = 255;
/// Positions one `gen` runs, prompt included (clamped to the state's context).
pub const GEN_STEPS: usize = 256;

const HELP: &str = "commands:\n  gen <text>   continue <text> greedily (integer path), then print positions/s\n  help         this text\n";

/// Writes everything, turning '\n' into "\r\n" for serial terminals; TX errors are ignored
/// (there is nowhere else to report them).
fn put<W: Write>(w: &mut W, bytes: &[u8]) {
    for chunk in bytes.split_inclusive(|&b| b == b'\n') {
        match chunk.split_last() {
            Some((b'\n', head)) => {
                let _ = w.write_all(head);
                let _ = w.write_all(b"\r\n");
            }
            _ => {
                let _ = w.write_all(chunk);
            }
        }
    }
}

/// Reads and drops whatever arrived while a generation ran; returns how many bytes.
fn drain<IO: Read + ReadReady>(io: &mut IO) -> usize {
    let mut dropped = 0;
    let mut buf = [0u8; 16];
    while let Ok(true) = io.read_ready() {
        match io.read(&mut buf) {
            Ok(n) => dropped += n,
            Err(_) => break,
        }
    }
    dropped
}

/// Serves commands forever. `micros` is a monotonic microsecond clock for the speed figure.
pub fn run_temporary_console<IO, const L: usize>(
    io: &mut IO,
    model: &Model<'_, L>,
    state: &mut IntState<'_>,
    micros: fn() -> u64,
) -> !
where
    IO: Read + ReadReady + Write,
{
    let steps = GEN_STEPS.min(state.seq_len());
    let mut line = [0u8; LINE_MAX];
    let (mut len, mut overflow, mut after_cr) = (0usize, false, false);
    put(io, b"temporary console; type help\n> ");
    loop {
        let mut byte = [0u8; 1];
        let b = match io.read(&mut byte) {
            Ok(1) => byte[0],
            Ok(_) => continue,
            Err(_) => {
                // Framing, parity or FIFO overflow: the line is unreliable, drop it.
                put(io, b"\nerror: UART receive error, line dropped\n> ");
                (len, overflow) = (0, false);
                continue;
            }
        };
        let was_cr = core::mem::replace(&mut after_cr, b == b'\r');
        match b {
            b'\n' if was_cr => {}
            b'\r' | b'\n' => {
                put(io, b"\n");
                if core::mem::take(&mut overflow) {
                    let _ = write!(io, "error: line too long (max {LINE_MAX} bytes)\r\n");
                } else {
                    command(io, model, state, steps, micros, &line[..len]);
                }
                len = 0;
                put(io, b"> ");
            }
            0x08 | 0x7f => {
                if !overflow && len > 0 {
                    // One whole UTF-8 character: continuation bytes, then its lead byte.
                    len -= 1;
                    while len > 0 && line[len] & 0xC0 == 0x80 {
                        len -= 1;
                    }
                    put(io, b"\x08 \x08");
                }
            }
            _ if len < LINE_MAX && !overflow => {
                line[len] = b;
                len += 1;
                if b >= 0x20 {
                    put(io, &[b]);
                }
            }
            _ => overflow = true,
        }
    }
}

fn command<IO, const L: usize>(
    io: &mut IO,
    model: &Model<'_, L>,
    state: &mut IntState<'_>,
    steps: usize,
    micros: fn() -> u64,
    line: &[u8],
) where
    IO: Read + ReadReady + Write,
{
    let line = line.trim_ascii();
    let (word, rest) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], line[i + 1..].trim_ascii_start()),
        None => (line, &[][..]),
    };
    match word {
        b"" => {}
        b"help" => put(io, HELP.as_bytes()),
        b"gen" => gen(io, model, state, steps, micros, rest),
        _ => put(io, b"error: unknown command (type help)\n"),
    }
}

fn gen<IO, const L: usize>(
    io: &mut IO,
    model: &Model<'_, L>,
    state: &mut IntState<'_>,
    steps: usize,
    micros: fn() -> u64,
    prompt: &[u8],
) where
    IO: Read + ReadReady + Write,
{
    // BOS, the dummy-prefix space and at most one token per byte.
    let mut tokens = [0u32; LINE_MAX + 3];
    let n = match tokenizer::encode(&model.vocab, prompt, true, false, &mut tokens) {
        Ok(n) => n,
        Err(e) => {
            let _ = write!(io, "error: {e}\r\n");
            return;
        }
    };
    let mut dropped = 0;
    let start = micros();
    let result = generate_int(model, state, &tokens[..n], steps, |piece, _forced| {
        put(io, piece);
        let _ = io.flush();
        dropped += drain(io);
    });
    let elapsed = micros().wrapping_sub(start).max(1);
    dropped += drain(io);
    put(io, b"\n");
    match result {
        Ok(s) => {
            let positions = (s.prompt_tokens.saturating_sub(1) + s.generated) as u64;
            let tenths = positions * 10_000_000 / elapsed;
            let _ = write!(
                io,
                "[{} prompt + {} generated tokens, {} ms, {}.{} positions/s]\r\n",
                s.prompt_tokens,
                s.generated,
                elapsed / 1000,
                tenths / 10,
                tenths % 10
            );
        }
        Err(e) => {
            let _ = write!(io, "error: {e}\r\n");
        }
    }
    if dropped > 0 {
        let _ = write!(io, "error: {dropped} input bytes arrived during gen and were ignored\r\n");
    }
}
