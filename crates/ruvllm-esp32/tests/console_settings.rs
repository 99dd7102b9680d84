//! The console's `set attention <pattern>` and `set speculative on|off`: thin callers of the
//! library's sparse attention and speculative decoder, checked against the library itself, and
//! one error line naming the values for each bad setting.

mod common;

use ruvllm_esp32::console::{replies, Board, Console, Engine, IntegerEngine, ReferenceEngine, Speculation};
use ruvllm_esp32::infer::{self, IntState, Pattern, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::Sampler;
use ruvllm_esp32::tokenizer;

const PROMPT: &str = "Once upon a time";
const STEPS: usize = 60;

fn builtin() -> common::Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    common::Image::new(&std::fs::read(path).unwrap())
}

/// Each command's reply in a session that runs `commands`.
fn session(engine: impl Engine, commands: &[&str]) -> Vec<String> {
    let input: String = commands.iter().map(|c| format!("{c}\n")).collect();
    let mut console = Console::new(common::Stream::new(input.as_bytes()), engine, Board::PLAIN);
    console.set_echo(true);
    console.run().unwrap();
    let (stream, _, _) = console.into_parts();
    let out = String::from_utf8(stream.out).unwrap();
    let r = replies(&out, commands).unwrap_or_else(|| panic!("a command was not echoed: {out}"));
    r.iter().map(|r| r.to_string()).collect()
}

fn prompt_tokens(model: &Model<'_>) -> Vec<u32> {
    let mut tokens = vec![0u32; PROMPT.len() + 3];
    let n = tokenizer::encode(&model.vocab, PROMPT.as_bytes(), true, false, &mut tokens).unwrap();
    tokens.truncate(n);
    tokens
}

/// The library's greedy text with `pattern` on the integer path.
fn int_text(model: &Model<'_>, pattern: Pattern) -> String {
    let mut arena = vec![0i32; IntState::sparse_arena_len(model, STEPS, pattern)];
    let mut state = IntState::sparse(model, &mut arena, STEPS, pattern).unwrap();
    let mut out = Vec::new();
    infer::generate_int(model, &mut state, &prompt_tokens(model), STEPS, |b, _| out.extend_from_slice(b))
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// The library's greedy text with `pattern` on the float path (reference kernels).
fn float_text(model: &Model<'_>, pattern: Pattern) -> String {
    let mut arena = vec![0f32; State::sparse_arena_len(model, STEPS, pattern)];
    let mut state = State::sparse(model, &mut arena, STEPS, Kernels::REFERENCE, pattern).unwrap();
    let mut out = Vec::new();
    let mut sampler = Sampler::new(0.0, 0.0, 0, 1);
    infer::generate(model, &mut state, &mut sampler, &mut [], &prompt_tokens(model), STEPS, |b, _| {
        out.extend_from_slice(b)
    })
    .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn set_attention_and_set_speculative_run_the_library() {
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0i32; IntState::sparse_arena_len(&model, STEPS, Pattern::Full)];
    let draft = ruvllm_esp32::speculative::early_exit(&model, model.config.n_layers / 2).unwrap();
    let mut spec_arena = vec![0i32; Speculation::arena_len(&model, &draft, STEPS, 4)];
    let spec = Speculation::new(&model, &draft, &mut spec_arena, STEPS, 4).unwrap();
    let engine = IntegerEngine::new(&model, &mut arena, STEPS).unwrap().with_speculation(spec);
    let gen = format!("gen {PROMPT}");
    let steps = format!("set steps {STEPS}");
    let cmds = [
        steps.as_str(),
        "set attention strided:4",
        "info",
        &gen,
        "set speculative on",
        "set attention bigbird:1:8:2:5",
        "set attention full",
        "set speculative on",
        &gen,
        "set attention strided:4",
        "set speculative off",
        "set attention dilated:2",
        &gen,
        "set attention strided:0",
        &format!("set attention window:{}", STEPS + 1),
        "set attention sliding:4",
        "set attention bigbird:1:2",
        "set speculative maybe",
    ];
    let r = session(engine, &cmds);
    assert_eq!(r[1].trim(), "attention strided:4");
    assert!(r[2].contains("attention: strided:4"), "{}", r[2]);
    let strided = int_text(&model, Pattern::Strided(4));
    assert!(r[3].starts_with(&strided) && strided != int_text(&model, Pattern::Full), "{}", r[3]);
    assert!(r[4].starts_with("error: ") && r[4].contains("set attention full first"), "{}", r[4]);
    assert_eq!(r[5].trim(), "attention bigbird:1:8:2:5");
    assert_eq!(r[7].trim(), "speculative on");
    // Greedy speculation prints the target's own greedy text, and what the drafts did.
    let (text, stats) = r[8].split_once("\r\nspeculative: ").unwrap();
    assert_eq!(text, int_text(&model, Pattern::Full));
    assert!(stats.contains("drafts accepted") && stats.contains("tokens per target pass"), "{stats}");
    assert!(r[9].starts_with("error: ") && r[9].contains("set speculative off first"), "{}", r[9]);
    assert_eq!(r[10].trim(), "speculative off");
    let dilated = int_text(&model, Pattern::Dilated { gap: 2, count: STEPS });
    assert!(r[12].starts_with(&dilated) && !r[12].contains("speculative:"), "{}", r[12]);
    let one_error = |i: usize, want: &str| {
        assert!(
            r[i].starts_with("error: ") && r[i].contains(want) && r[i].trim().lines().count() == 1,
            "{}",
            r[i]
        )
    };
    one_error(13, &format!("a stride of 0 is outside 1..={STEPS}"));
    one_error(14, &format!("a window of {} positions is outside 1..={STEPS}", STEPS + 1));
    one_error(15, "unknown pattern sliding; use full, window:N");
    one_error(16, "write it as bigbird:GLOBAL:LOCAL:RANDOM[:SEED]");
    one_error(17, "usage: set steps");
}

#[test]
fn the_float_engine_takes_patterns_and_a_console_without_room_says_so() {
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0f32; State::sparse_arena_len(&model, STEPS, Pattern::Full)];
    let engine = ReferenceEngine::new(&model, &mut arena, STEPS).unwrap();
    let gen = format!("gen {PROMPT}");
    let steps = format!("set steps {STEPS}");
    let r = session(engine, &[&steps, "set attention bigbird:1:8:4:3", &gen, "set speculative on"]);
    assert!(
        r[2].starts_with(&float_text(&model, Pattern::BigBird { global: 1, local: 8, random: 4, seed: 3 }))
    );
    assert!(r[3].starts_with("error: ") && r[3].contains("no draft"), "{}", r[3]);
    // An engine built in the arena of full attention only has no scratch for a pattern.
    let mut small = vec![0i32; IntState::arena_len(&model, STEPS)];
    let engine = IntegerEngine::new(&model, &mut small, STEPS).unwrap();
    let r = session(engine, &["set attention strided:8", "set attention full", "set speculative on"]);
    assert!(
        r[0].starts_with("error: attention strided:8 needs ") && r[0].contains("this console has 0"),
        "{}",
        r[0]
    );
    assert!(r[2].starts_with("error: ") && r[2].contains("no room for a draft"), "{}", r[2]);
}
