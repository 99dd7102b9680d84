//! `ruvllm-esp32 console` as a new user meets it: in a real pseudo-terminal (the test holds the
//! master side, as a terminal emulator would). Checks the banner, the echo of typed keys, that
//! backspace edits the line, that a generation streams (arrives in pieces while it runs) and
//! that `quit` ends the program.

mod pty;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The terminal side: everything the program printed so far, and how many reads it took.
struct Term {
    master: File,
    seen: Vec<u8>,
}

impl Term {
    /// Reads until `needle` appears after byte `from`; returns the reads it took.
    fn until(&mut self, from: usize, needle: &str, timeout: Duration) -> usize {
        let start = Instant::now();
        let mut reads = 0;
        while !String::from_utf8_lossy(&self.seen[from.min(self.seen.len())..]).contains(needle) {
            let left = timeout.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "no {needle:?} after {timeout:?}; the terminal shows:\n{}",
                    String::from_utf8_lossy(&self.seen)
                )
            });
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            let ms = PollTimeout::from(left.as_millis().min(1000) as u16);
            if poll(&mut fds, ms).unwrap() == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            let n = self.master.read(&mut buf).unwrap_or(0);
            self.seen.extend_from_slice(&buf[..n]);
            reads += 1;
        }
        reads
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

#[test]
fn the_console_in_a_terminal_echoes_edits_streams_and_quits() {
    let (master, _path, slave) = pty::open(false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .arg("console")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut t = Term { master, seen: Vec::new() };
    let long = Duration::from_secs(60);

    // The banner names the console and the built-in model, then the prompt.
    t.until(0, "type help", long);
    t.until(0, "> ", long);
    assert!(t.text().contains("ruvllm-esp32 console"), "{}", t.text());

    // Typed keys are echoed; a backspace erases the x before the line is sent.
    let mark = t.seen.len();
    t.master.write_all(b"set steps 200\r").unwrap();
    // The terminal echoes the line at once; the reply ends with the next prompt.
    t.until(mark, "\n> ", long);
    assert!(t.text()[mark..].contains("steps 200\r\r\n"), "{}", t.text());
    let mark = t.seen.len();
    t.master.write_all(b"gen Once upon a tix").unwrap();
    t.until(mark, "gen Once upon a tix", long);
    let mark = mark + t.text()[mark..].find("gen Once upon a tix").unwrap();
    t.master.write_all(b"\x7fme\r").unwrap();
    // Streaming: the echo and the continuation arrive in several pieces, not in one block.
    let reads = t.until(mark, "\r\n> ", long);
    let out = String::from_utf8_lossy(&t.seen[mark..]).into_owned();
    assert!(out.contains("tix\x08 \x08me"), "{out:?}");
    let answer = out.split_once("\r\n").map(|x| x.1).unwrap_or("");
    assert!(answer.starts_with("Once upon a time"), "{out:?}");
    assert!(reads >= 2, "the generation arrived in {reads} read:\n{out}");

    // A line of binary bytes: one error line, then the console still answers.
    let mark = t.seen.len();
    t.master.write_all(b"\x01\x02\xff\xfe\r").unwrap();
    t.until(mark, "error:", long);
    t.until(mark, "\n> ", long);
    let mark = t.seen.len();
    t.master.write_all(b"help\r").unwrap();
    t.until(mark, "gen <text>", long);

    t.master.write_all(b"quit\r").unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(start.elapsed() < long, "quit did not end the console:\n{}", t.text());
        std::thread::sleep(Duration::from_millis(20));
    }
}
