use super::*;
use crate::error::Error;

fn ngram(text: &str) -> crate::error::Result<[f32; 64]> {
    let mut out = [0.0; 64];
    NgramEmbedder::<64>::new().embed(text, &mut out).map(|_| out)
}

#[test]
fn ngram_rejects_texts_without_words() {
    for t in ["", "   ", "?!.", "\n\t"] {
        assert!(matches!(ngram(t), Err(Error::Invalid { .. })), "{t:?}");
    }
    // Only common words: nothing left to embed, still a typed error.
    assert!(matches!(ngram("what is the"), Err(Error::Invalid { .. })));
    let mut out = [0.0f32; 0];
    assert!(NgramEmbedder::<0>::new().embed("cat", &mut out).is_err());
}

#[test]
fn ngram_is_unit_length_deterministic_and_case_blind() {
    let a = ngram("The Cat sleeps in the SUN.").unwrap();
    let b = ngram("the cat sleeps in the sun").unwrap();
    assert_eq!(a, b);
    let n: f32 = a.iter().map(|x| x * x).sum();
    assert!((n - 1.0).abs() < 1e-5);
}

#[test]
fn ngram_shared_words_score_higher() {
    let q = ngram("cats sleeping").unwrap();
    let near = ngram("Cats like to sleep in the sun.").unwrap();
    let far = ngram("A triangle has three sides.").unwrap();
    assert!(similarity(&q, &near) > similarity(&q, &far) + 0.2);
}

#[test]
fn ngram_survives_long_and_odd_text() {
    let long = "supercalifragilisticexpialidociousandmoreletters ".repeat(100);
    assert!(ngram(&long).is_ok());
    assert!(ngram("naïve café ÄÖÜ 日本語 42").is_ok());
}
