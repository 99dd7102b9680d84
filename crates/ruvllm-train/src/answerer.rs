//! Fits the span score of grounded answers (`ruvllm_esp32::knowledge::answer::WEIGHTS`) on
//! generated question-answer documents: for each (fact, question, answer) the model scores
//! every candidate span ([`answer::spans`]), and the weights maximize the probability of the
//! right span among them (a conditional logit, the way a ranker over candidates is fitted).
//! The held-out facts of `testdata/knowledge` are never seen here.

use crate::corpus::{qa, Rng};
use ruvllm_esp32::infer::State;
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::knowledge::answer::{self, Candidate, LEXICAL};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::tokenizer;

/// Features of a span.
pub const FEATURES: usize = 2 + LEXICAL;

/// One question: the features of every candidate span and which one is right.
pub struct Example {
    pub candidates: Vec<[f64; FEATURES]>,
    pub right: usize,
}

/// The candidates of one question about `fact` and their features, each with its byte range.
pub fn candidates(
    model: &Model<'_>,
    arena: &mut [f32],
    fact: &str,
    question: &str,
) -> ruvllm_esp32::Result<Vec<(Candidate, [f64; FEATURES])>> {
    let ctx = model.config.seq_len;
    let mut state = State::new(model, arena, ctx, Kernels::REFERENCE)?;
    let mut prompt = [0u8; 512];
    let n = answer::write_prompt(&mut prompt, fact, question);
    let mut tokens = vec![0u32; 520];
    let mut work = vec![0u32; tokenizer::WORK_PER_TOKEN * 520];
    let n = tokenizer::encode_with(&model.vocab, &prompt[..n], true, false, &mut tokens, &mut work)?;
    let mut out = Vec::new();
    answer::spans(
        model,
        &mut state,
        (&mut tokens, n),
        &mut work,
        (fact, 128),
        |_, _| f64::INFINITY,
        |c| {
            out.push((*c, answer::features(c, fact, question)));
            f64::NEG_INFINITY
        },
    )?;
    Ok(out)
}

/// `n` generated questions (seed `seed`) whose right answer is among the candidates (a few
/// templates' answers end inside a phrase and are skipped).
pub fn examples(model: &Model<'_>, n: usize, seed: u64) -> ruvllm_esp32::Result<Vec<Example>> {
    let mut arena = vec![0f32; State::arena_len(model, model.config.seq_len)];
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    while out.len() < n {
        let (fact, question, (a, b)) = qa::triple(&mut rng);
        let cands = candidates(model, &mut arena, &fact, &question)?;
        if let Some(right) = cands.iter().position(|(c, _)| (c.start, c.end) == (a, b)) {
            out.push(Example { candidates: cands.into_iter().map(|(_, f)| f).collect(), right });
        }
    }
    Ok(out)
}

fn dot(w: &[f64; FEATURES], x: &[f64; FEATURES]) -> f64 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// The index of the best-scoring candidate (the first on ties).
pub fn best(w: &[f64; FEATURES], e: &Example) -> usize {
    let mut best = 0;
    for (i, c) in e.candidates.iter().enumerate() {
        if dot(w, c) > dot(w, &e.candidates[best]) {
            best = i;
        }
    }
    best
}

/// Share of examples whose best candidate is the right one.
pub fn accuracy(w: &[f64; FEATURES], examples: &[Example]) -> f64 {
    examples.iter().filter(|e| best(w, e) == e.right).count() as f64 / examples.len().max(1) as f64
}

/// Fits the weights: full-batch Adam on the mean negative log-likelihood of the right
/// candidate, with an L2 penalty `l2`, from the model's own scores (weights 1, 1, the rest 0).
/// The end's weight is kept at least 0 so that [`answer::answer`]'s search bound holds.
pub fn fit(examples: &[Example], steps: usize, l2: f64) -> [f64; FEATURES] {
    let mut w = [0.0; FEATURES];
    w[0] = 1.0;
    w[1] = 1.0;
    let (mut m, mut v) = ([0.0; FEATURES], [0.0; FEATURES]);
    let (lr, b1, b2) = (0.05, 0.9, 0.999);
    for t in 1..=steps {
        let mut g = [0.0; FEATURES];
        for e in examples {
            let scores: Vec<f64> = e.candidates.iter().map(|c| dot(&w, c)).collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            // d(-log p(right)) / dw = E_p[features] - features(right).
            for (c, s) in e.candidates.iter().zip(&scores) {
                let p = (s - max).exp() / z;
                g.iter_mut().zip(c).for_each(|(g, x)| *g += p * x);
            }
            g.iter_mut().zip(&e.candidates[e.right]).for_each(|(g, x)| *g -= x);
        }
        for (((w, g), m), v) in w.iter_mut().zip(g).zip(&mut m).zip(&mut v) {
            let g = g / examples.len() as f64 + l2 * *w;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let (mh, vh) = (*m / (1.0 - b1.powi(t as i32)), *v / (1.0 - b2.powi(t as i32)));
            *w -= lr * mh / (vh.sqrt() + 1e-8);
        }
        w[1] = w[1].max(0.0);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fit is reproducible (it gives `answer::WEIGHTS`, which `ask` uses) and beats the
    /// model's own span scores on generated questions it was not fitted on.
    #[test]
    fn answer_weights() {
        let (words, len) = crate::builtin_image();
        let model = <Model<'_>>::from_gguf(&bytemuck::cast_slice::<u64, u8>(&words)[..len]).unwrap();
        let (train, test) = (examples(&model, 600, 1).unwrap(), examples(&model, 300, 2).unwrap());
        let w = fit(&train, 1500, 1e-3);
        let mut model_only = [0.0; FEATURES];
        model_only[..2].copy_from_slice(&[1.0, 1.0]);
        let (before, after) = (accuracy(&model_only, &test), accuracy(&w, &test));
        println!("fitted weights {w:?}");
        println!(
            "right span on 300 other generated questions: model's scores {before:.3}, fitted {after:.3}"
        );
        for (k, (a, b)) in w.iter().zip(&answer::WEIGHTS).enumerate() {
            assert!((a - b).abs() < 1e-3, "weight {k}: fitted {a}, answer::WEIGHTS has {b}");
        }
        assert!(after > before + 0.05, "{before} -> {after}");
    }
}
