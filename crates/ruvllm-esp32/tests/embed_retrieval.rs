//! Retrieval with the two embedders on the project's own question set
//! (`tests/data/facts.tsv`: a fact and a question that paraphrases it, per line): every fact
//! and every question is embedded, each question retrieves facts by cosine (exact scan), and
//! hit@1 / hit@3 count how often its own fact comes first / in the first three. A tie with
//! another fact counts against the question, so a constant embedder scores zero.
//!
//! `cargo test --release -p ruvllm-esp32 --features std --test embed_retrieval -- --nocapture`

mod common;

use common::Image;
use ruvllm_esp32::embed::{similarity, Embedder, ModelEmbedder, NgramEmbedder, Pooling, TableEmbedder};
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::tokenizer;

/// The built-in model's hidden size.
const DIM: usize = 64;
/// Context of the model embedder: every text of the set fits.
const SEQ: usize = 64;

fn pairs() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/facts.tsv");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (f, q) = l.split_once('\t').expect("fact<TAB>question");
            (f.to_string(), q.to_string())
        })
        .collect()
}

/// The learned n-gram table (`ruvllm-esp32 train-embedder -o crates/ruvllm-esp32/data/ngram-table.bin`).
fn table() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/ngram-table.bin")).unwrap()
}

fn builtin() -> Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    Image::new(&std::fs::read(path).unwrap())
}

/// Embeds every fact and every question.
fn vecs<const D: usize>(
    e: &mut impl Embedder<D>,
    pairs: &[(String, String)],
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut one = |t: &str| {
        let mut v = [0.0f32; D];
        e.embed(t, &mut v).unwrap_or_else(|err| panic!("{t:?}: {err}"));
        v.to_vec()
    };
    let f = pairs.iter().map(|(f, _)| one(f)).collect();
    let q = pairs.iter().map(|(_, q)| one(q)).collect();
    (f, q)
}

/// (hit@1, hit@3) of queries `qs[i]` against `facts` (own fact: `facts[i]`), by cosine;
/// `center` first subtracts the facts' mean vector from everything.
fn hits(facts: &[Vec<f32>], qs: &[Vec<f32>], center: bool) -> (f64, f64) {
    let d = facts[0].len();
    let mut mean = vec![0.0f32; d];
    if center {
        for f in facts {
            mean.iter_mut().zip(f).for_each(|(m, x)| *m += x / facts.len() as f32);
        }
    }
    let prep = |v: &Vec<f32>| {
        let mut v: Vec<f32> = v.iter().zip(&mean).map(|(x, m)| x - m).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= n);
        v
    };
    let facts: Vec<Vec<f32>> = facts.iter().map(prep).collect();
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let (mut h1, mut h3) = (0usize, 0usize);
    for (i, q) in qs.iter().enumerate() {
        let q = prep(q);
        let own = cos(&q, &facts[i]);
        let rank = facts.iter().enumerate().filter(|(j, f)| *j != i && cos(&q, f) >= own).count();
        h1 += (rank == 0) as usize;
        h3 += (rank < 3) as usize;
    }
    (h1 as f64 / qs.len() as f64, h3 as f64 / qs.len() as f64)
}

fn measure<const D: usize>(name: &str, e: &mut impl Embedder<D>, pairs: &[(String, String)]) -> (f64, f64) {
    let (f, q) = vecs(e, pairs);
    let (h1, h3) = hits(&f, &q, false);
    let n = pairs.len() as f64;
    println!(
        "{name:<44} hit@1 {h1:.3} ({:>2}/{n})  hit@3 {h3:.3} ({:>2}/{n})",
        (h1 * n).round(),
        (h3 * n).round()
    );
    (h1, h3)
}

#[test]
fn both_embedders_retrieve_paraphrased_facts() {
    let pairs = pairs();
    let n = pairs.len();
    assert!(n >= 60, "the set has {n} pairs");
    let at_least = |k: usize| k as f64 / n as f64 - 1e-9;
    println!("{n} fact/question pairs; chance: hit@1 {:.3}, hit@3 {:.3}", 1.0 / n as f64, 3.0 / n as f64);

    let (h1, h3) =
        measure("ngram D=64 (3-grams, common words skipped)", &mut NgramEmbedder::<64>::new(), &pairs);
    assert!(h1 >= at_least(4) && h3 >= at_least(7), "ngram 64: {h1} {h3}");
    let (h1, h3) =
        measure("ngram D=256 (3-grams, common words skipped)", &mut NgramEmbedder::<256>::new(), &pairs);
    assert!(h1 >= at_least(6) && h3 >= at_least(10), "ngram 256: {h1} {h3}");
    let table = table();
    let (h1, h3) = measure(
        "learned ngram D=64 (16384-row int8 table)",
        &mut TableEmbedder::<64>::from_bytes(&table).unwrap(),
        &pairs,
    );
    assert!(h1 >= at_least(8) && h3 >= at_least(13), "learned ngram: {h1} {h3}");

    let img = builtin();
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    assert_eq!(model.config.dim, DIM);
    let mut arena = vec![0i32; ModelEmbedder::arena_len(&model, SEQ)];
    let arena_bytes = arena.len() * 4;
    let mut me = ModelEmbedder::new(&model, &mut arena, SEQ, Pooling::Mean).unwrap();
    let t = std::time::Instant::now();
    let mut v = [0.0f32; DIM];
    let mut toks = 0;
    for (f, q) in &pairs {
        Embedder::<DIM>::embed(&mut me, f, &mut v).unwrap();
        Embedder::<DIM>::embed(&mut me, q, &mut v).unwrap();
        let mut buf = vec![0u32; f.len() + q.len() + 6];
        toks += tokenizer::encode(&model.vocab, f.as_bytes(), false, false, &mut buf).unwrap();
        toks += tokenizer::encode(&model.vocab, q.as_bytes(), false, false, &mut buf).unwrap();
    }
    println!(
        "model embedder: arena {arena_bytes} B at context {SEQ}; {} texts, {toks} tokens (+1 BOS each) in {:.1} ms on this host",
        2 * n,
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut mean = (0.0, 0.0);
    for p in [Pooling::Mean, Pooling::Last, Pooling::Max] {
        me.set_pooling(p);
        let r = measure::<DIM>(&format!("model D=64 (integer path), {p:?} pooling"), &mut me, &pairs);
        if p == Pooling::Mean {
            mean = r;
        }
    }
    // Chance hit@3 is 3 of n: the model embedder is measured only a little above it.
    assert!(mean.0 >= at_least(2) && mean.1 >= at_least(5), "model mean pooling: {mean:?}");
}

/// A fact's own text must retrieve itself first: catches an embedder that breaks outright
/// (constant, random or collapsed vectors), which the paraphrase figures are too low to do
/// with a wide margin.
#[test]
fn every_fact_retrieves_itself() {
    let pairs = pairs();
    let same: Vec<(String, String)> = pairs.iter().map(|(f, _)| (f.clone(), f.clone())).collect();
    let img = builtin();
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0i32; ModelEmbedder::arena_len(&model, SEQ)];
    let mut me = ModelEmbedder::new(&model, &mut arena, SEQ, Pooling::Mean).unwrap();
    let (f, q) = vecs::<DIM>(&mut me, &same);
    assert_eq!(hits(&f, &q, false).0, 1.0);
    let (f, q) = vecs::<256>(&mut NgramEmbedder::new(), &same);
    assert_eq!(hits(&f, &q, false).0, 1.0);
    let table = table();
    let (f, q) = vecs::<64>(&mut TableEmbedder::from_bytes(&table).unwrap(), &same);
    assert_eq!(hits(&f, &q, false).0, 1.0);
    // Unit length, and texts with no word are typed errors.
    let mut v = [0.0f32; DIM];
    Embedder::<DIM>::embed(&mut me, "Cats like to sleep in the sun.", &mut v).unwrap();
    assert!((similarity(&v, &v) - 1.0).abs() < 1e-5);
    assert!(Embedder::<DIM>::embed(&mut me, "", &mut v).is_err());
    assert!(Embedder::<DIM>::embed(&mut me, " ?! ", &mut v).is_err());
    let mut wrong = [0.0f32; 32];
    assert!(Embedder::<32>::embed(&mut me, "cats", &mut wrong).is_err());
    assert!(me.set_layers(0).is_err() && me.set_layers(model.layers.len() + 1).is_err());
    // Longer than the context: truncated, not an error.
    let long = "The cat sat on the mat. ".repeat(40);
    Embedder::<DIM>::embed(&mut me, &long, &mut v).unwrap();
}

/// Other ways to get a vector out of the model, measured for the record (no assertion): they
/// did no better than mean pooling, which is why the embedder does not offer them.
#[test]
fn model_alternatives_for_the_record() {
    let pairs = pairs();
    let img = builtin();
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0i32; ModelEmbedder::arena_len(&model, SEQ)];
    let mut me = ModelEmbedder::new(&model, &mut arena, SEQ, Pooling::Mean).unwrap();
    // Earlier layers' hidden states (all through the output RMSNorm).
    for layers in 1..model.layers.len() {
        me.set_layers(layers).unwrap();
        for p in [Pooling::Mean, Pooling::Last, Pooling::Max] {
            me.set_pooling(p);
            measure::<DIM>(&format!("model after layer {layers}, {p:?} pooling"), &mut me, &pairs);
        }
    }
    me.set_layers(model.layers.len()).unwrap();
    for p in [Pooling::Mean, Pooling::Max] {
        me.set_pooling(p);
        let (f, q) = vecs::<DIM>(&mut me, &pairs);
        println!("model {p:?} pooling, centered on the facts' mean: {:?}", hits(&f, &q, true));
    }
    let tokens = |t: &str, bos: bool| {
        let mut toks = vec![0u32; t.len() + 3];
        let n = tokenizer::encode(&model.vocab, t.as_bytes(), bos, false, &mut toks).unwrap();
        toks.truncate(n);
        toks
    };
    // Mean of the model's input token embeddings (bag of tokens in the model's space).
    let bag = |t: &str| {
        let (mut acc, mut row) = (vec![0.0f32; DIM], vec![0.0f32; DIM]);
        for tok in tokens(t, false) {
            model.token_embd.row_into(tok as usize, &mut row, model.group);
            acc.iter_mut().zip(&row).for_each(|(a, r)| *a += r);
        }
        acc
    };
    let f: Vec<_> = pairs.iter().map(|(f, _)| bag(f)).collect();
    let q: Vec<_> = pairs.iter().map(|(_, q)| bag(q)).collect();
    println!("mean input token embedding: {:?}", hits(&f, &q, false));
    // The model's predicted next-token distributions, averaged over the text (vocab-sized).
    let mut arena2 = vec![0i32; IntState::arena_len(&model, SEQ)];
    let mut st = IntState::new(&model, &mut arena2, SEQ).unwrap();
    let mut pred = |t: &str| {
        let mut acc = vec![0.0f32; model.config.vocab_size];
        for (pos, tok) in tokens(t, true).into_iter().enumerate() {
            let l: Vec<f32> =
                st.forward(&model, tok, pos).unwrap().iter().map(|x| *x as f32 / 65536.0).collect();
            let m = l.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = l.iter().map(|x| (x - m).exp()).collect();
            let z: f32 = e.iter().sum();
            acc.iter_mut().zip(&e).for_each(|(a, x)| *a += x / z);
        }
        acc
    };
    let f: Vec<_> = pairs.iter().map(|(f, _)| pred(f)).collect();
    let q: Vec<_> = pairs.iter().map(|(_, q)| pred(q)).collect();
    println!("mean predicted next-token distribution: {:?}", hits(&f, &q, false));
}

/// The float forward pass's final hidden states, mean-pooled like [`ModelEmbedder`] does:
/// what the integer path's embeddings are checked against.
struct FloatMean<'m, 'a, 's> {
    model: &'m Model<'a>,
    state: ruvllm_esp32::infer::State<'s>,
}

impl<const D: usize> Embedder<D> for FloatMean<'_, '_, '_> {
    fn embed(&mut self, text: &str, out: &mut [f32; D]) -> ruvllm_esp32::Result<()> {
        let mut toks = vec![0u32; text.len() + 3];
        let n = tokenizer::encode(&self.model.vocab, text.as_bytes(), true, false, &mut toks)?;
        out.fill(0.0);
        for (pos, tok) in toks[..n].iter().enumerate() {
            let h = self.state.hidden(self.model, *tok, pos)?;
            if pos > 0 {
                out.iter_mut().zip(h).for_each(|(o, x)| *o += x);
            }
        }
        let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.iter_mut().for_each(|x| *x /= norm);
        Ok(())
    }
}

/// The integer path's embeddings agree with the float path's (same model, same pooling), and
/// retrieve about as well.
#[test]
fn integer_embeddings_match_the_float_path() {
    let pairs = pairs();
    let img = builtin();
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0i32; ModelEmbedder::arena_len(&model, SEQ)];
    let mut me = ModelEmbedder::new(&model, &mut arena, SEQ, Pooling::Mean).unwrap();
    let mut farena = vec![0.0f32; ruvllm_esp32::infer::State::arena_len(&model, SEQ)];
    let state =
        ruvllm_esp32::infer::State::new(&model, &mut farena, SEQ, ruvllm_esp32::kernels::Kernels::REFERENCE)
            .unwrap();
    let mut fe = FloatMean { model: &model, state };
    let (fi, qi) = vecs::<DIM>(&mut me, &pairs);
    let (ff, qf) = vecs::<DIM>(&mut fe, &pairs);
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let worst = fi.iter().chain(&qi).zip(ff.iter().chain(&qf)).map(|(a, b)| cos(a, b)).fold(1.0f32, f32::min);
    let (h1, h3) = hits(&ff, &qf, false);
    println!("float path, mean pooling: hit@1 {h1:.3} hit@3 {h3:.3}; worst int/float cosine {worst:.4}");
    assert!(worst > 0.98, "integer and float embeddings differ: cosine {worst}");
}
