//! Host snapshots of the knowledge stores: written atomically, reloaded with the same
//! retrievals, and a truncated or damaged file refused whole without touching what was saved.

use std::path::PathBuf;

use ruvllm_cli::snapshot::{load_snapshot, save_snapshot, SnapshotError};
use ruvllm_esp32::knowledge::{
    AnomalyConfig, AnomalyDetector, LoadReport, MemoryType, MicroRAG, RAGConfig, SemanticMemory,
};
use ruvllm_esp32::vector::metric::SplitMix;

const DIM: usize = 32;
type Rag = MicroRAG<DIM, 32, 96>;
type Memory = SemanticMemory<DIM, 16, 12>;
type Detector = AnomalyDetector<DIM, 16>;
const SECTORS: usize = 8;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ruvllm-snapshot-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn embedding(rng: &mut SplitMix) -> [f32; DIM] {
    let mut v = [0.0f32; DIM];
    for x in &mut v {
        *x = (rng.next_u64() >> 40) as f32 / 8e6 - 1.0;
    }
    v[rng.below(5)] += 3.0;
    v
}

fn fresh() -> (Rag, Memory, Detector) {
    (
        Rag::new(RAGConfig { max_text_bytes: 96, ..RAGConfig::default() }),
        Memory::new(),
        Detector::with_config(AnomalyConfig::default()),
    )
}

/// Stores with `n` knowledge entries (one forgotten), memories and a learned detector.
fn filled(n: usize, seed: u64) -> (Rag, Memory, Detector) {
    let mut rng = SplitMix(seed);
    let (mut rag, mut memory, mut detector) = fresh();
    for i in 0..n {
        rag.add_knowledge(&format!("entry {i}: the sensor reads {} degrees", i * 3), &embedding(&mut rng))
            .unwrap();
        let tokens: Vec<u32> = (0..(i % 12) as u32 + 1).collect();
        memory
            .add_memory_at(&embedding(&mut rng), &tokens, MemoryType::Factual, 0.3, None, i as u64)
            .unwrap();
        detector.learn(&embedding(&mut rng)).unwrap();
    }
    rag.forget(1).unwrap();
    (rag, memory, detector)
}

type Answers = (Vec<Vec<(u16, String, f32)>>, Vec<Vec<(u16, Vec<u32>, f32)>>, Vec<(bool, f32)>);

fn answers(rag: &mut Rag, memory: &mut Memory, detector: &Detector) -> Answers {
    let mut rng = SplitMix(0xA5);
    let queries: Vec<[f32; DIM]> = (0..12).map(|_| embedding(&mut rng)).collect();
    let r = queries
        .iter()
        .map(|q| rag.retrieve(q, 4).unwrap().iter().map(|x| (x.id, x.text.to_string(), x.score)).collect())
        .collect();
    let m = queries
        .iter()
        .map(|q| {
            memory.recall(q, 100, 4).unwrap().iter().map(|x| (x.id, x.tokens.to_vec(), x.score)).collect()
        })
        .collect();
    let d = queries
        .iter()
        .map(|q| {
            let c = detector.try_check(q).unwrap();
            (c.is_anomaly, c.score)
        })
        .collect();
    (r, m, d)
}

type Loaded = ((Rag, Memory, Detector), [LoadReport; 3]);

fn load(path: &std::path::Path) -> Result<Loaded, SnapshotError> {
    let (mut rag, mut memory, mut detector) = fresh();
    let report = load_snapshot(path, &mut rag, &mut memory, &mut detector)?;
    assert!(report.boot.is_clean());
    Ok(((rag, memory, detector), [report.knowledge, report.memory, report.detector]))
}

#[test]
fn snapshot_round_trip_gives_the_same_answers() {
    let path = dir().join("round-trip.snap");
    let (mut rag, mut memory, detector) = filled(20, 1);
    save_snapshot(&path, SECTORS, &rag, &memory, &detector).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, 16 + SECTORS * 4096);
    let ((mut rag2, mut memory2, detector2), reports) = load(&path).unwrap();
    assert_eq!(reports[0], LoadReport { loaded: 19, skipped_corrupt: 0 });
    assert_eq!(reports[1], LoadReport { loaded: 16, skipped_corrupt: 0 });
    assert_eq!(reports[2], LoadReport { loaded: 16, skipped_corrupt: 0 });
    assert_eq!(answers(&mut rag2, &mut memory2, &detector2), answers(&mut rag, &mut memory, &detector));
    assert_eq!(detector2.seen(), 20);
}

#[test]
fn bad_files_are_refused_and_the_saved_snapshot_survives() {
    let d = dir();
    let path = d.join("keep.snap");
    let (mut rag, mut memory, detector) = filled(10, 2);
    save_snapshot(&path, SECTORS, &rag, &memory, &detector).unwrap();
    let good = std::fs::read(&path).unwrap();
    let want = answers(&mut rag, &mut memory, &detector);

    // A save that cannot fit (a 2-sector image is too small) fails and leaves the file.
    let (big_rag, big_memory, big_detector) = filled(32, 3);
    let err = save_snapshot(&path, 2, &big_rag, &big_memory, &big_detector).unwrap_err();
    assert!(matches!(err, SnapshotError::Store(_)), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), good, "a failed save leaves the previous file");

    // Truncated anywhere, a flipped bit, a wrong magic: refused with a clear error.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..10].to_vec(), "truncated"),
        (good[..good.len() - 4096].to_vec(), "truncated"),
        (good[..good.len() - 1].to_vec(), "truncated"),
        (
            {
                let mut b = good.clone();
                b[16 + 100] ^= 0x10;
                b
            },
            "CRC",
        ),
        (
            {
                let mut b = good.clone();
                b[0] = b'X';
                b
            },
            "magic",
        ),
        ([good.as_slice(), &[0u8]].concat(), "after the image"),
    ];
    for (i, (bytes, why)) in cases.iter().enumerate() {
        let bad = d.join(format!("bad-{i}.snap"));
        std::fs::write(&bad, bytes).unwrap();
        match load(&bad) {
            Err(e @ SnapshotError::Format { .. }) => {
                assert!(e.to_string().contains(why), "case {i}: {e}");
            }
            Err(e) => panic!("case {i}: wrong error {e}"),
            Ok(_) => panic!("case {i}: a bad file loaded"),
        }
        assert_eq!(&std::fs::read(&bad).unwrap(), bytes, "loading never writes the file");
    }
    assert!(matches!(load(&d.join("absent.snap")), Err(SnapshotError::Input(_))));

    // A write interrupted before its rename leaves only a stray temporary file: the snapshot
    // itself still loads and answers as before.
    std::fs::write(d.join(".keep.snap.tmp"), &good[..5000]).unwrap();
    let ((mut rag2, mut memory2, detector2), _) = load(&path).unwrap();
    assert_eq!(answers(&mut rag2, &mut memory2, &detector2), want);
    // And the next save replaces it whole.
    save_snapshot(&path, SECTORS, &big_rag, &big_memory, &big_detector).unwrap();
    let (_, reports) = load(&path).unwrap();
    assert_eq!(reports[0].loaded, 31);
}
