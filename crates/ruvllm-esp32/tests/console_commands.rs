//! Every console command, with good and bad input, on the built-in model (q8): the script
//! `tests/data/console_script.txt` (a leading `!` marks a line that must get exactly one
//! `error:` line) is the one the QEMU board test (crates/ruvllm-cli/tests/qemu_board.rs) runs
//! on the board and on the host's `console`. Also: sampling with `set temp` / `set seed` on
//! both engines, token-by-token streaming, and `stats json` parsed as JSON.

mod common;

use common::Stream;
use ruvllm_esp32::console::{
    replies, Board, Console, Engine, IntegerEngine, Knowledge, ReferenceEngine, Sampling,
};
use ruvllm_esp32::infer::{self, IntState, State};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::tokenizer;
use std::ops::ControlFlow;

const SCRIPT: &str = include_str!("data/console_script.txt");

fn builtin() -> common::Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    common::Image::new(&std::fs::read(path).unwrap())
}

/// The script's commands (without the `!`) and whether each must fail.
fn script() -> Vec<(&'static str, bool)> {
    SCRIPT.lines().map(|l| l.strip_prefix('!').map_or((l, false), |c| (c, true))).collect()
}

fn session(engine: impl Engine, input: &[u8]) -> String {
    let mut k = Box::new(Knowledge::new());
    let stream = Stream::new(input);
    let mut console = Console::with_knowledge(stream, engine, Board::PLAIN, &mut k);
    console.run().unwrap();
    let (stream, _, _) = console.into_parts();
    // The echo of the binary bytes is not UTF-8.
    String::from_utf8_lossy(&stream.out).into_owned()
}

/// The greedy text of `gen <prompt>` on the integer path, straight from the library.
fn greedy_int(model: &Model<'_>, prompt: &str, steps: usize) -> String {
    let mut tokens = vec![0u32; prompt.len() + 3];
    let n = tokenizer::encode(&model.vocab, prompt.as_bytes(), true, false, &mut tokens).unwrap();
    let mut arena = vec![0i32; IntState::arena_len(model, steps)];
    let mut state = IntState::new(model, &mut arena, steps).unwrap();
    let mut out = Vec::new();
    infer::generate_int(model, &mut state, &tokens[..n], steps, |b, _| out.extend_from_slice(b)).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn every_command_answers_good_and_bad_input_in_one_line_each() {
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let ctx = model.config.seq_len;
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let engine = IntegerEngine::new(&model, &mut arena, ctx).unwrap();
    let lines = script();
    let mut input: Vec<u8> = lines.iter().flat_map(|(c, _)| format!("{c}\n").into_bytes()).collect();
    // A 1 MB line and binary bytes, then a command that must still be answered.
    input.extend(std::iter::repeat_n(b'x', 1 << 20));
    input.extend_from_slice(b"\n\x00\x01\x02\xfe\xff\x1b[A\x7f\x80\n");
    input.extend_from_slice(b"info\nquit\n");
    let out = session(engine, &input);

    let commands: Vec<&str> = lines.iter().map(|(c, _)| *c).collect();
    let got = replies(&out, &commands).unwrap_or_else(|| panic!("a command was not echoed: {out}"));
    for ((command, fails), reply) in lines.iter().zip(&got) {
        if *fails {
            assert!(
                reply.starts_with("error: ") && !reply.contains('\n'),
                "{command:?} must get one error line, got {reply:?}"
            );
        } else {
            assert!(!reply.contains("error"), "{command:?}: {reply:?}");
        }
    }
    // The reply to the last `c` of the script.
    let reply = |c: &str| got[commands.iter().rposition(|x| *x == c).unwrap()];
    // Missing arguments and unknown commands name the command and its usage.
    for c in ["add", "ask", "anomaly", "forget", "set steps", "set temp", "set seed", "stats xml", "help me"]
    {
        assert!(
            reply(c).contains("usage: ") && reply(c).contains(c.split(' ').next().unwrap()),
            "{c}: {}",
            reply(c)
        );
    }
    assert_eq!(reply("frobnicate"), "error: unknown command \"frobnicate\" (type help)");
    assert_eq!(reply("set temp -1"), reply("set temp abc"));
    assert_eq!(reply("set temp 0.8"), "temp 0.8");
    assert_eq!(reply("set steps 40"), "steps 40");
    // The script's gen and ask exchanges were memories.
    assert_eq!(reply("clear"), "Cleared 2 knowledge entries and 3 anomaly references; forgot 5 memories");
    assert!(reply("reset").starts_with("reset: steps 256, temp 0 (greedy), seed 42; counters zeroed"));
    // help: one line per command, each command of the script among them.
    let help = reply("help");
    for c in [
        "gen",
        "add",
        "ask",
        "anomaly",
        "forget",
        "clear",
        "info",
        "features",
        "stats",
        "bench",
        "set steps",
        "set temp",
        "set seed",
        "set echo",
        "reset",
        "help",
        "quit",
    ] {
        assert_eq!(
            help.lines().filter(|l| l.trim_start().starts_with(&format!("{c} "))).count(),
            1,
            "{c}: {help}"
        );
    }
    // info: the model's own figures.
    let c = &model.config;
    let info = reply("info");
    assert!(
        info.contains(&format!(
            "layers {}, dim {}, hidden {}, heads {}, kv heads {}, vocab {}",
            c.n_layers, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads, c.vocab_size
        )),
        "{info}"
    );
    assert!(
        info.contains(&format!("parameters: {}, weights: {} bytes", c.n_params(), model.weight_bytes())),
        "{info}"
    );
    assert!(reply("features").contains("sampler: integer softmax"), "{}", reply("features"));
    // Sampling: the same seed repeats the text, another seed changes it, temp 0 is greedy.
    let gens: Vec<&str> =
        commands.iter().zip(&got).filter(|(c, _)| **c == "gen Once upon a time").map(|(_, r)| *r).collect();
    assert_eq!(gens.len(), 4);
    let greedy = greedy_int(&model, "Once upon a time", 40);
    assert_eq!(gens[3], greedy);
    assert_eq!(gens[0], gens[1], "same seed, same text");
    assert_ne!(gens[0], gens[2], "seeds 7 and 8 gave the same text");
    assert_ne!(gens[0], greedy, "temp 0.8 gave the greedy text");
    // stats json parses, before and after reset.
    let jsons: Vec<serde_json::Value> = commands
        .iter()
        .zip(&got)
        .filter(|(c, _)| c.starts_with("stats ") && !c.ends_with("xml"))
        .map(|(_, r)| serde_json::from_str(r).unwrap_or_else(|e| panic!("{r}: {e}")))
        .collect();
    assert_eq!(jsons.len(), 3);
    assert_eq!(jsons[0]["generations"], 0);
    assert_eq!(jsons[0]["arena"], serde_json::Value::Null);
    assert_eq!(jsons[0]["ram"]["arena"], IntState::ram_bytes(&model, ctx));
    assert_eq!(jsons[0]["ram"]["stack_high_water"], serde_json::Value::Null);
    assert_eq!(jsons[0]["ram"]["rag_store"], Knowledge::new().rag_ram_bytes());
    assert_eq!(jsons[0]["entries"], 0);
    assert_eq!(jsons[0]["capacity"], ruvllm_esp32::console::KNOWLEDGE_CAP);
    assert_eq!((jsons[0]["memories"].as_u64(), jsons[0]["memory_capacity"].as_u64()), (Some(0), Some(32)));
    assert_eq!(jsons[2]["memories"], 0, "cleared");
    assert_eq!(jsons[2]["steps"], 256);
    assert_eq!(jsons[2]["seed"], 42);
    assert_eq!(jsons[2]["tokens_generated"], 0);
    let stats = reply("stats");
    // 4 gens before the reset (the ask answers without a generation).
    assert!(stats.contains("generations: 4, tokens generated: "), "{stats}");
    let ask = got[commands.iter().position(|x| *x == "ask where does the cat sleep").unwrap()];
    assert!(ask.ends_with("\r\nAnswer: on the warm kitchen floor"), "{ask}");
    assert!(stats.contains("settings: steps 40, temp 0, seed 8"), "{stats}");
    // The long line and the binary bytes: one error each, then the console still answers.
    let tail = out.rsplit("> stats json\r\n").next().unwrap();
    assert_eq!(tail.matches("error: line too long (max 255 bytes)").count(), 1, "{tail}");
    assert_eq!(tail.matches("error: ").count(), 2, "{tail}");
    assert!(tail.contains("model: llama-architecture GGUF image") && tail.ends_with("bye\r\n"), "{tail}");
}

/// `emit` is called for each token as the engine produces it: several calls, and as many
/// as the generation had printable pieces beyond the prompt.
fn streams(engine: &mut impl Engine, sampling: &mut Sampling) -> (String, usize) {
    let mut calls = 0;
    let mut text = Vec::new();
    let stats = engine
        .generate(b"Once upon a time", 40, sampling, &mut |piece| {
            calls += 1;
            text.extend_from_slice(piece);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(stats.generated > 10 && calls >= stats.generated, "{calls} pieces for {stats:?}");
    (String::from_utf8(text).unwrap(), calls)
}

#[test]
fn both_engines_sample_from_the_seed_and_stream_token_by_token() {
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let mut iarena = vec![0i32; IntState::arena_len(&model, 64)];
    let mut farena = vec![0f32; State::arena_len(&model, 64)];
    let mut int = IntegerEngine::new(&model, &mut iarena, 64).unwrap();
    let mut float = ReferenceEngine::new(&model, &mut farena, 64).unwrap();
    for (name, engine) in [("int", &mut int as &mut dyn EngineDyn), ("float", &mut float)] {
        let greedy = engine.text(&mut Sampling::GREEDY.clone());
        let (a, b, c) = (
            engine.text(&mut Sampling::new(800, 7)),
            engine.text(&mut Sampling::new(800, 7)),
            engine.text(&mut Sampling::new(800, 8)),
        );
        assert_eq!(a, b, "{name}: same seed");
        assert_ne!(a, c, "{name}: seeds 7 and 8");
        assert_ne!(a, greedy, "{name}: temp 0.8 is not greedy");
        // The RNG moves on: a second generation from the same state differs from the first.
        let mut s = Sampling::new(800, 7);
        assert_ne!(engine.text(&mut s), engine.text(&mut s), "{name}: the RNG did not move on");
        // What the console's Ctrl-C does: `emit` returning `Break` stops the engine there.
        let (calls, generated) = engine.stopped_at(6);
        assert_eq!(calls, 6, "{name}");
        assert!(generated <= 3, "{name}: {generated} tokens after the stop");
    }
    assert_eq!(int.text(&mut Sampling::GREEDY.clone()), greedy_int(&model, "Once upon a time", 40));
}

/// [`streams`] for either engine behind one trait object.
trait EngineDyn {
    fn text(&mut self, sampling: &mut Sampling) -> String;
    /// A greedy generation whose `emit` breaks at its `n`th call: the calls, the tokens made.
    fn stopped_at(&mut self, n: usize) -> (usize, usize);
}

impl<E: Engine> EngineDyn for E {
    fn text(&mut self, sampling: &mut Sampling) -> String {
        streams(self, sampling).0
    }

    fn stopped_at(&mut self, n: usize) -> (usize, usize) {
        let mut calls = 0;
        let mut emit = |_: &[u8]| {
            calls += 1;
            if calls == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let stats = self.generate(b"Once upon a time", 64, &mut Sampling::GREEDY.clone(), &mut emit).unwrap();
        (calls, stats.generated)
    }
}
