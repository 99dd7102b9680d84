//! Fuzzing of the vector dataset readers (`index bench --base/--queries/--ground-truth`):
//! `.fvecs`/`.bvecs`/`.ivecs` and MNIST IDX files, plain and gzipped, made valid, then mutated,
//! cut, extended and given forged headers. Results may be Ok or Err, never a panic, and never a
//! huge allocation (the global allocator below refuses anything over 64 MiB, which aborts the
//! test). What is accepted must be exactly what the bytes hold. Cases per property: env
//! `FUZZ_CASES` (default 256).

use std::io::Write;

use proptest::prelude::*;
use ruvllm_cli::datasets::{decode, parse_idx_images, parse_idx_labels, parse_vecs, Vectors};

/// Inputs are at most a few KiB (up to ~1000x that gunzipped); no reader may need more.
const MAX_ALLOC: usize = 64 << 20;

#[path = "../../ruvllm-esp32/tests/common/fuzz.rs"]
mod fuzz;
use fuzz::cases;

#[global_allocator]
static ALLOC: fuzz::Capped<MAX_ALLOC> = fuzz::Capped;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A valid file of one of the five kinds: (kind, bytes). Kinds: 0 fvecs, 1 bvecs, 2 ivecs,
/// 3 IDX images, 4 IDX labels.
fn valid_file() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (0u8..5, 1usize..6, 0usize..6, 1u32..5, any::<u64>()).prop_map(|(kind, dim, n, side, seed)| {
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut out = Vec::new();
        match kind {
            0..=2 => {
                for _ in 0..n.max(1) {
                    out.extend((dim as i32).to_le_bytes());
                    for _ in 0..dim {
                        match kind {
                            0 => out.extend((next() as u32 as f32 / 7.0).to_le_bytes()),
                            1 => out.push(next() as u8),
                            _ => out.extend((next() as i32).to_le_bytes()),
                        }
                    }
                }
            }
            3 => {
                out.extend([0, 0, 8, 3]);
                for v in [n as u32, side, side + 1] {
                    out.extend(v.to_be_bytes());
                }
                out.extend((0..n as u32 * side * (side + 1)).map(|_| next() as u8));
            }
            _ => {
                out.extend([0, 0, 8, 1]);
                out.extend((n as u32 * 3).to_be_bytes());
                out.extend((0..n * 3).map(|_| (next() % 10) as u8));
            }
        }
        (kind, out)
    })
}

/// Edits to a file: byte writes, forged big-endian/little-endian header words, a cut, junk.
#[derive(Debug, Clone)]
struct Edits {
    writes: Vec<(prop::sample::Index, u8)>,
    header: Option<(usize, u32, bool)>,
    cut: Option<prop::sample::Index>,
    junk: Vec<u8>,
}

fn edits() -> impl Strategy<Value = Edits> {
    (
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        proptest::option::of((0usize..4, any::<u32>(), any::<bool>())),
        proptest::option::of(any::<prop::sample::Index>()),
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(writes, header, cut, junk)| Edits { writes, header, cut, junk })
}

fn apply(mut b: Vec<u8>, e: &Edits) -> Vec<u8> {
    if !b.is_empty() {
        for (i, v) in &e.writes {
            let i = i.index(b.len());
            b[i] = *v;
        }
    }
    if let Some((word, value, big_endian)) = e.header {
        let at = word * 4;
        if b.len() >= at + 4 {
            let v = if big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
            b[at..at + 4].copy_from_slice(&v);
        }
    }
    if let Some(cut) = &e.cut {
        b.truncate(cut.index(b.len() + 1));
    }
    b.extend_from_slice(&e.junk);
    b
}

/// Every parser on `raw`; an accepted file must be exactly its bytes.
fn parse_all(raw: &[u8]) -> Result<(), TestCaseError> {
    fn vecs_bytes<T: Copy>(v: &Vectors<T>, le: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..v.len() {
            out.extend((v.dim as i32).to_le_bytes());
            v.row(i).iter().for_each(|&x| out.extend(le(x)));
        }
        out
    }
    if let Ok(v) = parse_vecs::<f32>(raw) {
        prop_assert_eq!(v.data.len(), v.dim * v.len());
        prop_assert_eq!(&vecs_bytes(&v, |x: f32| x.to_le_bytes().to_vec())[..], raw);
    }
    if let Ok(v) = parse_vecs::<u8>(raw) {
        prop_assert_eq!(&vecs_bytes(&v, |x| vec![x])[..], raw);
    }
    if let Ok(v) = parse_vecs::<i32>(raw) {
        prop_assert_eq!(&vecs_bytes(&v, |x: i32| x.to_le_bytes().to_vec())[..], raw);
    }
    if let Ok(v) = parse_idx_images(raw) {
        prop_assert_eq!(16 + v.data.len(), raw.len());
        prop_assert_eq!(&v.data[..], &raw[16..]);
    }
    if let Ok(l) = parse_idx_labels(raw) {
        prop_assert_eq!(&l[..], &raw[8..]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Plain files: never a panic; the bounded reader accepts exactly what the parsers accept
    /// on the whole file (stopping early never turns a bad file into a good one or back).
    #[test]
    fn mutated_plain_files(file in valid_file(), e in edits()) {
        let (kind, bytes) = file;
        let b = apply(bytes, &e);
        parse_all(&b)?;
        if b.starts_with(&[0x1f, 0x8b]) {
            return Ok(()); // read as gzip: the next property's ground
        }
        let elem = if kind == 1 { 1 } else { 4 };
        let ok = |r: &[u8]| match kind {
            0 => parse_vecs::<f32>(r).is_ok(),
            1 => parse_vecs::<u8>(r).is_ok(),
            2 => parse_vecs::<i32>(r).is_ok(),
            3 => parse_idx_images(r).is_ok(),
            _ => parse_idx_labels(r).is_ok(),
        };
        match decode(&b[..], elem) {
            Ok(read) => {
                prop_assert!(b.starts_with(&read));
                prop_assert_eq!(ok(&read), ok(&b), "{:?} / {:?}", read, b);
                if ok(&b) {
                    prop_assert_eq!(read, b);
                }
            }
            // Longer than its IDX header says: the parser refuses the whole file too.
            Err(_) => prop_assert!(!ok(&b)),
        }
    }

    /// Gzipped files, the compressed bytes mutated too, one or several gzip members: never a
    /// panic, and an intact stream reads as its plain file does.
    #[test]
    fn mutated_gzip_files(
        file in valid_file(),
        e in edits(),
        gz_edits in edits(),
        members in 1usize..4,
        corrupt in any::<bool>(),
    ) {
        let (kind, bytes) = file;
        let plain = apply(bytes, &e);
        let elem = if kind == 1 { 1 } else { 4 };
        let one = gz(&plain);
        let z = one.repeat(members);
        let z = if corrupt { apply(z, &gz_edits) } else { z };
        let read = decode(&z[..], elem);
        if let Ok(raw) = &read {
            parse_all(raw)?;
        }
        let all = plain.repeat(members);
        if !corrupt && !all.starts_with(&[0x1f, 0x8b]) {
            // The same bytes and the same verdict as the plain stream.
            let want = decode(&all[..], elem);
            prop_assert_eq!(read.is_ok(), want.is_ok());
            prop_assert_eq!(read.ok(), want.ok());
        }
    }
}
