//! Sparse attention patterns, decided before computing: for each position the pattern lists
//! the earlier positions it attends to ([`Pattern::select`]), those rows of the KV cache are
//! copied in order into a scratch of [`Pattern::bound`] rows, and the ordinary attention kernel
//! runs over them. No other position's key or value is read, and a pattern that lists every
//! position gives full attention's numbers bit for bit (the kernel sees the same rows in the
//! same order).
//!
//! `window:N` is also served by a ring-buffer cache of N slots ([`super::Sliding`]), the one
//! pattern whose memory is bounded by the pattern: the others reach back to any earlier
//! position, so their cache holds the whole context and only their work shrinks.

use core::fmt;

/// Most random positions a BigBird position draws (its draw costs their square).
pub const MAX_RANDOM: usize = 64;

/// Which earlier positions a position attends to (itself always included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Every earlier position (causal).
    Full,
    /// The last `N` positions.
    Window(usize),
    /// The last `S` positions, plus every `S`-th before them (those at a distance that is a
    /// multiple of `S`): Sparse Transformer's strided pattern (Child et al. 2019), both heads'
    /// positions in one.
    Strided(usize),
    /// `count` positions at distances `0, gap, 2 gap, ...` (a dilated window, as in Longformer).
    Dilated { gap: usize, count: usize },
    /// BigBird (Zaheer et al. 2020): the first `global` positions, the last `local`, and
    /// `random` positions drawn among the rest, the same for a position on every run and in
    /// every layer (seeded by `seed` and the position).
    BigBird { global: usize, local: usize, random: usize, seed: u32 },
}

/// Why a pattern was refused; its `Display` is one line that says what to write instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError<'a> {
    /// A name that is no pattern.
    Unknown(&'a str),
    /// Missing, extra or non-numeric fields: the pattern's syntax.
    Syntax { usage: &'static str },
    /// A number outside its range: `a {what} of {value}{unit} is outside {min}..={max}`;
    /// `cache` when `max` is the cache's positions.
    Range { what: &'static str, unit: &'static str, value: usize, min: usize, max: usize, cache: bool },
}

/// The patterns' syntax, for error lines and help.
pub const PATTERNS: &str =
    "full, window:N, strided:S, dilated:GAP[:COUNT] or bigbird:GLOBAL:LOCAL:RANDOM[:SEED]";

impl fmt::Display for PatternError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::Unknown(name) => write!(f, "unknown pattern {name}; use {PATTERNS}"),
            PatternError::Syntax { usage } => write!(f, "write it as {usage}"),
            PatternError::Range { what, unit, value, min, max, cache } => {
                write!(f, "a {what} of {value}{unit} is outside {min}..={max}")?;
                f.write_str(if *cache { " (the cache's positions)" } else { "" })
            }
        }
    }
}

/// The pattern as [`Pattern::parse`] reads it.
impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Pattern::Full => f.write_str("full"),
            Pattern::Window(n) => write!(f, "window:{n}"),
            Pattern::Strided(s) => write!(f, "strided:{s}"),
            Pattern::Dilated { gap, count } => write!(f, "dilated:{gap}:{count}"),
            Pattern::BigBird { global, local, random, seed } => {
                write!(f, "bigbird:{global}:{local}:{random}:{seed}")
            }
        }
    }
}

impl Pattern {
    /// Parses `spec` (see [`PATTERNS`]); `cache` is the most positions a cache holds (the
    /// model's context), the limit of every count.
    pub fn parse(spec: &str, cache: usize) -> Result<Pattern, PatternError<'_>> {
        let mut fields = spec.split(':');
        let name = fields.next().unwrap_or("");
        let mut nums = [0usize; 4];
        let mut n = 0;
        for f in fields {
            let v = f.trim().parse::<usize>().ok();
            match (v, nums.get_mut(n)) {
                (Some(v), Some(slot)) => *slot = v,
                _ => return Err(PatternError::Syntax { usage: usage(name)? }),
            }
            n += 1;
        }
        let range = |what, unit, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(PatternError::Range { what, unit, value, min, max, cache: max == cache })
            }
        };
        let syntax = |name| Err(PatternError::Syntax { usage: usage(name)? });
        Ok(match (name, n) {
            ("full", 0) => Pattern::Full,
            ("window", 1) => Pattern::Window(range("window", " positions", nums[0], 1, cache)?),
            ("strided", 1) => Pattern::Strided(range("stride", "", nums[0], 1, cache)?),
            ("dilated", 1 | 2) => Pattern::Dilated {
                gap: range("gap", "", nums[0], 1, cache)?,
                count: if n == 2 { range("count", " positions", nums[1], 1, cache)? } else { cache },
            },
            ("bigbird", 3 | 4) => Pattern::BigBird {
                global: range("global count", " positions", nums[0], 0, cache)?,
                local: range("local window", " positions", nums[1], 1, cache)?,
                random: range("random count", " positions", nums[2], 0, MAX_RANDOM.min(cache))?,
                seed: u32::try_from(nums[3])
                    .map_err(|_| PatternError::Syntax { usage: usage("bigbird").unwrap_or_default() })?,
            },
            (name, _) => return syntax(name),
        })
    }

    /// The most positions [`Pattern::select`] lists for any position of a `seq_len` cache:
    /// the rows of scratch the pattern needs.
    pub fn bound(&self, seq_len: usize) -> usize {
        let n = match *self {
            Pattern::Full => seq_len,
            Pattern::Window(w) => w,
            Pattern::Strided(s) => s.saturating_add(seq_len.div_ceil(s.max(1))),
            Pattern::Dilated { gap, count } => count.min(seq_len.div_ceil(gap.max(1))),
            Pattern::BigBird { global, local, random, .. } => {
                global.saturating_add(local).saturating_add(random)
            }
        };
        n.min(seq_len)
    }

    /// Lists the positions `pos` attends to into `out`, ascending, and returns how many. `out`
    /// needs [`Pattern::bound`] entries for a cache that holds `pos`; a shorter one gets the
    /// first `out.len()` (never written past).
    pub fn select(&self, pos: usize, out: &mut [u32]) -> usize {
        self.spans().select(pos, out)
    }

    /// The pattern in the one shape [`Spans::select`] reads.
    pub(crate) fn spans(&self) -> Spans {
        let none = Spans { global: 0, local: usize::MAX, step: 0, count: 0, random: 0, seed: 0 };
        match *self {
            Pattern::Full => none,
            Pattern::Window(n) => Spans { local: n, ..none },
            Pattern::Strided(s) => Spans { local: s, step: s, count: usize::MAX, ..none },
            Pattern::Dilated { gap, count } => Spans { local: 1, step: gap, count, ..none },
            Pattern::BigBird { global, local, random, seed } => {
                Spans { global, local, random: random.min(MAX_RANDOM), seed, ..none }
            }
        }
    }
}

/// Every pattern in one shape: the first `global` positions, the last `local`, the positions
/// `step` apart going back from the current one (`count` of them counting the current one)
/// that come before the local ones, and `random` drawn among the positions neither global nor
/// local (no pattern has both a step and random draws). Listing a token's positions then
/// takes no branch on the pattern's kind: the token loop holds no jump table, whose indirect
/// jump the board's float-free check cannot follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spans {
    global: usize,
    local: usize,
    step: usize,
    count: usize,
    random: usize,
    seed: u32,
}

impl Spans {
    /// [`Pattern::select`].
    pub fn select(&self, pos: usize, out: &mut [u32]) -> usize {
        let mut w = Writer { out, n: 0 };
        let end = pos + 1;
        let g = self.global.min(end);
        w.range(0, g);
        // The local positions start at `local` (never inside the global ones).
        let local = end.saturating_sub(self.local.max(1)).max(g);
        if self.step > 0 && local > g {
            // pos - k step for k from the farthest (within `count` and at or after the global
            // ones) to the nearest before the local ones.
            let far = ((pos - g) / self.step).min(self.count.saturating_sub(1));
            let near = (pos - local) / self.step + 1;
            for k in (near..=far).rev() {
                w.push(pos - k * self.step);
            }
        }
        w.random(g, local, self.random, self.seed, pos);
        w.range(local, end);
        w.n
    }
}

/// The usage line of a pattern name (an unknown name's error).
fn usage(name: &str) -> Result<&'static str, PatternError<'_>> {
    Ok(match name {
        "full" => "full",
        "window" => "window:N (the last N positions)",
        "strided" => "strided:S (the last S positions and every S-th before them)",
        "dilated" => "dilated:GAP[:COUNT] (COUNT positions GAP apart; all of them without COUNT)",
        "bigbird" => "bigbird:GLOBAL:LOCAL:RANDOM[:SEED] (the first GLOBAL, the last LOCAL, RANDOM others)",
        other => return Err(PatternError::Unknown(other)),
    })
}

/// Appends positions to a bounded list.
struct Writer<'o> {
    out: &'o mut [u32],
    n: usize,
}

impl Writer<'_> {
    fn push(&mut self, j: usize) {
        if let Some(slot) = self.out.get_mut(self.n) {
            *slot = j as u32;
            self.n += 1;
        }
    }

    fn range(&mut self, from: usize, to: usize) {
        for j in from..to {
            self.push(j);
        }
    }

    /// `k` distinct positions of `lo..hi` (all of them when there are no more), ascending:
    /// Floyd's sampling with a generator seeded by `seed` and `pos`.
    fn random(&mut self, lo: usize, hi: usize, k: usize, seed: u32, pos: usize) {
        let span = hi.saturating_sub(lo);
        if span <= k {
            return self.range(lo, hi);
        }
        let start = self.n;
        let mut rng = SplitMix((seed as u64) << 32 ^ pos as u64);
        for j in span - k..span {
            let t = (rng.next() % (j as u64 + 1)) as usize;
            let taken = |v: usize| self.out[start..self.n].contains(&((lo + v) as u32));
            let pick = if taken(t) { j } else { t };
            self.push(lo + pick);
        }
        self.out[start..self.n].sort_unstable();
    }
}

/// SplitMix64 (Steele et al. 2014): a small, well-mixed, seedable generator.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A sparse pattern's scratch inside a state's arena: the positions of this token and the
/// cache rows they select (values `V` with group scales `S`; no scales for an f32 cache).
pub(crate) struct Scratch<'s, V, S> {
    pub pattern: Pattern,
    /// The pattern as the token loop reads it, and whether it is full attention (read as it
    /// is, nothing listed or copied).
    pub spans: Spans,
    pub full: bool,
    /// Positions listed for the current token, and how many.
    pub idx: &'s mut [u32],
    pub n: usize,
    pub k: &'s mut [V],
    pub ks: &'s mut [S],
    pub v: &'s mut [V],
    pub vs: &'s mut [S],
}

/// One layer's cache, or the rows of it a pattern selected: keys, key scales, values, value
/// scales.
pub(crate) type Rows<'a, V, S> = (&'a [V], &'a [S], &'a [V], &'a [S]);

impl<'s, V: Copy, S: Copy> Scratch<'s, V, S> {
    /// A scratch of `idx.len()` positions (keys and values with their scales) for `pattern`.
    pub fn new(
        pattern: Pattern,
        idx: &'s mut [u32],
        (k, ks): (&'s mut [V], &'s mut [S]),
        (v, vs): (&'s mut [V], &'s mut [S]),
    ) -> Self {
        let (spans, full) = (pattern.spans(), pattern == Pattern::Full);
        Scratch { pattern, spans, full, idx, n: 0, k, ks, v, vs }
    }

    /// Lists the positions `pos` attends to (once per token, before the layers).
    pub fn select(&mut self, pos: usize) {
        if !self.full {
            self.n = self.spans.select(pos, self.idx);
        }
    }

    /// The pattern, unless it is full attention.
    pub fn sparse(&self) -> Option<Pattern> {
        Some(self.pattern).filter(|p| *p != Pattern::Full)
    }

    /// Copies the selected rows of one layer's cache (`row` values and `scales` scales a
    /// position) and returns them, in order; full attention reads the cache as it is.
    pub fn gather<'a>(&'a mut self, layer: Rows<'a, V, S>, row: usize, scales: usize) -> Rows<'a, V, S> {
        if self.full {
            return layer;
        }
        let idx = &self.idx[..self.n];
        let (k, ks) = (gather(self.k, layer.0, row, idx), gather(self.ks, layer.1, scales, idx));
        let (v, vs) = (gather(self.v, layer.2, row, idx), gather(self.vs, layer.3, scales, idx));
        (&self.k[..k], &self.ks[..ks], &self.v[..v], &self.vs[..vs])
    }

    /// Takes `pattern` if its rows fit this scratch (`seq_len`: the cache's positions;
    /// `row_bytes`: the scratch's bytes per position, for the error).
    pub fn set(&mut self, pattern: Pattern, seq_len: usize, row_bytes: usize) -> crate::Result<()> {
        let (need, have) = (pattern.bound(seq_len), self.idx.len());
        if need > have {
            return Err(crate::Error::BufferTooSmall { need: need * row_bytes, have: have * row_bytes });
        }
        (self.pattern, self.spans, self.full) = (pattern, pattern.spans(), pattern == Pattern::Full);
        Ok(())
    }
}

/// Copies rows `idx` (of `row` values each) of `src` into the first `idx.len()` rows of `dst`;
/// returns the values copied.
fn gather<T: Copy>(dst: &mut [T], src: &[T], row: usize, idx: &[u32]) -> usize {
    if row == 0 {
        return 0;
    }
    for (d, &j) in dst.chunks_exact_mut(row).zip(idx) {
        let j = j as usize * row;
        d.copy_from_slice(&src[j..j + row]);
    }
    idx.len() * row
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definitions written as predicates, independently of `select`.
    fn attends(p: &Pattern, pos: usize, j: usize) -> bool {
        let d = pos - j;
        match *p {
            Pattern::Full => true,
            Pattern::Window(n) => d < n,
            Pattern::Strided(s) => d < s || d.is_multiple_of(s),
            Pattern::Dilated { gap, count } => d.is_multiple_of(gap) && d / gap < count,
            Pattern::BigBird { global, local, .. } => j < global || d < local,
        }
    }

    #[test]
    fn select_lists_exactly_the_defined_positions_within_the_bound() {
        let seq = 300;
        let pats = [
            Pattern::Full,
            Pattern::Window(7),
            Pattern::Strided(1),
            Pattern::Strided(8),
            Pattern::Strided(300),
            Pattern::Dilated { gap: 3, count: 5 },
            Pattern::Dilated { gap: 1, count: seq },
            Pattern::BigBird { global: 2, local: 16, random: 0, seed: 0 },
        ];
        let mut out = vec![0u32; seq];
        for p in pats {
            let bound = p.bound(seq);
            let mut widest = 0;
            for pos in 0..seq {
                let n = p.select(pos, &mut out);
                let want: Vec<u32> = (0..=pos).filter(|&j| attends(&p, pos, j)).map(|j| j as u32).collect();
                assert_eq!(&out[..n], &want[..], "{p:?} at {pos}");
                widest = widest.max(n);
            }
            assert!(widest <= bound, "{p:?}: {widest} > {bound}");
        }
    }

    #[test]
    fn bigbird_draws_distinct_seeded_positions_among_the_rest() {
        let p = Pattern::BigBird { global: 2, local: 8, random: 5, seed: 9 };
        let (mut a, mut b) = (vec![0u32; 15], vec![0u32; 15]);
        let mut seen_draws = std::collections::HashSet::new();
        for pos in 0..200usize {
            let n = p.select(pos, &mut a);
            assert!(n <= p.bound(200));
            assert_eq!(p.select(pos, &mut b), n);
            assert_eq!(a[..n], b[..n], "the same position draws the same positions");
            assert!(a[..n].windows(2).all(|w| w[0] < w[1]), "ascending and distinct at {pos}");
            for &j in &a[..n] {
                let j = j as usize;
                assert!(j <= pos);
                if !(j < 2 || pos - j < 8) {
                    seen_draws.insert(j);
                }
            }
            let g = (pos + 1).min(2);
            let hi = (pos + 1).saturating_sub(8).max(g);
            assert_eq!(n, g + (hi - g).min(5) + (pos + 1 - hi), "count at {pos}");
        }
        assert!(seen_draws.len() > 100, "the draws spread over the past: {}", seen_draws.len());
        let other = Pattern::BigBird { global: 2, local: 8, random: 5, seed: 10 };
        let differs = (50..60).any(|pos| {
            let n = p.select(pos, &mut a);
            other.select(pos, &mut b);
            a[..n] != b[..n]
        });
        assert!(differs, "the seed changes the draws");
    }

    #[test]
    fn bad_specs_name_the_value_and_the_range() {
        let err = |s: &str| Pattern::parse(s, 256).unwrap_err().to_string();
        assert_eq!(err("window:0"), "a window of 0 positions is outside 1..=256 (the cache's positions)");
        assert_eq!(err("window:300"), "a window of 300 positions is outside 1..=256 (the cache's positions)");
        assert_eq!(err("strided:0"), "a stride of 0 is outside 1..=256 (the cache's positions)");
        assert_eq!(err("dilated:0"), "a gap of 0 is outside 1..=256 (the cache's positions)");
        assert_eq!(err("bigbird:2:8:65"), "a random count of 65 positions is outside 0..=64");
        assert!(err("sparse:4").starts_with("unknown pattern sparse; use full, window:N, strided:S"));
        assert!(err("strided:x").starts_with("write it as strided:S"));
        assert!(err("bigbird:1:2").starts_with("write it as bigbird:GLOBAL:LOCAL:RANDOM[:SEED]"));
        assert!(err("full:3").starts_with("write it as full"));
        assert_eq!(Pattern::parse("strided:8", 256), Ok(Pattern::Strided(8)));
        assert_eq!(Pattern::parse("dilated:2", 256), Ok(Pattern::Dilated { gap: 2, count: 256 }));
        assert_eq!(
            Pattern::parse("bigbird:1:32:4:7", 256),
            Ok(Pattern::BigBird { global: 1, local: 32, random: 4, seed: 7 })
        );
    }
}
