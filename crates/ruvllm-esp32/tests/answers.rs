//! Grounded answers (`ask`'s `Answer:` line) on held-out facts: `testdata/knowledge/facts.tsv`
//! (156 everyday facts, none of them in the training corpus: ruvllm-train's
//! `held_out_facts_are_not_generated`), each asked with its two question forms, one sharing a
//! content word with the fact and one sharing none. The built-in model answers on the three
//! paths the console runs: f32 weights and q8 weights with float activations
//! ([`ReferenceEngine`]), and q8 on the integer-only path ([`IntegerEngine`]).
//!
//! Figures: `cargo test -p ruvllm-esp32 --test answers -- --nocapture` (docs/BENCHMARKS.md,
//! "Grounded answers").

mod common;

#[path = "common/fuzz.rs"]
mod fuzz;

use proptest::prelude::*;
use ruvllm_esp32::console::{Engine, IntegerEngine, ReferenceEngine};
use ruvllm_esp32::convert::Quant;
use ruvllm_esp32::infer::{IntState, State};
use ruvllm_esp32::model::Model;

const FACTS: &str = include_str!("../../../testdata/knowledge/facts.tsv");
/// The development set, written apart from the held-out facts (`knowledge_set`).
const DEV: &str = include_str!("../../../testdata/knowledge/dev.tsv");

/// Accuracy floors this model reaches (measured: see the module doc), per path and question form.
const FLOOR_SHARED: f64 = 0.7;
const FLOOR_PARAPHRASE: f64 = 0.65;

struct Row {
    fact: &'static str,
    questions: [&'static str; 2],
    answer: &'static str,
}

fn rows() -> Vec<Row> {
    let rows = rows_of(FACTS);
    assert!(rows.len() >= 150);
    rows
}

fn rows_of(tsv: &'static str) -> Vec<Row> {
    tsv.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 5, "{l}");
            Row { fact: c[1], questions: [c[2], c[3]], answer: c[4] }
        })
        .collect()
}

/// Lower-case ASCII words (letters and digits); everything else separates.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Whether `needle` is a contiguous run of `hay`.
fn run_of(hay: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The fact's clauses: split after `,` `;` `.` `!` `?` (followed by a space or the end) and
/// before the words "and", "but", "or".
fn clauses(fact: &str) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for raw in fact.split(' ') {
        let w = words(raw);
        if matches!(w.as_slice(), [x] if x == "and" || x == "but" || x == "or") {
            out.push(Vec::new());
            continue;
        }
        out.last_mut().unwrap().extend(w);
        if raw.ends_with([',', ';', '.', '!', '?']) {
            out.push(Vec::new());
        }
    }
    out
}

/// The score rule, once: an answer is right when its words equal the expected span's words, or
/// when it contains the expected span's words (contiguous), has at most 2 words more, and lies
/// within one clause of the fact (so neither the whole fact nor a run across clauses counts).
/// Words: see [`words`].
fn correct(produced: &str, expected: &str, fact: &str) -> bool {
    let (p, e) = (words(produced), words(expected));
    p == e || (run_of(&p, &e) && p.len() <= e.len() + 2 && clauses(fact).iter().any(|c| run_of(c, &p)))
}

/// Answers to every row's two questions: (shared-word, paraphrase) answers per row.
fn answers(engine: &mut dyn Engine, rows: &[Row]) -> Vec<[String; 2]> {
    rows.iter()
        .map(|r| {
            r.questions.map(|q| {
                let mut out = [0u8; 128];
                let n = engine.answer(r.fact, q, &mut out).unwrap_or_else(|e| panic!("{}: {e}", r.fact));
                String::from_utf8(out[..n].to_vec()).unwrap()
            })
        })
        .collect()
}

fn builtin() -> common::Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    common::Image::new(&std::fs::read(path).unwrap())
}

/// The built-in model with f32 weights (its q8 weights dequantized).
fn builtin_f32() -> common::Image {
    let host = ruvllm_esp32::convert::load_gguf(builtin().bytes()).unwrap();
    common::Image::new(&host.to_gguf(Quant::F32).unwrap())
}

/// Each path's answers to every row.
fn all_paths(rows: &[Row]) -> Vec<(&'static str, Vec<[String; 2]>)> {
    let (q8, f32w) = (builtin(), builtin_f32());
    let mut out = Vec::new();
    for (name, img) in [("f32", &f32w), ("q8", &q8)] {
        let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
        let ctx = model.config.seq_len;
        let mut arena = vec![0f32; State::arena_len(&model, ctx)];
        let mut engine = ReferenceEngine::new(&model, &mut arena, ctx).unwrap();
        out.push((name, answers(&mut engine, rows)));
    }
    let model: Model<'_> = Model::from_gguf(q8.bytes()).unwrap();
    let ctx = model.config.seq_len;
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let mut engine = IntegerEngine::new(&model, &mut arena, ctx).unwrap();
    out.push(("q8 integer", answers(&mut engine, rows)));
    out
}

#[test]
fn score_rule() {
    let fact = "The office opens at 8am and closes at 5pm.";
    assert!(correct("at 8am", "at 8am", fact));
    assert!(correct("8am", "8AM.", fact));
    assert!(correct("opens at 8am", "8am", fact));
    assert!(!correct("The office opens at 8am", "8am", fact), "3 words more");
    assert!(!correct("at 8am and closes at 5pm", "at 8am", fact), "two clauses");
    assert!(!correct("at 5pm", "at 8am", fact));
    assert!(!correct("", "at 8am", fact));
    assert!(!correct("8", "8am", fact));
}

/// Every answer on every path is a non-empty span of its fact, and the paths' accuracies reach
/// the floors.
#[test]
fn held_out_answers_are_spans_of_the_fact_and_mostly_right() {
    for (path, acc) in accuracies(&rows()) {
        assert!(acc[0] >= FLOOR_SHARED && acc[1] >= FLOOR_PARAPHRASE, "{path}: {acc:?}");
    }
}

/// The same on the development set (131 facts written by sessions that saw neither the
/// held-out facts nor the corpus's templates): how far the answers carry to other facts.
/// `cargo test --release -p ruvllm-esp32 --features std --test answers dev_set -- --ignored --nocapture`
#[test]
#[ignore = "a report (two minutes in release): the held-out test above is the one CI runs"]
fn dev_set_answers() {
    // Floors under the figures measured (0.42-0.44 and 0.48 on the first 50 facts; 0.51-0.52
    // and 0.52 on all 131).
    for (path, acc) in accuracies(&rows_of(DEV)) {
        assert!(acc[0] >= 0.4 && acc[1] >= 0.45, "{path}: {acc:?}");
    }
}

/// Each path's accuracy on the (shared-word, paraphrase) questions of `rows`, printed with
/// its misses; every answer must be a non-empty span of its fact.
fn accuracies(rows: &[Row]) -> Vec<(&'static str, [f64; 2])> {
    let mut out = Vec::new();
    for (path, answers) in all_paths(rows) {
        let mut right = [0usize; 2];
        for (r, a) in rows.iter().zip(&answers) {
            for (form, produced) in a.iter().enumerate() {
                assert!(
                    !produced.is_empty() && r.fact.contains(produced.as_str()),
                    "{path}: {produced:?} not in {:?}",
                    r.fact
                );
                if correct(produced, r.answer, r.fact) {
                    right[form] += 1;
                } else {
                    println!(
                        "{path} miss: {:?} / {:?} -> {produced:?} (expected {:?})",
                        r.fact, r.questions[form], r.answer
                    );
                }
            }
        }
        let acc = right.map(|n| n as f64 / rows.len() as f64);
        println!(
            "{path}: shared-word questions {}/{} = {:.3}, paraphrases {}/{} = {:.3}",
            right[0],
            rows.len(),
            acc[0],
            right[1],
            rows.len(),
            acc[1]
        );
        out.push((path, acc));
    }
    out
}

/// Pieces of hostile facts and questions: words and punctuation of real facts, joining words,
/// numbers, multi-byte characters, control bytes and runs of spaces.
const PIECES: &[&str] = &[
    "The",
    "meeting",
    "is",
    "at",
    "3pm",
    "on",
    "Thursday",
    "in",
    "room",
    "B",
    "Our",
    "neighbour",
    "Anna",
    "every",
    "17",
    "and",
    "or",
    "who",
    "if",
    ".",
    ",",
    ";",
    ":",
    "!",
    "?",
    "-",
    "'s",
    "é",
    "日本",
    "🦀",
    "\t",
    "\u{0}",
    "\u{1b}[2J",
    "   ",
    "when",
    "what",
    "time",
    "day",
    "is,",
    "at.",
    "4.5",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

fn text(parts: &[(usize, bool)]) -> String {
    parts
        .iter()
        .map(|&(i, space)| format!("{}{}", PIECES[i % PIECES.len()], if space { " " } else { "" }))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Any fact and question, on the integer path the chips run: an answer or an error, never a
    /// panic, and an answer is always a piece of the fact.
    #[test]
    fn any_fact_and_question_get_a_span_of_the_fact_or_an_error(
        fact in prop::collection::vec((any::<usize>(), any::<bool>()), 0..80),
        question in prop::collection::vec((any::<usize>(), any::<bool>()), 0..30),
    ) {
        let (fact, question) = (text(&fact), text(&question));
        let img = builtin();
        let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
        let ctx = model.config.seq_len;
        let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
        let mut engine = IntegerEngine::new(&model, &mut arena, ctx).unwrap();
        let mut out = [0u8; 128];
        if let Ok(n) = engine.answer(&fact, &question, &mut out) {
            let got = std::str::from_utf8(&out[..n]).unwrap();
            prop_assert!(fact.contains(got), "{got:?} not in {fact:?}");
        }
    }
}
