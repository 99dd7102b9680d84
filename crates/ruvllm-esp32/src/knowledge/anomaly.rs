//! `AnomalyDetector`: is an embedding unlike the normal ones seen so far?
//!
//! **Score.** The mean cosine distance (`1 - cos`, 0..=2, of int8-quantized vectors) from the
//! embedding to its `k` nearest reference embeddings (`k = min(config.k, references)`).
//!
//! **Threshold.** Every reference is scored against the others (leave-one-out: its own
//! distance 0 would make every reference look more normal than a new point) and the
//! `percentile`-th of those `n` scores is taken by nearest rank: the `ceil(percentile / 100 *
//! n)`-th smallest. An embedding whose score is above the threshold is an anomaly, so on new
//! normal data about `100 - percentile` % are flagged.
//!
//! With few references that percentile is the largest of a handful of scores, and with
//! near-identical references it is tiny: the threshold swings with the sample. An
//! [`AnomalyPrior`] (measured on in-domain data for the embedder, see the console's
//! `ANOMALY_PRIOR`) steadies it. The prior holds `expected(n)`, the `percentile`-th score of
//! in-domain texts against `n` in-domain references (scores fall as references grow denser,
//! so it depends on `n`), and a floor. The threshold is
//! `max((n * own + w * expected(n)) / (n + w), floor)` with `own` the percentile above and
//! `w = 100 / (100 - percentile)` (20 at the 95th): the percentile of `n` scores has
//! `n (1 - p)` of them above it, so it counts as much as the prior once one score backs it.
//! The floor is the median score of in-domain texts against 32 in-domain references: a text
//! that close to the references is never flagged, however alike the references are to each
//! other. Without a prior the threshold is the percentile alone.
//!
//! **Online learning.** [`AnomalyDetector::learn`] adds a normal embedding and updates the
//! threshold. The reference set holds at most `CAP` embeddings: once full, the `t`-th learned
//! embedding (counting all of them) replaces a uniformly chosen reference with probability
//! `CAP / t` (reservoir sampling, deterministic splitmix64 generator seeded by the config), so
//! the references stay a uniform sample of everything learned, in bounded memory. Each
//! reference keeps its `k` nearest distances to the others (and whose), so a learned
//! embedding costs `n` distances plus a rebuilt list for each reference that had the replaced
//! one among its nearest (about `k`), not the `n²` of a recalibration; the threshold equals
//! [`AnomalyDetector::calibrate`]'s bit for bit.
//!
//! **Before calibration.** [`AnomalyDetector::check`] always returns a verdict: until the
//! detector has learned 2 references (no threshold yet), or for an embedding that is not
//! `DIM` finite values with some non-zero, `is_anomaly` is false, `score` and `threshold` are
//! NaN and `unchecked` says why. [`AnomalyDetector::try_check`] gives that reason as an error.
//!
//! ```
//! use ruvllm_esp32::knowledge::{AnomalyConfig, AnomalyDetector};
//! # fn main() -> ruvllm_esp32::Result<()> {
//! // `new` builds the default size, 64 dimensions and 32 references; `with_config` any other.
//! let mut detector = AnomalyDetector::new(AnomalyConfig::default());
//! let mut embedding = [1.0f32; 64];
//! embedding[3] = 1.4;
//! assert!(detector.check(&embedding).unchecked.is_some()); // nothing learned yet
//! for i in 0..20 {
//!     let mut normal = [1.0f32; 64];
//!     normal[i] = 1.5;
//!     detector.learn(&normal)?;
//! }
//! assert!(!detector.check(&embedding).is_anomaly);
//! let mut odd = [-1.0f32; 64];
//! odd[0] = 3.0;
//! let result = detector.try_check(&odd)?;
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
    /// What the threshold is pulled toward while references are few (module docs); `None`:
    /// the threshold is the percentile alone.
    pub prior: Option<AnomalyPrior>,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig { k: 3, percentile: 95.0, seed: 0xa0a1, prior: None }
    }
}

/// Most neighbours a score averages: [`AnomalyConfig::k`] is clamped to `1..=MAX_K`. Each
/// reference keeps its `MAX_K` nearest (module docs, *Online learning*).
pub const MAX_K: usize = 8;

/// Reference counts of [`AnomalyPrior::thresholds`]: 2, 4, 8, 16, 32.
pub const PRIOR_COUNTS: [usize; 5] = [2, 4, 8, 16, 32];

/// Prior knowledge of the embedding's scores, measured on in-domain data (module docs,
/// *Threshold*). All are cosine distances (0..=2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyPrior {
    /// The `percentile`-th score of in-domain texts against a detector of `PRIOR_COUNTS[i]`
    /// in-domain references: what the threshold should be with that many references. Between
    /// counts it is interpolated linearly in `log2(n)`, beyond them the nearest is used.
    pub thresholds: [f32; 5],
    /// The threshold never goes below this: the score that a typical (median) in-domain text
    /// gets against a full detector of in-domain references.
    pub floor: f32,
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyResult {
    pub is_anomaly: bool,
    /// Mean cosine distance to the `k` nearest references (0..=2).
    pub score: f32,
    pub threshold: f32,
    /// Why [`AnomalyDetector::check`] reached no verdict (not calibrated yet, or an invalid
    /// embedding); then `is_anomaly` is false and `score` and `threshold` are NaN.
    pub unchecked: Option<Error>,
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
        if let Some(why) = self.unchecked {
            return write!(f, "UNCHECKED ({why})");
        }
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

/// A kNN anomaly detector over at most `CAP` normal reference embeddings of `DIM` dimensions
/// (`AnomalyDetector` alone: 64 dimensions, 32 references, what [`AnomalyDetector::new`]
/// builds). See the module docs.
pub struct AnomalyDetector<const DIM: usize = 64, const CAP: usize = 32> {
    cfg: AnomalyConfig,
    refs: [I8Vector<DIM>; CAP],
    n: usize,
    /// Embeddings learned so far (kept or not).
    seen: u64,
    rng: SplitMix,
    /// `NaN` until calibrated.
    threshold: f32,
    /// Reference `i`'s distances to its `min(k, n - 1)` nearest other references, ascending
    /// (`near[i][..near_len[i]]`), and which references they are (`who`).
    near: [[f32; MAX_K]; CAP],
    who: [[u16; MAX_K]; CAP],
    near_len: [u8; CAP],
}

impl AnomalyDetector {
    /// An empty detector of the default size (64 dimensions, 32 references), so that
    /// `AnomalyDetector::new(cfg)` needs no type annotation; [`Self::with_config`] builds any size.
    pub fn new(cfg: AnomalyConfig) -> Self {
        Self::with_config(cfg)
    }
}

impl<const DIM: usize, const CAP: usize> AnomalyDetector<DIM, CAP> {
    const LAYOUT_OK: () =
        assert!(CAP >= 2 && CAP < u16::MAX as usize, "AnomalyDetector: CAP not in 2..65535");

    /// An empty detector of `DIM` dimensions and `CAP` references
    /// (`AnomalyDetector::<128, 16>::with_config(cfg)`).
    pub fn with_config(cfg: AnomalyConfig) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::LAYOUT_OK;
        let p = if cfg.percentile.is_nan() { 95.0 } else { cfg.percentile.clamp(0.0, 100.0) };
        let cfg = AnomalyConfig { k: cfg.k.clamp(1, MAX_K), percentile: p, ..cfg };
        AnomalyDetector {
            cfg,
            refs: [I8Vector { q: [0; DIM], scale: 0.0 }; CAP],
            n: 0,
            seen: 0,
            rng: SplitMix(cfg.seed),
            threshold: f32::NAN,
            near: [[0.0; MAX_K]; CAP],
            who: [[0; MAX_K]; CAP],
            near_len: [0; CAP],
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

    /// Sets the threshold from the references (module docs) and returns it, recomputing every
    /// reference's neighbours from scratch (`O(n² DIM)`; [`Self::learn`] keeps them up to date
    /// in `O(n DIM)`). Needs at least 2 references.
    pub fn calibrate(&mut self) -> Result<f32> {
        if self.n < 2 {
            return Err(Error::Invalid { what: "anomaly calibration needs at least 2 reference embeddings" });
        }
        for j in 0..self.n {
            self.rebuild(j);
        }
        self.threshold = self.threshold_from_neighbours();
        Ok(self.threshold)
    }

    /// Neighbours a leave-one-out score averages with `n` references.
    fn k_loo(&self) -> usize {
        self.cfg.k.min(self.n.saturating_sub(1)).max(1)
    }

    /// Offers reference `i` at distance `d` to reference `j`'s nearest list: kept, ascending,
    /// if among the `k_loo` smallest (a tie goes after the equal ones, as in `knn_score`).
    fn offer(&mut self, j: usize, d: f32, i: usize) {
        let k = self.k_loo();
        let len = usize::from(self.near_len[j]);
        let (near, who) = (&mut self.near[j], &mut self.who[j]);
        if len == k && d >= near[k - 1] {
            return;
        }
        let pos = near[..len].partition_point(|&x| x <= d);
        let end = if len < k { len } else { len - 1 };
        near.copy_within(pos..end, pos + 1);
        who.copy_within(pos..end, pos + 1);
        near[pos] = d;
        who[pos] = i as u16;
        self.near_len[j] = (end + 1) as u8;
    }

    /// Recomputes reference `j`'s nearest list from all the others.
    fn rebuild(&mut self, j: usize) {
        self.near_len[j] = 0;
        for i in 0..self.n {
            if i != j {
                let d = distance(&self.refs[j], &self.refs[i]);
                self.offer(j, d, i);
            }
        }
    }

    /// Reference `s` was just written (appended or replaced): every other list learns its
    /// distance, a list that held the old reference `s` is rebuilt (its next-nearest is not
    /// known), and `s`'s own list is built from the same distances. `O(n DIM)`, plus `O(n DIM)`
    /// a rebuilt list: a reference is on about `k` lists, so about `k` rebuilds a replacement.
    fn update_neighbours(&mut self, s: usize, replaced: bool) {
        self.near_len[s] = 0;
        for j in 0..self.n {
            if j == s {
                continue;
            }
            let d = distance(&self.refs[j], &self.refs[s]);
            let len = usize::from(self.near_len[j]);
            if replaced && self.who[j][..len].contains(&(s as u16)) {
                self.rebuild(j);
            } else {
                self.offer(j, d, s);
            }
            self.offer(s, d, j);
        }
    }

    /// The threshold from the neighbour lists (module docs).
    fn threshold_from_neighbours(&self) -> f32 {
        let mut scores = [0.0f32; CAP];
        for (i, s) in scores[..self.n].iter_mut().enumerate() {
            let len = usize::from(self.near_len[i]);
            *s = self.near[i][..len].iter().sum::<f32>() / len.max(1) as f32;
        }
        let scores = &mut scores[..self.n];
        scores.sort_unstable_by(f32::total_cmp);
        let rank = libm::ceilf(self.cfg.percentile / 100.0 * self.n as f32) as usize;
        let own = scores[rank.clamp(1, self.n) - 1];
        self.with_prior(own)
    }

    /// The percentile `own` of the references' scores, shrunk toward the prior (module docs).
    fn with_prior(&self, own: f32) -> f32 {
        let Some(prior) = self.cfg.prior else { return own };
        let x = (libm::log2f(self.n as f32) - 1.0).clamp(0.0, 4.0);
        let i = (x as usize).min(3);
        let t = prior.thresholds;
        let expected = t[i] + (x - i as f32) * (t[i + 1] - t[i]);
        // The percentile is backed by `n (1 - p)` scores above it: it weighs `n` against the
        // prior's `1 / (1 - p)`, the count at which one score is above it.
        let weight = 100.0 / (100.0 - self.cfg.percentile).max(0.01);
        let n = self.n as f32;
        ((n * own + weight * expected) / (n + weight)).max(prior.floor)
    }

    /// The current threshold, if calibrated.
    pub fn threshold(&self) -> Option<f32> {
        (!self.threshold.is_nan()).then_some(self.threshold)
    }

    /// Scores `embedding` and compares it with the threshold (anomaly: score above it). An
    /// uncalibrated detector or an invalid embedding is an error.
    pub fn try_check(&self, embedding: &[f32]) -> Result<AnomalyResult> {
        let threshold = self.threshold().ok_or(Error::Invalid {
            what: "anomaly detector not calibrated: learn 2 or more normal embeddings",
        })?;
        let score = self.score(embedding)?;
        Ok(AnomalyResult { is_anomaly: score > threshold, score, threshold, unchecked: None })
    }

    /// [`Self::try_check`] as a plain verdict: where it would fail, not an anomaly, with the
    /// reason in [`AnomalyResult::unchecked`] (module docs, *Before calibration*).
    pub fn check(&self, embedding: &[f32]) -> AnomalyResult {
        self.try_check(embedding).unwrap_or_else(|why| AnomalyResult {
            is_anomaly: false,
            score: f32::NAN,
            threshold: f32::NAN,
            unchecked: Some(why),
        })
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
            self.update_neighbours(self.n - 1, false);
            Learned::Added((self.n - 1) as u16)
        } else {
            let j = self.rng.next_u64() % self.seen;
            if j < CAP as u64 {
                undo.replaced = Some((j as usize, self.refs[j as usize]));
                self.refs[j as usize] = encode::<DIM>(embedding);
                self.update_neighbours(j as usize, true);
                Learned::Replaced(j as u16)
            } else {
                Learned::Skipped
            }
        };
        if self.n >= 2 && what != Learned::Skipped {
            self.threshold = self.threshold_from_neighbours();
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
        // Undo is rare (a failed save): recompute the neighbour lists rather than keep their
        // old contents in every learn's undo record.
        for j in 0..self.n {
            self.rebuild(j);
        }
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
        for j in 0..self.n {
            self.rebuild(j);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The threshold a full recalibration gives, computed independently: every distance of
    /// every reference to the others, sorted, the `k` smallest averaged.
    fn brute_threshold<const D: usize, const C: usize>(det: &AnomalyDetector<D, C>) -> f32 {
        let n = det.n;
        let k = det.cfg.k.min(n - 1);
        let mut scores: std::vec::Vec<f32> = (0..n)
            .map(|i| {
                let mut d: std::vec::Vec<f32> =
                    (0..n).filter(|&j| j != i).map(|j| distance(&det.refs[i], &det.refs[j])).collect();
                d.sort_by(f32::total_cmp);
                d[..k].iter().sum::<f32>() / k as f32
            })
            .collect();
        scores.sort_by(f32::total_cmp);
        let rank = libm::ceilf(det.cfg.percentile / 100.0 * n as f32) as usize;
        let own = scores[rank.clamp(1, n) - 1];
        // The prior's arithmetic is shared: what is checked here is the neighbour lists.
        det.with_prior(own)
    }

    /// Before calibration (and for a bad embedding) `check` is a verdict, not an error: not an
    /// anomaly, with the reason; `try_check` keeps the error. The default size needs no
    /// annotation.
    #[test]
    fn check_before_calibration_is_not_an_anomaly_with_a_reason() {
        let mut det = AnomalyDetector::new(AnomalyConfig::default());
        assert_eq!((det.capacity(), det.ram_bytes()), (32, size_of::<AnomalyDetector<64, 32>>()));
        let e: [f32; 64] = core::array::from_fn(|i| 1.0 + (i == 3) as u8 as f32);
        for learned in 0..2 {
            let r = det.check(&e);
            let why = det.try_check(&e).unwrap_err();
            assert!(!r.is_anomaly && r.score.is_nan() && r.threshold.is_nan(), "{learned} learned");
            assert_eq!(r.unchecked, Some(why));
            assert!(r.to_string().starts_with("UNCHECKED (invalid: anomaly detector not calibrated"));
            det.learn(&e).unwrap();
        }
        let r = det.check(&e);
        assert_eq!((r.unchecked, r.is_anomaly), (None, false));
        assert_eq!(r, det.try_check(&e).unwrap());
        let bad = det.check(&[f32::NAN; 64]);
        assert!(!bad.is_anomaly && matches!(bad.unchecked, Some(Error::Invalid { .. })));
        assert!(det.check(&[1.0; 3]).unchecked.is_some());
    }

    /// Incremental learning (appends, reservoir replacements, exact duplicates, `k` above and
    /// below the reference count) gives exactly the threshold of a full recalibration.
    #[test]
    fn incremental_learning_equals_a_full_recalibration() {
        const D: usize = 8;
        for (seed, k, prior) in [
            (1u64, 3usize, None),
            (2, 1, None),
            (3, 8, None),
            (4, 3, Some(AnomalyPrior { thresholds: [0.5, 0.45, 0.4, 0.35, 0.3], floor: 0.1 })),
            (5, 5, None),
        ] {
            let cfg = AnomalyConfig { k, seed, prior, ..AnomalyConfig::default() };
            let mut det = AnomalyDetector::<D, 6>::with_config(cfg);
            let mut rng = SplitMix(seed * 77);
            let mut kept: std::vec::Vec<[f32; D]> = std::vec::Vec::new();
            let (mut replaced, mut rebuilt_equal) = (0, 0);
            for step in 0..400 {
                // A few clusters, and every fifth an exact copy of an earlier embedding: ties.
                let e: [f32; D] = if step % 5 == 4 && !kept.is_empty() {
                    kept[rng.below(kept.len())]
                } else {
                    let c = rng.below(3) as f32;
                    core::array::from_fn(|i| {
                        (if i == c as usize { 3.0 } else { 0.0 }) + rng.below(100) as f32 / 50.0 - 1.0
                    })
                };
                kept.push(e);
                let what = det.learn(&e).unwrap();
                replaced += usize::from(matches!(what, Learned::Replaced(_)));
                if det.n < 2 {
                    assert!(det.threshold().is_none());
                    continue;
                }
                let t = det.threshold().unwrap();
                assert_eq!(t.to_bits(), brute_threshold(&det).to_bits(), "seed {seed} step {step}");
                let mut full = AnomalyDetector::<D, 6>::with_config(cfg);
                for i in 0..det.n {
                    full.restore_reference(&det.refs[i]).unwrap();
                }
                assert_eq!(full.calibrate().unwrap().to_bits(), t.to_bits(), "seed {seed} step {step}");
                rebuilt_equal += 1;
            }
            assert!(replaced > 10, "seed {seed}: only {replaced} replacements exercised");
            assert!(rebuilt_equal > 390);
        }
    }
}
