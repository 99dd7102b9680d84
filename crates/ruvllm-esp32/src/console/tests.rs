//! The line discipline over a scripted stream and a stand-in engine: no model needed.

use super::*;
use crate::infer::GenStats;
use std::collections::VecDeque;
use std::vec::Vec;

/// Input arrives in bursts: `read_ready` only sees the current burst, and a blocking read
/// moves on to the next one, as a UART does while the console waits for the user.
struct Script {
    bursts: VecDeque<VecDeque<u8>>,
    out: Vec<u8>,
}

impl embedded_io::ErrorType for Script {
    type Error = core::convert::Infallible;
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        while self.bursts.front().is_some_and(|b| b.is_empty()) {
            self.bursts.pop_front();
        }
        let Some(burst) = self.bursts.front_mut() else { return Ok(0) };
        let mut n = 0;
        while n < buf.len() {
            let Some(b) = burst.pop_front() else { break };
            buf[n] = b;
            n += 1;
        }
        Ok(n)
    }
}

impl ReadReady for Script {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.bursts.front().is_some_and(|b| !b.is_empty()))
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Echoes the prompt, then "!" per generated position.
struct Echo;

impl Engine for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn context_len(&self) -> usize {
        16
    }
    fn arena_bytes(&self) -> usize {
        1234
    }
    fn generate(
        &mut self,
        prompt: &[u8],
        steps: usize,
        emit: &mut dyn FnMut(&[u8]),
    ) -> crate::Result<GenStats> {
        emit(prompt);
        for _ in 0..steps {
            emit(b"!");
        }
        Ok(GenStats { prompt_tokens: 1, generated: steps })
    }
    fn step(&mut self, token: u32, _pos: usize) -> crate::Result<u32> {
        Ok(token + 1)
    }
    fn bos(&self) -> u32 {
        1
    }
}

fn session(bursts: &[&[u8]], board: Board) -> String {
    let script =
        Script { bursts: bursts.iter().map(|b| b.iter().copied().collect()).collect(), out: Vec::new() };
    let mut c = Console::new(script, Echo, board);
    c.run().unwrap();
    String::from_utf8_lossy(&c.io.out).into_owned()
}

fn answers_help(out: &str) {
    assert!(out.trim_end().ends_with("leave (the QEMU board exits)\r\n> quit\r\nbye"), "{out}");
}

#[test]
fn gen_streams_the_prompt_then_the_continuation() {
    let out = session(&[b"set steps 3\r\n", b"gen Once upon\n", b"stats\n", b"quit\n"], Board::PLAIN);
    assert!(out.starts_with("ruvllm-esp32 console on host (echo)\r\ncontext 16 positions, arena 1234 bytes"));
    assert!(out.contains("> gen Once upon\r\nOnce upon!!!\r\n> "), "{out}");
    assert!(out.contains("arena RAM: 1234 bytes"), "{out}");
    assert!(out.contains("tokens generated: 3"), "{out}");
    assert!(out.ends_with("bye\r\n"));
}

#[test]
fn bad_lines_each_get_one_error_and_the_console_goes_on() {
    let long = [b'a'; 300];
    let mut long_line = long.to_vec();
    long_line.push(b'\n');
    let out = session(
        &[
            &long_line,
            b"\xff\xfe bad\n",
            b"frobnicate\n",
            b"\x00\x01\x1b[A\n",
            b"set steps 0\n",
            b"help\nquit\n",
        ],
        Board::PLAIN,
    );
    assert_eq!(out.matches("error: line too long (max 255 bytes)").count(), 1, "{out}");
    assert!(out.contains("error: invalid UTF-8 at byte 0 of the line"), "{out}");
    assert!(out.contains("error: unknown command \"frobnicate\""), "{out}");
    assert!(out.contains("error: unknown command \"\\0\\u{1}\\u{1b}[A\""), "{out}");
    assert!(out.contains("error: steps must be a number in 1..=16"), "{out}");
    assert_eq!(out.matches("error:").count(), 5, "{out}");
    answers_help(&out);
}

#[test]
fn a_line_of_exactly_the_maximum_is_accepted() {
    let mut line = b"gen ".to_vec();
    line.resize(MAX_LINE, b'x');
    line.push(b'\n');
    let out = session(&[b"set steps 1\n", &line, b"quit\n"], Board::PLAIN);
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn bytes_typed_during_a_generation_are_drained_and_reported_once() {
    let out = session(&[b"gen hi\nhelp\nstats\n", b"help\n", b"quit\n"], Board::PLAIN);
    assert_eq!(out.matches("error: 11 input bytes arrived while busy and were ignored").count(), 1, "{out}");
    assert_eq!(out.matches("commands:").count(), 1, "{out}");
    answers_help(&out);
}

#[test]
fn backspace_removes_whole_characters() {
    let out = session(&["helq\x7fp\n".as_bytes(), "gen é\x08x\n".as_bytes(), b"quit\n"], Board::PLAIN);
    assert!(out.contains("commands:"), "{out}");
    assert!(out.contains("\r\nx!!!"), "{out}");
}

#[test]
fn bench_reports_each_position_and_the_average() {
    fn count() -> u64 {
        use core::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(5, Ordering::Relaxed)
    }
    fn ram() -> RamUse {
        RamUse { static_bytes: 100, stack_bytes: 20 }
    }
    let board = Board { name: "test", counter: Some(count), counter_unit: "ticks", ram: Some(ram) };
    let out = session(&[b"bench\n", b"quit\n"], board);
    assert!(out.contains("ticks/token at position 1: 5\r\n"), "{out}");
    assert!(out.contains("ticks/token at position 15: 5\r\n"), "{out}");
    assert!(out.contains("ticks/token average over positions 0-15: 5\r\n"), "{out}");
    assert!(out.contains("peak RAM: 120 bytes (static 100 + stack high-water 20)"), "{out}");
    let plain = session(&[b"bench\n", b"quit\n"], Board::PLAIN);
    assert!(plain.contains("error: this board has no counter"), "{plain}");
}

#[test]
fn invalid_utf8_alone() {
    let out = session(&[b"\xff\xfe bad\n"], Board::PLAIN);
    assert!(out.contains("error: invalid UTF-8"), "{out:?}");
}

#[test]
fn end_of_input_ends_the_console() {
    let out = session(&[b"help"], Board::PLAIN);
    assert!(out.ends_with("> help"), "{out}");
}
