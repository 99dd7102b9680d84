//! Anomaly detection on text, measured: ROC AUC of `knowledge::AnomalyDetector` over each
//! embedder, on a labelled set the project builds itself.
//! - Normal: sentences of the generated corpus (the built-in model's domain). The detector
//!   learns 200 of them (seed 7) into its 32 references; 150 others (seed 99) are scored.
//! - Anomalies, 60 of each kind: sentences from other domains (finance, law, chemistry,
//!   computing; `crates/ruvllm-esp32/tests/data/other_domain.txt`, written for this test),
//!   gibberish (random letters in word-like groups) and random tokens of the built-in vocabulary.
//!
//!
//! `no_setup_language_score` measures the console's `anomaly` itself (the language score of
//! `knowledge::language`, which needs no references, joined by the distance to 64 facts) on
//! `testdata/anomaly/` and fits its constants (see that test).
//!
//! `cargo test --release -p ruvllm-cli --test anomaly_eval -- --nocapture`

mod common;

use ruvllm_esp32::embed::{Embedder, ModelEmbedder, NgramEmbedder, Pooling, TableEmbedder};
use ruvllm_esp32::knowledge::{AnomalyConfig, AnomalyDetector, AnomalyPrior, PRIOR_COUNTS};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::vector::metric::SplitMix;

const DIM: usize = 64;
const SEQ: usize = 64;

/// The sentences of `docs` corpus documents for `seed`, at most `n`.
fn corpus_sentences(seed: u64, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for doc in (0..).map(|i| ruvllm_train::corpus::document(seed, i)) {
        for s in doc.split_inclusive(['.', '!', '?']) {
            let s = s.trim().trim_start_matches('"').trim();
            // dialogue fragments such as `"Yes!` are too short to say anything
            if s.split_whitespace().count() >= 4 && !out.contains(&s.to_string()) {
                out.push(s.to_string());
            }
            if out.len() == n {
                return out;
            }
        }
    }
    out
}

fn other_domain() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-esp32/tests/data/other_domain.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn gibberish(n: usize, rng: &mut SplitMix) -> Vec<String> {
    (0..n)
        .map(|_| {
            let words = 5 + rng.below(8);
            let w: Vec<String> = (0..words)
                .map(|_| (0..2 + rng.below(7)).map(|_| (b'a' + rng.below(26) as u8) as char).collect())
                .collect();
            w.join(" ")
        })
        .collect()
}

/// Random tokens of the vocabulary (skipping the special and byte-fallback ones), decoded as
/// generation prints them (the image's pieces mark spaces with U+2581).
fn random_tokens(model: &Model<'_>, n: usize, rng: &mut SplitMix) -> Vec<String> {
    let vocab = &model.vocab;
    let mut scratch = [0u8; ruvllm_esp32::tokenizer::DECODE_MAX];
    (0..n)
        .map(|_| {
            let mut s = String::new();
            while s.split_whitespace().count() < 6 {
                let id = 259 + rng.below(vocab.len() - 259) as u32;
                // After a token other than BOS: nothing is stripped.
                let text = ruvllm_esp32::tokenizer::decode(vocab, vocab.eos(), id, &mut scratch);
                s.push_str(&String::from_utf8_lossy(text));
            }
            s.trim().to_string()
        })
        .collect()
}

/// Area under the ROC curve: the probability that an anomaly scores above a normal text
/// (ties count half).
fn auc(normal: &[f32], anomalous: &[f32]) -> f64 {
    let mut wins = 0.0;
    for &a in anomalous {
        for &n in normal {
            wins += if a > n {
                1.0
            } else if a == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (normal.len() * anomalous.len()) as f64
}

struct Report {
    auc_all: f64,
    auc_by_kind: Vec<(&'static str, f64)>,
}

fn evaluate(
    name: &str,
    embed: &mut dyn FnMut(&str) -> [f32; DIM],
    learn: &[String],
    normal: &[String],
    kinds: &[(&'static str, Vec<String>)],
) -> Report {
    let mut det: AnomalyDetector<DIM, 32> = AnomalyDetector::with_config(AnomalyConfig::default());
    for s in learn {
        det.learn(&embed(s)).unwrap();
    }
    let score = |det: &AnomalyDetector<DIM, 32>, e: &mut dyn FnMut(&str) -> [f32; DIM], t: &[String]| {
        t.iter().map(|s| det.try_check(&e(s)).unwrap()).collect::<Vec<_>>()
    };
    let normal_r = score(&det, embed, normal);
    let normal_s: Vec<f32> = normal_r.iter().map(|r| r.score).collect();
    let fpr = normal_r.iter().filter(|r| r.is_anomaly).count() as f64 / normal.len() as f64;
    let mut all = Vec::new();
    let mut by_kind = Vec::new();
    let mut caught = Vec::new();
    for (kind, texts) in kinds {
        let r = score(&det, embed, texts);
        let s: Vec<f32> = r.iter().map(|r| r.score).collect();
        by_kind.push((*kind, auc(&normal_s, &s)));
        caught.push(format!(
            "{kind} {:.2}",
            r.iter().filter(|r| r.is_anomaly).count() as f64 / texts.len() as f64
        ));
        all.extend(s);
    }
    let auc_all = auc(&normal_s, &all);
    let kinds_txt: Vec<String> = by_kind.iter().map(|(k, a)| format!("{k} {a:.3}")).collect();
    println!(
        "{name:<34} ROC AUC {auc_all:.3} ({}); at the calibrated threshold {:.3}: normal flagged {fpr:.2}, caught: {}",
        kinds_txt.join(", "),
        det.threshold().unwrap(),
        caught.join(", ")
    );
    Report { auc_all, auc_by_kind: by_kind }
}

#[test]
fn anomaly_roc_auc_with_both_embedders() {
    let learn = corpus_sentences(7, 200);
    let normal = corpus_sentences(99, 150);
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf")).unwrap();
    // GGUF tensors are read in place: an 8-byte aligned copy.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    let model = <Model<'_>>::from_gguf(&bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()]).unwrap();
    let mut rng = SplitMix(0xA0A1);
    let kinds = vec![
        ("other domain", other_domain()),
        ("gibberish", gibberish(60, &mut rng)),
        ("random tokens", random_tokens(&model, 60, &mut rng)),
    ];
    assert!(kinds.iter().all(|(_, t)| t.len() == 60));
    println!(
        "normal: {} learned (32 kept), {} scored; anomalies: 60 of each kind; k 3, 95th percentile",
        learn.len(),
        normal.len()
    );

    let mut ngram = NgramEmbedder::<DIM>::new();
    let mut e = |t: &str| {
        let mut v = [0.0; DIM];
        ngram.embed(t, &mut v).unwrap();
        v
    };
    let ng = evaluate("ngram D=64", &mut e, &learn, &normal, &kinds);

    let table =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-esp32/data/ngram-table.bin")).unwrap();
    let mut learned = TableEmbedder::<DIM>::from_bytes(&table).unwrap();
    let mut e = |t: &str| {
        let mut v = [0.0; DIM];
        learned.embed(t, &mut v).unwrap();
        v
    };
    let lt = evaluate("learned ngram D=64", &mut e, &learn, &normal, &kinds);

    let mut arena = vec![0i32; ModelEmbedder::arena_len(&model, SEQ)];
    let mut me = ModelEmbedder::new(&model, &mut arena, SEQ, Pooling::Mean).unwrap();
    let mut e = |t: &str| {
        let mut v = [0.0; DIM];
        Embedder::<DIM>::embed(&mut me, t, &mut v).unwrap();
        v
    };
    let md = evaluate("model D=64 (integer path, mean)", &mut e, &learn, &normal, &kinds);

    // Floors a little under the measured figures: each fails if its embedder stops separating.
    // Measured 2026-11-26: ngram 0.824, model 0.696 overall.
    for (r, floor) in [(&ng, 0.78), (&lt, 0.5), (&md, 0.65)] {
        assert!(r.auc_all > floor, "{}", r.auc_all);
        assert!(r.auc_by_kind.iter().all(|(_, a)| *a > 0.5), "{:?}", r.auc_by_kind);
    }
}

fn ngram_embed(texts: &[String]) -> Vec<[f32; DIM]> {
    let mut ngram = NgramEmbedder::<DIM>::new();
    texts
        .iter()
        .map(|t| {
            let mut v = [0.0; DIM];
            ngram.embed(t, &mut v).unwrap();
            v
        })
        .collect()
}

/// The flagged fraction of `set` at `det`'s calibrated threshold.
fn flagged(det: &AnomalyDetector<DIM, 32>, set: &[[f32; DIM]]) -> f64 {
    set.iter().filter(|e| det.try_check(*e).unwrap().is_anomaly).count() as f64 / set.len() as f64
}

/// The prior of the console's detector, measured on corpus sentences that no other part of this
/// file uses (seeds 3 and 5): for each of `PRIOR_COUNTS` references (20 random draws from 200
/// sentences of seed 3), the 95th percentile (nearest rank) of the scores of 150 sentences of
/// seed 5; the floor is their median with 32 references.
fn measured_prior() -> AnomalyPrior {
    let pool = ngram_embed(&corpus_sentences(3, 200));
    let typical = ngram_embed(&corpus_sentences(5, 150));
    let mut prior = AnomalyPrior { thresholds: [0.0; 5], floor: 0.0 };
    for (t, &n) in prior.thresholds.iter_mut().zip(&PRIOR_COUNTS) {
        let mut scores = Vec::new();
        for draw in 0..20 {
            let det = learn_sample(&pool, n, 500 + draw, None);
            scores.extend(typical.iter().map(|e| det.score(e).unwrap()));
        }
        scores.sort_by(f32::total_cmp);
        *t = scores[(0.95 * scores.len() as f64).ceil() as usize - 1];
        if n == 32 {
            prior.floor = scores[scores.len() / 2];
        }
    }
    prior
}

/// A detector that learned `n` of `pool`, drawn without replacement by `seed`.
fn learn_sample(
    pool: &[[f32; DIM]],
    n: usize,
    seed: u64,
    prior: Option<AnomalyPrior>,
) -> AnomalyDetector<DIM, 32> {
    let mut pick = SplitMix(seed);
    let mut idx: Vec<usize> = (0..pool.len()).collect();
    for i in 0..n {
        let j = i + pick.below(idx.len() - i);
        idx.swap(i, j);
    }
    let mut det: AnomalyDetector<DIM, 32> =
        AnomalyDetector::with_config(AnomalyConfig { prior, ..AnomalyConfig::default() });
    for &i in &idx[..n] {
        det.learn(&pool[i]).unwrap();
    }
    det
}

/// Variants of `base` with word `at` replaced by each of `words` (those equal to the original
/// skipped).
fn variants(base: &str, at: usize, words: &[&str]) -> Vec<String> {
    let w: Vec<&str> = base.split_whitespace().collect();
    words
        .iter()
        .filter(|&&x| x != w[at])
        .map(|x| {
            let mut v = w.clone();
            v[at] = x;
            v.join(" ")
        })
        .collect()
}

/// The threshold at work, not just the ranking: for detectors that learned 4, 8, 16 or 32
/// corpus sentences (20 random draws each from the 200 of seed 7), the fraction of the 150
/// held-out normal sentences flagged and of each anomaly kind caught at the calibrated
/// threshold, without a prior (the percentile alone) and with the console's measured prior.
/// Then 32 near-identical references (one sentence with one word swapped): how many other
/// one-word variants of it are flagged.
///
/// `cargo test --release -p ruvllm-cli --test anomaly_eval calibrated -- --nocapture`
#[test]
fn calibrated_threshold_with_few_and_near_identical_references() {
    let prior = measured_prior();
    println!(
        "measured prior: thresholds {:.4?} at {PRIOR_COUNTS:?} references, floor {:.4}",
        prior.thresholds, prior.floor
    );

    let pool_text = corpus_sentences(7, 200);
    let pool = ngram_embed(&pool_text);
    let normal = ngram_embed(&corpus_sentences(99, 150));
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf")).unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    let model = <Model<'_>>::from_gguf(&bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()]).unwrap();
    let mut rng = SplitMix(0xA0A1);
    let kinds = [
        ("other domain", ngram_embed(&other_domain())),
        ("gibberish", ngram_embed(&gibberish(60, &mut rng))),
        ("random tokens", ngram_embed(&random_tokens(&model, 60, &mut rng))),
    ];

    // [config][n] -> (normal flagged, caught per kind)
    // The evaluation uses the console's constant, checked against the measurement at the end.
    let console = ruvllm_esp32::console::ANOMALY_PRIOR;
    let configs = [("percentile alone", None), ("with prior", Some(console))];
    let mut table = Vec::new();
    for (name, prior) in configs {
        let mut rows = Vec::new();
        for n in [4usize, 8, 16, 32] {
            let draws = 20;
            let (mut fpr, mut caught) = (0.0, [0.0; 3]);
            for draw in 0..draws {
                let det = learn_sample(&pool, n, 1000 + draw, prior);
                fpr += flagged(&det, &normal) / draws as f64;
                for (c, (_, set)) in caught.iter_mut().zip(&kinds) {
                    *c += flagged(&det, set) / draws as f64;
                }
            }
            println!(
                "{name:<17} {n:>2} references: normal flagged {fpr:.3}; caught: other domain {:.3}, gibberish {:.3}, random tokens {:.3}",
                caught[0], caught[1], caught[2]
            );
            rows.push((fpr, caught));
        }
        table.push(rows);
    }

    // Near-identical references: a corpus sentence, word 2 swapped for 32 corpus words; new
    // variants swap word 4 instead (slightly different, same sentence).
    let base = pool_text.iter().find(|s| s.split_whitespace().count() >= 8).unwrap();
    let mut vocab: Vec<&str> = pool_text.iter().flat_map(|s| s.split_whitespace()).collect();
    vocab.sort();
    vocab.dedup();
    let refs = ngram_embed(&variants(base, 2, &vocab[..33])[..32]);
    let others = ngram_embed(&variants(base, 4, &vocab[40..90]));
    let mut near = Vec::new();
    for (name, prior) in configs {
        let mut det: AnomalyDetector<DIM, 32> =
            AnomalyDetector::with_config(AnomalyConfig { prior, ..AnomalyConfig::default() });
        for e in &refs {
            det.learn(e).unwrap();
        }
        let (v, g) = (flagged(&det, &others), flagged(&det, &kinds[1].1));
        println!(
            "{name:<17} 32 near-identical references ({base:?}): threshold {:.3}, other variants flagged {v:.3}, gibberish caught {g:.3}",
            det.threshold().unwrap()
        );
        near.push((v, g));
    }

    // Margins from the measurements of 2026-11-26 (docs/BENCHMARKS.md). The percentile alone
    // flags ~9% of normal text with 4 or 8 references (its rank is the largest of a handful);
    // with the prior the rate stays near the 5% a 95th percentile promises at every count.
    let (old, new) = (&table[0], &table[1]);
    assert!(old[0].0 > 0.08 && old[1].0 > 0.08, "percentile alone: {old:?}");
    for (i, n) in [4, 8, 16, 32].iter().enumerate() {
        assert!((0.01..0.07).contains(&new[i].0), "normal flagged with {n} refs: {new:?}");
        // Detection follows from the scores' overlap (ROC AUC), but never drops to nothing.
        assert!(new[i].1.iter().all(|&c| c > 0.05), "caught with {n} refs: {new:?}");
    }
    // With a full set of references the prior costs no detection.
    assert!(new[3].1.iter().zip(old[3].1).all(|(n, o)| *n >= o - 0.01), "{old:?} {new:?}");
    // Near-identical references: the percentile alone flags almost every slight variant, the
    // floor accepts them and still catches gibberish.
    assert!(near[0].0 > 0.5 && near[1].0 < 0.1 && near[1].1 > 0.9, "{near:?}");
    // The console's constant is this measurement (rounded to hundredths), not a choice.
    for (c, m) in console.thresholds.iter().zip(prior.thresholds) {
        assert!((c - m).abs() < 0.005, "{console:?} vs {prior:?}");
    }
    assert!((console.floor - prior.floor).abs() < 0.005, "{console:?} vs {prior:?}");
}

// ---- The no-setup language score (`knowledge::language`, the console's `anomaly`) ----

/// A GGUF file read into 8-byte aligned words (its tensors are read in place).
struct Aligned(Vec<u64>, usize);

fn aligned(path: impl AsRef<std::path::Path>) -> Aligned {
    let bytes = std::fs::read(path).unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    Aligned(words, bytes.len())
}

impl Aligned {
    fn model(&self) -> Model<'_> {
        Model::from_gguf(&bytemuck::cast_slice::<u64, u8>(&self.0)[..self.1]).unwrap()
    }
}

/// Non-empty lines of `testdata/anomaly/<name>`.
fn testdata(name: &str) -> Vec<String> {
    let path = format!("{}/../../testdata/anomaly/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// `n` strings of `len_lo..=len_hi` characters of `alphabet`, split by a space every
/// `gap`-ish characters (`gap` 0: no spaces).
fn random_strings(
    n: usize,
    alphabet: &[u8],
    len: (usize, usize),
    gap: usize,
    rng: &mut SplitMix,
) -> Vec<String> {
    (0..n)
        .map(|_| {
            let l = len.0 + rng.below(len.1 - len.0 + 1);
            let mut s = String::new();
            for i in 0..l {
                if gap > 0 && i > 0 && rng.below(gap) == 0 && !s.ends_with(' ') {
                    s.push(' ');
                }
                s.push(alphabet[rng.below(alphabet.len())] as char);
            }
            s
        })
        .collect()
}

const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
];
const COMMON: &[&str] =
    &["the", "and", "go", "ha", "yes", "no", "data", "test", "ok", "buy", "now", "click", "la", "hello"];

/// Generated anomalies of each kind, `n` per kind, from `seed` (the dev and held-out splits
/// draw with different seeds).
fn generated_kinds(n: usize, seed: u64) -> Vec<(&'static str, Vec<String>)> {
    let mut rng = SplitMix(seed);
    let keys = b"qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM1234567890!@#$%^&*()_+-=[]{};:,./<>?";
    let symbols = b"%#@!*&^~-=+|/\\<>[]{}()$?;:";
    let hex = |rng: &mut SplitMix| -> String {
        let bytes: Vec<String> = (0..8 + rng.below(9)).map(|_| format!("{:02x}", rng.below(256))).collect();
        match rng.below(3) {
            0 => format!("{:08x}: {}", rng.below(1 << 20) * 16, bytes.join(" ")),
            1 => bytes.iter().map(|b| format!("0x{b}")).collect::<Vec<_>>().join(", "),
            _ => bytes.concat(),
        }
    };
    let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let blob = |rng: &mut SplitMix| -> String {
        if rng.below(2) == 0 {
            let mut s: String = (0..16 + rng.below(40)).map(|_| b64[rng.below(64)] as char).collect();
            s.push_str(["", "=", "=="][rng.below(3)]);
            s
        } else {
            // URL-encoded bytes with a few plain characters between them.
            (0..6 + rng.below(12))
                .map(|_| match rng.below(3) {
                    0 => ((b'a' + rng.below(26) as u8) as char).to_string(),
                    _ => format!("%{:02X}", rng.below(256)),
                })
                .collect()
        }
    };
    let repeated = |rng: &mut SplitMix| -> String {
        let times = 4 + rng.below(10);
        match rng.below(3) {
            0 => vec![COMMON[rng.below(COMMON.len())]; times].join(" "),
            1 => ((b'a' + rng.below(26) as u8) as char).to_string().repeat(times * 3),
            _ => {
                let w: String = (0..2 + rng.below(3)).map(|_| (b'a' + rng.below(26) as u8) as char).collect();
                vec![w; times].join(if rng.below(2) == 0 { " " } else { "" })
            }
        }
    };
    let digits = |rng: &mut SplitMix| -> String {
        let groups: Vec<String> = (0..3 + rng.below(6))
            .map(|_| (0..1 + rng.below(6)).map(|_| (b'0' + rng.below(10) as u8) as char).collect())
            .collect();
        groups.join([" ", "-", " ", ".", " / "][rng.below(5)])
    };
    let lorem = |rng: &mut SplitMix| -> String {
        let w: Vec<&str> = (0..5 + rng.below(8)).map(|_| LOREM[rng.below(LOREM.len())]).collect();
        w.join(" ")
    };
    let mut kinds = vec![("gibberish", gibberish(n, &mut rng))];
    kinds.push(("random keys", random_strings(n, keys, (8, 32), 9, &mut rng)));
    kinds.push(("symbols only", random_strings(n, symbols, (4, 20), 4, &mut rng)));
    for (kind, f) in [
        ("hex dump", &hex as &dyn Fn(&mut SplitMix) -> String),
        ("base64/url blob", &blob),
        ("repeated tokens", &repeated),
        ("digits", &digits),
        ("lorem ipsum", &lorem),
    ] {
        kinds.push((kind, (0..n).map(|_| f(&mut rng)).collect()));
    }
    kinds
}

/// Every other line of `lines`: `dev` the even ones, else the odd ones.
fn half(lines: Vec<String>, dev: bool) -> Vec<String> {
    lines.into_iter().enumerate().filter(|(i, _)| (i % 2 == 0) == dev).map(|(_, l)| l).collect()
}

/// One split: normal lines (written everyday lines, then corpus sentences) and anomalies by
/// kind. Dev: even lines of the files, corpus seed 11, generation seed 0xD0; held-out: odd
/// lines, corpus seed 13, generation seed 0x4E1D.
struct Split {
    normal: Vec<String>,
    written_normal: usize,
    kinds: Vec<(&'static str, Vec<String>)>,
}

fn split(dev: bool) -> Split {
    let written = half(testdata("normal.txt"), dev);
    let written_normal = written.len();
    let mut normal = written;
    normal.extend(corpus_sentences(if dev { 11 } else { 13 }, 100));
    let mut kinds = generated_kinds(25, if dev { 0xD0 } else { 0x4E1D });
    kinds.push(("source code", half(testdata("code.txt"), dev)));
    kinds.push(("SQL/injection", half(testdata("sql.txt"), dev)));
    Split { normal, written_normal, kinds }
}

use ruvllm_esp32::console::{Engine, IntegerEngine, ReferenceEngine};
use ruvllm_esp32::knowledge::language::{self, LanguageCalibration, FEATURES, FEATURE_NAMES, TEXT_FEATURES};
use ruvllm_esp32::knowledge::TokenStats;

/// Features of each text, with the model's token statistics from the console's engine (the
/// integer path, the host console's and the chip's), or without a model.
fn featurize(engine: &mut Option<&mut dyn Engine>, texts: &[String]) -> Vec<[f32; FEATURES]> {
    texts
        .iter()
        .map(|t| {
            let stats: Option<TokenStats> =
                engine.as_mut().map(|e| e.token_stats(t.as_bytes()).unwrap().unwrap());
            language::features(t, stats.as_ref())
        })
        .collect()
}

/// A logistic regression on `normal` (label 0) and `anomalous` (1), classes weighted equally,
/// over the first `used` features standardized: full-batch gradient descent, fixed steps, a
/// little L2, all in f64 so the fit is reproducible. Threshold: the best balanced accuracy on
/// the same data, rounded to hundredths. Constants rounded to 4 significant decimals.
fn fit(normal: &[[f32; FEATURES]], anomalous: &[[f32; FEATURES]], used: usize) -> LanguageCalibration {
    let all: Vec<(&[f32; FEATURES], f64)> =
        normal.iter().map(|f| (f, 0.0)).chain(anomalous.iter().map(|f| (f, 1.0))).collect();
    let round = |x: f64, d: f64| ((x * d).round() / d) as f32;
    let (mut mean, mut scale) = ([0.0f32; FEATURES], [0.0f32; FEATURES]);
    for i in 0..used {
        let m = all.iter().map(|(f, _)| f[i] as f64).sum::<f64>() / all.len() as f64;
        let v = all.iter().map(|(f, _)| (f[i] as f64 - m).powi(2)).sum::<f64>() / all.len() as f64;
        mean[i] = round(m, 1e4);
        scale[i] = if v > 1e-12 { round(v.sqrt(), 1e4).max(1e-4) } else { 0.0 };
    }
    let x: Vec<(Vec<f64>, f64, f64)> = all
        .iter()
        .map(|(f, y)| {
            let z = (0..used)
                .map(|i| if scale[i] > 0.0 { (f[i] - mean[i]) as f64 / scale[i] as f64 } else { 0.0 })
                .collect();
            let w = if *y > 0.5 { 0.5 / anomalous.len() as f64 } else { 0.5 / normal.len() as f64 };
            (z, *y, w)
        })
        .collect();
    let (mut w, mut b) = (vec![0.0f64; used], 0.0f64);
    for _ in 0..4000 {
        let (mut gw, mut gb) = (vec![0.0f64; used], 0.0f64);
        for (z, y, cw) in &x {
            let p = 1.0 / (1.0 + (-(b + z.iter().zip(&w).map(|(a, c)| a * c).sum::<f64>())).exp());
            let g = (p - y) * cw;
            gb += g;
            for (gi, zi) in gw.iter_mut().zip(z) {
                *gi += g * zi;
            }
        }
        b -= 0.5 * gb;
        for (wi, gi) in w.iter_mut().zip(&gw) {
            *wi -= 0.5 * (gi + 1e-3 * *wi);
        }
    }
    let mut cal =
        LanguageCalibration { mean, scale, weights: [0.0; FEATURES], bias: round(b, 1e4), threshold: 0.5 };
    for (c, x) in cal.weights.iter_mut().zip(&w) {
        *c = round(*x, 1e4);
    }
    let (ns, as_): (Vec<f32>, Vec<f32>) =
        (normal.iter().map(|f| cal.score(f)).collect(), anomalous.iter().map(|f| cal.score(f)).collect());
    let mut best = (0.0, 0.5);
    for t in 1..100 {
        let t = t as f32 / 100.0;
        let b = balanced_accuracy(&ns, &as_, t);
        if b > best.0 + 1e-9 {
            best = (b, t);
        }
    }
    cal.threshold = best.1;
    cal
}

/// Mean of the fraction of normal scores at or below `t` and of anomalous ones above it.
fn balanced_accuracy(normal: &[f32], anomalous: &[f32], t: f32) -> f64 {
    let tn = normal.iter().filter(|&&s| s <= t).count() as f64 / normal.len() as f64;
    let tp = anomalous.iter().filter(|&&s| s > t).count() as f64 / anomalous.len() as f64;
    (tn + tp) / 2.0
}

/// The text-only score of `text` (`ANOMALY_TEXT`), which decides alone above
/// `ANOMALY_TEXT_CERTAIN`.
fn text_score(text: &str) -> f32 {
    ruvllm_esp32::console::ANOMALY_TEXT.score(&language::features(text, None))
}

/// ROC AUC and balanced accuracy at `cal.threshold` (score through `verdict`, with the
/// references' distances when `refs` holds some), overall and per anomaly kind. With `cascade`,
/// as the console with a model: a text whose text-only score is above `ANOMALY_TEXT_CERTAIN`
/// or below `ANOMALY_TEXT_CLEAR` gets the text-only verdict (no forward pass); the count of such lines is reported.
fn report(
    name: &str,
    cal: &LanguageCalibration,
    refs: Option<&ConsoleDetector>,
    split: &Split,
    features: &(Vec<[f32; FEATURES]>, Vec<Vec<[f32; FEATURES]>>),
    cascade: bool,
) -> (f64, f64) {
    let mut ngram = NgramEmbedder::<DIM>::new();
    let mut by_text = 0usize;
    let mut verdict = |text: &str, f: &[f32; FEATURES]| {
        let distance = refs.and_then(|d| {
            let mut v = [0.0; DIM];
            ngram.embed(text, &mut v).ok()?;
            d.try_check(&v).ok()
        });
        let t = text_score(text);
        let decided = ruvllm_esp32::console::ANOMALY_TEXT_CLEAR..=ruvllm_esp32::console::ANOMALY_TEXT_CERTAIN;
        if cascade && !decided.contains(&t) {
            by_text += 1;
            return language::verdict(t, cal.threshold, distance).score;
        }
        language::verdict(cal.score(f), cal.threshold, distance).score
    };
    let ns: Vec<f32> = split.normal.iter().zip(&features.0).map(|(t, f)| verdict(t, f)).collect();
    let mut all = Vec::new();
    let mut kinds = Vec::new();
    for ((kind, texts), fs) in split.kinds.iter().zip(&features.1) {
        let s: Vec<f32> = texts.iter().zip(fs).map(|(t, f)| verdict(t, f)).collect();
        let caught = s.iter().filter(|&&x| x > cal.threshold).count();
        kinds.push(format!("{kind} {caught}/{}", s.len()));
        all.extend(s);
    }
    let (a, b) = (auc(&ns, &all), balanced_accuracy(&ns, &all, cal.threshold));
    let wn = &ns[..split.written_normal];
    if cascade {
        println!(
            "{name}: {by_text} of {} lines decided by the text alone (no forward pass)",
            ns.len() + all.len()
        );
    }
    println!(
        "{name}: {} normal ({} written), {} anomalous: ROC AUC {a:.3}, balanced accuracy {b:.3} at threshold {:.2} \
         (normal flagged {:.3}, written normal flagged {:.3}); caught: {}",
        ns.len(),
        split.written_normal,
        all.len(),
        cal.threshold,
        ns.iter().filter(|&&s| s > cal.threshold).count() as f64 / ns.len() as f64,
        wn.iter().filter(|&&s| s > cal.threshold).count() as f64 / wn.len() as f64,
        kinds.join(", ")
    );
    (a, b)
}

/// The console's detector: its capacity (64 references, so 64 facts are all kept).
type ConsoleDetector = AnomalyDetector<DIM, { ruvllm_esp32::console::ANOMALY_CAP }>;

/// A detector with the console's settings that learned `facts`.
fn fact_detector(facts: &[String]) -> ConsoleDetector {
    let prior = Some(ruvllm_esp32::console::ANOMALY_PRIOR);
    let mut det: ConsoleDetector =
        AnomalyDetector::with_config(AnomalyConfig { prior, ..AnomalyConfig::default() });
    for e in ngram_embed(facts) {
        det.learn(&e).unwrap();
    }
    det
}

/// 64 everyday facts (the first 64 of the knowledge set, `testdata/knowledge/facts.tsv`).
fn facts64() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/knowledge/facts.tsv");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Columns: domain, fact, questions..., after a header line.
    let facts: Vec<String> =
        text.lines().skip(1).filter_map(|l| l.split('\t').nth(1)).map(String::from).take(64).collect();
    assert_eq!(facts.len(), 64);
    facts
}

/// The no-setup anomaly score of the console, measured: fits the language score's constants on
/// the dev split (with the model's token statistics, and without a model), checks that they
/// are the console's `ANOMALY_LANGUAGE` / `ANOMALY_TEXT` (fails printing the new ones), then
/// reports ROC AUC and balanced accuracy at the printed threshold on the held-out split: with
/// no references, and with 64 facts added as references.
///
/// `cargo test -p ruvllm-cli --test anomaly_eval no_setup -- --nocapture`
#[test]
fn no_setup_language_score() {
    let image = aligned(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf"));
    let model = image.model();
    // The host console's engine: the integer path over the model's whole context.
    let seq = model.config.seq_len;
    let mut arena = vec![0i32; ruvllm_esp32::infer::IntState::arena_len(&model, seq)];
    let mut engine = IntegerEngine::new(&model, &mut arena, seq).unwrap();

    let (dev, held) = (split(true), split(false));
    let mut measured = Vec::new();
    for (name, with_model) in [("with the model", true), ("without a model", false)] {
        let mut e: Option<&mut dyn Engine> = if with_model { Some(&mut engine) } else { None };
        let feats = |s: &Split, e: &mut Option<&mut dyn Engine>| {
            (featurize(e, &s.normal), s.kinds.iter().map(|(_, t)| featurize(e, t)).collect::<Vec<_>>())
        };
        let (fd, fh) = (feats(&dev, &mut e), feats(&held, &mut e));
        let used = if with_model { FEATURES } else { TEXT_FEATURES };
        let anomalous: Vec<[f32; FEATURES]> = fd.1.concat();
        let cal = fit(&fd.0, &anomalous, used);
        println!("{name}: fitted {cal:?}");
        for (i, feature) in FEATURE_NAMES.iter().enumerate().take(used) {
            println!(
                "  {feature:<16} mean {:>8.4} scale {:>8.4} weight {:>8.4}",
                cal.mean[i], cal.scale[i], cal.weights[i]
            );
        }
        let console = if with_model {
            ruvllm_esp32::console::ANOMALY_LANGUAGE
        } else {
            ruvllm_esp32::console::ANOMALY_TEXT
        };
        let c = with_model;
        report(&format!("dev, {name}, no references"), &console, None, &dev, &fd, c);
        let none = report(&format!("held-out, {name}, no references"), &console, None, &held, &fh, c);
        let det = fact_detector(&facts64());
        let refs = report(&format!("held-out, {name}, 64 references"), &console, Some(&det), &held, &fh, c);
        measured.push((name, cal, console, none, refs));
    }
    // The same constants on the float path (q8 weights, f32 activations: the `--float-engine`
    // board), whose surprise differs a little from the integer path's they were fitted on.
    let mut farena = vec![0f32; ruvllm_esp32::infer::State::arena_len(&model, seq)];
    let mut float = ReferenceEngine::new(&model, &mut farena, seq).unwrap();
    let mut e: Option<&mut dyn Engine> = Some(&mut float);
    let fh =
        (featurize(&mut e, &held.normal), held.kinds.iter().map(|(_, t)| featurize(&mut e, t)).collect());
    let console = ruvllm_esp32::console::ANOMALY_LANGUAGE;
    let float_path = report("held-out, float path, no references", &console, None, &held, &fh, true);
    assert!(float_path.0 > 0.98 && float_path.1 > 0.95, "{float_path:?}");
    other_model(&held);
    // The text alone decides only where no normal line of either split reaches.
    let certain = ruvllm_esp32::console::ANOMALY_TEXT_CERTAIN;
    let highest = dev.normal.iter().chain(&held.normal).map(|t| text_score(t)).fold(0.0f32, f32::max);
    println!("highest text-only score of a normal line: {highest:.3} (decides alone above {certain})");
    // And where no anomalous line of either split comes near: below the clear cut, with a
    // margin of 2x, a line is normal by its text alone.
    let clear = ruvllm_esp32::console::ANOMALY_TEXT_CLEAR;
    let lowest =
        dev.kinds.iter().chain(&held.kinds).flat_map(|(_, t)| t).map(|t| text_score(t)).fold(1.0, f32::min);
    println!("lowest text-only score of an anomalous line: {lowest:.3} (normal alone below {clear})");
    assert!(lowest > 2.0 * clear, "an anomalous line scores {lowest} by its text alone, near {clear}");
    assert!(highest < certain, "a normal line scores {highest} by its text alone, above {certain}");
    // Floors a little under the held-out figures of 2026-12-04 (docs/BENCHMARKS.md), ROC AUC /
    // balanced accuracy: with the model 0.995 / 0.996 without references, 0.994 / 0.986 with
    // 64; without a model (the character model's) 0.999 / 0.993 and 0.999 / 0.984.
    for (name, _, _, none, refs) in &measured {
        let (auc_floor, ba_floor) = if *name == "with the model" { (0.98, 0.95) } else { (0.97, 0.95) };
        assert!(none.0 > auc_floor && none.1 > ba_floor, "{name}, no references: {none:?}");
        assert!(refs.0 > auc_floor - 0.02 && refs.1 > ba_floor - 0.03, "{name}, 64 references: {refs:?}");
    }
    // The console's constants are this measurement, not a choice.
    let mut differ = String::new();
    for (name, cal, console, ..) in &measured {
        let which = if *name == "with the model" { "ANOMALY_LANGUAGE" } else { "ANOMALY_TEXT" };
        let close =
            |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 2e-3 * x.abs().max(1.0));
        if !(close(&cal.mean, &console.mean)
            && close(&cal.scale, &console.scale)
            && close(&cal.weights, &console.weights)
            && close(&[cal.bias, cal.threshold], &[console.bias, console.threshold]))
        {
            differ += &format!("pub const {which}: LanguageCalibration = {cal:?};\n");
        }
    }
    assert!(
        differ.is_empty(),
        "the console's constants differ from the measurement; paste into \
         crates/ruvllm-esp32/src/console/anomaly.rs (then cargo fmt):\n{differ}"
    );
}

/// The built-in model's constants on another model, not refitted: stories260K (../shared, its
/// own 512-token vocabulary and training), converted to q8 by the CLI, on the integer path.
/// What a user's own model gets from `anomaly` (the model statistics are relative to the
/// model's own on known text, `language::KNOWN_TEXT`).
fn other_model(held: &Split) {
    let (Some(bin), Some(tok)) =
        (common::shared("models/stories260K.bin"), common::shared("models/tok512.bin"))
    else {
        return;
    };
    let gguf = common::scratch("stories260K-q8.gguf");
    let out = common::run(&[
        "convert",
        common::s(&bin),
        "-z",
        common::s(&tok),
        "--quant",
        "q8",
        "-o",
        common::s(&gguf),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let image = aligned(&gguf);
    let model = image.model();
    let seq = model.config.seq_len;
    let mut arena = vec![0i32; ruvllm_esp32::infer::IntState::arena_len(&model, seq)];
    let mut engine = IntegerEngine::new(&model, &mut arena, seq).unwrap();
    let mut e: Option<&mut dyn Engine> = Some(&mut engine);
    let fh =
        (featurize(&mut e, &held.normal), held.kinds.iter().map(|(_, t)| featurize(&mut e, t)).collect());
    let console = ruvllm_esp32::console::ANOMALY_LANGUAGE;
    let r = report(
        "held-out, stories260K (constants not refitted), no references",
        &console,
        None,
        held,
        &fh,
        true,
    );
    // Floors under the measurement of 2026-12-03 (docs/BENCHMARKS.md): 1.000 / 0.977.
    assert!(r.0 > 0.97 && r.1 > 0.93, "{r:?}");
}
