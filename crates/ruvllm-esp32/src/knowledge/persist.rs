//! Write-through persistence of the knowledge stores in a flash [`Store`].
//!
//! Every entry is one store item, so saving an entry is one [`Store::put`] (durable when it
//! returns) and deleting it one [`Store::remove`]; each save reads the record back (or checks
//! the key is gone) before it returns `Ok`, so flash that took a write badly is reported, not
//! acknowledged. At boot the `load_*` functions rebuild
//! fresh stores from the items, keeping the ids the entries had. A record that cannot be
//! decoded (wrong format version or dimension, wrong length, a NaN or non-positive scale,
//! all-zero codes, bad UTF-8, an id outside the capacity) is skipped and counted in the
//! [`LoadReport`]; the other records still load.
//!
//! **Keys** ([`key`]): a namespace byte ([`NS_KNOWLEDGE`], [`NS_MEMORY`], [`NS_DETECTOR`]) above
//! a 24-bit id: the entry's id for knowledge and memories; for the detector, id 0 is its
//! header and id `1 + i` its reference `i`.
//!
//! **Records**, little-endian, each starting with the format version ([`FORMAT_VERSION`]) and
//! the embedding dimension (`u16`); `emb` is an int8 embedding: its scale (`f32`) then `DIM`
//! codes (`i8`):
//!
//! | record | layout after `version, dim` |
//! |---|---|
//! | knowledge entry | `emb`, text length `u16`, UTF-8 text |
//! | memory entry | kind `u8` (0 factual, 1 episodic, 2 procedural), importance `f32`, created `u64`, expires `u64` (`u64::MAX`: never), `emb`, token count `u16`, tokens `u32` each |
//! | detector header | references `u16`, embeddings seen `u64`, sampler state `u64`, threshold `f32` (NaN: uncalibrated) |
//! | detector reference | `emb` |
//! | adapter piece `i` | bytes `512 i ..` of the MicroLoRA adapter file (its own format and CRC) |
//!
//! A record must fit [`MAX_VALUE_LEN`] (512 bytes): at 64 dimensions a knowledge entry is
//! 73 bytes plus its text, a memory entry 94 plus 4 a token, a reference 71.
//!
//! **Write order for the detector.** [`save_detector_learned`] writes the reference a
//! [`AnomalyDetector::learn`] changed, then the header. A power cut between the two leaves
//! either the old header (an added reference is not counted, so it is ignored) or a replaced
//! reference with the old counters: a valid detector either way, and the learn call that was
//! cut had not returned.

use super::memory::MemoryEntry;
use super::{AnomalyDetector, Learned, MemoryType, MicroRAG, SemanticMemory};
use crate::error::{Error, Result};
use crate::store::{Key, Store, MAX_VALUE_LEN};
use crate::vector::hnsw::I8Vector;
use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash};

/// Namespace of [`MicroRAG`] entries.
pub const NS_KNOWLEDGE: u8 = 1;
/// Namespace of [`SemanticMemory`] entries.
pub const NS_MEMORY: u8 = 2;
/// Namespace of the [`AnomalyDetector`] state.
pub const NS_DETECTOR: u8 = 3;
/// Namespace of the MicroLoRA adapter file ([`save_adapter`]).
pub const NS_ADAPTER: u8 = 4;
/// Version byte every record starts with.
pub const FORMAT_VERSION: u8 = 1;

/// Largest id below a namespace byte.
pub const MAX_ID: u32 = 0x00FF_FFFF;

/// The store key of `id` (its low 24 bits) in namespace `ns`.
pub const fn key(ns: u8, id: u32) -> Key {
    ((ns as u32) << 24) | (id & MAX_ID)
}

/// Detector key of the header.
const DETECTOR_HEADER: u32 = 0;

/// What a `load_*` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Records restored.
    pub loaded: usize,
    /// Records that could not be decoded or restored, left out (and left in the store).
    pub skipped_corrupt: usize,
}

// ---- byte layout helpers ---------------------------------------------------------------

const TOO_BIG: Error = Error::Unsupported { what: "persisted record larger than the store's MAX_VALUE_LEN" };

struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8], dim: usize) -> Result<Self> {
        let mut w = Writer { buf, at: 0 };
        w.bytes(&[FORMAT_VERSION])?;
        w.bytes(&(u16::try_from(dim).map_err(|_| TOO_BIG)?).to_le_bytes())?;
        Ok(w)
    }
    fn bytes(&mut self, b: &[u8]) -> Result<()> {
        let dst = self.buf.get_mut(self.at..self.at + b.len()).ok_or(TOO_BIG)?;
        dst.copy_from_slice(b);
        self.at += b.len();
        Ok(())
    }
    fn emb<const DIM: usize>(&mut self, v: &I8Vector<DIM>) -> Result<()> {
        self.bytes(&v.scale.to_le_bytes())?;
        let dst = self.buf.get_mut(self.at..self.at + DIM).ok_or(TOO_BIG)?;
        for (d, &q) in dst.iter_mut().zip(&v.q) {
            *d = q as u8;
        }
        self.at += DIM;
        Ok(())
    }
    fn len16(&mut self, n: usize) -> Result<()> {
        self.bytes(&(u16::try_from(n).map_err(|_| TOO_BIG)?).to_le_bytes())
    }
    fn done(self) -> usize {
        self.at
    }
}

/// Reads a record; every getter returns `None` past the end.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the version and dimension bytes.
    fn new(b: &'a [u8], dim: usize) -> Option<Self> {
        let mut r = Reader { b };
        (r.u8()? == FORMAT_VERSION && usize::from(r.u16()?) == dim).then_some(r)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.b.len() {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.arr()?))
    }
    fn f32(&mut self) -> Option<f32> {
        Some(f32::from_le_bytes(self.arr()?))
    }
    /// An int8 embedding with a finite positive scale and not all-zero codes.
    fn emb<const DIM: usize>(&mut self) -> Option<I8Vector<DIM>> {
        let scale = self.f32()?;
        let codes = self.take(DIM)?;
        let mut q = [0i8; DIM];
        for (d, &c) in q.iter_mut().zip(codes) {
            *d = c as i8;
        }
        let ok = scale.is_finite() && scale > 0.0 && q.iter().any(|&c| c != 0);
        ok.then_some(I8Vector { q, scale })
    }
    /// True when the whole record was read.
    fn end(&self) -> bool {
        self.b.is_empty()
    }
}

/// Calls `f(id, value)` for every entry of namespace `ns`, in id order.
fn for_each_in<F: NorFlash + MultiwriteNorFlash>(
    store: &mut Store<F>,
    ns: u8,
    mut f: impl FnMut(u32, &[u8]),
) -> Result<()> {
    let mut buf = [0u8; MAX_VALUE_LEN];
    let first = key(ns, 0);
    let mut after = first.checked_sub(1);
    while let Some((k, n)) = store.next_after(after, &mut buf)? {
        if k > key(ns, MAX_ID) {
            break;
        }
        f(k & MAX_ID, buf.get(..n).unwrap_or(&[]));
        after = Some(k);
    }
    Ok(())
}

/// Stores `value` under `key` and reads it back: `Ok` only once the store returns exactly
/// these bytes, so a write that landed on damaged flash is never acknowledged.
fn put_verified<F: NorFlash + MultiwriteNorFlash>(
    store: &mut Store<F>,
    key: Key,
    value: &[u8],
) -> Result<()> {
    store.put(key, value)?;
    let mut back = [0u8; MAX_VALUE_LEN];
    match store.get(key, &mut back)? {
        Some(n) if back.get(..n) == Some(value) => Ok(()),
        _ => Err(UNVERIFIED),
    }
}

/// Removes `key` and checks that it reads as absent.
fn remove_verified<F: NorFlash + MultiwriteNorFlash>(store: &mut Store<F>, key: Key) -> Result<()> {
    store.remove(key)?;
    match store.contains(key)? {
        false => Ok(()),
        true => Err(UNVERIFIED),
    }
}

const UNVERIFIED: Error =
    Error::Storage { what: "the saved record did not read back intact (damaged flash)" };

/// Writes the record `encode` puts in a buffer under `key(ns, id)`, or removes the key when
/// `encode` gives `None` (the slot is free). Read back on `Ok`.
fn save_slot<F: NorFlash + MultiwriteNorFlash>(
    store: &mut Store<F>,
    ns: u8,
    id: u16,
    encode: impl FnOnce(&mut [u8]) -> Option<Result<usize>>,
) -> Result<()> {
    let mut buf = [0u8; MAX_VALUE_LEN];
    match encode(&mut buf) {
        Some(n) => put_verified(store, key(ns, id.into()), &buf[..n?]),
        None => remove_verified(store, key(ns, id.into())),
    }
}

/// Saves every slot `0..cap` with `save`.
fn save_slots(cap: usize, mut save: impl FnMut(u16) -> Result<()>) -> Result<()> {
    (0..cap).try_for_each(|id| save(id as u16))
}

/// Restores every record of namespace `ns` with `restore` (false: it could not be decoded or
/// restored), counting each in the report.
fn load_each<F: NorFlash + MultiwriteNorFlash>(
    store: &mut Store<F>,
    ns: u8,
    mut restore: impl FnMut(u32, &[u8]) -> bool,
) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    for_each_in(store, ns, |id, b| match restore(id, b) {
        true => report.loaded += 1,
        false => report.skipped_corrupt += 1,
    })?;
    Ok(report)
}

fn require_empty(empty: bool) -> Result<()> {
    if empty {
        Ok(())
    } else {
        Err(Error::Invalid { what: "load target must be empty (build a fresh store)" })
    }
}

// ---- knowledge ---------------------------------------------------------------------------

fn encode_rag_entry<const DIM: usize>(text: &str, emb: &I8Vector<DIM>, out: &mut [u8]) -> Result<usize> {
    let mut w = Writer::new(out, DIM)?;
    w.emb(emb)?;
    w.len16(text.len())?;
    w.bytes(text.as_bytes())?;
    Ok(w.done())
}

fn decode_rag_entry<const DIM: usize>(b: &[u8]) -> Option<(&str, I8Vector<DIM>)> {
    let mut r = Reader::new(b, DIM)?;
    let emb = r.emb::<DIM>()?;
    let n = usize::from(r.u16()?);
    let text = core::str::from_utf8(r.take(n)?).ok()?;
    r.end().then_some((text, emb))
}

/// Writes entry `id` of `rag` to the store, or removes its record when `rag` no longer holds
/// it (call after [`MicroRAG::add_knowledge`] or [`MicroRAG::forget`]). Durable and read back
/// on `Ok`.
pub fn save_rag_entry<F, const DIM: usize, const CAP: usize, const TEXT: usize>(
    store: &mut Store<F>,
    rag: &MicroRAG<DIM, CAP, TEXT>,
    id: u16,
) -> Result<()>
where
    F: NorFlash + MultiwriteNorFlash,
{
    save_slot(store, NS_KNOWLEDGE, id, |buf| {
        let (text, emb) = (rag.text(id)?, rag.embedding(id)?);
        Some(encode_rag_entry(text, emb, buf))
    })
}

/// Removes the record of knowledge entry `id` (absent: not an error). Durable on `Ok`.
pub fn delete_rag_entry<F: NorFlash + MultiwriteNorFlash>(store: &mut Store<F>, id: u16) -> Result<()> {
    remove_verified(store, key(NS_KNOWLEDGE, id.into()))
}

/// Writes every slot of `rag` (records of free slots are removed).
pub fn save_rag<F, const DIM: usize, const CAP: usize, const TEXT: usize>(
    store: &mut Store<F>,
    rag: &MicroRAG<DIM, CAP, TEXT>,
) -> Result<()>
where
    F: NorFlash + MultiwriteNorFlash,
{
    save_slots(CAP, |id| save_rag_entry(store, rag, id))
}

/// Rebuilds the empty `rag` from the store, entries at their saved ids (the index is rebuilt
/// by inserting them in id order). Corrupt records are skipped and counted.
pub fn load_rag<F, const DIM: usize, const CAP: usize, const TEXT: usize>(
    store: &mut Store<F>,
    rag: &mut MicroRAG<DIM, CAP, TEXT>,
) -> Result<LoadReport>
where
    F: NorFlash + MultiwriteNorFlash,
{
    require_empty(rag.is_empty())?;
    load_each(store, NS_KNOWLEDGE, |id, b| match (u16::try_from(id), decode_rag_entry::<DIM>(b)) {
        (Ok(id), Some((text, emb))) => rag.restore(id, text, &emb).is_ok(),
        _ => false,
    })
}

// ---- memories ----------------------------------------------------------------------------

fn kind_byte(k: MemoryType) -> u8 {
    match k {
        MemoryType::Factual => 0,
        MemoryType::Episodic => 1,
        MemoryType::Procedural => 2,
    }
}

fn byte_kind(b: u8) -> Option<MemoryType> {
    match b {
        0 => Some(MemoryType::Factual),
        1 => Some(MemoryType::Episodic),
        2 => Some(MemoryType::Procedural),
        _ => None,
    }
}

fn encode_memory_entry<const DIM: usize>(e: &MemoryEntry<'_, DIM>, out: &mut [u8]) -> Result<usize> {
    let mut w = Writer::new(out, DIM)?;
    w.bytes(&[kind_byte(e.kind)])?;
    w.bytes(&e.importance.to_le_bytes())?;
    w.bytes(&e.created.to_le_bytes())?;
    w.bytes(&e.expires.to_le_bytes())?;
    w.emb(e.vec)?;
    w.len16(e.tokens.len())?;
    for t in e.tokens {
        w.bytes(&t.to_le_bytes())?;
    }
    Ok(w.done())
}

/// Writes memory `id` to the store, or removes its record when the memory no longer holds it
/// (call with [`super::Stored::id`] after an add: an evicted entry's slot is the new one's;
/// after [`SemanticMemory::forget`]; after [`SemanticMemory::expire`] use [`save_memory`]).
pub fn save_memory_entry<F, const DIM: usize, const CAP: usize, const TOK: usize>(
    store: &mut Store<F>,
    memory: &SemanticMemory<DIM, CAP, TOK>,
    id: u16,
) -> Result<()>
where
    F: NorFlash + MultiwriteNorFlash,
{
    save_slot(store, NS_MEMORY, id, |buf| Some(encode_memory_entry(&memory.entry(id)?, buf)))
}

/// Removes the record of memory `id` (absent: not an error).
pub fn delete_memory_entry<F: NorFlash + MultiwriteNorFlash>(store: &mut Store<F>, id: u16) -> Result<()> {
    remove_verified(store, key(NS_MEMORY, id.into()))
}

/// Writes every slot of `memory` (records of free slots are removed).
pub fn save_memory<F, const DIM: usize, const CAP: usize, const TOK: usize>(
    store: &mut Store<F>,
    memory: &SemanticMemory<DIM, CAP, TOK>,
) -> Result<()>
where
    F: NorFlash + MultiwriteNorFlash,
{
    save_slots(CAP, |id| save_memory_entry(store, memory, id))
}

/// Rebuilds the empty `memory` from the store, entries at their saved ids; its clock
/// advances to the newest entry's tick (a caller's clock beyond that is the caller's to
/// keep). Corrupt records are skipped and counted.
pub fn load_memory<F, const DIM: usize, const CAP: usize, const TOK: usize>(
    store: &mut Store<F>,
    memory: &mut SemanticMemory<DIM, CAP, TOK>,
) -> Result<LoadReport>
where
    F: NorFlash + MultiwriteNorFlash,
{
    require_empty(memory.is_empty())?;
    let mut tokens = [0u32; TOK];
    load_each(store, NS_MEMORY, |id, b| {
        (|| {
            let id = u16::try_from(id).ok()?;
            let mut r = Reader::new(b, DIM)?;
            let kind = byte_kind(r.u8()?)?;
            let importance = r.f32()?;
            let created = r.u64()?;
            let expires = r.u64()?;
            let vec = r.emb::<DIM>()?;
            let n = usize::from(r.u16()?);
            let dst = tokens.get_mut(..n)?;
            for t in dst.iter_mut() {
                *t = u32::from_le_bytes(r.arr()?);
            }
            if !r.end() {
                return None;
            }
            let e = MemoryEntry { vec: &vec, tokens: &tokens[..n], kind, created, expires, importance };
            memory.restore_entry(id, &e).ok()
        })()
        .is_some()
    })
}

// ---- anomaly detector --------------------------------------------------------------------

fn put_reference<F, const DIM: usize, const CAP: usize>(
    store: &mut Store<F>,
    detector: &AnomalyDetector<DIM, CAP>,
    i: usize,
) -> Result<()>
where
    F: NorFlash + MultiwriteNorFlash,
{
    let r = detector.reference(i).ok_or(Error::Invalid { what: "detector reference index out of range" })?;
    let mut buf = [0u8; MAX_VALUE_LEN];
    let mut w = Writer::new(&mut buf, DIM)?;
    w.emb(r)?;
    let n = w.done();
    put_verified(store, key(NS_DETECTOR, 1 + i as u32), &buf[..n])
}

fn put_header<F, const DIM: usize, const CAP: usize>(
    store: &mut Store<F>,
    detector: &AnomalyDetector<DIM, CAP>,
) -> Result<()>
where
    F: NorFlash + MultiwriteNorFlash,
{
    let mut buf = [0u8; MAX_VALUE_LEN];
    let mut w = Writer::new(&mut buf, DIM)?;
    w.len16(detector.len())?;
    w.bytes(&detector.seen().to_le_bytes())?;
    w.bytes(&detector.rng_state().to_le_bytes())?;
    w.bytes(&detector.threshold().unwrap_or(f32::NAN).to_le_bytes())?;
    let n = w.done();
    put_verified(store, key(NS_DETECTOR, DETECTOR_HEADER), &buf[..n])
}

/// Writes the whole detector: every reference, then the header.
pub fn save_detector<F, const DIM: usize, const CAP: usize>(
    store: &mut Store<F>,
    detector: &AnomalyDetector<DIM, CAP>,
) -> Result<()>
where
    F: NorFlash + MultiwriteNorFlash,
{
    for i in 0..detector.len() {
        put_reference(store, detector, i)?;
    }
    put_header(store, detector)
}

/// Writes what one [`AnomalyDetector::learn`] changed: the added or replaced reference (if
/// any), then the header (count, sampler state, threshold). Two puts; see the module docs.
pub fn save_detector_learned<F, const DIM: usize, const CAP: usize>(
    store: &mut Store<F>,
    detector: &AnomalyDetector<DIM, CAP>,
    learned: Learned,
) -> Result<()>
where
    F: NorFlash + MultiwriteNorFlash,
{
    if let Learned::Added(i) | Learned::Replaced(i) = learned {
        put_reference(store, detector, i.into())?;
    }
    put_header(store, detector)
}

/// Rebuilds the empty `detector` from the store. With an intact header, references `0..n`
/// are restored with the saved counters, sampler state and threshold; a corrupt reference is
/// skipped and counted and the threshold recalibrated from the others. Without a readable
/// header (corrupt: counted), every intact reference is restored, the count of embeddings
/// seen restarts at the references held and the threshold is recalibrated.
pub fn load_detector<F, const DIM: usize, const CAP: usize>(
    store: &mut Store<F>,
    detector: &mut AnomalyDetector<DIM, CAP>,
) -> Result<LoadReport>
where
    F: NorFlash + MultiwriteNorFlash,
{
    require_empty(detector.is_empty())?;
    let mut report = LoadReport::default();
    let mut header = None;
    let mut buf = [0u8; MAX_VALUE_LEN];
    if let Some(n) = store.get(key(NS_DETECTOR, DETECTOR_HEADER), &mut buf)? {
        header = (|| {
            let mut r = Reader::new(buf.get(..n)?, DIM)?;
            let refs = usize::from(r.u16()?);
            let seen = r.u64()?;
            let rng = r.u64()?;
            let threshold = r.f32()?;
            let ok = r.end() && refs <= CAP && seen >= refs as u64 && !threshold.is_infinite();
            ok.then_some((refs, seen, rng, threshold))
        })();
        if header.is_none() {
            report.skipped_corrupt += 1;
        }
    }
    let count = header.map_or(CAP, |h| h.0);
    let mut skipped_refs = 0;
    for_each_in(store, NS_DETECTOR, |id, b| {
        if id == DETECTOR_HEADER || id as usize > count {
            return; // the header, or a stale reference beyond the saved count
        }
        let ok = Reader::new(b, DIM)
            .and_then(|mut r| r.emb::<DIM>().filter(|_| r.end()))
            .is_some_and(|v| detector.restore_reference(&v).is_ok());
        match ok {
            true => report.loaded += 1,
            false => skipped_refs += 1,
        }
    })?;
    report.skipped_corrupt += skipped_refs;
    let missing = header.is_some_and(|h| report.loaded < h.0);
    match header {
        Some((_, seen, rng, threshold)) if !missing && skipped_refs == 0 => {
            detector.restore_counters(seen, rng, threshold);
        }
        Some((_, seen, rng, _)) => {
            detector.restore_counters(seen, rng, f32::NAN);
            recalibrate(detector);
        }
        None => {
            let rng = detector.rng_state();
            detector.restore_counters(0, rng, f32::NAN);
            recalibrate(detector);
        }
    }
    Ok(report)
}

fn recalibrate<const DIM: usize, const CAP: usize>(detector: &mut AnomalyDetector<DIM, CAP>) {
    if detector.len() >= 2 {
        // Cannot fail with two or more references.
        let _ = detector.calibrate();
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;

// ---- MicroLoRA adapter -------------------------------------------------------------------

/// Saves a MicroLoRA adapter file ([`crate::lora::IntLora::write`]) in pieces of
/// [`MAX_VALUE_LEN`] bytes (one piece up to rank 2 on stories260K-sized models), each read
/// back, then drops pieces an older, longer file left. The file's own CRC guards the whole:
/// a power cut between two pieces leaves a file that [`load_adapter`]'s reader refuses.
pub fn save_adapter<F: NorFlash + MultiwriteNorFlash>(store: &mut Store<F>, file: &[u8]) -> Result<()> {
    if file.is_empty() || file.len() > crate::lora::MAX_FILE {
        return Err(Error::Invalid { what: "adapter file size" });
    }
    let pieces = file.len().div_ceil(MAX_VALUE_LEN);
    for (i, piece) in file.chunks(MAX_VALUE_LEN).enumerate() {
        put_verified(store, key(NS_ADAPTER, i as u32), piece)?;
    }
    for i in pieces..crate::lora::MAX_FILE.div_ceil(MAX_VALUE_LEN) {
        if store.contains(key(NS_ADAPTER, i as u32))? {
            remove_verified(store, key(NS_ADAPTER, i as u32))?;
        }
    }
    Ok(())
}

/// The saved adapter file, put together in `out` (at least [`crate::lora::MAX_FILE`] bytes):
/// its length, or `None` when none was saved.
pub fn load_adapter<F: NorFlash + MultiwriteNorFlash>(
    store: &mut Store<F>,
    out: &mut [u8],
) -> Result<Option<usize>> {
    let mut len = 0;
    let mut buf = [0u8; MAX_VALUE_LEN];
    for i in 0..crate::lora::MAX_FILE.div_ceil(MAX_VALUE_LEN) {
        let Some(n) = store.get(key(NS_ADAPTER, i as u32), &mut buf)? else { break };
        let have = out.len();
        let dst = out.get_mut(len..len + n).ok_or(Error::BufferTooSmall { need: len + n, have })?;
        dst.copy_from_slice(&buf[..n]);
        len += n;
    }
    Ok((len > 0).then_some(len))
}
