//! MicroHNSW on real data: the MNIST test images in `../shared/data` (skipped with a message
//! when absent, a failure when CI=true). Base: the first 9,000 images, queries: the last
//! 1,000, pixels scaled to [0, 1], exact ground truth by brute force (squared L2).
//! `cargo test -p ruvllm-esp32 --test hnsw_mnist -- --nocapture` prints the recall figures.

use std::io::Read;
use std::mem::MaybeUninit;

use ruvllm_esp32::vector::{Binary, HNSWConfig, MicroHNSW, Storage, F32, I8};

const DIM: usize = 784;
const BASE: usize = 9000;
const K: usize = 10;

fn mnist() -> Option<Vec<Vec<f32>>> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/mnist-t10k-images-idx3-ubyte.gz");
    if !p.exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {} is missing", p.display());
        }
        eprintln!("skipping: {} not found (the shared test material sits beside the checkout)", p.display());
        return None;
    }
    let gz = std::fs::read(&p).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    let be = |i: usize| u32::from_be_bytes(raw[i..i + 4].try_into().unwrap()) as usize;
    assert_eq!(be(0), 2051, "IDX image magic");
    let (n, rows, cols) = (be(4), be(8), be(12));
    assert_eq!((n, rows * cols), (10_000, DIM));
    assert_eq!(raw.len(), 16 + n * DIM);
    Some(raw[16..].chunks_exact(DIM).map(|c| c.iter().map(|&p| p as f32 / 255.0).collect()).collect())
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Exact top-k ids (indexes into `base`, only where `keep`) for each query.
fn ground_truth(base: &[Vec<f32>], keep: &[bool], queries: &[Vec<f32>], k: usize) -> Vec<Vec<usize>> {
    queries
        .iter()
        .map(|q| {
            let mut d: Vec<(f32, usize)> =
                base.iter().enumerate().filter(|(i, _)| keep[*i]).map(|(i, b)| (l2(q, b), i)).collect();
            d.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
            d.truncate(k);
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            d.into_iter().map(|x| x.1).collect()
        })
        .collect()
}

/// recall@K of `idx` whose id `i` holds `base[ids[i]]`.
fn recall<const D: usize, const C: usize, S: Storage<D>, const M: usize, const U: usize>(
    idx: &mut MicroHNSW<D, C, S, M, U>,
    ids: &[usize],
    queries: &[Vec<f32>],
    truth: &[Vec<usize>],
) -> f64 {
    let mut hit = 0;
    for (q, t) in queries.iter().zip(truth) {
        let got = idx.search(q, K).unwrap();
        hit += got.iter().filter(|r| t.contains(&ids[r.id as usize])).count();
    }
    hit as f64 / (queries.len() * K) as f64
}

fn boxed<T>() -> Box<MaybeUninit<T>> {
    Box::new_uninit()
}

const CFG: HNSWConfig = HNSWConfig {
    m: 16,
    ef_construction: 40,
    ef_search: 32,
    metric: ruvllm_esp32::vector::Metric::Euclidean,
    seed: 0x5eed,
};
// M0 = 32 links at level 0, m = 16 above, ef_construction 40, ef_search 32.
type IdxF32 = MicroHNSW<DIM, BASE, F32, 32, 2048>;
type IdxI8 = MicroHNSW<DIM, BASE, I8, 32, 2048>;

#[test]
fn mnist_f32_i8_recall_and_delete() {
    let Some(all) = mnist() else { return };
    let (base, queries) = all.split_at(BASE);
    let truth = ground_truth(base, &[true; BASE], queries, K);
    let ids: Vec<usize> = (0..BASE).collect();

    let mut s8 = boxed::<IdxI8>();
    let q8 = IdxI8::new_in(&mut s8, CFG);
    for v in base {
        q8.insert(v).unwrap();
    }
    let r8 = recall(q8, &ids, queries, &truth);
    println!(
        "MNIST i8  HNSW (M0 32, m 16, efc 40, efs 32): recall@10 {r8:.4}  ({} bytes, {} per vector)",
        std::mem::size_of::<IdxI8>(),
        std::mem::size_of::<IdxI8>() / BASE
    );
    drop(s8);

    let mut sf = boxed::<IdxF32>();
    let idx = IdxF32::new_in(&mut sf, CFG);
    let t = std::time::Instant::now();
    for v in base {
        idx.insert(v).unwrap();
    }
    let build = t.elapsed();
    let t = std::time::Instant::now();
    let rf = recall(idx, &ids, queries, &truth);
    println!(
        "MNIST f32 HNSW (M0 32, m 16, efc 40, efs 32): recall@10 {rf:.4}  ({} bytes, {} per vector; build {build:.1?}, 1000 queries {:.1?})",
        std::mem::size_of::<IdxF32>(),
        std::mem::size_of::<IdxF32>() / BASE,
        t.elapsed()
    );

    // delete every fifth base vector (20%), compare with a fresh index of the remaining 80%
    let keep: Vec<bool> = (0..BASE).map(|i| i % 5 != 0).collect();
    for i in (0..BASE).step_by(5) {
        idx.delete(i as u16).unwrap();
    }
    let truth_kept = ground_truth(base, &keep, queries, K);
    let rd = recall(idx, &ids, queries, &truth_kept);
    drop(sf);
    let mut sfresh = boxed::<IdxF32>();
    let fresh = IdxF32::new_in(&mut sfresh, CFG);
    let mut fresh_ids = Vec::new();
    for (i, v) in base.iter().enumerate().filter(|(i, _)| keep[*i]) {
        fresh.insert(v).unwrap();
        fresh_ids.push(i);
    }
    let rfresh = recall(fresh, &fresh_ids, queries, &truth_kept);
    println!(
        "MNIST f32 after deleting 20%: recall@10 {rd:.4}; fresh index of the remaining 80%: {rfresh:.4}"
    );

    assert!(rf >= 0.95, "f32 recall {rf}");
    assert!(r8 >= 0.95, "i8 recall {r8}");
    assert!(rd >= 0.95 * rfresh, "recall after deletes {rd} vs fresh {rfresh}");
}

// 1,000 vectors of 64 bits: a fixed random projection 784 -> 64 (entries +-1 from a seeded
// PRNG) of the mean-centred images, packed to signs. M0 = 4 links at level 0, m = 2.
type IdxBin = MicroHNSW<64, 1000, Binary<8>, 4, 128>;

#[test]
fn mnist_binary_in_20kb() {
    let Some(all) = mnist() else { return };
    let size = std::mem::size_of::<IdxBin>();
    assert!(size <= 20 * 1024, "binary index is {size} bytes");
    let (base, queries) = (&all[..1000], &all[9000..]);
    let mut mean = vec![0.0f32; DIM];
    for v in base {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += x / 1000.0;
        }
    }
    let mut s = 0x1234_5678u64;
    let proj: Vec<f32> = (0..64 * DIM)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if s >> 63 == 1 {
                1.0
            } else {
                -1.0
            }
        })
        .collect();
    let project = |v: &[f32]| -> Vec<f32> {
        proj.chunks_exact(DIM)
            .map(|row| row.iter().zip(v).zip(&mean).map(|((r, x), m)| r * (x - m)).sum())
            .collect()
    };
    let pb: Vec<Vec<f32>> = base.iter().map(|v| project(v)).collect();
    let pq: Vec<Vec<f32>> = queries.iter().map(|v| project(v)).collect();

    let cfg = HNSWConfig { m: 2, ef_construction: 128, ef_search: 128, ..HNSWConfig::default() };
    let mut slot = boxed::<IdxBin>();
    let idx = IdxBin::new_in(&mut slot, cfg);
    for v in &pb {
        idx.insert(v).unwrap();
    }
    let ids: Vec<usize> = (0..1000).collect();
    // against exact search over the same codes and distance: the graph's own loss
    let truth_codes: Vec<Vec<usize>> = pq
        .iter()
        .map(|q| {
            let mut out = [ruvllm_esp32::vector::SearchResult { id: 0, distance: 0.0 }; K];
            idx.search_exact(q, &mut out).unwrap();
            out.iter().map(|r| r.id as usize).collect()
        })
        .collect();
    let r_codes = recall(idx, &ids, &pq, &truth_codes);
    // against exact float search in the original 784-d space: the end-to-end figure
    let truth_float = ground_truth(base, &[true; 1000], queries, K);
    let r_float = recall(idx, &ids, &pq, &truth_float);
    println!(
        "MNIST binary HNSW, 1000 x 64 bits in {size} bytes ({:.1} per vector; M0 4, m 2, efc 128, efs 128): \
         recall@10 {r_codes:.4} vs exact search on the codes, {r_float:.4} vs exact float L2 in 784-d",
        size as f64 / 1000.0
    );
    assert!(r_codes >= 0.85, "binary recall vs exact code search {r_codes}");
}
