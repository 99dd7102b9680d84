//! `AnomalyDetector`: is an embedding unlike the normal ones seen so far?
//!
//! **Score.** The mean cosine distance (`1 - cos`, 0..=2, of int8-quantized vectors) from the
//! embedding to its `k` nearest reference embeddings (`k = min(config.k, references)`).
//!
//! **Threshold.** [`AnomalyDetector::calibrate`] scores every reference against the others
//! (leave-one-out: its own distance 0 would make every reference look more normal than a new
//! point) and takes the `percentile`-th of those `n` scores by nearest rank: the
//! `ceil(percentile / 100 * n)`-th smallest. An embedding whose score is above the threshold is
//! an anomaly, so on new normal data about `100 - percentile` % are flagged.
//!
//! **Online learning.** [`AnomalyDetector::learn`] adds a normal embedding and recalibrates. The
//! reference set holds at most `CAP` embeddings: once full, the `t`-th learned embedding
//! (counting all of them) replaces a uniformly chosen reference with probability `CAP / t`
//! (reservoir sampling, deterministic splitmix64 generator seeded by the config), so the
//! references stay a uniform sample of everything learned, in bounded memory.
//!
//! ```
//! use ruvllm_esp32::knowledge::{AnomalyConfig, AnomalyDetector};
//! # fn main() -> ruvllm_esp32::Result<()> {
//! // The README's `AnomalyDetector::new(AnomalyConfig::default())` needs the type named: the
//! // dimension and capacity are const generics nothing else in the expression determines.
//! let mut detector: AnomalyDetector<64, 32> = AnomalyDetector::new(AnomalyConfig::default());
//! for i in 0..20 {
//!     let mut normal = [1.0f32; 64];
//!     normal[i] = 1.5;
//!     detector.learn(&normal)?;
//! }
//! let mut embedding = [1.0f32; 64];
//! embedding[3] = 1.4;
//! // `check` returns a `Result`: a wrong-length or NaN embedding, or a detector that has not
//! // learned two references yet (no threshold), is an error rather than a verdict.
//! assert!(!detector.check(&embedding)?.is_anomaly);
//! let mut odd = [-1.0f32; 64];
//! odd[0] = 3.0;
//! let result = detector.check(&odd)?;
//! assert!(result.is_anomaly);
//! println!("{result}"); // ANOMALY (score: <hundredths>, threshold: <hundredths>)
//! # Ok(()) }
//! ```

use core::fmt;
use core::mem::size_of;

use super::{check_embedding, distance, encode, prepare, query_distance};
use crate::error::{Error, Result};
use crate::vector::hnsw::I8Vector;
use crate::vector::metric::SplitMix;

/// Detector parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyConfig {
    /// Neighbours averaged into a score (at least 1).
    pub k: usize,
    /// Percentile of the leave-one-out reference scores used as the threshold (clamped to
    /// 0..=100; NaN is taken as 95).
    pub percentile: f32,
    /// Seed of the reservoir sampler.
    pub seed: u64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig { k: 3, percentile: 95.0, seed: 0xa0a1 }
    }
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyResult {
    pub is_anomaly: bool,
    /// Mean cosine distance to the `k` nearest references (0..=2).
    pub score: f32,
    pub threshold: f32,
}

impl AnomalyResult {
    /// `(score, threshold)` in hundredths of cosine distance, rounded (0..=200): the integers
    /// of the console's `NORMAL (score: 15, threshold: 45)`.
    pub fn scaled(&self) -> (u32, u32) {
        let s = |x: f32| libm::roundf((x * 100.0).clamp(0.0, 1e6)) as u32;
        (s(self.score), s(self.threshold))
    }
}

impl fmt::Display for AnomalyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, t) = self.scaled();
        let v = if self.is_anomaly { "ANOMALY" } else { "NORMAL" };
        write!(f, "{v} (score: {s}, threshold: {t})")
    }
}

/// What [`AnomalyDetector::learn`] did with an embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Added as reference `slot` (the set was not full).
    Added(u16),
    /// Replaced reference `slot` (reservoir sampling chose it).
    Replaced(u16),
    /// Not kept (reservoir sampling).
    Skipped,
}

/// The state one [`AnomalyDetector::learn`] changed, kept to take it back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LearnUndo<const DIM: usize> {
    n: usize,
    seen: u64,
    rng: u64,
    threshold: f32,
    /// The reference a replacement overwrote, with its index.
    replaced: Option<(usize, I8Vector<DIM>)>,
}

/// A kNN anomaly detector over at most `CAP` normal reference embeddings of `DIM` dimensions.
/// See the module docs.
pub struct AnomalyDetector<const DIM: usize, const CAP: usize> {
    cfg: AnomalyConfig,
    refs: [I8Vector<DIM>; CAP],
    n: usize,
    /// Embeddings learned so far (kept or not).
    seen: u64,
    rng: SplitMix,
    /// `NaN` until calibrated.
    threshold: f32,
}

impl<const DIM: usize, const CAP: usize> AnomalyDetector<DIM, CAP> {
    const LAYOUT_OK: () =
        assert!(CAP >= 2 && CAP < u16::MAX as usize, "AnomalyDetector: CAP not in 2..65535");

    pub fn new(cfg: AnomalyConfig) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::LAYOUT_OK;
        let p = if cfg.percentile.is_nan() { 95.0 } else { cfg.percentile.clamp(0.0, 100.0) };
        let cfg = AnomalyConfig { k: cfg.k.max(1), percentile: p, ..cfg };
        AnomalyDetector {
            cfg,
            refs: [I8Vector { q: [0; DIM], scale: 0.0 }; CAP],
            n: 0,
            seen: 0,
            rng: SplitMix(cfg.seed),
            threshold: f32::NAN,
        }
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.cfg
    }

    /// Mean distance from `e` to its `k` nearest references, skipping reference `skip`.
    fn knn_score(&self, dist: impl Fn(&I8Vector<DIM>) -> f32, skip: usize) -> f32 {
        let k = self.cfg.k.min(self.n - usize::from(skip < self.n)).max(1);
        // The k smallest distances, ascending; k <= CAP but a stack array of CAP floats is
        // fine at the sizes a detector has.
        let mut near = [f32::INFINITY; CAP];
        let mut len = 0;
        for (i, r) in self.refs[..self.n].iter().enumerate() {
            if i == skip {
                continue;
            }
            let d = dist(r);
            if len == k && d >= near[k - 1] {
                continue;
            }
            let pos = near[..len].partition_point(|&x| x <= d);
            let end = if len < k { len } else { len - 1 };
            near.copy_within(pos..end, pos + 1);
            near[pos] = d;
            len = end + 1;
        }
        near[..len].iter().sum::<f32>() / len.max(1) as f32
    }

    /// The anomaly score of `embedding` against all references (no threshold needed); an error
    /// for a bad embedding or an empty reference set.
    pub fn score(&self, embedding: &[f32]) -> Result<f32> {
        check_embedding(embedding, DIM)?;
        if self.n == 0 {
            return Err(Error::Invalid { what: "anomaly detector has no reference embeddings" });
        }
        let q = prepare::<DIM>(embedding);
        Ok(self.knn_score(|r| query_distance(&q, r), usize::MAX))
    }

    /// Sets the threshold from the references (module docs) and returns it. Needs at least 2.
    pub fn calibrate(&mut self) -> Result<f32> {
        if self.n < 2 {
            return Err(Error::Invalid { what: "anomaly calibration needs at least 2 reference embeddings" });
        }
        let mut scores = [0.0f32; CAP];
        for (i, s) in scores[..self.n].iter_mut().enumerate() {
            let r = &self.refs[i];
            *s = self.knn_score(|o| distance(r, o), i);
        }
        let scores = &mut scores[..self.n];
        scores.sort_unstable_by(f32::total_cmp);
        let rank = libm::ceilf(self.cfg.percentile / 100.0 * self.n as f32) as usize;
        self.threshold = scores[rank.clamp(1, self.n) - 1];
        Ok(self.threshold)
    }

    /// The current threshold, if calibrated.
    pub fn threshold(&self) -> Option<f32> {
        (!self.threshold.is_nan()).then_some(self.threshold)
    }

    /// Scores `embedding` and compares it with the threshold (anomaly: score above it).
    pub fn check(&self, embedding: &[f32]) -> Result<AnomalyResult> {
        let threshold = self.threshold().ok_or(Error::Invalid {
            what: "anomaly detector not calibrated: learn 2 or more normal embeddings",
        })?;
        let score = self.score(embedding)?;
        Ok(AnomalyResult { is_anomaly: score > threshold, score, threshold })
    }

    /// Adds a normal embedding (reservoir sampling once full, module docs) and recalibrates
    /// when there are at least 2 references. The caller decides what is normal: learning from
    /// embeddings `check` flagged teaches the detector to accept them.
    pub fn learn(&mut self, embedding: &[f32]) -> Result<Learned> {
        self.learn_undoable(embedding).map(|(learned, _)| learned)
    }

    /// [`Self::learn`], also returning what it takes to undo it ([`Self::undo`]): how the
    /// console takes a learn back when saving it fails.
    pub(crate) fn learn_undoable(&mut self, embedding: &[f32]) -> Result<(Learned, LearnUndo<DIM>)> {
        check_embedding(embedding, DIM)?;
        let mut undo = LearnUndo {
            n: self.n,
            seen: self.seen,
            rng: self.rng.0,
            threshold: self.threshold,
            replaced: None,
        };
        self.seen += 1;
        let what = if self.n < CAP {
            self.refs[self.n] = encode::<DIM>(embedding);
            self.n += 1;
            Learned::Added((self.n - 1) as u16)
        } else {
            let j = self.rng.next_u64() % self.seen;
            if j < CAP as u64 {
                undo.replaced = Some((j as usize, self.refs[j as usize]));
                self.refs[j as usize] = encode::<DIM>(embedding);
                Learned::Replaced(j as u16)
            } else {
                Learned::Skipped
            }
        };
        if self.n >= 2 && what != Learned::Skipped {
            if let Err(e) = self.calibrate() {
                self.undo(&undo);
                return Err(e);
            }
        }
        Ok((what, undo))
    }

    /// Puts the detector back as it was before the learn that returned `undo` (the last one).
    pub(crate) fn undo(&mut self, undo: &LearnUndo<DIM>) {
        if let Some((j, old)) = undo.replaced {
            if let Some(r) = self.refs.get_mut(j) {
                *r = old;
            }
        }
        for r in self.refs.iter_mut().skip(undo.n).take(self.n.saturating_sub(undo.n)) {
            *r = I8Vector { q: [0; DIM], scale: 0.0 };
        }
        self.n = undo.n;
        self.seen = undo.seen;
        self.rng = SplitMix(undo.rng);
        self.threshold = undo.threshold;
    }

    /// Reference `i` (`i < len()`), as stored.
    pub fn reference(&self, i: usize) -> Option<&I8Vector<DIM>> {
        self.refs[..self.n].get(i)
    }

    /// The reservoir sampler's generator state (persisted with the references).
    pub(super) fn rng_state(&self) -> u64 {
        self.rng.0
    }

    /// Appends a persisted reference (rebuilding a detector, [`super::persist`]): its codes
    /// must not be all zero and its scale must be finite and positive ([`Error::Invalid`]);
    /// a full detector gives [`Error::Full`]. The threshold is left as it is.
    pub(super) fn restore_reference(&mut self, v: &I8Vector<DIM>) -> Result<()> {
        if !(v.scale.is_finite() && v.scale > 0.0) || v.q.iter().all(|&q| q == 0) {
            return Err(Error::Invalid { what: "persisted reference embedding is not valid" });
        }
        if self.n == CAP {
            return Err(Error::Full { capacity: CAP });
        }
        self.refs[self.n] = *v;
        self.n += 1;
        Ok(())
    }

    /// Restores the learned count, the sampler state and the threshold (`NaN`: uncalibrated)
    /// after [`Self::restore_reference`]. `seen` is raised to the references held.
    pub(super) fn restore_counters(&mut self, seen: u64, rng: u64, threshold: f32) {
        self.seen = seen.max(self.n as u64);
        self.rng = SplitMix(rng);
        self.threshold = if self.n >= 2 { threshold } else { f32::NAN };
    }

    /// Reference embeddings held (at most `CAP`).
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Embeddings learned so far, kept or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }
    pub const fn capacity(&self) -> usize {
        CAP
    }
    /// RAM of the whole detector: `size_of::<Self>()`.
    pub const fn ram_bytes(&self) -> usize {
        size_of::<Self>()
    }
}
