//! Fuzzing of the serialized vector indexes (`MicroHNSW::to_bytes`, CRC-checked, for f32, int8
//! and binary storage; `ProductQuantizer::to_bytes`): real indexes serialized, then mutated,
//! with the edits aimed at the header's counts and fields as often as at the body, and the
//! CRC recomputed in most cases so the structural checks behind it are what gets tested.
//! Results may be Ok or Err, never a panic, and never a huge allocation (the global allocator
//! below refuses anything over 64 MiB, which aborts the test). An accepted index must search,
//! insert and delete without panicking, and serialize again to bytes it reads back the same.
//! Cases per property: env `FUZZ_CASES` (default 256).
#![cfg(feature = "alloc")]

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use proptest::prelude::*;
use ruvllm_esp32::vector::pq::{PQConfig, ProductQuantizer};
use ruvllm_esp32::vector::{Binary, HNSWConfig, Metric, MicroHNSW, SearchResult, Storage, F32, I8};

/// The indexes here take well under a MiB; nothing may need more than a small multiple.
const MAX_ALLOC: usize = 64 << 20;

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::cases;

#[global_allocator]
static ALLOC: fuzz::Capped<MAX_ALLOC> = fuzz::Capped;

const DIM: usize = 16;

/// Bytes of the fixed header (magic to the reserved word), where the counts live.
const HEADER: usize = 76;

fn vectors(n: usize, seed: u64) -> Vec<[f32; DIM]> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            core::array::from_fn(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
        })
        .collect()
}

/// A serialized index of 80 vectors with a few deleted (so both kinds of node are present).
fn serialized<S: Storage<DIM> + 'static>(metric: Metric) -> Vec<u8> {
    let mut slot = Box::new(MaybeUninit::uninit());
    let idx = MicroHNSW::<DIM, 96, S, 8, 128>::new_in(
        &mut slot,
        HNSWConfig { m: 4, ef_construction: 32, ef_search: 16, metric, seed: 9 },
    );
    for v in vectors(80, 3) {
        idx.insert(&v).unwrap();
    }
    for id in [3, 40, 41] {
        idx.delete(id).unwrap();
    }
    let mut out = vec![0u8; idx.serialized_size()];
    idx.to_bytes(&mut out).unwrap();
    out
}

fn corpus() -> &'static [Vec<u8>; 3] {
    static C: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    C.get_or_init(|| {
        [
            serialized::<F32>(Metric::Euclidean),
            serialized::<I8>(Metric::Cosine),
            serialized::<Binary<2>>(Metric::Dot),
        ]
    })
}

/// Edits to serialized bytes: writes into the header (the first `header` bytes, where the
/// counts live), writes anywhere, a cut, and the trailing CRC recomputed or not.
#[derive(Debug, Clone)]
struct Edits {
    header_writes: Vec<(usize, u8)>,
    writes: Vec<(prop::sample::Index, u8)>,
    cut: Option<prop::sample::Index>,
    fix_crc: bool,
}

fn edits(header: usize) -> impl Strategy<Value = Edits> {
    (
        proptest::collection::vec((0..header, any::<u8>()), 0..4),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..5),
        proptest::option::of(any::<prop::sample::Index>()),
        0u8..4,
    )
        // Mostly a fixed CRC: the checks behind it are the ones under test.
        .prop_map(|(header_writes, writes, cut, crc)| Edits {
            header_writes,
            writes,
            cut,
            fix_crc: crc != 0,
        })
}

fn apply(original: &[u8], e: &Edits) -> Vec<u8> {
    let mut b = original.to_vec();
    for &(i, v) in &e.header_writes {
        if i < b.len() {
            b[i] = v;
        }
    }
    for (i, v) in &e.writes {
        let i = i.index(b.len());
        b[i] = *v;
    }
    if let Some(cut) = &e.cut {
        b.truncate(cut.index(b.len() + 1));
    }
    if e.fix_crc && b.len() >= 4 {
        let n = b.len();
        let crc = crc32fast::hash(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    b
}

/// Reads `b` as an index with storage `S`; if accepted, uses it and checks that what it writes
/// reads back to the same bytes.
fn exercise<S: Storage<DIM> + 'static>(b: &[u8]) -> Result<bool, TestCaseError> {
    let mut slot = Box::new(MaybeUninit::<MicroHNSW<DIM, 96, S, 8, 128>>::uninit());
    let Ok(idx) = MicroHNSW::from_bytes_in(&mut slot, b) else { return Ok(false) };
    let mut again = vec![0u8; idx.serialized_size()];
    idx.to_bytes(&mut again).unwrap();
    let mut slot2 = Box::new(MaybeUninit::<MicroHNSW<DIM, 96, S, 8, 128>>::uninit());
    let back = MicroHNSW::from_bytes_in(&mut slot2, &again);
    prop_assert!(back.is_ok(), "an accepted index wrote bytes it refuses");
    let mut third = vec![0u8; again.len()];
    back.unwrap().to_bytes(&mut third).unwrap();
    prop_assert_eq!(&again, &third);
    for q in vectors(4, 11) {
        let _ = idx.search(&q, 8).unwrap();
        let _ = idx.search_exact(&q, &mut [SearchResult { id: 0, distance: 0.0 }; 8]).unwrap();
    }
    if let Ok(id) = idx.insert(&[0.5; DIM]) {
        idx.delete(id).unwrap();
    }
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mutated_hnsw_indexes(
        which in 0usize..3,
        e in edits(HEADER),
        as_type in 0usize..6,
    ) {
        let original = &corpus()[which];
        let b = apply(original, &e);
        // Mostly as its own storage type; as another, the bytes must be refused, not misread.
        let as_type = if as_type < 3 { as_type } else { which };
        let accepted = match as_type {
            0 => exercise::<F32>(&b)?,
            1 => exercise::<I8>(&b)?,
            _ => exercise::<Binary<2>>(&b)?,
        };
        if accepted && as_type != which {
            prop_assert!(false, "an index of another storage kind was accepted");
        }
        if !e.fix_crc && b != *original {
            prop_assert!(!accepted, "a change went past the CRC");
        }
    }

    #[test]
    fn mutated_pq_codebooks(e in edits(32)) {
        static PQ: OnceLock<Vec<u8>> = OnceLock::new();
        let original = PQ.get_or_init(|| {
            let cfg = PQConfig { dim: DIM, num_subspaces: 4, num_centroids: 16 };
            let mut pq = ProductQuantizer::untrained(cfg).unwrap();
            let data: Vec<f32> = vectors(64, 5).into_iter().flatten().collect();
            pq.train(&data, 64, 4, 1).unwrap();
            pq.to_bytes()
        });
        let b = apply(original, &e);
        if let Ok(pq) = ProductQuantizer::from_bytes(&b) {
            let c = pq.config();
            let mut table = vec![0.0; c.table_len()];
            let _ = pq.distance_table(&[0.25; DIM][..c.dim.min(DIM)], &mut table);
            prop_assert_eq!(ProductQuantizer::from_bytes(&pq.to_bytes()).unwrap().to_bytes(), pq.to_bytes());
        } else {
            prop_assert!(b != *original, "the intact codebook was refused");
        }
    }
}

#[test]
fn the_corpus_reads_back() {
    for (i, b) in corpus().iter().enumerate() {
        let ok = [exercise::<F32>(b), exercise::<I8>(b), exercise::<Binary<2>>(b)].map(|r| r.unwrap());
        assert_eq!(ok.iter().filter(|&&x| x).count(), 1, "index {i}: {ok:?}");
        assert!(ok[i], "index {i} refused");
    }
}
