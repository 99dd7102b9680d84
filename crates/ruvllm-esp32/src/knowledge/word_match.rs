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

use super::words;
use crate::embed::TableEmbedder;

/// Question words weighed; later ones are ignored.
pub const MAX_QUESTION_WORDS: usize = 12;
/// Words of an entry compared; later ones are ignored.
pub const MAX_FACT_WORDS: usize = 48;

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
    /// (-1..=1); 0 when either has no word the table takes. The best match of a question word
    /// is found in integers (its dot products scaled by each fact word's inverse length in
    /// fixed point); floats only sum the bests.
    pub fn score(&self, table: &TableEmbedder<'_, D>, fact: &str) -> f32 {
        if self.n == 0 {
            return 0.0;
        }
        let mut best = [i64::MIN; MAX_QUESTION_WORDS];
        let mut v = [0i8; D];
        let mut any = false;
        for w in words(fact).take(MAX_FACT_WORDS) {
            let Some(inv) = table.embed_i8(w, &mut v) else { continue };
            // inv <= 1/127 (the largest value is 127), so this stays below 2^18.
            let inv = (inv * INV_ONE) as i64;
            any = true;
            for (b, q) in best.iter_mut().zip(&self.vectors[..self.n]) {
                *b = (*b).max(i64::from(dot(q, &v)) * inv);
            }
        }
        if !any {
            return 0.0;
        }
        let sum: f32 = best[..self.n].iter().zip(&self.inv_len).map(|(&b, &q)| b as f32 * q).sum();
        sum / (INV_ONE * self.n as f32)
    }
}

/// Fixed-point one of a fact word's inverse length in [`QuestionWords::score`].
const INV_ONE: f32 = (1u32 << 24) as f32;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::embed::Embedder;
    use crate::knowledge::{MicroRAG, RAGConfig};
    use proptest::prelude::*;
    use std::string::String;

    const D: usize = 64;
    static TABLE: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/ngram-table.bin"));

    fn table() -> TableEmbedder<'static, D> {
        TableEmbedder::from_bytes(TABLE).unwrap()
    }

    fn dev_facts() -> std::vec::Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/knowledge/dev.tsv");
        let text = std::fs::read_to_string(path).unwrap();
        text.lines().skip(1).map(|l| l.split('\t').nth(1).unwrap().into()).collect()
    }

    /// The int8 cosine is the float one but for rounding, on the development facts' words and
    /// on whole facts.
    #[test]
    fn int8_cosines_agree_with_the_float_embedding() {
        let mut t = table();
        let facts = dev_facts();
        let mut texts: std::vec::Vec<&str> = facts.iter().map(String::as_str).collect();
        texts.extend(facts.iter().flat_map(|f| words(f)));
        let (mut compared, mut worst) = (0, 0.0f32);
        for pair in texts.windows(2) {
            let (mut a, mut b) = ([0.0f32; D], [0.0f32; D]);
            let (mut qa, mut qb) = ([0i8; D], [0i8; D]);
            let (Ok(()), Ok(())) = (t.embed(pair[0], &mut a), t.embed(pair[1], &mut b)) else { continue };
            let ia = t.embed_i8(pair[0], &mut qa).unwrap();
            let ib = t.embed_i8(pair[1], &mut qb).unwrap();
            let float: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let int = dot(&qa, &qb) as f32 * ia * ib;
            worst = worst.max((float - int).abs());
            compared += 1;
        }
        assert!(compared > 300, "{compared}");
        assert!(worst < 0.02, "largest difference {worst}");
    }

    #[test]
    fn a_question_word_the_fact_holds_matches_fully() {
        let t = table();
        let q = QuestionWords::new(&t, "meeting");
        assert_eq!(q.len(), 1);
        let s = q.score(&t, "The team meeting is at 3pm on Thursday in room B.");
        assert!((s - 1.0).abs() < 1e-3, "{s}");
        assert!(q.score(&t, "Tomatoes need watering when the soil is dry.") < 0.9);
    }

    #[test]
    fn words_are_bounded_and_wordless_texts_score_zero() {
        let t = table();
        let long: String = (0..100).map(|i| std::format!("word{i} ")).collect();
        assert_eq!(QuestionWords::new(&t, &long).len(), MAX_QUESTION_WORDS);
        assert!(QuestionWords::new(&t, "%%%% #### @@@@").is_empty());
        assert_eq!(QuestionWords::new(&t, "").score(&t, "the cat"), 0.0);
        assert_eq!(QuestionWords::new(&t, "cat").score(&t, "!!! ???"), 0.0);
    }

    /// With no weight on the word match nor the answer type, `retrieve_matched` is
    /// `retrieve_hybrid`.
    #[test]
    fn no_word_match_weight_is_the_hybrid_score() {
        let mut t = table();
        let facts = dev_facts();
        let cfg = RAGConfig {
            word_match_weight: 0.0,
            answer_type_weight: 0.0,
            min_similarity: 0.2,
            ..RAGConfig::default()
        };
        let mut rag = std::boxed::Box::new(MicroRAG::<D, 64>::new(cfg));
        let mut v = [0.0f32; D];
        for f in facts.iter().take(64) {
            t.embed(f, &mut v).unwrap();
            rag.add_knowledge(f, &v).unwrap();
        }
        for q in ["who feeds the cat", "when is the boiler serviced", "what is the capital of Australia"] {
            t.embed(q, &mut v).unwrap();
            for k in [1, 3, 8] {
                let a = rag.retrieve_hybrid(q, &v, k).unwrap();
                let b = rag.retrieve_matched(q, &v, k, |_| panic!("not called at weight 0")).unwrap();
                assert_eq!(a, b, "{q} k {k}");
            }
        }
    }

    proptest! {
        #[test]
        fn any_text_scores_within_bounds(q in "\\PC{0,200}", f in "\\PC{0,300}") {
            let t = table();
            let words = QuestionWords::new(&t, &q);
            let s = words.score(&t, &f);
            prop_assert!((-1.0..=1.0).contains(&s) || (s - 1.0).abs() < 1e-4, "{s}");
        }
    }
}
