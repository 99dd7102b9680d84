//! Long prompts and texts (issue 14, item 7): a prompt that cannot fit the context is refused
//! before it is encoded, and encoding is O(n log n) for any bytes (llama2.c's merge loop took 3 s
//! for a 10 KB prompt and over 20 s for 40 KB, and `eval --text` fell back to it on one invalid
//! UTF-8 byte). Uses the built-in model only.

mod common;

use common::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary, killing it after `limit` (a quadratic encoder would run for minutes).
fn run_within(args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let out = wait_within(child, start, limit, "the command");
    (out, start.elapsed())
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_before_encoding() {
    let prompt = "Once upon a time, a little girl named Lily found a shiny red ball. ".repeat(600);
    assert!(prompt.len() > 40_000);
    let (out, took) = run_within(&["gen", "-p", &prompt, "-n", "256"], Duration::from_secs(60));
    fails_with(&out, "prompt");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn eval_encodes_a_long_text_with_an_invalid_byte_quickly() {
    let mut text = b"Tom had a big dog. The dog liked to run in the park with Tom. ".repeat(1600);
    text.insert(text.len() / 2, 0xff); // not UTF-8 any more
    let path = scratch("long-invalid.txt");
    std::fs::write(&path, &text).unwrap();
    let (out, _) = run_within(&["eval", "--text", s(&path)], Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tokens: usize = stdout.lines().find_map(|l| l.strip_prefix("tokens: ")).unwrap().parse().unwrap();
    assert!(tokens > 10_000, "{stdout}");
}
