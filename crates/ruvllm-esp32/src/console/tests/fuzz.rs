//! Console lines as hostile input: arbitrary byte streams in bursts, some arriving while a
//! generation runs, with Ctrl-C, overlong lines, invalid UTF-8 and bare CR / LF, into the
//! console with no model, the test engine and the built-in model's integer engine. Never a
//! panic, the type-ahead never holds more than `TYPEAHEAD` bytes, and the console still answers
//! `quit` afterwards. Cases per property: env `FUZZ_CASES` (default 64).

use super::*;
use crate::infer::IntState;
use crate::model::Model;
use proptest::prelude::*;
use std::vec;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

/// One piece of input: a real command line, random bytes, Ctrl-C, an overlong line, invalid
/// UTF-8, or line ends.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let commands = prop::sample::select(vec![
        "gen Once upon a time\n",
        "gen\n",
        "add The cat sleeps on the warm floor.\n",
        "ask where does the cat sleep\n",
        "anomaly zqxj\n",
        "forget 1\n",
        "stats\n",
        "stats json\n",
        "help\n",
        "info\n",
        "set steps 3\n",
        "set temp 0.8\n",
        "set echo off\n",
        "bench\n",
        "clear\n",
        "reset\n",
        "lora train My dog Biscuit.\n",
        "lora loss Biscuit sleeps.\n",
        "lora off\n",
        "lora reset 1 0.w2\n",
        "lora stats\n",
        "lora load\n",
    ]);
    prop_oneof![
        4 => commands.prop_map(|c| c.as_bytes().to_vec()),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        1 => Just(vec![0x03]),
        1 => (200usize..700, any::<u8>()).prop_map(|(n, b)| vec![b'x'.max(b & 0x7f); n]),
        1 => Just(b"\xff\xfe\xc3(\n".to_vec()),
        1 => prop::sample::select(vec![&b"\r"[..], b"\n", b"\r\n", b"\n\n\n", b"\x7f\x08"]).prop_map(<[u8]>::to_vec),
    ]
}

/// Bursts of pieces, each arriving after 0-3 polls of a busy console or when it reads.
fn bursts() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    let delay = prop_oneof![3 => 0usize..4, 1 => Just(usize::MAX)];
    let burst = (delay, prop::collection::vec(piece(), 1..8)).prop_map(|(d, p)| (d, p.concat()));
    prop::collection::vec(burst, 1..12)
}

/// Runs `bursts`, then `quit` once the console waits for input; its output.
fn run<E: Engine>(engine: E, bursts: &[(usize, Vec<u8>)]) -> String {
    let mut all: Vec<(usize, &[u8])> = bursts.iter().map(|(d, b)| (*d, b.as_slice())).collect();
    all.push((usize::MAX, b"\nquit\n"));
    let mut k = std::boxed::Box::new(Knowledge::new());
    let mut c = Console::with_knowledge(Script::timed(&all), engine, Board::PLAIN, &mut k);
    // Never more than the bound, whatever arrives.
    assert!(size_of::<TypeAhead>() < TYPEAHEAD + 64);
    c.run().unwrap();
    String::from_utf8_lossy(&c.io.out).into_owned()
}

/// What every session must show: the console answered `quit` last, and each report of lost
/// type-ahead names at most what was sent.
fn answered(out: &str, sent: usize) {
    assert!(out.ends_with("bye\r\n"), "{out}");
    for line in out.lines().filter(|l| l.contains("typed-ahead")) {
        let bytes: usize = line
            .split(['(', ' '])
            .filter_map(|w| w.parse().ok())
            .next_back()
            .unwrap_or_else(|| panic!("no byte count in {line:?}"));
        assert!(bytes <= sent, "{line} of {sent} bytes sent");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_input_without_a_model_or_with_the_test_engine(b in bursts()) {
        let sent = b.iter().map(|(_, b)| b.len()).sum();
        answered(&run(NoModel, &b), sent);
        answered(&run(Echo, &b), sent);
    }

    #[test]
    fn any_input_with_the_builtin_model(b in bursts()) {
        // 16 positions keep a generation short; the input is what matters here.
        let (words, len) = builtin();
        let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
        let model: Model<'_> = Model::from_gguf(bytes).unwrap();
        let mut arena = vec![0i32; IntState::arena_len(&model, 16)];
        let mut lora = std::boxed::Box::new(crate::lora::DeviceLora::EMPTY);
        let engine = IntegerEngine::new(&model, &mut arena, 16).unwrap().with_lora(&mut lora, 1);
        answered(&run(engine, &b), b.iter().map(|(_, b)| b.len()).sum());
    }
}
