//! Persistence of the knowledge stores on the simulated ESP32 flash: a reboot restores the
//! same retrievals, a power cut at every flash operation keeps every acknowledged change, and
//! corrupt records are skipped and counted.

use std::collections::BTreeMap;

use super::*;
use crate::knowledge::{AnomalyConfig, RAGConfig, Retrieved};
use crate::store::sim::{Rng, SimFlash, SECTOR};

const DIM: usize = 16;
type Rag = MicroRAG<DIM, 24, 64>;
type Memory = SemanticMemory<DIM, 12, 8>;
type Detector = AnomalyDetector<DIM, 12>;

const SECTORS: usize = 3;
fn region() -> core::ops::Range<u32> {
    0..(SECTORS * SECTOR) as u32
}

fn open(flash: SimFlash) -> Store<SimFlash> {
    Store::open(flash, region()).expect("open").0
}

/// A random direction with a positive bias on one of four axes (clusters, so retrieval and
/// the detector have structure).
fn embedding(rng: &mut Rng) -> [f32; DIM] {
    let mut v = [0.0f32; DIM];
    for x in &mut v {
        *x = (rng.next_u64() >> 40) as f32 / 8e6 - 1.0;
    }
    v[rng.below(4)] += 3.0;
    v
}

fn text(i: usize) -> String {
    format!("fact number {i}: the board has {} pins, two cores and a radio", i * 7 % 41)
}

/// By embedding, then by words and embedding (the word terms are rebuilt from the texts on
/// load, so these must agree across a reboot too).
fn retrievals(rag: &mut Rag, queries: &[[f32; DIM]]) -> Vec<Vec<(u16, String, f32)>> {
    let row = |r: &Retrieved<'_>| (r.id, r.text.to_string(), r.score);
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let mut v: Vec<_> = rag.retrieve(q, 5).unwrap().iter().map(row).collect();
            v.extend(rag.retrieve_hybrid(&text(i), q, 5).unwrap().iter().map(row));
            v
        })
        .collect()
}

fn recalls(memory: &mut Memory, queries: &[[f32; DIM]], now: u64) -> Vec<Vec<(u16, Vec<u32>, f32)>> {
    queries
        .iter()
        .map(|q| {
            memory.recall(q, now, 4).unwrap().iter().map(|r| (r.id, r.tokens.to_vec(), r.score)).collect()
        })
        .collect()
}

fn fresh() -> (Rag, Memory, Detector) {
    (
        Rag::new(RAGConfig { max_text_bytes: 64, ..RAGConfig::default() }),
        Memory::new(),
        Detector::with_config(AnomalyConfig::default()),
    )
}

fn load_all(flash: SimFlash) -> (Rag, Memory, Detector, [LoadReport; 3], SimFlash) {
    let mut store = open(flash);
    let (mut rag, mut memory, mut detector) = fresh();
    let reports = [
        load_rag(&mut store, &mut rag).unwrap(),
        load_memory(&mut store, &mut memory).unwrap(),
        load_detector(&mut store, &mut detector).unwrap(),
    ];
    (rag, memory, detector, reports, store.into_flash())
}

#[test]
fn reboot_restores_the_same_results() {
    let mut rng = Rng(0xB007);
    let mut store = open(SimFlash::new(SECTORS));
    let (mut rag, mut memory, mut detector) = fresh();
    for i in 0..20 {
        let id = rag.add_knowledge(&text(i), &embedding(&mut rng)).unwrap();
        save_rag_entry(&mut store, &rag, id).unwrap();
    }
    for id in [3, 11, 12] {
        rag.forget(id).unwrap();
        save_rag_entry(&mut store, &rag, id).unwrap(); // forgotten: the record is removed
    }
    let readded = rag.add_knowledge("re-added after forgetting", &embedding(&mut rng)).unwrap();
    save_rag_entry(&mut store, &rag, readded).unwrap();
    for i in 0..15u32 {
        let tokens: Vec<u32> = (0..(i as usize % 8) + 1).map(|t| 1000 + i * 10 + t as u32).collect();
        let ttl = (i % 5 == 0).then_some(500);
        let kind = [MemoryType::Factual, MemoryType::Episodic, MemoryType::Procedural][i as usize % 3];
        let e = embedding(&mut rng);
        let stored =
            memory.add_memory_at(&e, &tokens, kind, (i % 10) as f32 / 10.0, ttl, u64::from(i) * 40).unwrap();
        save_memory_entry(&mut store, &memory, stored.id).unwrap();
    }
    memory.forget(2).unwrap();
    save_memory_entry(&mut store, &memory, 2).unwrap();
    for _ in 0..30 {
        let learned = detector.learn(&embedding(&mut rng)).unwrap();
        save_detector_learned(&mut store, &detector, learned).unwrap();
    }
    assert!(detector.seen() > 12, "the reservoir sampling ran");

    let queries: Vec<[f32; DIM]> = (0..20).map(|_| embedding(&mut rng)).collect();
    let before_rag = retrievals(&mut rag, &queries);
    let before_mem = recalls(&mut memory, &queries, 700);
    let before_det: Vec<_> = queries.iter().map(|q| detector.try_check(q).unwrap()).collect();

    // Reboot: the same flash bytes, fresh stores.
    let (mut rag2, mut memory2, mut detector2, reports, _) = load_all(store.into_flash());
    assert_eq!(reports[0], LoadReport { loaded: 18, skipped_corrupt: 0 });
    assert_eq!(reports[1], LoadReport { loaded: memory.len(), skipped_corrupt: 0 });
    assert_eq!(reports[2], LoadReport { loaded: detector.len(), skipped_corrupt: 0 });
    assert_eq!(rag2.len(), rag.len());
    for id in 0..24 {
        assert_eq!(rag2.text(id), rag.text(id), "id {id} keeps its text");
    }
    assert_eq!(retrievals(&mut rag2, &queries), before_rag);
    assert_eq!(recalls(&mut memory2, &queries, 700), before_mem);
    let after_det: Vec<_> = queries.iter().map(|q| detector2.try_check(q).unwrap()).collect();
    assert_eq!(after_det, before_det);
    assert_eq!(detector2.seen(), detector.seen());
    // The sampler state came back too: the same future learns give the same detector.
    for _ in 0..10 {
        let e = embedding(&mut rng);
        assert_eq!(detector.learn(&e).unwrap(), detector2.learn(&e).unwrap());
    }
    assert_eq!(detector.threshold(), detector2.threshold());
    // A restored store keeps working: forget and add reuse ids as before.
    rag.forget(5).unwrap();
    rag2.forget(5).unwrap();
    let e = embedding(&mut rng);
    assert_eq!(rag.add_knowledge("new", &e).unwrap(), rag2.add_knowledge("new", &e).unwrap());
}

#[test]
fn loading_into_a_non_empty_store_is_refused() {
    let mut store = open(SimFlash::new(SECTORS));
    let (mut rag, _, _) = fresh();
    rag.add_knowledge("x", &[1.0; DIM]).unwrap();
    assert!(matches!(load_rag(&mut store, &mut rag), Err(Error::Invalid { .. })));
}

#[test]
fn corrupt_records_are_skipped_and_counted() {
    let mut rng = Rng(0xC0FF);
    let mut store = open(SimFlash::new(SECTORS));
    let (mut rag, mut memory, mut detector) = fresh();
    for i in 0..6 {
        let id = rag.add_knowledge(&text(i), &embedding(&mut rng)).unwrap();
        save_rag_entry(&mut store, &rag, id).unwrap();
        let stored = memory.add_memory(&embedding(&mut rng), &[i as u32], MemoryType::Factual).unwrap();
        save_memory_entry(&mut store, &memory, stored.id).unwrap();
    }
    for _ in 0..6 {
        let learned = detector.learn(&embedding(&mut rng)).unwrap();
        save_detector_learned(&mut store, &detector, learned).unwrap();
    }
    let mut buf = [0u8; MAX_VALUE_LEN];
    let mut damage = |store: &mut Store<SimFlash>, k: Key, f: &dyn Fn(&mut Vec<u8>)| {
        let n = store.get(k, &mut buf).unwrap().unwrap();
        let mut v = buf[..n].to_vec();
        f(&mut v);
        store.put(k, &v).unwrap();
    };
    damage(&mut store, key(NS_KNOWLEDGE, 1), &|v| v[0] = 9); // unknown version
    damage(&mut store, key(NS_KNOWLEDGE, 4), &|v| v.truncate(v.len() - 1)); // bad length
    damage(&mut store, key(NS_MEMORY, 2), &|v| v[1] = 17); // wrong dimension
    damage(&mut store, key(NS_MEMORY, 3), &|v| v[3] = 7); // unknown kind
    damage(&mut store, key(NS_DETECTOR, 1 + 2), &|v| v[3..7].copy_from_slice(&f32::NAN.to_le_bytes())); // NaN scale
    store.put(key(NS_KNOWLEDGE, 200), b"\x01junk").unwrap(); // id beyond the capacity
    store.put(key(NS_KNOWLEDGE, 7), &[]).unwrap(); // empty record

    let (mut rag2, memory2, detector2, reports, flash) = load_all(store.into_flash());
    assert_eq!(reports[0], LoadReport { loaded: 4, skipped_corrupt: 4 });
    assert_eq!(reports[1], LoadReport { loaded: 4, skipped_corrupt: 2 });
    assert_eq!(reports[2], LoadReport { loaded: 5, skipped_corrupt: 1 });
    for id in [0, 2, 3, 5] {
        assert_eq!(rag2.text(id), rag.text(id));
    }
    assert_eq!(rag2.text(1), None);
    assert!(memory2.tokens(0).is_some() && memory2.tokens(2).is_none());
    // The detector lost one reference and recalibrated from the other five.
    assert_eq!(detector2.len(), 5);
    assert!(detector2.threshold().is_some());
    let q = embedding(&mut rng);
    assert_eq!(rag2.retrieve(&q, 1).unwrap().len(), 1);

    // A corrupt detector header: every intact reference still loads, recalibrated.
    let mut store = open(flash);
    store.put(key(NS_DETECTOR, 0), b"\x01\x10").unwrap();
    let mut d = Detector::with_config(AnomalyConfig::default());
    assert_eq!(load_detector(&mut store, &mut d).unwrap(), LoadReport { loaded: 5, skipped_corrupt: 2 });
    assert_eq!(d.seen(), 5);
    assert!(d.try_check(&q).is_ok());
}

// ---- power loss --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Op {
    AddKnowledge(usize),
    ForgetKnowledge(u16),
    AddMemory(u32),
    ForgetMemory(u16),
    Learn,
}

fn workload() -> Vec<Op> {
    let mut rng = Rng(0x9A55);
    (0..240)
        .map(|i| match rng.below(10) {
            0..=3 => Op::AddKnowledge(i),
            4..=5 => Op::ForgetKnowledge(rng.below(24) as u16),
            6..=7 => Op::AddMemory(i as u32),
            8 => Op::ForgetMemory(rng.below(12) as u16),
            _ => Op::Learn,
        })
        .collect()
}

/// The state a load must give back, as comparable values: knowledge id -> (text, codes),
/// memory id -> (tokens, codes), detector references' codes and seen count.
#[derive(Clone, Debug, PartialEq, Default)]
struct Snapshot {
    rag: BTreeMap<u16, (String, Vec<i8>)>,
    memory: BTreeMap<u16, (Vec<u32>, Vec<i8>)>,
    refs: Vec<Vec<i8>>,
    seen: u64,
}

fn snapshot(rag: &Rag, memory: &Memory, detector: &Detector) -> Snapshot {
    let mut s = Snapshot::default();
    for id in 0..24u16 {
        if let (Some(t), Some(e)) = (rag.text(id), rag.embedding(id)) {
            s.rag.insert(id, (t.to_string(), e.q.to_vec()));
        }
    }
    for id in 0..12u16 {
        if let Some(e) = memory.entry(id) {
            s.memory.insert(id, (e.tokens.to_vec(), e.vec.q.to_vec()));
        }
    }
    s.refs = (0..detector.len()).map(|i| detector.reference(i).unwrap().q.to_vec()).collect();
    s.seen = detector.seen();
    s
}

/// Runs the workload with write-through saves until a save fails (the cut). Returns the
/// flash, the state of the last acknowledged save and the state the interrupted save was
/// writing (if one was).
fn run(flash: SimFlash, ops: &[Op]) -> (SimFlash, Snapshot, Option<Snapshot>) {
    let mut store = open(flash);
    let (mut rag, mut memory, mut detector) = fresh();
    let mut rng = Rng(0xE3B);
    let mut acked = Snapshot::default();
    for &op in ops {
        let e = embedding(&mut rng);
        let result = match op {
            Op::AddKnowledge(i) => match rag.add_knowledge(&text(i), &e) {
                Ok(id) => save_rag_entry(&mut store, &rag, id),
                Err(_) => continue, // full
            },
            Op::ForgetKnowledge(id) => match rag.forget(id) {
                Ok(()) => delete_rag_entry(&mut store, id),
                Err(_) => continue,
            },
            Op::AddMemory(i) => {
                let stored = memory.add_memory_at(&e, &[i; 8], MemoryType::Episodic, 0.5, None, i.into());
                save_memory_entry(&mut store, &memory, stored.unwrap().id)
            }
            Op::ForgetMemory(id) => match memory.forget(id) {
                Ok(()) => save_memory_entry(&mut store, &memory, id),
                Err(_) => continue,
            },
            Op::Learn => {
                let learned = detector.learn(&e).unwrap();
                save_detector_learned(&mut store, &detector, learned)
            }
        };
        let now = snapshot(&rag, &memory, &detector);
        match result {
            Ok(()) => acked = now,
            Err(e) => {
                assert!(matches!(e, Error::Storage { .. }), "only the cut may fail: {e:?}");
                return (store.into_flash(), acked, Some(now));
            }
        }
    }
    (store.into_flash(), acked, None)
}

/// The loaded state is the acknowledged one, except that the interrupted change may have
/// happened: per entry, each differing entry must match the interrupted state.
fn check(loaded: &Snapshot, acked: &Snapshot, next: Option<&Snapshot>, cut: usize) {
    if loaded == acked {
        return;
    }
    let next = next.unwrap_or_else(|| panic!("cut {cut}: loaded state differs with no write cut"));
    if loaded == next {
        return;
    }
    // The detector's two puts: a replaced reference may be in with the old header.
    assert_eq!(loaded.rag, acked.rag, "cut {cut}: knowledge");
    assert_eq!(loaded.memory, acked.memory, "cut {cut}: memories");
    assert_eq!(loaded.seen, acked.seen, "cut {cut}: detector header");
    assert_eq!(loaded.refs.len(), acked.refs.len(), "cut {cut}: detector references");
    assert_eq!(loaded.refs, next.refs, "cut {cut}: detector references");
}

/// Cuts the power at every flash operation the workload performs whose index is `part`
/// modulo `parts` (the two halves run as two tests, in parallel), reboots, loads fresh
/// stores and checks them against what was acknowledged.
fn power_loss_cuts(part: usize, parts: usize) {
    let ops = workload();
    let (flash, acked, cut) = run(SimFlash::new(SECTORS), &ops);
    assert!(cut.is_none());
    let (total, erases) = (flash.ops, flash.erases);
    assert!(erases >= SECTORS - 1, "the workload must recycle pages ({erases} erases)");
    let (rag, memory, detector, reports, _) = load_all(flash);
    assert_eq!(snapshot(&rag, &memory, &detector), acked);
    assert!(reports.iter().all(|r| r.skipped_corrupt == 0));
    let mut differing = 0;
    for cut in (part..total).step_by(parts) {
        let mut flash = SimFlash::new(SECTORS);
        flash.cut_at(cut);
        let (mut flash, acked, next) = run(flash, &ops);
        assert!(flash.power_lost(), "cut {cut} never happened");
        flash.power_on();
        let (rag, memory, detector, reports, _) = load_all(flash);
        let loaded = snapshot(&rag, &memory, &detector);
        differing += usize::from(loaded != acked);
        check(&loaded, &acked, next.as_ref(), cut);
        assert!(reports.iter().all(|r| r.skipped_corrupt == 0), "cut {cut}: {reports:?}");
    }
    eprintln!(
        "{} of {total} cut points, {erases} sector erases; {differing} reloads include the cut write",
        total.div_ceil(parts)
    );
}

#[test]
fn power_loss_at_every_flash_operation_keeps_acknowledged_entries_even() {
    power_loss_cuts(0, 2);
}

#[test]
fn power_loss_at_every_flash_operation_keeps_acknowledged_entries_odd() {
    power_loss_cuts(1, 2);
}

#[test]
fn restore_places_entries_at_their_ids() {
    let mut rag = Rag::new(RAGConfig::default());
    let e = crate::knowledge::encode::<DIM>(&[1.0; DIM]);
    rag.restore(5, "five", &e).unwrap();
    rag.restore(2, "two", &e).unwrap();
    assert_eq!((rag.text(2), rag.text(5), rag.len()), (Some("two"), Some("five"), 2));
    assert!(matches!(rag.restore(5, "again", &e), Err(Error::Invalid { .. })), "slot in use");
    assert!(matches!(rag.restore(24, "beyond", &e), Err(Error::Invalid { .. })), "beyond the capacity");
    assert!(matches!(rag.restore(3, "", &e), Err(Error::Invalid { .. })), "empty text");
    let nan = I8Vector { scale: f32::NAN, ..e };
    assert!(matches!(rag.restore(3, "nan", &nan), Err(Error::Invalid { .. })));
    // New adds take the next slot above the restored ones; the free slots below are reused
    // once the store is full.
    assert_eq!(rag.add_knowledge("six", &[0.5; DIM]).unwrap(), 6);
    for _ in 7..24 {
        rag.add_knowledge("more", &[0.5; DIM]).unwrap();
    }
    let mut reused: Vec<u16> = (0..4).map(|_| rag.add_knowledge("gap", &[0.5; DIM]).unwrap()).collect();
    reused.sort();
    assert_eq!(reused, vec![0, 1, 3, 4]);
    assert!(matches!(rag.add_knowledge("full", &[0.5; DIM]), Err(Error::Full { .. })));
    assert_eq!(rag.text(5), Some("five"));
    assert!(rag.retrieve(&[1.0; DIM], 1).unwrap()[0].score > 0.999);
}

/// Flash damaged behind the store's back after boot (a bit cleared in the free space where
/// the next record goes): the save is reported, not acknowledged, for a knowledge entry, a
/// memory and the detector. Today's saves returned `Ok` without reading back.
#[test]
fn a_save_that_does_not_read_back_is_an_error() {
    let mut rng = Rng(11);
    let (mut rag, mut memory, mut detector) = fresh();
    let mut store = open(SimFlash::new(SECTORS));
    let id = rag.add_knowledge(&text(1), &embedding(&mut rng)).unwrap();
    save_rag_entry(&mut store, &rag, id).unwrap();
    // Clear a bit inside the next record's bytes (its header space left erased, so the
    // store writes there), before each save.
    fn damage_next_record(store: &mut Store<SimFlash>) {
        let data = &mut store.flash().data;
        let last = data[..SECTOR - 8].iter().rposition(|&b| b != 0xFF).unwrap();
        data[(last + 1).next_multiple_of(4) + 12] &= !0x01;
    }
    damage_next_record(&mut store);
    let id2 = rag.add_knowledge(&text(2), &embedding(&mut rng)).unwrap();
    let e = save_rag_entry(&mut store, &rag, id2).unwrap_err();
    assert!(e.to_string().contains("did not read back"), "{e}");
    damage_next_record(&mut store);
    let stored = memory.add_memory(&embedding(&mut rng), &[1, 2, 3], MemoryType::Factual).unwrap();
    assert!(save_memory_entry(&mut store, &memory, stored.id).is_err());
    damage_next_record(&mut store);
    let learned = detector.learn(&embedding(&mut rng)).unwrap();
    assert!(save_detector_learned(&mut store, &detector, learned).is_err());
    // The record saved before the damage still reads.
    let mut buf = [0u8; MAX_VALUE_LEN];
    assert!(store.get(key(NS_KNOWLEDGE, id.into()), &mut buf).unwrap().is_some());
}

/// An adapter file longer than one record is kept in pieces and read back whole; a shorter one
/// saved after it drops the old pieces; sizes outside 1..=MAX_FILE are refused.
#[test]
fn adapter_files_are_kept_in_pieces_and_replaced_whole() {
    let mut store = open(SimFlash::new(SECTORS));
    let mut out = [0u8; crate::lora::MAX_FILE];
    assert_eq!(load_adapter(&mut store, &mut out).unwrap(), None);
    let long: Vec<u8> = (0..crate::lora::MAX_FILE).map(|i| (i * 7 % 251) as u8).collect();
    save_adapter(&mut store, &long).unwrap();
    assert_eq!(load_adapter(&mut store, &mut out).unwrap(), Some(long.len()));
    assert_eq!(&out[..], &long[..]);
    let short = [9u8; 456];
    save_adapter(&mut store, &short).unwrap();
    let mut store = open(store.into_flash());
    assert_eq!(load_adapter(&mut store, &mut out).unwrap(), Some(456));
    assert_eq!(&out[..456], &short[..]);
    assert!(save_adapter(&mut store, &[]).is_err());
    assert!(save_adapter(&mut store, &vec![0u8; crate::lora::MAX_FILE + 1]).is_err());
    // Too small a buffer is an error, not a panic.
    save_adapter(&mut store, &long).unwrap();
    assert!(load_adapter(&mut store, &mut [0u8; 600]).is_err());
}
