use super::*;
use proptest::prelude::*;
use ruvllm_esp32::vector::pq::{rerank_exact, PQConfig, ProductQuantizer};
use std::io::Write;
use std::time::Instant;

fn vecs_file<T: Copy>(dim: i32, rows: &[&[T]], to_le: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        out.extend_from_slice(&dim.to_le_bytes());
        for &x in *r {
            out.extend(to_le(x));
        }
    }
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for v in [n, rows, cols] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend((0..n * rows * cols).map(|i| (i * 7 % 256) as u8));
    out
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend_from_slice(&n.to_be_bytes());
    out.extend((0..n).map(|i| (i % 10) as u8));
    out
}

#[test]
fn vecs_formats_parse() {
    let f = vecs_file(2, &[&[1.0f32, 2.0], &[3.0, 4.0]], |x| x.to_le_bytes().to_vec());
    let v = parse_vecs::<f32>(&f).unwrap();
    assert_eq!((v.dim, v.len(), v.row(1)), (2, 2, &[3.0, 4.0][..]));
    let b = vecs_file(3, &[&[1u8, 2, 3]], |x| vec![x]);
    assert_eq!(parse_vecs::<u8>(&b).unwrap().data, [1, 2, 3]);
    let i = vecs_file(1, &[&[7i32], &[-1]], |x| x.to_le_bytes().to_vec());
    assert_eq!(parse_vecs::<i32>(&i).unwrap().data, [7, -1]);
    assert_eq!(decode(&gz(&f)[..], 4).unwrap(), f);
}

#[test]
fn vecs_errors_are_typed() {
    let f = vecs_file(2, &[&[1.0f32, 2.0], &[3.0, 4.0]], |x| x.to_le_bytes().to_vec());
    assert!(matches!(parse_vecs::<f32>(&f[..f.len() - 1]), Err(Problem::Truncated { .. })));
    assert!(matches!(parse_vecs::<f32>(&f[..2]), Err(Problem::Truncated { .. })));
    assert!(matches!(parse_vecs::<f32>(&[]), Err(Problem::Empty)));
    let mut bad = f.clone();
    bad[12] = 3; // second vector claims dimension 3; same record size as the file length
    let mut bad3 = bad.clone();
    bad3.truncate(24);
    assert!(matches!(parse_vecs::<f32>(&bad3), Err(Problem::InconsistentDim { index: 1, .. })));
    let mut huge = f.clone();
    huge[..4].copy_from_slice(&i32::MAX.to_le_bytes());
    assert!(matches!(parse_vecs::<f32>(&huge), Err(Problem::BadDim { .. })));
    huge[..4].copy_from_slice(&(-5i32).to_le_bytes());
    assert!(matches!(parse_vecs::<f32>(&huge), Err(Problem::BadDim { .. })));
    // A large but allowed dimension against a tiny file: refused before allocating.
    huge[..4].copy_from_slice(&(1i32 << 20).to_le_bytes());
    assert!(matches!(parse_vecs::<f32>(&huge), Err(Problem::Truncated { .. })));
    assert!(matches!(decode(&[0x1f, 0x8b, 0, 0][..], 4), Err(Problem::Gzip(_))));
}

#[test]
fn idx_parse_and_errors() {
    let im = idx_images(3, 2, 2);
    let v = parse_idx_images(&im).unwrap();
    assert_eq!((v.dim, v.len()), (4, 3));
    assert_eq!(parse_idx_labels(&idx_labels(5)).unwrap(), [0, 1, 2, 3, 4]);
    assert!(matches!(parse_idx_images(&idx_labels(5)), Err(Problem::BadMagic { .. })));
    assert!(matches!(parse_idx_labels(&im), Err(Problem::BadMagic { .. })));
    assert!(matches!(parse_idx_images(&im[..im.len() - 1]), Err(Problem::Truncated { .. })));
    let mut extra = im.clone();
    extra.push(0);
    assert!(matches!(parse_idx_images(&extra), Err(Problem::TrailingBytes { extra: 1 })));
    let mut hostile = im.clone();
    hostile[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(parse_idx_images(&hostile), Err(Problem::Truncated { .. })));
    hostile[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(parse_idx_images(&hostile), Err(Problem::BadDim { .. })));
}

#[test]
fn errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("ruvllm-datasets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("broken.fvecs.gz");
    std::fs::write(&p, gz(&[1, 0, 0, 0, 9])).unwrap();
    let e = read_fvecs(&p).unwrap_err();
    assert!(e.to_string().contains("broken.fvecs.gz"), "{e}");
    assert!(matches!(e.problem, Problem::Truncated { .. }));
    let e = read_idx_images(&dir.join("missing")).unwrap_err();
    assert!(matches!(e.problem, Problem::Input(_)) && e.to_string().contains("missing"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ground_truth_metrics() {
    let base = [1.0, 0.0, 0.0, 1.0, 3.0, 3.0, -1.0, 0.0];
    let q = [1.0, 0.1];
    let gt = |m| ground_truth(&base, &q, 2, 4, m).unwrap().data;
    assert_eq!(gt(Metric::Euclidean), [0, 1, 3, 2]);
    assert_eq!(gt(Metric::Dot), [2, 0, 1, 3]);
    assert_eq!(gt(Metric::Cosine), [0, 2, 1, 3]);
    // k past n is capped; many queries over several threads agree with one at a time.
    assert_eq!(ground_truth(&base, &q, 2, 10, Metric::Euclidean).unwrap().dim, 4);
    let qs: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let all = ground_truth(&base, &qs, 2, 2, Metric::Euclidean).unwrap();
    assert!(ground_truth(&base, &qs[..3], 2, 2, Metric::Dot).is_err());
    for i in 0..20 {
        assert_eq!(
            all.row(i),
            ground_truth(&base, &qs[i * 2..i * 2 + 2], 2, 2, Metric::Euclidean).unwrap().data
        );
    }
    assert_eq!(recall_at_k(&all, &all, 2), 1.0);
}

fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for &(at, x) in flips {
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
    }
    bytes.truncate(cut);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn parsers_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in 0usize..200,
        zip in any::<bool>(),
    ) {
        let f = vecs_file(3, &[&[1.0f32, 2.0, 3.0], &[4.0, 5.0, 6.0]], |x| x.to_le_bytes().to_vec());
        let row: &[u8] = &[1, 2, 3, 4, 5];
        let b = vecs_file(5, &[row; 4], |x| vec![x]);
        let i = vecs_file(2, &[&[1i32, 2], &[3, 4]], |x| x.to_le_bytes().to_vec());
        for file in [f, b, i, idx_images(4, 3, 3), idx_labels(20)] {
            let m = mutate(file, &flips, cut);
            let m = if zip { mutate(gz(&m), &flips[..flips.len().min(1)], usize::MAX) } else { m };
            if let Ok(raw) = decode(&m[..], 4) {
                let _ = parse_vecs::<f32>(&raw);
                let _ = parse_vecs::<u8>(&raw);
                let _ = parse_vecs::<i32>(&raw);
                let _ = parse_idx_images(&raw);
                let _ = parse_idx_labels(&raw);
            }
        }
    }
}

const MNIST_IMAGES: &str = "../../../shared/data/mnist-t10k-images-idx3-ubyte.gz";
const MNIST_LABELS: &str = "../../../shared/data/mnist-t10k-labels-idx1-ubyte.gz";

/// The real files, or None (and a message) when absent; CI must have them.
fn mnist() -> Option<(Vectors<u8>, Vec<u8>)> {
    let (ip, lp) = (Path::new(MNIST_IMAGES), Path::new(MNIST_LABELS));
    if !ip.exists() || !lp.exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "MNIST files missing at {MNIST_IMAGES}");
        println!("skipping: MNIST not found at {MNIST_IMAGES}");
        return None;
    }
    Some((read_idx_images(ip).unwrap(), read_idx_labels(lp).unwrap()))
}

#[test]
fn mnist_reads_and_mutations_never_panic() {
    let Some((images, labels)) = mnist() else { return };
    assert_eq!((images.len(), images.dim, labels.len()), (10_000, 784, 10_000));
    assert!(labels.iter().all(|&l| l < 10));
    // A real file cut down to 20 images, then mutated.
    let mut small = idx_images(20, 28, 28);
    small[16..].copy_from_slice(&images.data[..20 * 784]);
    let lab = [&idx_labels(0)[..4], &20u32.to_be_bytes(), &labels[..20]].concat();
    proptest!(ProptestConfig::with_cases(200), |(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in 0usize..16_000)| {
        for file in [small.clone(), lab.clone()] {
            let m = mutate(file, &flips, cut);
            let _ = parse_idx_images(&m);
            let _ = parse_idx_labels(&m);
            let _ = parse_vecs::<u8>(&m);
        }
    });
}

/// PQ on MNIST: 9,000 base images, the last 1,000 as queries, Euclidean recall@10 against
/// brute force, with ADC alone and with exact re-ranking of ADC's top 100.
#[test]
fn mnist_pq_recall() {
    let Some((images, _)) = mnist() else { return };
    let all = images.to_f32();
    let dim = all.dim;
    let (base, queries) = all.data.split_at(9_000 * dim);
    let (k, shortlist) = (10, 100);
    let t = Instant::now();
    let truth = ground_truth(base, queries, dim, k, Metric::Euclidean).unwrap();
    println!("ground truth (brute force, 1000 x 9000): {:.2} s", t.elapsed().as_secs_f64());

    let cfg = PQConfig { dim, num_subspaces: 98, num_centroids: 256 };
    let mut pq = ProductQuantizer::untrained(cfg).unwrap();
    let t = Instant::now();
    pq.train(base, 9_000, 8, 42).unwrap();
    println!(
        "PQ {}x{} train (k-means++, 8 Lloyd steps, 9000 vectors): {:.2} s",
        cfg.num_subspaces,
        cfg.num_centroids,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut codes = vec![0u8; 9_000 * cfg.code_len()];
    for (v, c) in base.chunks_exact(dim).zip(codes.chunks_exact_mut(cfg.code_len())) {
        pq.encode_into(v, c).unwrap();
    }
    println!("encode 9000: {:.2} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut table = vec![0.0; cfg.table_len()];
    let mut adc = Vectors { dim: k, data: Vec::new() };
    let mut reranked = Vectors { dim: k, data: Vec::new() };
    let mut top = vec![(0u32, 0.0f32); shortlist];
    for q in queries.chunks_exact(dim) {
        pq.distance_table(q, &mut table).unwrap();
        let got = pq.search_adc(&table, &codes, &mut top).unwrap();
        assert_eq!(got, shortlist);
        adc.data.extend(top[..k].iter().map(|c| c.0));
        rerank_exact(q, base, &mut top).unwrap();
        reranked.data.extend(top[..k].iter().map(|c| c.0));
    }
    let secs = t.elapsed().as_secs_f64();
    let (r_adc, r_rerank) = (recall_at_k(&adc, &truth, k), recall_at_k(&reranked, &truth, k));
    println!(
        "MNIST PQ {} subspaces x {} centroids: {} B/vector vs {} B f32, compression {:.1}x (codebook {} KiB)",
        cfg.num_subspaces,
        cfg.num_centroids,
        cfg.code_len(),
        dim * 4,
        pq.compression_ratio(),
        cfg.codebook_len() * 4 / 1024
    );
    println!(
        "recall@10 ADC alone: {r_adc:.4}; ADC top-{shortlist} + exact re-rank: {r_rerank:.4}; {:.3} ms/query",
        secs * 1e3 / 1000.0
    );
    assert!(r_adc > 0.88, "ADC recall {r_adc}");
    assert!(r_rerank > 0.99, "re-ranked recall {r_rerank}");

    // The trained quantizer survives serialization bit for bit.
    let bytes = pq.to_bytes();
    let back = ProductQuantizer::from_bytes(&bytes).unwrap();
    assert_eq!(back.codebook(), pq.codebook());
    assert_eq!(back.encode(&queries[..dim]).unwrap(), pq.encode(&queries[..dim]).unwrap());
}
