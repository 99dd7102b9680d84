//! Trains the character trigram table of `ruvllm_esp32::knowledge::chars` from text: counts of
//! symbol trigrams, bigrams and unigrams, mixed with fixed weights (Jelinek-Mercer smoothing:
//! a context never seen leaves its weight to the shorter ones, and a uniform share keeps every
//! entry finite), stored as surprise in eighths of a bit.

use ruvllm_esp32::knowledge::chars::{for_each_trigram, CharModel, SYMBOLS, TABLE_LEN, UNIT};

/// Weights of the trigram, bigram, unigram and uniform estimates.
const MIX: [f64; 4] = [0.6, 0.3, 0.09, 0.01];

/// Symbol counts of some text ([`Counts::add`]), then the table file ([`Counts::file`]).
pub struct Counts {
    tri: Vec<u64>,
    bi: Vec<u64>,
    uni: Vec<u64>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts { tri: vec![0; TABLE_LEN], bi: vec![0; SYMBOLS * SYMBOLS], uni: vec![0; SYMBOLS] }
    }
}

impl Counts {
    pub fn add(&mut self, text: &str) {
        for_each_trigram(text, |a, b, c| {
            let (a, b, c) = (a as usize, b as usize, c as usize);
            self.tri[(a * SYMBOLS + b) * SYMBOLS + c] += 1;
            self.bi[b * SYMBOLS + c] += 1;
            self.uni[c] += 1;
        });
    }

    /// The table file: header, then each entry's smoothed surprise.
    pub fn file(&self) -> Vec<u8> {
        let total: u64 = self.uni.iter().sum();
        let mut table = vec![0u8; TABLE_LEN];
        for a in 0..SYMBOLS {
            for b in 0..SYMBOLS {
                let ctx3: u64 = self.tri[(a * SYMBOLS + b) * SYMBOLS..][..SYMBOLS].iter().sum();
                let ctx2: u64 = self.bi[b * SYMBOLS..][..SYMBOLS].iter().sum();
                for c in 0..SYMBOLS {
                    let mut parts = [0.0f64; 4];
                    let mut weight = [MIX[0], MIX[1], MIX[2], MIX[3]];
                    for (i, (n, of)) in
                        [(self.tri[(a * SYMBOLS + b) * SYMBOLS + c], ctx3), (self.bi[b * SYMBOLS + c], ctx2)]
                            .into_iter()
                            .enumerate()
                    {
                        if of == 0 {
                            // An unseen context says nothing: its weight goes to the next one.
                            weight[i + 1] += weight[i];
                            weight[i] = 0.0;
                        } else {
                            parts[i] = n as f64 / of as f64;
                        }
                    }
                    parts[2] = if total == 0 { 0.0 } else { self.uni[c] as f64 / total as f64 };
                    parts[3] = 1.0 / SYMBOLS as f64;
                    let p: f64 = parts.iter().zip(weight).map(|(p, w)| p * w).sum();
                    let v = (-p.log2() * UNIT as f64).round().clamp(0.0, 255.0);
                    table[(a * SYMBOLS + b) * SYMBOLS + c] = v as u8;
                }
            }
        }
        let mut file = CharModel::header(&table).to_vec();
        file.extend_from_slice(&table);
        file
    }
}

/// Documents of the built-in corpus the committed table is counted on.
pub const BUILTIN_DOCS: u64 = 20_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_text_is_cheap_and_every_entry_finite() {
        let mut c = Counts::default();
        for _ in 0..50 {
            c.add("the cat sat on the mat. the dog ran to the cat.");
        }
        let file = c.file();
        let m = CharModel::parse(&file).unwrap();
        let seen = m.surprise("the cat sat on the mat");
        let unseen = m.surprise("xqz vjk");
        assert!(seen.mean_bits < 3.0 && unseen.mean_bits > 8.0, "{seen:?} {unseen:?}");
        // The uniform share bounds every entry: 1% of 1/32 is about 11.6 bits.
        assert!(file[16..].iter().all(|&v| v <= 94), "{:?}", file[16..].iter().max());
    }
}
