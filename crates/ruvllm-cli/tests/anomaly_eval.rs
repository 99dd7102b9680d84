//! Anomaly detection on text, measured: ROC AUC of `knowledge::AnomalyDetector` over each
//! embedder, on a labelled set the project builds itself.
//! - Normal: sentences of the generated corpus (the built-in model's domain). The detector
//!   learns 200 of them (seed 7) into its 32 references; 150 others (seed 99) are scored.
//! - Anomalies, 60 of each kind: sentences from other domains (finance, law, chemistry,
//!   computing; `crates/ruvllm-esp32/tests/data/other_domain.txt`, written for this test),
//!   gibberish (random letters in word-like groups) and random tokens of the built-in vocabulary.
//!
//! `cargo test --release -p ruvllm-cli --test anomaly_eval -- --nocapture`

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
