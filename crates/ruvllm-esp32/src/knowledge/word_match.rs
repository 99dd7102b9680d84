//! A question matched against a fact word by word (late interaction, as ColBERT scores
//! passages): each question word's best cosine among the fact's words, averaged over the
//! question's words. The mean embedding of a sentence blurs the few words that carry a
//! paraphrase ("kitty", "vacation") into the rest of it; word by word they still meet "cat"
//! and "travel". [`MicroRAG::retrieve_matched`](super::MicroRAG::retrieve_matched) uses it
//! to rerank the best few entries of the hybrid score, never the whole store: it embeds
//! every word of an entry.
//!
//! Integer work for the chips without an FPU: words are int8 directions
//! ([`TableEmbedder::embed_i8`]), a cosine is an `i32` dot product and two multiplies. No
//! allocation: the question's words live in a fixed array.

use crate::embed::TableEmbedder;

/// Question words weighed; later ones are ignored.
pub const MAX_QUESTION_WORDS: usize = 12;
/// Words of an entry compared; later ones are ignored.
pub const MAX_FACT_WORDS: usize = 48;

/// The words of `text`: runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

fn dot<const D: usize>(a: &[i8; D], b: &[i8; D]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
}

/// A question's words as int8 directions with their inverse lengths (the table skips common
/// words such as "the" or "when", as it does for whole texts).
pub struct QuestionWords<const D: usize> {
    vectors: [[i8; D]; MAX_QUESTION_WORDS],
    inv_len: [f32; MAX_QUESTION_WORDS],
    n: usize,
}

impl<const D: usize> QuestionWords<D> {
    pub fn new(table: &TableEmbedder<'_, D>, question: &str) -> Self {
        let mut q =
            QuestionWords { vectors: [[0; D]; MAX_QUESTION_WORDS], inv_len: [0.0; MAX_QUESTION_WORDS], n: 0 };
        for w in words(question) {
            if q.n == MAX_QUESTION_WORDS {
                break;
            }
            if let Some(inv) = table.embed_i8(w, &mut q.vectors[q.n]) {
                q.inv_len[q.n] = inv;
                q.n += 1;
            }
        }
        q
    }

    /// Words kept.
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The mean over the question's words of each one's best cosine among `fact`'s words
    /// (-1..=1); 0 when either has no word the table takes.
    pub fn score(&self, table: &TableEmbedder<'_, D>, fact: &str) -> f32 {
        if self.n == 0 {
            return 0.0;
        }
        let mut best = [-1.0f32; MAX_QUESTION_WORDS];
        let mut v = [0i8; D];
        let mut any = false;
        for w in words(fact).take(MAX_FACT_WORDS) {
            let Some(inv) = table.embed_i8(w, &mut v) else { continue };
            any = true;
            for i in 0..self.n {
                let c = dot(&self.vectors[i], &v) as f32 * (self.inv_len[i] * inv);
                if c > best[i] {
                    best[i] = c;
                }
            }
        }
        if !any {
            return 0.0;
        }
        best[..self.n].iter().sum::<f32>() / self.n as f32
    }
}
