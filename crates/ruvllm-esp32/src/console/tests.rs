//! The line discipline over a scripted stream and a stand-in engine: no model needed.

use super::*;
use crate::infer::GenStats;

mod commands;
mod fuzz;
mod lora;
mod memory;
use std::collections::VecDeque;
use std::vec::Vec;

/// Input arrives in bursts: `read_ready` only sees the current burst, and a blocking read
/// moves on to the next one, as a UART does while the console waits for the user. A burst may
/// instead arrive while the console is busy: after its first number of `read_ready` polls.
struct Script {
    bursts: VecDeque<(usize, VecDeque<u8>)>,
    out: Vec<u8>,
}

impl embedded_io::ErrorType for Script {
    type Error = core::convert::Infallible;
}

impl Script {
    /// Bursts that each wait for the console to read.
    fn new(bursts: &[&[u8]]) -> Script {
        Self::timed(&bursts.iter().map(|b| (usize::MAX, *b)).collect::<Vec<_>>())
    }

    /// Bursts that arrive after so many polls of a busy console (`usize::MAX`: never while
    /// busy).
    fn timed(bursts: &[(usize, &[u8])]) -> Script {
        Script {
            bursts: bursts.iter().map(|(t, b)| (*t, b.iter().copied().collect())).collect(),
            out: Vec::new(),
        }
    }

    fn drop_empty(&mut self) {
        while self.bursts.front().is_some_and(|(_, b)| b.is_empty()) {
            self.bursts.pop_front();
        }
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.drop_empty();
        let Some((_, burst)) = self.bursts.front_mut() else { return Ok(0) };
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
        loop {
            match self.bursts.front() {
                None => return Ok(false),
                Some((_, b)) if !b.is_empty() => return Ok(true),
                Some(_) => {}
            }
            // The current burst is used up: the next one arrives after its polls.
            match self.bursts.get_mut(1) {
                Some((0, _)) => {
                    self.bursts.pop_front();
                }
                Some((polls, _)) => {
                    *polls = polls.saturating_sub(1);
                    return Ok(false);
                }
                None => return Ok(false),
            }
        }
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

/// The built-in model (q8) in an aligned buffer, and its length.
pub(super) fn builtin() -> (Vec<u64>, usize) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    let bytes = std::fs::read(path).unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    (words, bytes.len())
}

/// Echoes the prompt, then "!" per generated position; answers with the fact's last word.
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
        _sampling: &mut Sampling,
        emit: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> crate::Result<GenStats> {
        if emit(prompt).is_break() {
            return Ok(GenStats { prompt_tokens: 1, generated: 0 });
        }
        for i in 0..steps {
            if emit(b"!").is_break() {
                return Ok(GenStats { prompt_tokens: 1, generated: i + 1 });
            }
        }
        Ok(GenStats { prompt_tokens: 1, generated: steps })
    }
    fn step(&mut self, token: u32, _pos: usize) -> crate::Result<u32> {
        Ok(token + 1)
    }
    fn bos(&self) -> u32 {
        1
    }
    fn answer(&mut self, fact: &str, _question: &str, out: &mut [u8]) -> crate::Result<usize> {
        let word = fact.trim_end_matches('.').rsplit(' ').next().unwrap_or_default().as_bytes();
        out[..word.len()].copy_from_slice(word);
        Ok(word.len())
    }
}

fn session(bursts: &[&[u8]], board: Board) -> String {
    run_script(Script::new(bursts), board)
}

fn run_script(script: Script, board: Board) -> String {
    let mut c = Console::new(script, Echo, board);
    c.run().unwrap();
    String::from_utf8_lossy(&c.io.out).into_owned()
}

/// What `add` says to a full store: how to make room.
fn full_error() -> String {
    format!("error: knowledge is full ({KNOWLEDGE_CAP} of {KNOWLEDGE_CAP} entries): forget <id> or clear makes room")
}

fn answers_help(out: &str) {
    assert!(out.trim_end().ends_with("leave (the QEMU board exits)\r\n> quit\r\nbye"), "{out}");
}

#[test]
fn gen_streams_the_prompt_then_the_continuation() {
    let out = session(&[b"set steps 3\r\n", b"gen Once upon\n", b"stats\n", b"quit\n"], Board::PLAIN);
    let rule = "========================================";
    let banner = format!(
        "{rule}\r\nRuvLLM ESP32 Ready!\r\n{rule}\r\nruvllm-esp32 console on host (echo)\r\n\
         context 16 positions, arena 1234 bytes\r\n\
         commands: gen <text>, add <text>, ask <query>, anomaly <text>, stats, features; type help\r\n> "
    );
    assert!(out.starts_with(&banner), "{out}");
    assert!(out.contains("> stats\r\nTokens: 3, Knowledge: 0\r\nengine: "), "{out}");
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
fn lines_typed_during_a_generation_run_in_order_after_it() {
    // The burst after `gen hi` arrives while it generates: every line is kept and run next.
    let commands = ["gen hi", "help", "set steps 2", "gen ab", "stats", "set seed 7", "quit"];
    let out =
        session(&[b"gen hi\nhelp\nset steps 2\ngen ab\nst", b"ats\nset seed 7\n", b"quit\n"], Board::PLAIN);
    assert!(!out.contains("error"), "{out}");
    let r = replies(&out, &commands).unwrap_or_else(|| panic!("a command was not run in order: {out}"));
    assert_eq!(r[0], "hi!!!!!!!!!!!!!!!!");
    assert!(r[1].starts_with("commands:"), "{}", r[1]);
    assert_eq!(&r[2..4], ["steps 2", "ab!!"]);
    assert!(r[4].starts_with("Tokens: 18, Knowledge: 0\r\n"), "{}", r[4]);
    assert_eq!(r[5], "seed 7");
    answers_help(&out.replace("> set seed 7\r\nseed 7\r\n", "leave (the QEMU board exits)\r\n"));
}

/// `n` lines `set seed 10`, `set seed 11`, ...: 12 bytes each.
fn seeds(n: usize) -> Vec<u8> {
    (10..10 + n).flat_map(|i| format!("set seed {i}\n").into_bytes()).collect()
}

#[test]
fn type_ahead_that_does_not_fit_is_dropped_by_whole_lines_and_reported_once() {
    // 60 lines of 12 bytes while a generation runs: the first 42 (504 bytes) fit the 512-byte
    // buffer; the 43rd and everything after it go, reported in one line. The burst ends in
    // the middle of a line whose rest arrives after the generation: it must not run either.
    assert_eq!(TYPEAHEAD, 512);
    let mut burst = b"gen hi\n".to_vec();
    burst.extend(seeds(60));
    burst.extend_from_slice(b"set seed 12");
    let out = session(&[&burst, b"77\nstats\n", b"quit\n"], Board::PLAIN);
    let error =
        "error: 19 typed-ahead lines (227 bytes) did not fit the 512-byte input buffer and were dropped; \
                 type them again\r\n";
    assert_eq!(out.matches("error").count(), 1, "{out}");
    assert!(out.contains(&format!("hi!!!!!!!!!!!!!!!!\r\n{error}> set seed 10\r\nseed 10\r\n")), "{out}");
    assert!(out.contains("> set seed 51\r\nseed 51\r\n> stats\r\n"), "{out}");
    assert!(!out.contains("seed 52") && !out.contains("77"), "{out}");
    assert!(out.contains("settings: steps 16, temp 0, seed 51\r\n"), "{out}");
    assert!(out.ends_with("> quit\r\nbye\r\n"), "{out}");
}

#[test]
fn ctrl_c_while_busy_stops_the_generation_and_drops_what_was_typed_before_it() {
    // Ctrl-C is never queued: the generation stops at once, `help` typed before it is
    // discarded (as a terminal's interrupt flushes its input), `stats` typed after it runs.
    let out = session(&[b"gen hi\nhelp\n\x03stats\n", b"quit\n"], Board::PLAIN);
    assert!(
        out.contains("> gen hi\r\nhi\r\n^C (dropped 1 typed-ahead line, 5 bytes)\r\n> stats\r\n"),
        "{out}"
    );
    assert!(out.contains("Tokens: 0, Knowledge: 0\r\n"), "{out}");
    assert!(!out.contains("commands:\r\n") && !out.contains("error"), "{out}");
    // Mid-generation, with nothing typed before it: only the generation stops.
    let script =
        Script::timed(&[(0, b"gen hi\n"), (1, b"\x03"), (usize::MAX, b"stats\n"), (usize::MAX, b"quit\n")]);
    let out = run_script(script, Board::PLAIN);
    assert!(out.contains("> gen hi\r\nhi!\r\n^C\r\n> stats\r\nTokens: 1, Knowledge: 0\r\n"), "{out}");
    // A bench stops too; at the prompt Ctrl-C drops the line being typed, as before.
    fn count() -> u64 {
        0
    }
    let board = Board { name: "test", counter: Some(count), counter_unit: "ticks", ram: None };
    let script = Script::timed(&[
        (0, b"bench\n"),
        (2, b"\x03"),
        (usize::MAX, b"hel\x03help\n"),
        (usize::MAX, b"quit\n"),
    ]);
    let out = run_script(script, board);
    assert!(out.contains("ticks/token at position 1: 0\r\n^C\r\n> "), "{out}");
    assert!(!out.contains("average"), "{out}");
    assert!(out.contains("> hel^C\r\n> help\r\ncommands:"), "{out}");
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

fn knowledge_session(bursts: &[&[u8]], engine: impl Engine, board: Board) -> String {
    let script = Script::new(bursts);
    let mut k = std::boxed::Box::new(Knowledge::new());
    let mut c = Console::with_knowledge(script, engine, board, &mut k);
    c.run().unwrap();
    String::from_utf8_lossy(&c.io.out).into_owned()
}

const FACTS: [&str; 8] = [
    "The cat sleeps on the warm kitchen floor every afternoon.",
    "Tom the dog likes to dig holes in the garden.",
    "Lily planted red flowers near the garden gate.",
    "The cat chases mice in the kitchen at night.",
    "The dog sleeps in the garden under the big tree.",
    "Lily gives the cat warm milk in the kitchen.",
    "Tom the dog barks at the cat in the garden.",
    "The red flowers in the garden smell sweet.",
];

fn add_facts() -> Vec<u8> {
    FACTS.iter().flat_map(|f| format!("add {f}\n").into_bytes()).collect()
}

#[test]
fn add_ask_anomaly_forget_and_stats() {
    let adds = add_facts();
    let out = knowledge_session(
        &[
            b"set steps 16\n",
            &adds,
            b"ask where does the cat sleep\n",
            b"anomaly The cat sleeps in the kitchen.\n",
            b"anomaly zqxj vvkw pplrt 9931 qqqq\n",
            b"forget 1\n",
            b"ask where does the cat sleep\n",
            b"add Bob fixes old bicycles.\n",
            b"stats\n",
            b"quit\n",
        ],
        Echo,
        Board::PLAIN,
    );
    for (i, f) in FACTS.iter().enumerate() {
        assert!(out.contains(&format!("> add {f}\r\nAdded knowledge #{}\r\n", i + 1)), "{out}");
    }
    // Best first: the sleeping cat, then (maybe) the other cat sentence.
    let ask = out.split("> ask where does the cat sleep\r\n").nth(1).unwrap();
    assert!(ask.starts_with(&format!("Found: {} (#1, similarity ", FACTS[0])), "{out}");
    // With a model, the answer from the best text on a line of its own (Echo: its last word).
    let last = FACTS[0].trim_end_matches('.').rsplit(' ').next().unwrap();
    assert!(ask.contains(&format!(")\r\nAnswer: {last}\r\n> ")), "{out}");
    assert!(out.contains("> anomaly The cat sleeps in the kitchen.\r\nNORMAL (score: "), "{out}");
    // Gibberish scores above the in-domain sentence. With 8 references the threshold leans on
    // the measured prior (`ANOMALY_PRIOR`), which keeps normal text flagged near 5% and, with so
    // few references, does not flag this one (docs/BENCHMARKS.md, calibration).
    let score = |text: &str| -> u32 {
        let r = out.split(&format!("> anomaly {text}\r\n")).nth(1).unwrap();
        r.split("score: ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap()
    };
    assert!(score("zqxj vvkw pplrt 9931 qqqq") > score("The cat sleeps in the kitchen.") + 20, "{out}");
    // The ask before it is remembered quoting the fact: that memory goes with it.
    assert!(out.contains("> forget 1\r\nForgot knowledge #1 and the memory that quoted it\r\n"), "{out}");
    let again = out.split("> ask where does the cat sleep\r\n").nth(2).unwrap();
    assert!(!again.split("\r\n> ").next().unwrap().contains(FACTS[0]), "{out}");
    assert!(out.contains("> add Bob fixes old bicycles.\r\nAdded knowledge #"), "{out}");
    let k = Knowledge::new();
    assert!(
        out.contains(&format!(
            "knowledge: 8/{KNOWLEDGE_CAP} entries, RAG store {} bytes RAM (learned n-gram table, 64 dims)",
            k.rag_ram_bytes()
        )),
        "{out}"
    );
    assert!(out.contains(&format!("anomaly detector: 9/{ANOMALY_CAP} references, threshold ")), "{out}");
    assert!(out.contains(&format!(", {} bytes RAM (hashed n-grams)\r\n", k.detector_ram_bytes())), "{out}");
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn knowledge_errors_are_one_line_each_and_the_console_goes_on() {
    let long = format!("add {}\n", "x".repeat(KNOWLEDGE_TEXT + 1));
    let full: Vec<u8> =
        (0..KNOWLEDGE_CAP).flat_map(|i| format!("add fact number {i}\n").into_bytes()).collect();
    let out = knowledge_session(
        &[
            b"anomaly the cat\n",
            b"add\n",
            b"add    \n",
            long.as_bytes(),
            b"add !!! ???\n",
            b"ask the cat\n",
            b"add the cat sleeps\n",
            b"anomaly the cat\n",
            b"forget 7\n",
            b"forget 0\n",
            b"forget cat\n",
            b"forget 99999999999\n",
            b"ask\n",
            &full,
            b"help\nquit\n",
        ],
        Echo,
        Board::PLAIN,
    );
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    let expected = [
        "error: no text given (usage: add <text>)",
        "error: no text given (usage: add <text>)",
        "error: text is 129 bytes, a fact holds at most 128: shorten it or split it in two",
        "error: nothing stored: the text has no words, only symbols (write it with letters or digits)",
        "error: no knowledge #7",
        "error: no knowledge #0",
        "error: usage: forget <id> (the number add printed)",
        "error: usage: forget <id> (the number add printed)",
        "error: no text given (usage: ask <query>)",
        &full_error(),
    ];
    let errors: Vec<String> = errors.iter().map(|e| e.trim_end_matches('\r').to_string()).collect();
    assert_eq!(errors, expected, "{out}");
    assert!(out.contains("> ask the cat\r\nNo results found\r\n> "), "{out}");
    // Before any add, and with one, `anomaly` gives a verdict (it needs no references).
    assert_eq!(out.matches("> anomaly the cat\r\nNORMAL (score: ").count(), 2, "{out}");
    answers_help(&out);
}

/// `anomaly` needs no setup: on a fresh console (no knowledge; this engine has no model, so
/// the text's characters alone are scored) the published examples get their verdicts and
/// symbols-only text is scored, not refused.
#[test]
fn anomaly_on_a_fresh_console_without_a_model() {
    let lines = [
        ("this is normal text", "NORMAL"),
        ("xkcd random gibberish 12345", "ANOMALY"),
        ("%%%% #### @@@@", "ANOMALY"),
        ("SELECT * FROM users WHERE id = 1 OR 1=1; --", "ANOMALY"),
        ("The cat sleeps in the kitchen.", "NORMAL"),
    ];
    let script: String = lines.iter().map(|(l, _)| format!("anomaly {l}\n")).collect();
    let out = knowledge_session(&[script.as_bytes(), b"quit\n"], NoModel, Board::PLAIN);
    for (line, verdict) in lines {
        assert!(out.contains(&format!("> anomaly {line}\r\n{verdict} (score: ")), "{line}: {out}");
    }
}

#[test]
fn without_a_model_ask_only_retrieves_and_without_knowledge_the_commands_say_so() {
    let adds = add_facts();
    let out =
        knowledge_session(&[&adds, b"ask garden flowers\n", b"gen hi\n", b"quit\n"], NoModel, Board::PLAIN);
    let ask = out.split("> ask garden flowers\r\n").nth(1).unwrap().split("\r\n> ").next().unwrap();
    // The two facts holding both words come first, in either order (they score within 1%).
    let first: Vec<&str> = ask.lines().take(2).collect();
    for (i, id) in [(2, 3), (7, 8)] {
        let want = format!("Found: {} (#{id}, similarity ", FACTS[i]);
        assert!(first.iter().any(|l| l.starts_with(&want)), "{out}");
    }
    assert!(ask.lines().all(|l| l.starts_with("Found: ")), "{out}");
    assert!(out.contains("> gen hi\r\nerror: no language model on this board\r\n"), "{out}");

    let out = session(&[b"add the cat\n", b"stats\n", b"quit\n"], Board::PLAIN);
    assert!(out.contains("error: this console has no knowledge store"), "{out}");
    assert!(!out.contains("knowledge:"), "{out}");
}

#[test]
fn knowledge_commands_are_measured_with_the_board_counter() {
    fn count() -> u64 {
        use core::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(7, Ordering::Relaxed)
    }
    let board = Board { name: "test", counter: Some(count), counter_unit: "ticks", ram: None };
    let out = knowledge_session(
        &[b"add the cat sleeps\nadd the dog digs\nask cat\nanomaly the cat digs\nstats\nquit\n"],
        NoModel,
        board,
    );
    assert!(out.contains("last add: 7 ticks\r\n"), "{out}");
    assert!(out.contains("last ask (embedding + retrieval): 7 ticks\r\n"), "{out}");
    assert!(out.contains("last anomaly: 7 ticks\r\n"), "{out}");
}

// ---- persistence (write-then-acknowledge) -------------------------------------------------

use crate::knowledge::{Learned, LoadReport};
use crate::store::{RamFlash, Store, RAM_SECTOR};

type RamStore = Store<RamFlash<Vec<u8>>>;

const STORE_SECTORS: usize = 8;

fn blank_store() -> RamStore {
    let len = (STORE_SECTORS * RAM_SECTOR) as u32;
    Store::open(RamFlash::new(vec![0xFF; len as usize]), 0..len).unwrap().0
}

fn reopen(store: RamStore) -> RamStore {
    let image = store.into_flash().into_inner();
    let len = image.len() as u32;
    Store::open(RamFlash::new(image), 0..len).unwrap().0
}

/// Runs a console saving to `store` over `knowledge`; returns its output.
fn saving_session(bursts: &[&[u8]], k: &mut Knowledge, store: &mut dyn KnowledgeStore) -> String {
    let script = Script::new(bursts);
    let mut c = Console::with_knowledge(script, NoModel, Board::PLAIN, k).saving_to(store);
    c.run().unwrap();
    String::from_utf8_lossy(&c.io.out).into_owned()
}

#[test]
fn saved_knowledge_survives_a_restart_and_forget_stays_forgotten() {
    let mut store = blank_store();
    let mut k = std::boxed::Box::new(Knowledge::new());
    let adds = add_facts();
    let out = saving_session(&[&adds, b"forget 2\n", b"stats\n", b"quit\n"], &mut k, &mut store);
    assert!(out.contains("Added knowledge #8\r\n") && out.contains("Forgot knowledge #2\r\n"), "{out}");
    assert!(out.contains("knowledge saving: on"), "{out}");
    assert!(!out.contains("error"), "{out}");

    let mut store = reopen(store);
    let mut again = std::boxed::Box::new(Knowledge::new());
    let restored = again.restore(&mut store).unwrap();
    assert_eq!(restored.entries, LoadReport { loaded: 7, skipped_corrupt: 0 });
    assert_eq!(restored.detector, LoadReport { loaded: 8, skipped_corrupt: 0 });
    assert_eq!(restored.to_string(), "knowledge: restored 7 entries, 8 detector references");
    assert_eq!(again.text(1), Some(FACTS[0]));
    assert_eq!(again.text(2), None);
    assert_eq!(again.threshold(), k.threshold());
    let out = saving_session(&[b"ask where does the cat sleep\n", b"quit\n"], &mut again, &mut store);
    assert!(out.contains(&format!("Found: {} (#1, similarity ", FACTS[0])), "{out}");
    // A restore needs an empty Knowledge.
    assert!(again.restore(&mut store).is_err());
}

/// A store whose call number `fail` (counting from 0, flush included) fails, once.
struct Failing {
    inner: RamStore,
    fail: Option<usize>,
}

impl Failing {
    fn step(&mut self) -> crate::Result<()> {
        match self.fail {
            Some(0) => {
                self.fail = None;
                Err(crate::Error::Storage { what: "test flash failure" })
            }
            Some(n) => {
                self.fail = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl KnowledgeStore for Failing {
    fn save_entry(&mut self, rag: &KnowledgeRag, slot: u16) -> crate::Result<()> {
        self.step()?;
        self.inner.save_entry(rag, slot)
    }
    fn save_learned(&mut self, d: &KnowledgeDetector, learned: Learned) -> crate::Result<()> {
        self.step()?;
        self.inner.save_learned(d, learned)
    }
    fn load(
        &mut self,
        rag: &mut KnowledgeRag,
        d: &mut KnowledgeDetector,
    ) -> crate::Result<(LoadReport, LoadReport)> {
        self.inner.load(rag, d)
    }
    fn flush(&mut self) -> crate::Result<()> {
        self.step()
    }
}

#[test]
fn a_failed_save_is_undone_and_reported_in_one_line() {
    // add = entry + detector + flush: fail at each of the three; forget = entry + flush.
    for fail_at in 0..3 {
        let mut store = Failing { inner: blank_store(), fail: None };
        let mut k = std::boxed::Box::new(Knowledge::new());
        let out = saving_session(&[b"add one cat\n", b"add two dogs\n"], &mut k, &mut store);
        assert!(out.contains("Added knowledge #2\r\n"), "{out}");
        let threshold = k.threshold();
        store.fail = Some(fail_at);
        let out = saving_session(&[b"add three birds sing\n", b"stats\n"], &mut k, &mut store);
        assert!(out.contains("> add three birds sing\r\nerror: not saved, nothing changed: storage: test flash failure\r\n> "), "{out}");
        assert_eq!((k.len(), k.references().0, k.threshold()), (2, 2, threshold), "fail at {fail_at}");
        // The store holds what RAM holds (the roll-back rewrote what the failed save wrote).
        let mut again = std::boxed::Box::new(Knowledge::new());
        let r = again.restore(&mut store).unwrap();
        assert_eq!(
            (r.entries.loaded, r.detector.loaded, r.skipped_corrupt()),
            (2, 2, 0),
            "fail at {fail_at}"
        );
    }
    for fail_at in 0..2 {
        let mut store = Failing { inner: blank_store(), fail: None };
        let mut k = std::boxed::Box::new(Knowledge::new());
        saving_session(&[b"add one cat\n", b"add two dogs\n"], &mut k, &mut store);
        store.fail = Some(fail_at);
        let out = saving_session(&[b"forget 1\n", b"ask one cat\n"], &mut k, &mut store);
        assert!(out.contains("> forget 1\r\nerror: not saved, nothing changed: "), "{out}");
        assert!(out.contains("Found: one cat (#1, similarity 100%)"), "{out}");
        assert_eq!(k.text(1), Some("one cat"));
    }
}

#[test]
fn boot_lines() {
    let r = Restored {
        entries: LoadReport { loaded: 5, skipped_corrupt: 1 },
        detector: LoadReport { loaded: 1, skipped_corrupt: 0 },
        damaged: 0,
    };
    assert_eq!(
        r.to_string(),
        "knowledge: restored 5 entries, 1 detector reference (1 corrupt record skipped)"
    );
    let r = Restored { damaged: 2, ..r };
    assert_eq!(
        r.to_string(),
        "knowledge: restored 5 entries, 1 detector reference (3 corrupt records skipped)"
    );
    let off = SavingOff(crate::Error::Corrupt { what: "x" });
    assert_eq!(
        off.to_string(),
        "knowledge: store unusable (corrupt store: x); left as it is, saving is off (knowledge kept in RAM only)"
    );
}

/// Power cut at every flash operation of a saved `add`: an acknowledged add is all there after
/// the reboot; an unacknowledged one is reported, undone in RAM, and after the reboot either
/// absent or (the cut came after the entry's record) present: never a corrupt record.
#[test]
fn a_power_cut_during_a_saved_add_never_loses_an_acknowledged_add() {
    use crate::store::sim::SimFlash;
    const SECTORS: usize = 4;
    let region = 0..(SECTORS * crate::store::sim::SECTOR) as u32;
    let mut base = SimFlash::new(SECTORS);
    {
        let (mut store, _) = Store::open(&mut base, region.clone()).unwrap();
        let mut k = std::boxed::Box::new(Knowledge::new());
        k.add_saved("one cat sleeps", &mut store).unwrap();
        k.add_saved("two dogs dig holes", &mut store).unwrap();
    }
    let mut acknowledged_at = None;
    for cut in 0.. {
        let mut sim = SimFlash::new(SECTORS);
        sim.data.clone_from(&base.data);
        let mut k = std::boxed::Box::new(Knowledge::new());
        let result = {
            let (mut store, _) = Store::open(&mut sim, region.clone()).unwrap();
            k.restore(&mut store).unwrap();
            let at = store.flash().ops + cut;
            store.flash().cut_at(at);
            k.add_saved("three birds sing", &mut store)
        };
        let lost = sim.power_lost();
        match &result {
            Ok(_) => assert!(!lost, "cut {cut}: acknowledged although the power was lost"),
            Err(e) => {
                assert!(matches!(e, KnowledgeError::NotSaved(_)), "cut {cut}: {e:?}");
                assert_eq!((k.len(), k.references().0), (2, 2), "cut {cut}: not undone in RAM");
            }
        }
        sim.power_on();
        let (mut store, _) = Store::open(&mut sim, region.clone()).unwrap();
        let mut again = std::boxed::Box::new(Knowledge::new());
        let r = again.restore(&mut store).unwrap();
        // No record decodes badly; the item the cut tore may be counted as damaged.
        assert_eq!(r.entries.skipped_corrupt + r.detector.skipped_corrupt, 0, "cut {cut}");
        assert!(r.damaged <= 1, "cut {cut}: {r}");
        assert!((2..=3).contains(&r.entries.loaded), "cut {cut}: {r}");
        assert_eq!(again.text(1), Some("one cat sleeps"), "cut {cut}");
        if result.is_ok() {
            assert_eq!((r.entries.loaded, r.detector.loaded), (3, 3), "cut {cut}: {r}");
            acknowledged_at = Some(cut);
            break;
        }
    }
    // The add takes some flash operations, each of them cut once.
    assert!(acknowledged_at.is_some_and(|n| n > 3), "{acknowledged_at:?}");
}

#[path = "../../tests/data/bad_knowledge_lines.rs"]
mod bad_lines;
use bad_lines::bad_knowledge_lines;

/// The reply to each line of `out` after `> {cmd}`: the text up to the next prompt.
fn reply_after(out: &str, from: usize) -> (&str, usize) {
    let rest = &out[from..];
    let start = rest.find("\r\n").unwrap() + 2;
    let end = rest[start..].find("\r\n> ").unwrap() + start;
    (&rest[start..end], from + end + 2)
}

#[test]
fn bad_knowledge_input_gets_one_error_and_changes_nothing() {
    let mut bursts: Vec<Vec<u8>> = vec![add_facts()[..].to_vec(), b"stats\n".to_vec()];
    let bad = bad_knowledge_lines();
    for (line, _) in &bad {
        let mut l = line.clone();
        l.push(b'\n');
        bursts.push(l);
    }
    bursts.push(b"stats\nask where does the cat sleep\nanomaly The cat sleeps in the kitchen.\n".to_vec());
    let fill: Vec<u8> =
        (FACTS.len()..KNOWLEDGE_CAP).flat_map(|i| format!("add fact number {i}\n").into_bytes()).collect();
    bursts.push(fill);
    bursts.push(b"stats\nadd one too many\nstats\nask where does the cat sleep\nquit\n".to_vec());
    let refs: Vec<&[u8]> = bursts.iter().map(|b| &b[..]).collect();
    let out = knowledge_session(&refs, NoModel, Board::PLAIN);

    // Each bad line: exactly its expected reply, in order, right after the stats before them.
    let stats_at = out.find("> stats\r\n").unwrap();
    let (before, mut at) = reply_after(&out, stats_at);
    for (line, want) in &bad {
        let (got, next) = reply_after(&out, at);
        assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(&line[..line.len().min(40)]));
        at = next;
    }
    // Nothing was half-added: the same entries, references and threshold.
    let (after, _) = reply_after(&out, at);
    assert_eq!(after, before, "{out}");
    assert!(before.contains(&format!("knowledge: 8/{KNOWLEDGE_CAP} entries")), "{before}");
    assert!(
        before.contains(&format!("anomaly detector: 8/{ANOMALY_CAP} references, threshold ")),
        "{before}"
    );
    // And the console answers as before.
    let ask = out.split("> ask where does the cat sleep\r\n").nth(1).unwrap();
    assert!(ask.starts_with(&format!("Found: {} (#1, similarity ", FACTS[0])), "{out}");
    assert!(out.contains("> anomaly The cat sleeps in the kitchen.\r\nNORMAL (score: "), "{out}");

    // A full store: `add` names the capacity and changes nothing.
    let full = out.split("> add one too many\r\n").nth(1).unwrap().split("\r\n> ").next().unwrap();
    assert_eq!(full, full_error());
    let stats: Vec<&str> =
        out.split("> stats\r\n").skip(2).map(|s| s.split("\r\n> ").next().unwrap()).collect();
    assert_eq!(stats.len(), 3, "{out}");
    assert_eq!(stats[1], stats[2], "{out}");
    assert!(stats[2].contains(&format!("knowledge: {KNOWLEDGE_CAP}/{KNOWLEDGE_CAP} entries")), "{out}");
    assert!(stats[2].contains(&format!("anomaly detector: {ANOMALY_CAP}/{ANOMALY_CAP} references")), "{out}");
    let last_ask = out.rsplit("> ask where does the cat sleep\r\n").next().unwrap();
    assert!(last_ask.starts_with(&format!("Found: {} (#1, similarity ", FACTS[0])), "{out}");
}

/// After `clear` the detector starts again exactly as a new one: the same texts give the same
/// threshold (the measured prior included).
#[test]
fn clear_gives_back_a_new_detector() {
    let texts = ["one cat sleeps", "two dogs dig holes", "three birds sing", "four fish swim"];
    let mut fresh = std::boxed::Box::new(Knowledge::new());
    for t in texts {
        fresh.add(t).unwrap();
    }
    let mut k = std::boxed::Box::new(Knowledge::new());
    for t in ["a b c", "d e f", "g h i"] {
        k.add(t).unwrap();
    }
    k.clear_with(None).unwrap();
    for t in texts {
        k.add(t).unwrap();
    }
    assert_eq!(k.threshold(), fresh.threshold());
    assert_eq!(k.anomaly("zqxj vvkw").unwrap().score, fresh.anomaly("zqxj vvkw").unwrap().score);
}

/// Every chip holds the published 64 entries inside the RAM the chip plan reserves for the
/// knowledge; a host build holds more. Without `std` (`cargo test -p ruvllm-esp32 --lib`)
/// `Knowledge` is the chip's own type (its pointers are wider here than on a chip, so this
/// bounds the chip's figure); with `std` the chip's retrieval store is put in place of the host's.
#[test]
fn every_chip_holds_64_entries_within_the_plan_and_a_host_more() {
    use crate::knowledge::MicroRAG;
    use crate::model::chips::KNOWLEDGE_RESERVE;
    use core::mem::size_of;
    const { assert!(CHIP_KNOWLEDGE_CAP >= 64 && ANOMALY_CAP >= 64) };
    const { assert!(HOST_KNOWLEDGE_CAP > CHIP_KNOWLEDGE_CAP) };
    let k = Knowledge::new();
    let chip = match cfg!(feature = "std") {
        true => {
            assert_eq!(k.capacity(), HOST_KNOWLEDGE_CAP);
            size_of::<Knowledge>() - size_of::<KnowledgeRag>()
                + size_of::<MicroRAG<KNOWLEDGE_DIM, CHIP_KNOWLEDGE_CAP, KNOWLEDGE_TEXT>>()
        }
        false => {
            assert_eq!(k.capacity(), CHIP_KNOWLEDGE_CAP);
            k.ram_bytes()
        }
    };
    eprintln!("chip knowledge RAM {chip} bytes, reserve {KNOWLEDGE_RESERVE}");
    assert!(chip <= KNOWLEDGE_RESERVE, "{chip} > {KNOWLEDGE_RESERVE}");
}

/// A blank store of 64 KiB for a chip's 64 entries; with `std`, of the 256 KiB the CLI's
/// knowledge file has for the host's 256.
fn store_for_a_full_console() -> RamStore {
    let sectors = if KNOWLEDGE_CAP > CHIP_KNOWLEDGE_CAP { 64 } else { 16 };
    let len = (sectors * RAM_SECTOR) as u32;
    Store::open(RamFlash::new(vec![0xFF; len as usize]), 0..len).unwrap().0
}

/// The flash store has room for a full console, every fact at the longest a fact may be, and a
/// reboot restores all of them (a 64 KiB region for a chip's 64 entries; with `std`, the
/// host's 256 entries in the 256 KiB the CLI's knowledge file has).
#[test]
fn a_full_store_of_the_longest_facts_is_saved_and_restored() {
    let mut store = store_for_a_full_console();
    let mut k = std::boxed::Box::new(Knowledge::new());
    let fact = |i: usize| {
        let mut t = format!("fact {i}: the pump in shed {} runs at {} every day", i % 7, i * 13 % 97);
        while t.len() < KNOWLEDGE_TEXT {
            t.push('x');
        }
        t
    };
    for i in 0..KNOWLEDGE_CAP {
        assert_eq!(k.add_saved(&fact(i), &mut store), Ok(i as u32 + 1), "fact {i}");
    }
    assert_eq!(
        k.add_saved("one too many", &mut store),
        Err(KnowledgeError::Full { capacity: KNOWLEDGE_CAP })
    );
    let mut store = reopen(store);
    let mut again = std::boxed::Box::new(Knowledge::new());
    let restored = again.restore(&mut store).unwrap();
    assert_eq!(restored.entries, LoadReport { loaded: KNOWLEDGE_CAP, skipped_corrupt: 0 });
    assert_eq!(restored.detector.loaded, ANOMALY_CAP);
    for i in [0, KNOWLEDGE_CAP / 2, KNOWLEDGE_CAP - 1] {
        assert_eq!(again.text(i as u32 + 1), Some(&fact(i)[..]));
    }
}

/// A store the 32-entry console saved (32 entries, a detector of 32 references that has seen
/// 40 texts) loads whole, and the console then grows it to its capacity.
#[test]
fn a_store_saved_by_the_32_entry_console_loads_and_grows() {
    use crate::embed::{Embedder, NgramEmbedder, TableEmbedder};
    use crate::knowledge::persist::{save_detector, save_rag};
    use crate::knowledge::{AnomalyConfig, AnomalyDetector, MicroRAG, RAGConfig};
    let cfg = RAGConfig {
        max_text_bytes: KNOWLEDGE_TEXT,
        top_k: ASK_RESULTS,
        min_similarity: ASK_MIN_SIMILARITY,
        ..RAGConfig::default()
    };
    let mut rag = std::boxed::Box::new(MicroRAG::<KNOWLEDGE_DIM, 32, KNOWLEDGE_TEXT>::new(cfg));
    let mut detector = AnomalyDetector::<KNOWLEDGE_DIM, 32>::with_config(AnomalyConfig {
        prior: Some(ANOMALY_PRIOR),
        ..AnomalyConfig::default()
    });
    let mut table = TableEmbedder::<KNOWLEDGE_DIM>::from_bytes(super::knowledge::BUILTIN_TABLE).unwrap();
    let mut hashed = NgramEmbedder::<KNOWLEDGE_DIM>::new();
    let text =
        |i: usize| format!("old fact {i}: the {} lamp is in room {}", ["red", "blue", "green"][i % 3], i);
    for i in 0..40 {
        let (mut v, mut h) = ([0.0; KNOWLEDGE_DIM], [0.0; KNOWLEDGE_DIM]);
        table.embed(&text(i), &mut v).unwrap();
        hashed.embed(&text(i), &mut h).unwrap();
        if i < 32 {
            rag.add_knowledge(&text(i), &v).unwrap();
        }
        detector.learn(&h).unwrap();
    }
    let mut store = store_for_a_full_console();
    save_rag(&mut store, &rag).unwrap();
    save_detector(&mut store, &detector).unwrap();

    let mut store = reopen(store);
    let mut k = std::boxed::Box::new(Knowledge::new());
    let restored = k.restore(&mut store).unwrap();
    assert_eq!(restored.entries, LoadReport { loaded: 32, skipped_corrupt: 0 });
    assert_eq!(restored.detector, LoadReport { loaded: 32, skipped_corrupt: 0 });
    assert_eq!(k.text(32), Some(&text(31)[..]));
    assert_eq!(k.threshold(), detector.threshold());
    // The same answers as the old store gave.
    let q = "where is the green lamp of room 5";
    let mut v = [0.0; KNOWLEDGE_DIM];
    table.embed(q, &mut v).unwrap();
    let words = crate::knowledge::QuestionWords::new(&table, q);
    let found = rag.retrieve_matched(q, &v, ASK_RESULTS, |t| words.score(&table, t)).unwrap();
    let old: Vec<String> = found.iter().map(|r| r.text.to_string()).collect();
    let new: Vec<String> = k.ask(q).unwrap().iter().map(|r| r.text.to_string()).collect();
    assert_eq!(new, old);
    for i in 32..KNOWLEDGE_CAP {
        assert_eq!(k.add_saved(&format!("new fact number {i}"), &mut store), Ok(i as u32 + 1));
    }
    assert_eq!(k.len(), KNOWLEDGE_CAP);
    assert_eq!(k.references().0, ANOMALY_CAP);
}

/// A record holding a fact longer than an entry (written by another build, or damaged) is
/// skipped and counted at restore, never cut to fit.
#[test]
fn a_saved_fact_longer_than_an_entry_is_skipped_not_cut() {
    use crate::knowledge::persist::save_rag;
    use crate::knowledge::{MicroRAG, RAGConfig};
    let long = "a fact that is longer than the console's entry size ".repeat(4);
    assert!(long.len() > KNOWLEDGE_TEXT);
    let mut rag = std::boxed::Box::new(MicroRAG::<KNOWLEDGE_DIM, 4, 256>::new(RAGConfig {
        max_text_bytes: 256,
        ..RAGConfig::default()
    }));
    let mut v = [0.0; KNOWLEDGE_DIM];
    v[0] = 1.0;
    rag.add_knowledge("a short fact", &v).unwrap();
    v[1] = 1.0;
    rag.add_knowledge(&long, &v).unwrap();
    let mut store = blank_store();
    save_rag(&mut store, &rag).unwrap();
    let mut k = std::boxed::Box::new(Knowledge::new());
    let restored = k.restore(&mut store).unwrap();
    assert_eq!(restored.entries, LoadReport { loaded: 1, skipped_corrupt: 1 });
    assert_eq!((k.text(1), k.text(2)), (Some("a short fact"), None));
}

/// A board builds its Knowledge in its `static`, part by part: the same as a new one.
#[test]
fn knowledge_built_in_place_answers_as_a_new_one() {
    let mut slot = std::boxed::Box::new(core::mem::MaybeUninit::<Knowledge>::uninit());
    let k = Knowledge::init_in(&mut slot);
    assert_eq!(
        (k.len(), k.capacity(), k.references(), k.memory_use().len),
        (0, KNOWLEDGE_CAP, (0, ANOMALY_CAP), 0)
    );
    assert_eq!(k.retrieval_embedder(), Knowledge::new().retrieval_embedder());
    assert_eq!(k.add(FACTS[0]), Ok(1));
    assert_eq!(k.ask("where does the cat sleep").unwrap()[0].text, FACTS[0]);
}
