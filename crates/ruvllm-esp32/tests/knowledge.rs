//! The knowledge stores on synthetic data: RAG errors, truncation, forgetting and int8-vs-f32
//! retrieval; memory TTL, decay ordering, tie-breaks and eviction; anomaly separation, the
//! calibrated false-positive rate on held-out data and bounded online learning. The
//! `ram_figures` test prints each store's `ram_bytes()` at the README's sizes:
//! `cargo test -p ruvllm-esp32 --test knowledge ram_figures -- --nocapture`.

use ruvllm_esp32::knowledge::rag::{RAG_M0, RAG_UP};
use ruvllm_esp32::knowledge::{
    AnomalyConfig, AnomalyDetector, Learned, MemoryConfig, MemoryType, MicroRAG, RAGConfig, SemanticMemory,
};
use ruvllm_esp32::vector::metric::{cosine_distance, SplitMix};
use ruvllm_esp32::vector::{HNSWConfig, Metric, MicroHNSW, F32};
use ruvllm_esp32::Error;

const D: usize = 64;

struct Rng(SplitMix);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(SplitMix(seed))
    }
    fn uniform(&mut self) -> f32 {
        ((self.0.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    }
    fn gaussian(&mut self) -> [f32; D] {
        std::array::from_fn(|_| self.normal())
    }
    /// A random unit direction.
    fn direction(&mut self) -> [f32; D] {
        unit(self.gaussian())
    }
    /// `centre + sigma * noise`: a point of a cluster around a unit centre.
    fn near(&mut self, centre: &[f32; D], sigma: f32) -> [f32; D] {
        let n = self.gaussian();
        std::array::from_fn(|i| centre[i] + sigma * n[i])
    }
}

fn unit(v: [f32; D]) -> [f32; D] {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.map(|x| x / n)
}

fn basis(i: usize) -> [f32; D] {
    let mut v = [0.0; D];
    v[i] = 1.0;
    v
}

// ---------------------------------------------------------------------------------- MicroRAG

#[test]
fn rag_adds_retrieves_and_refuses_bad_input() {
    let mut rag = MicroRAG::<D, 4>::new(RAGConfig::default());
    assert_eq!(rag.capacity(), 4);
    let texts = ["alpha", "beta", "gamma"];
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(rag.add_knowledge(t, &basis(i)).unwrap(), i as u16);
    }
    assert_eq!(rag.len(), 3);
    let mut q = basis(1);
    q[0] = 0.3;
    let r = rag.retrieve(&q, 3).unwrap();
    // min_similarity 0 by default drops "gamma" (cosine 0 is kept, negative dropped: here 0).
    assert_eq!(r[0].text, "beta");
    assert_eq!(r[1].text, "alpha");
    assert!(r[0].score > r[1].score);
    drop(r); // the results borrow the store's texts

    // Bad input: typed errors, store unchanged.
    assert!(matches!(rag.add_knowledge("", &basis(3)), Err(Error::Invalid { .. })));
    let mut nan = basis(3);
    nan[5] = f32::NAN;
    assert!(matches!(rag.add_knowledge("x", &nan), Err(Error::Invalid { .. })));
    assert!(matches!(rag.add_knowledge("x", &[1.0; 63]), Err(Error::Invalid { .. })));
    assert!(matches!(rag.add_knowledge("x", &[0.0; D]), Err(Error::Invalid { .. })));
    assert!(matches!(rag.retrieve(&nan, 3), Err(Error::Invalid { .. })));
    assert!(matches!(rag.retrieve(&[1.0; 65], 3), Err(Error::Invalid { .. })));
    let long = "x".repeat(129);
    assert_eq!(rag.add_knowledge(&long, &basis(3)), Err(Error::BufferTooSmall { need: 129, have: 128 }));
    assert_eq!(rag.len(), 3);
    assert!(rag.retrieve(&q, 0).unwrap().is_empty());

    // Full: the error names the capacity.
    rag.add_knowledge("delta", &basis(3)).unwrap();
    assert_eq!(rag.add_knowledge("epsilon", &basis(4)), Err(Error::Full { capacity: 4 }));
}

#[test]
fn rag_truncates_at_a_char_boundary() {
    let mut rag = MicroRAG::<D, 4, 8>::new(RAGConfig { max_text_bytes: 100, ..RAGConfig::default() });
    assert_eq!(rag.config().max_text_bytes, 8, "clamped to the TEXT buffer");
    // "ab" + three 3-byte characters = 11 bytes; 8 bytes would split the third one.
    let text = "ab\u{20ac}\u{20ac}\u{20ac}";
    let (id, n) = rag.add_knowledge_truncated(text, &basis(0)).unwrap();
    assert_eq!(n, 8);
    assert_eq!(rag.text(id), Some("ab\u{20ac}\u{20ac}"));
    assert!(rag.text(7).is_none());
    let (id, n) = rag.add_knowledge_truncated("\u{20ac}\u{20ac}\u{20ac}", &basis(1)).unwrap();
    assert_eq!((n, rag.text(id)), (6, Some("\u{20ac}\u{20ac}")));
}

#[test]
fn rag_min_similarity_filters() {
    let mut rag = MicroRAG::<D, 8>::new(RAGConfig { min_similarity: 0.5, ..RAGConfig::default() });
    rag.add_knowledge("near", &basis(0)).unwrap();
    let mut far = basis(0);
    far[1] = 1.0; // cosine 0.707 to basis(0)
    rag.add_knowledge("mid", &far).unwrap();
    rag.add_knowledge("orthogonal", &basis(2)).unwrap();
    let r = rag.retrieve_default(&basis(0)).unwrap();
    let texts: Vec<&str> = r.iter().map(|x| x.text).collect();
    assert_eq!(texts, ["near", "mid"]);
}

#[test]
fn rag_forgotten_entries_never_come_back_and_slots_are_reused() {
    let mut rng = Rng::new(11);
    let mut rag = MicroRAG::<D, 64>::new(RAGConfig { min_similarity: -1.0, ..RAGConfig::default() });
    let vs: Vec<[f32; D]> = (0..64).map(|_| rng.direction()).collect();
    for (i, v) in vs.iter().enumerate() {
        rag.add_knowledge(&format!("fact {i}"), v).unwrap();
    }
    let gone = [3u16, 17, 40, 63];
    for &id in &gone {
        rag.forget(id).unwrap();
    }
    assert!(matches!(rag.forget(3), Err(Error::Invalid { .. })));
    assert_eq!(rag.len(), 60);
    for v in &vs {
        for r in rag.retrieve(v, 32).unwrap() {
            assert!(!gone.contains(&r.id), "forgotten {} retrieved", r.id);
        }
    }
    // Its own embedding finds a forgotten fact's neighbours, never itself.
    assert!(rag.text(3).is_none());
    // New entries take the freed slots (and nothing else: the store was full).
    let mut reused = Vec::new();
    for i in 0..4 {
        reused.push(rag.add_knowledge(&format!("new {i}"), &rng.direction()).unwrap());
    }
    reused.sort();
    assert_eq!(reused, gone);
    assert_eq!(rag.add_knowledge("one too many", &rng.direction()), Err(Error::Full { capacity: 64 }));
    // A reused slot holds its new text; the old ones are gone for good.
    for &id in &gone {
        assert!(rag.text(id).unwrap().starts_with("new "));
    }
    for v in &vs {
        assert!(rag.retrieve(v, 32).unwrap().iter().all(|r| r.text != "fact 3" && r.text != "fact 63"));
    }
}

/// Why int8 storage: top-3 retrieval from the int8 store against exact f32 cosine, on random
/// directions (near-ties everywhere: a harder case than clustered text embeddings).
#[test]
fn rag_int8_retrieval_agrees_with_f32_cosine() {
    let mut rng = Rng::new(5);
    let mut rag = MicroRAG::<D, 64>::new(RAGConfig { min_similarity: -1.0, ..RAGConfig::default() });
    let vs: Vec<[f32; D]> = (0..64).map(|_| rng.direction()).collect();
    for (i, v) in vs.iter().enumerate() {
        rag.add_knowledge(&format!("{i}"), v).unwrap();
    }
    // The same graph over f32 vectors: what int8 costs beyond the graph's own approximation.
    type F32Index = MicroHNSW<D, 64, F32, RAG_M0, RAG_UP>;
    let mut f32_index = Box::new(F32Index::new(HNSWConfig {
        m: RAG_M0 / 2,
        metric: Metric::Cosine,
        ..HNSWConfig::default()
    }));
    for v in &vs {
        f32_index.insert(v).unwrap();
    }
    let (mut hit, mut total, mut top1, mut f32_hit) = (0, 0, 0, 0);
    let mut worst_gap = 0.0f32;
    let queries = 500;
    for _ in 0..queries {
        // A query near a stored fact (a paraphrase), the usual RAG case.
        let target = (rng.0.next_u64() % 64) as usize;
        let q = rng.near(&vs[target], 0.15);
        let mut exact: Vec<(f32, u16)> =
            vs.iter().enumerate().map(|(i, v)| (cosine_distance(&q, v), i as u16)).collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let got: Vec<u16> = rag.retrieve(&q, 3).unwrap().iter().map(|r| r.id).collect();
        top1 += usize::from(got[0] == exact[0].1);
        hit += exact[..3].iter().filter(|e| got.contains(&e.1)).count();
        // When int8 swaps an item, how much worse (in f32 cosine) is the one it returned?
        let third_got = got.iter().map(|&id| cosine_distance(&q, &vs[id as usize])).fold(0.0f32, f32::max);
        worst_gap = worst_gap.max(third_got - exact[2].0);
        let f: Vec<u16> = f32_index.search(&q, 3).unwrap().iter().map(|r| r.id).collect();
        f32_hit += exact[..3].iter().filter(|e| f.contains(&e.1)).count();
        total += 3;
    }
    let recall = hit as f64 / total as f64;
    let top1 = top1 as f64 / queries as f64;
    let f32_recall = f32_hit as f64 / total as f64;
    println!(
        "int8 RAG vs exact f32 cosine: recall@3 {recall:.4}, top-1 agreement {top1:.4} ({queries} queries); \
         the same graph with f32 vectors: recall@3 {f32_recall:.4}; largest cosine gap of a swapped \
         result {worst_gap:.4}"
    );
    assert!(worst_gap < 0.02, "int8 swapped a result {worst_gap} worse in cosine: not a near-tie");
    assert!(top1 >= 0.99, "top-1 {top1}");
    assert!(recall >= 0.95, "recall@3 {recall}");
}

// ---------------------------------------------------------------------------- SemanticMemory

#[test]
fn memory_ttl_expiry() {
    let mut m = SemanticMemory::<D, 8>::default();
    let e = basis(0);
    let short = m.add_memory_at(&e, &[1, 2], MemoryType::Episodic, 0.5, Some(10), 0).unwrap().id;
    let forever = m.add_memory_at(&e, &[3], MemoryType::Factual, 0.5, None, 0).unwrap().id;
    let ids = |m: &mut SemanticMemory<D, 8>, now| -> Vec<u16> {
        m.recall(&e, now, 8).unwrap().iter().map(|r| r.id).collect()
    };
    assert!(ids(&mut m, 9).contains(&short));
    // At tick 10 it has expired: never returned, even before `expire` frees it.
    assert_eq!(ids(&mut m, 10), [forever]);
    assert_eq!(m.tokens(short), None);
    assert_eq!(m.len(), 2);
    assert_eq!(m.expire(10), 1);
    assert_eq!(m.len(), 1);
    // The clock never goes back: an earlier tick does not revive anything.
    assert_eq!(ids(&mut m, 3), [forever]);
    assert_eq!(m.now(), 10);
}

#[test]
fn memory_older_ranks_lower_and_importance_ranks_higher() {
    let mut m = SemanticMemory::<D, 8>::default();
    let e = basis(0);
    let old = m.add_memory_at(&e, &[1], MemoryType::Factual, 0.5, None, 0).unwrap().id;
    let new = m.add_memory_at(&e, &[2], MemoryType::Factual, 0.5, None, 500).unwrap().id;
    let r = m.recall(&e, 1000, 2).unwrap();
    assert_eq!((r[0].id, r[1].id), (new, old));
    assert_eq!(r[0].similarity, r[1].similarity);
    // The formula: 0.6 * sim + 0.25 * 2^(-age / 1000) + 0.15 * importance.
    let want = |age: f32| 0.6 * r[0].similarity + 0.25 * (-age / 1000.0).exp2() + 0.15 * 0.5;
    assert!((r[0].score - want(500.0)).abs() < 1e-5);
    assert!((r[1].score - want(1000.0)).abs() < 1e-5);

    // Same similarity and age: the more important one first.
    let mut m = SemanticMemory::<D, 8>::default();
    let low = m.add_memory_at(&e, &[1], MemoryType::Factual, 0.1, None, 0).unwrap().id;
    let high = m.add_memory_at(&e, &[2], MemoryType::Factual, 0.9, None, 0).unwrap().id;
    let r = m.recall(&e, 100, 2).unwrap();
    assert_eq!((r[0].id, r[1].id), (high, low));

    // Similarity still dominates with the default weights: an old, unimportant but exact match
    // beats a new, important orthogonal one.
    let mut m = SemanticMemory::<D, 8>::default();
    let exact = m.add_memory_at(&e, &[1], MemoryType::Factual, 0.0, None, 0).unwrap().id;
    m.add_memory_at(&basis(1), &[2], MemoryType::Factual, 1.0, None, 5000).unwrap();
    assert_eq!(m.recall(&e, 5000, 1).unwrap()[0].id, exact);
}

#[test]
fn memory_equal_scores_break_ties_by_importance_then_newer_then_id() {
    // Only similarity counts, so every entry below scores the same.
    let cfg =
        MemoryConfig { w_similarity: 1.0, w_recency: 0.0, w_importance: 0.0, ..MemoryConfig::default() };
    let mut m = SemanticMemory::<D, 8>::with_config(cfg);
    let e = basis(0);
    let a = m.add_memory_at(&e, &[1], MemoryType::Factual, 0.2, None, 0).unwrap().id;
    let b = m.add_memory_at(&e, &[2], MemoryType::Factual, 0.8, None, 1).unwrap().id;
    let c = m.add_memory_at(&e, &[3], MemoryType::Factual, 0.2, None, 2).unwrap().id;
    let d = m.add_memory_at(&e, &[4], MemoryType::Factual, 0.2, None, 2).unwrap().id;
    let r: Vec<u16> = m.recall(&e, 3, 8).unwrap().iter().map(|x| x.id).collect();
    assert_eq!(r, [b, c, d, a]);
    // k limits the result, keeping the best.
    let r: Vec<u16> = m.recall(&e, 3, 2).unwrap().iter().map(|x| x.id).collect();
    assert_eq!(r, [b, c]);
}

#[test]
fn memory_eviction_removes_the_lowest_retention_and_reports_it() {
    let mut m = SemanticMemory::<D, 4>::default();
    let mut rng = Rng::new(3);
    // (importance, tick), in tick order (the clock never goes back): retention at tick 1000 is
    // 0.25 * 2^(-(1000 - t) / 1000) + 0.15 * importance.
    let entries = [(0.9, 0), (0.3, 0), (0.8, 500), (0.1, 900)];
    let mut ids = Vec::new();
    for (i, &(imp, t)) in entries.iter().enumerate() {
        let s = m.add_memory_at(&rng.direction(), &[i as u32], MemoryType::Episodic, imp, None, t).unwrap();
        assert_eq!(s.evicted, None);
        ids.push(s.id);
    }
    let retention = |imp: f32, t: u64| 0.25 * (-((1000 - t) as f32) / 1000.0).exp2() + 0.15 * imp;
    let lowest = (0..4)
        .min_by(|&a, &b| {
            retention(entries[a].0, entries[a].1).total_cmp(&retention(entries[b].0, entries[b].1))
        })
        .unwrap();
    assert_eq!(lowest, 1, "the old unimportant one");
    let probe = rng.direction();
    let s = m.add_memory_at(&probe, &[99], MemoryType::Factual, 0.5, None, 1000).unwrap();
    let ev = s.evicted.expect("full memory must evict");
    assert_eq!(ev.id, ids[lowest]);
    assert_eq!((ev.created, ev.importance, ev.kind), (0, 0.3, MemoryType::Episodic));
    assert!((ev.retention - retention(0.3, 0)).abs() < 1e-6);
    assert_eq!(s.id, ev.id, "the new entry takes the freed slot");
    assert_eq!(m.len(), 4);
    let r = m.recall(&probe, 1000, 4).unwrap();
    assert!(r.iter().all(|x| x.tokens != [1]), "evicted tokens never recalled");
    assert_eq!(r[0].tokens, [99]);

    // Expired entries are freed first: no live entry is evicted.
    let mut m = SemanticMemory::<D, 2>::default();
    let e = basis(0);
    m.add_memory_at(&e, &[1], MemoryType::Factual, 1.0, None, 0).unwrap();
    let t = m.add_memory_at(&e, &[2], MemoryType::Factual, 1.0, Some(5), 0).unwrap().id;
    let s = m.add_memory_at(&e, &[3], MemoryType::Factual, 0.0, None, 5).unwrap();
    assert_eq!((s.id, s.evicted), (t, None));
}

#[test]
fn memory_refuses_bad_input() {
    let mut m = SemanticMemory::<D, 4, 4>::default();
    let e = basis(0);
    assert_eq!(
        m.add_memory(&e, &[1, 2, 3, 4, 5], MemoryType::Procedural),
        Err(Error::BufferTooSmall { need: 5, have: 4 })
    );
    for imp in [f32::NAN, -0.1, 1.5] {
        assert!(matches!(
            m.add_memory_at(&e, &[1], MemoryType::Factual, imp, None, 0),
            Err(Error::Invalid { .. })
        ));
    }
    assert!(matches!(
        m.add_memory_at(&e, &[1], MemoryType::Factual, 0.5, Some(0), 0),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        m.add_memory(&[f32::INFINITY; D], &[1], MemoryType::Factual),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(m.recall(&[1.0; 3], 0, 1), Err(Error::Invalid { .. })));
    assert!(matches!(m.forget(0), Err(Error::Invalid { .. })));
    assert!(matches!(m.forget(999), Err(Error::Invalid { .. })));
    assert!(m.is_empty());
    // Empty tokens are fine (a memory may be only its embedding).
    let id = m.add_memory(&e, &[], MemoryType::Factual).unwrap().id;
    assert_eq!(m.tokens(id), Some(&[][..]));
    m.forget(id).unwrap();
    assert_eq!(m.recall(&e, 0, 4).unwrap().len(), 0);
}

// --------------------------------------------------------------------------- AnomalyDetector

/// Normal data: points around 4 random unit centres (noise sigma 0.08 a dimension, so a point
/// is at cosine ~0.85 from its centre). Anomalies: random directions, and midpoints of two
/// centres (closer to normal data than random ones).
struct Scene {
    centres: Vec<[f32; D]>,
    rng: Rng,
}

impl Scene {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let centres = (0..4).map(|_| rng.direction()).collect();
        Scene { centres, rng }
    }
    fn normal(&mut self) -> [f32; D] {
        let c = self.centres[(self.rng.0.next_u64() % 4) as usize];
        self.rng.near(&c, 0.08)
    }
    fn random_direction(&mut self) -> [f32; D] {
        self.rng.direction()
    }
    fn between(&mut self) -> [f32; D] {
        let a = (self.rng.0.next_u64() % 4) as usize;
        let b = (a + 1 + (self.rng.0.next_u64() % 3) as usize) % 4;
        let (ca, cb) = (self.centres[a], self.centres[b]);
        let mid = unit(std::array::from_fn(|i| ca[i] + cb[i]));
        self.rng.near(&mid, 0.08)
    }
}

#[test]
fn anomaly_separates_far_points_and_calibrates_the_false_positive_rate() {
    let seeds = 10;
    let (mut fp, mut normals, mut caught_far, mut caught_mid, mut anomalies) = (0, 0, 0, 0, 0);
    for seed in 0..seeds {
        let mut s = Scene::new(100 + seed);
        let mut det = AnomalyDetector::<D, 64>::with_config(AnomalyConfig::default());
        for _ in 0..64 {
            det.learn(&s.normal()).unwrap();
        }
        assert_eq!(det.calibrate().unwrap(), det.threshold().unwrap());
        for _ in 0..1000 {
            fp += usize::from(det.try_check(&s.normal()).unwrap().is_anomaly);
            normals += 1;
        }
        for _ in 0..200 {
            caught_far += usize::from(det.try_check(&s.random_direction()).unwrap().is_anomaly);
            caught_mid += usize::from(det.try_check(&s.between()).unwrap().is_anomaly);
            anomalies += 1;
        }
    }
    let fpr = fp as f64 / normals as f64;
    let far = caught_far as f64 / anomalies as f64;
    let mid = caught_mid as f64 / anomalies as f64;
    println!(
        "anomaly (95th percentile, k 3, 64 refs, {seeds} scenes): held-out normal flagged {fpr:.4}, \
         random directions caught {far:.4}, between-cluster points caught {mid:.4}"
    );
    // The 95th percentile by nearest rank of 64 leave-one-out scores: ~5% of new normal data
    // above it (the rank's own sampling spread averages out over the scenes).
    assert!((0.02..=0.10).contains(&fpr), "false-positive rate {fpr}");
    assert!(far >= 0.99, "random directions caught {far}");
    assert!(mid >= 0.95, "between-cluster points caught {mid}");
}

#[test]
fn anomaly_percentile_moves_the_false_positive_rate() {
    let mut rates = Vec::new();
    for p in [50.0, 80.0, 95.0] {
        let mut fp = 0;
        let mut n = 0;
        for seed in 0..5 {
            let mut s = Scene::new(200 + seed);
            let mut det = AnomalyDetector::<D, 64>::with_config(AnomalyConfig {
                percentile: p,
                ..AnomalyConfig::default()
            });
            for _ in 0..64 {
                det.learn(&s.normal()).unwrap();
            }
            for _ in 0..1000 {
                fp += usize::from(det.try_check(&s.normal()).unwrap().is_anomaly);
                n += 1;
            }
        }
        let rate = fp as f64 / n as f64;
        println!("percentile {p}: held-out normal flagged {rate:.4} (expected ~{:.2})", 1.0 - p / 100.0);
        assert!((rate - (1.0 - p as f64 / 100.0)).abs() < 0.06, "percentile {p}: rate {rate}");
        rates.push(rate);
    }
    assert!(rates[0] > rates[1] && rates[1] > rates[2]);
}

#[test]
fn anomaly_online_learning_is_bounded_and_follows_drift() {
    let mut s = Scene::new(7);
    let mut det = AnomalyDetector::<D, 32>::with_config(AnomalyConfig::default());
    let ram = det.ram_bytes();
    let (mut added, mut replaced, mut skipped) = (0, 0, 0);
    for _ in 0..1000 {
        match det.learn(&s.normal()).unwrap() {
            Learned::Added(_) => added += 1,
            Learned::Replaced(slot) => {
                assert!((slot as usize) < 32);
                replaced += 1
            }
            Learned::Skipped => skipped += 1,
        }
    }
    assert_eq!((det.len(), det.seen(), det.ram_bytes()), (32, 1000, ram));
    assert_eq!(added, 32);
    // Reservoir sampling keeps the t-th item with probability 32 / t: sum over t = 33..=1000
    // is ~32 * ln(1000 / 32) = 110.
    let expect: f64 = (33..=1000).map(|t| 32.0 / t as f64).sum();
    println!("reservoir: {replaced} replaced (expected ~{expect:.0}), {skipped} skipped");
    assert!((replaced as f64 - expect).abs() < 0.35 * expect, "{replaced} vs {expect}");

    // Drift: a new cluster is anomalous at first, normal once learned enough.
    let new_centre = s.random_direction();
    let far = s.rng.near(&new_centre, 0.08);
    assert!(det.try_check(&far).unwrap().is_anomaly);
    for _ in 0..3000 {
        let p = s.rng.near(&new_centre, 0.08);
        det.learn(&p).unwrap();
    }
    let held: Vec<[f32; D]> = (0..200).map(|_| s.rng.near(&new_centre, 0.08)).collect();
    let flagged = held.iter().filter(|p| det.try_check(*p).unwrap().is_anomaly).count();
    println!("after drift: {flagged}/200 of the new cluster flagged, {} refs", det.len());
    assert!(flagged < 40, "{flagged}");
    assert_eq!(det.len(), 32);
}

#[test]
fn anomaly_errors_and_console_format() {
    let mut det = AnomalyDetector::<D, 8>::with_config(AnomalyConfig::default());
    assert!(matches!(det.try_check(&basis(0)), Err(Error::Invalid { .. })), "not calibrated");
    assert!(matches!(det.calibrate(), Err(Error::Invalid { .. })));
    det.learn(&basis(0)).unwrap();
    assert!(det.threshold().is_none(), "one reference: no threshold yet");
    let mut nan = basis(0);
    nan[1] = f32::NAN;
    assert!(matches!(det.learn(&nan), Err(Error::Invalid { .. })));
    assert_eq!(det.seen(), 1, "a refused embedding is not counted");
    let mut v = basis(0);
    v[1] = 0.2;
    det.learn(&v).unwrap();
    assert!(det.threshold().is_some());
    assert!(matches!(det.try_check(&nan), Err(Error::Invalid { .. })));
    assert!(matches!(det.try_check(&[1.0; 3]), Err(Error::Invalid { .. })));
    let r = det.try_check(&basis(5)).unwrap();
    assert!(r.is_anomaly);
    let (s, t) = r.scaled();
    assert_eq!(s, (r.score * 100.0).round() as u32);
    assert_eq!(format!("{r}"), format!("ANOMALY (score: {s}, threshold: {t})"));
    let r = det.try_check(&basis(0)).unwrap();
    assert_eq!(format!("{r}"), format!("NORMAL (score: {}, threshold: {})", r.scaled().0, r.scaled().1));
}

// --------------------------------------------------------------------------------- figures

#[test]
fn ram_figures() {
    let rag = Box::new(MicroRAG::<64, 64>::new(RAGConfig::default()));
    let mem = Box::new(SemanticMemory::<64, 32>::default());
    let det = Box::new(AnomalyDetector::<64, 32>::with_config(AnomalyConfig::default()));
    println!(
        "MicroRAG<64, 64> (128-byte texts, int8 HNSW M0 16): {} bytes ({} a entry)",
        rag.ram_bytes(),
        rag.ram_bytes() / 64
    );
    println!(
        "SemanticMemory<64, 32> (16 u32 tokens, int8 vectors): {} bytes ({} a entry)",
        mem.ram_bytes(),
        mem.ram_bytes() / 32
    );
    println!(
        "AnomalyDetector<64, 32> (int8 references): {} bytes ({} a reference)",
        det.ram_bytes(),
        det.ram_bytes() / 32
    );
    // Each store is at least its vectors (DIM + 4 bytes each) and its payload.
    assert!(rag.ram_bytes() >= 64 * (64 + 4 + 128));
    assert!(mem.ram_bytes() >= 32 * (64 + 4 + 16 * 4));
    assert!(det.ram_bytes() >= 32 * (64 + 4));
}

/// Extreme but finite embeddings (huge, subnormal, mixed signs) and odd configs are either
/// accepted or refused with a typed error, never a panic or a NaN score.
#[test]
fn extreme_inputs_do_not_panic() {
    let odd: Vec<[f32; D]> = vec![
        [f32::MAX; D],
        [f32::MIN_POSITIVE / 4.0; D],
        std::array::from_fn(|i| if i % 2 == 0 { f32::MAX } else { -f32::MAX }),
        std::array::from_fn(|i| if i == 7 { 1e-42 } else { 0.0 }),
        basis(0),
    ];
    let mut rag =
        MicroRAG::<D, 8>::new(RAGConfig { min_similarity: f32::NAN, top_k: 99, ..RAGConfig::default() });
    let cfg = MemoryConfig {
        w_similarity: f32::NAN,
        half_life: 0,
        default_importance: 7.0,
        ..MemoryConfig::default()
    };
    let mut mem = SemanticMemory::<D, 4>::with_config(cfg);
    let mut det = AnomalyDetector::<D, 4>::with_config(AnomalyConfig {
        k: 0,
        percentile: f32::NAN,
        seed: 1,
        prior: None,
    });
    for (i, v) in odd.iter().enumerate() {
        let _ = rag.add_knowledge("x", v);
        let _ = mem.add_memory_at(v, &[1], MemoryType::Factual, 0.5, Some(u64::MAX), u64::MAX - i as u64);
        let _ = det.learn(v);
    }
    for v in &odd {
        for r in rag.retrieve_default(v).unwrap() {
            assert!(!r.score.is_nan());
        }
        for r in mem.recall(v, u64::MAX, 8).unwrap() {
            assert!(!r.score.is_nan());
        }
        let r = det.try_check(v).unwrap();
        assert!(!r.score.is_nan() && !r.threshold.is_nan());
    }
}
