//! MicroHNSW on small synthetic data: errors, delete/update, serialization and a fuzz of
//! corrupt serialized indexes.

use proptest::prelude::*;
use ruvllm_esp32::vector::{Binary, HNSWConfig, Metric, MicroHNSW, SearchResult, I8};
use ruvllm_esp32::Error;

fn rand_vecs(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            (0..dim)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        })
        .collect()
}

type Small = MicroHNSW<16, 200, ruvllm_esp32::vector::F32, 16, 256>;

fn small(n: usize, metric: Metric) -> (Box<Small>, Vec<Vec<f32>>) {
    let mut idx = Box::new(Small::new(HNSWConfig { metric, ef_search: 64, ..HNSWConfig::default() }));
    let vs = rand_vecs(n, 16, 7);
    for (i, v) in vs.iter().enumerate() {
        assert_eq!(idx.insert(v).unwrap() as usize, i);
    }
    (idx, vs)
}

fn recall<
    const D: usize,
    const C: usize,
    S: ruvllm_esp32::vector::Storage<D>,
    const M: usize,
    const U: usize,
>(
    idx: &mut MicroHNSW<D, C, S, M, U>,
    qs: &[Vec<f32>],
    k: usize,
) -> f64 {
    let mut hit = 0;
    for q in qs {
        let mut exact = vec![SearchResult { id: 0, distance: 0.0 }; k];
        let n = idx.search_exact(q, &mut exact).unwrap();
        let got = idx.search(q, k).unwrap();
        hit += got.iter().filter(|r| exact[..n].iter().any(|e| e.id == r.id)).count();
    }
    hit as f64 / (qs.len() * k) as f64
}

#[test]
fn readme_api() {
    let mut index = MicroHNSW::<64, 256>::new(HNSWConfig::default());
    let vs = rand_vecs(256, 64, 1);
    for v in &vs {
        index.insert(v).unwrap();
    }
    let r = index.search(&vs[17], 5).unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0].id, 17);
    assert!(r.windows(2).all(|w| w[0].distance <= w[1].distance));
    assert_eq!(index.insert(&vs[0]), Err(Error::Full { capacity: 256 }));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let (mut idx, _) = small(10, Metric::Euclidean);
    assert!(matches!(idx.insert(&[0.0; 15]), Err(Error::Invalid { .. })));
    let mut v = [0.0f32; 16];
    v[3] = f32::NAN;
    assert!(matches!(idx.insert(&v), Err(Error::Invalid { .. })));
    v[3] = f32::INFINITY;
    assert!(matches!(idx.search(&v, 3), Err(Error::Invalid { .. })));
    assert!(matches!(idx.delete(10), Err(Error::Invalid { .. })));
    assert!(matches!(idx.update(3, &v), Err(Error::Invalid { .. })));
    assert!(idx.contains(3));
    assert_eq!(idx.search(&[0.0; 16], 0).unwrap().len(), 0);
}

#[test]
fn every_metric_finds_itself() {
    for metric in [Metric::Euclidean, Metric::Cosine, Metric::Dot] {
        let (mut idx, vs) = small(200, metric);
        let r = recall(&mut *idx, &vs[..50], 10);
        eprintln!("{metric:?}: recall@10 {r:.3} on 200 random 16-d vectors");
        assert!(r >= 0.9, "{metric:?} recall {r}");
        if metric != Metric::Dot {
            assert_eq!(idx.search(&vs[5], 1).unwrap()[0].id, 5);
        }
    }
}

#[test]
fn delete_update_and_slot_reuse() {
    let (mut idx, vs) = small(200, Metric::Euclidean);
    for id in (0..200).step_by(3) {
        idx.delete(id).unwrap();
    }
    assert_eq!(idx.len(), 200 - 67);
    for q in &vs {
        for r in idx.search(q, 10).unwrap() {
            assert!(idx.contains(r.id), "deleted id {} returned", r.id);
        }
    }
    let r = recall(&mut *idx, &vs[..60], 10);
    eprintln!("after deleting 1/3: recall@10 {r:.3}");
    assert!(r >= 0.9);
    // full index reuses deleted slots
    let extra = rand_vecs(67, 16, 99);
    for v in &extra {
        let id = idx.insert(v).unwrap();
        assert_eq!(id % 3, 0);
    }
    assert_eq!(idx.insert(&extra[0]), Err(Error::Full { capacity: 200 }));
    // update moves a vector
    idx.update(1, &extra[5]).unwrap();
    let hits = idx.search(&extra[5], 2).unwrap();
    assert!(hits.iter().any(|h| h.id == 1) && hits[0].distance == 0.0);
    // delete everything, then the index works again
    for id in 0..200 {
        idx.delete(id).unwrap();
    }
    assert!(idx.is_empty());
    assert_eq!(idx.search(&vs[0], 3).unwrap().len(), 0);
    idx.insert(&vs[0]).unwrap();
    assert_eq!(idx.search(&vs[0], 3).unwrap().len(), 1);
}

fn serialized(idx: &Small) -> Vec<u8> {
    let mut buf = vec![0u8; idx.serialized_size()];
    assert_eq!(idx.to_bytes(&mut buf).unwrap(), buf.len());
    buf
}

#[test]
fn serialization_round_trip_and_truncation() {
    let (mut idx, vs) = small(150, Metric::Cosine);
    idx.delete(4).unwrap();
    let bytes = serialized(&idx);
    let mut back = Box::new(Small::from_bytes(&bytes).unwrap());
    for q in &vs[..20] {
        assert_eq!(idx.search(q, 10).unwrap(), back.search(q, 10).unwrap());
    }
    assert_eq!(serialized(&back), bytes);
    let mut small_buf = vec![0u8; bytes.len() - 1];
    assert!(matches!(idx.to_bytes(&mut small_buf), Err(Error::BufferTooSmall { .. })));
    for cut in 0..bytes.len() {
        assert!(Small::from_bytes(&bytes[..cut]).is_err(), "truncated at {cut} accepted");
    }
    // another type's bytes
    type Other = MicroHNSW<16, 200, I8, 16, 256>;
    assert!(matches!(Other::from_bytes(&bytes), Err(Error::Invalid { .. })));
}

#[test]
fn i8_and_binary_storage() {
    let vs = rand_vecs(200, 16, 3);
    let mut q8 =
        Box::new(MicroHNSW::<16, 200, I8, 16, 256>::new(HNSWConfig { ef_search: 64, ..Default::default() }));
    let mut bin = Box::new(MicroHNSW::<16, 200, Binary<2>, 8, 64>::new(HNSWConfig {
        ef_search: 64,
        ..Default::default()
    }));
    for v in &vs {
        q8.insert(v).unwrap();
        bin.insert(v).unwrap();
    }
    let r8 = recall(&mut *q8, &vs[..50], 10);
    let rb = recall(&mut *bin, &vs[..50], 10);
    eprintln!("i8 recall@10 {r8:.3}, binary recall@10 {rb:.3} (each against its own exact search)");
    assert!(r8 >= 0.9 && rb >= 0.8);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Mutated bytes never panic: mostly the CRC rejects them; with the CRC recomputed the
    /// structural checks must, and an index they accept must search without panicking.
    #[test]
    fn corrupt_bytes_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        fix_crc in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let bytes = BYTES.get_or_init(|| {
            let (mut idx, _) = small(60, Metric::Euclidean);
            idx.delete(7).unwrap();
            serialized(&idx)
        });
        let mut b = bytes.clone();
        for (i, v) in &edits {
            let i = i.index(b.len() - 4);
            b[i] = *v;
        }
        if fix_crc {
            let n = b.len();
            let crc = crc32fast::hash(&b[..n - 4]);
            b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        let mut slot = Box::new(std::mem::MaybeUninit::<Small>::uninit());
        if let Ok(idx) = Small::from_bytes_in(&mut slot, &b) {
            let q = [0.25f32; 16];
            let _ = idx.search(&q, 10).unwrap();
            let id = idx.insert(&q);
            if let Ok(id) = id {
                idx.delete(id).unwrap();
            }
        } else if !fix_crc && !truncate {
            // an unrepaired edit that changed something must be caught (by the CRC or earlier)
            prop_assert!(b != *bytes);
        }
    }
}
