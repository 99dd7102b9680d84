//! The `ruvllm-esp32` binary as a user runs it: real model in, exact text out, and a one-line
//! error (never a panic) for every kind of bad input.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Files {
    model: PathBuf,
    tok: PathBuf,
}

fn files() -> Option<Files> {
    Some(Files { model: shared("models/stories260K.bin")?, tok: shared("models/tok512.bin")? })
}

#[test]
fn gen_reproduces_the_reference_from_the_checkpoint_and_from_its_gguf() {
    let Some(f) = files() else { return };
    let gguf = scratch("stories260K.gguf");
    let out = run(&["convert", s(&f.model), "--tokenizer", s(&f.tok), "--quant", "f32", "-o", s(&gguf)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for case in ["p1", "p2"] {
        let prompt =
            std::fs::read_to_string(shared(&format!("reference/stories260K_greedy_{case}.prompt")).unwrap())
                .unwrap();
        let want =
            std::fs::read(shared(&format!("reference/stories260K_greedy_{case}.out")).unwrap()).unwrap();
        let from_bin = run(&[
            "gen",
            "--model",
            s(&f.model),
            "--tokenizer",
            s(&f.tok),
            "--prompt",
            &prompt,
            "--steps",
            "256",
        ]);
        let from_gguf = run(&["gen", "--model", s(&gguf), "--prompt", &prompt, "--steps", "256"]);
        for out in [from_bin, from_gguf] {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&want));
            assert!(String::from_utf8_lossy(&out.stderr).contains("tok/s"));
        }
    }
}

#[test]
fn q8_and_sampling_produce_text_that_starts_with_the_prompt() {
    let Some(f) = files() else { return };
    for extra in [&["--quant", "q8"][..], &["--temp", "0.8", "--top-p", "0.9", "--seed", "7"][..]] {
        let mut args = vec!["gen", "-m", s(&f.model), "-z", s(&f.tok), "-p", "Once upon a time", "-n", "64"];
        args.extend_from_slice(extra);
        let a = run(&args);
        let b = run(&args);
        assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
        assert!(a.stdout.starts_with(b"Once upon a time"));
        assert!(a.stdout.len() > 60, "too little text: {}", String::from_utf8_lossy(&a.stdout));
        assert_eq!(a.stdout, b.stdout, "seeded runs are deterministic");
    }
}

#[test]
fn eval_prints_tokens_nll_and_perplexity() {
    let Some(f) = files() else { return };
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/heldout.txt");
    let out = run(&["eval", "-m", s(&f.model), "-z", s(&f.tok), "--text", text]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("tokens: "));
    let nll: f64 = lines[1].strip_prefix("nll: ").unwrap().parse().unwrap();
    let ppl: f64 = lines[2].strip_prefix("perplexity: ").unwrap().parse().unwrap();
    assert!((nll.exp() - ppl).abs() < 1e-3 * ppl);
    assert!(ppl > 1.0 && ppl < 20.0, "{ppl}");
}

#[test]
fn info_reports_ram_at_full_context_and_a_plan_per_chip() {
    let Some(f) = files() else { return };
    let out = run(&["info", s(&f.model), "-z", s(&f.tok), "--quant", "q8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("parameters: 260032"), "{text}");
    assert!(text.contains("RAM at full context 512"), "{text}");
    for chip in ["esp32 ", "esp32s2", "esp32s3", "esp32c3", "esp32c6"] {
        assert!(text.contains(chip), "{chip} missing: {text}");
    }
}

/// Ternary and binary: convert, info, gen and eval on both the float and the integer path.
#[test]
fn ternary_and_binary_convert_inspect_and_run_on_both_paths() {
    let Some(f) = files() else { return };
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/heldout.txt");
    for quant in ["ternary", "binary"] {
        let gguf = scratch(&format!("stories260K-{quant}.gguf"));
        let out = run(&["convert", s(&f.model), "-z", s(&f.tok), "--quant", quant, "-o", s(&gguf)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let info = run(&["info", s(&gguf)]);
        let info = String::from_utf8(info.stdout).unwrap();
        assert!(info.contains(&format!("precision: {quant}")), "{info}");
        assert!(info.contains(&format!("layer matrices {quant}, embeddings q8")), "{info}");
        assert!(info.contains("on the integer path"), "{info}");
        // The image as it is, and the checkpoint converted at load: the same text.
        let from_gguf = run(&["gen", "-m", s(&gguf), "-p", "Once upon a time", "-n", "32"]);
        let from_bin = run(&[
            "gen",
            "-m",
            s(&f.model),
            "-z",
            s(&f.tok),
            "-q",
            quant,
            "-p",
            "Once upon a time",
            "-n",
            "32",
        ]);
        assert!(from_gguf.status.success(), "{}", String::from_utf8_lossy(&from_gguf.stderr));
        assert!(String::from_utf8_lossy(&from_gguf.stderr).contains(quant));
        assert_eq!(from_gguf.stdout, from_bin.stdout);
        let int = run(&["gen", "-m", s(&gguf), "--int", "-p", "Once upon a time", "-n", "32"]);
        let int_bin = run(&[
            "gen",
            "-m",
            s(&f.model),
            "-z",
            s(&f.tok),
            "--int",
            "-q",
            quant,
            "-p",
            "Once upon a time",
            "-n",
            "32",
        ]);
        assert!(int.status.success(), "{}", String::from_utf8_lossy(&int.stderr));
        assert!(int.stdout.starts_with(b"Once upon a time"));
        assert_eq!(int.stdout, int_bin.stdout);
        let ppl = |out: Output| -> f64 {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let o = String::from_utf8(out.stdout).unwrap();
            o.lines().find_map(|l| l.strip_prefix("perplexity: ")).unwrap().parse().unwrap()
        };
        let pf = ppl(run(&["eval", "-m", s(&gguf), "--text", text]));
        let pi = ppl(run(&["eval", "-m", s(&gguf), "--text", text, "--int"]));
        assert!((pf - pi).abs() < 0.02 * pf, "{quant}: float {pf}, integer {pi}");
    }
    fails_with(&run(&["gen", "-m", s(&f.model), "-z", s(&f.tok), "--int", "-q", "f32", "-p", "hi"]), "int8");
}

#[test]
fn bad_model_files_get_a_one_line_error() {
    let Some(f) = files() else { return };
    let tok = s(&f.tok);
    let gen = |model: &Path| run(&["gen", "-m", s(model), "-z", tok, "-p", "hi", "-n", "16"]);

    fails_with(&gen(Path::new("/nonexistent/model.bin")), "/nonexistent/model.bin");

    let bytes = std::fs::read(&f.model).unwrap();
    let short = scratch("short.bin");
    std::fs::write(&short, &bytes[..1000]).unwrap();
    fails_with(&gen(&short), "short.bin");

    let empty = scratch("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    fails_with(&gen(&empty), "empty.bin");

    let mut absurd = bytes.clone();
    absurd[0..4].copy_from_slice(&1_000_000_000i32.to_le_bytes());
    let absurd_path = scratch("absurd.bin");
    std::fs::write(&absurd_path, &absurd).unwrap();
    fails_with(&gen(&absurd_path), "absurd.bin");

    let not_gguf = scratch("model.gguf");
    std::fs::write(&not_gguf, b"GGML this is not a gguf file at all").unwrap();
    fails_with(&gen(&not_gguf), "magic");

    // A converted image with one flipped bit in its weights.
    let gguf = scratch("flipped.gguf");
    let out = run(&["convert", s(&f.model), "-z", tok, "-o", s(&gguf)]);
    assert!(out.status.success());
    let mut img = std::fs::read(&gguf).unwrap();
    let n = img.len();
    img[n - 100] ^= 0x10;
    std::fs::write(&gguf, &img).unwrap();
    fails_with(&run(&["gen", "-m", s(&gguf), "-p", "hi", "-n", "16"]), "checksum");
    // Also when a tokenizer is given and the image would be converted again.
    fails_with(&run(&["gen", "-m", s(&gguf), "-z", tok, "-q", "q8", "-n", "16"]), "checksum");
    let truncated = scratch("truncated.gguf");
    std::fs::write(&truncated, &img[..n / 2]).unwrap();
    fails_with(&run(&["gen", "-m", s(&truncated), "-p", "hi", "-n", "16"]), "truncated.gguf");
}

#[test]
fn bad_tokenizers_get_a_one_line_error() {
    let Some(f) = files() else { return };
    let gen = |tok: &str| run(&["gen", "-m", s(&f.model), "-z", tok, "-p", "hi", "-n", "16"]);
    fails_with(&run(&["gen", "-m", s(&f.model), "-p", "hi"]), "--tokenizer");
    fails_with(&gen("/nonexistent/tok.bin"), "/nonexistent/tok.bin");
    let bytes = std::fs::read(&f.tok).unwrap();
    let short = scratch("short-tok.bin");
    std::fs::write(&short, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&gen(s(&short)), "short-tok.bin");
    let mut huge = bytes.clone();
    huge[8..12].copy_from_slice(&i32::MAX.to_le_bytes()); // first piece's length
    let huge_path = scratch("huge-tok.bin");
    std::fs::write(&huge_path, &huge).unwrap();
    fails_with(&gen(s(&huge_path)), "huge-tok.bin");
}

#[test]
fn prompts_and_steps_beyond_the_context_are_refused() {
    let Some(f) = files() else { return };
    let (m, t) = (s(&f.model), s(&f.tok));
    fails_with(&run(&["gen", "-m", m, "-z", t, "-p", "hi", "-n", "513"]), "--steps 513");
    fails_with(&run(&["gen", "-m", m, "-z", t, "-p", "hi", "-n", "0"]), "--steps 0");
    let long = "Once upon a time there was a dog. ".repeat(3);
    fails_with(&run(&["gen", "-m", m, "-z", t, "-p", &long, "-n", "8"]), "prompt");
    let very_long = "The cat sat on a mat and looked at the moon. ".repeat(80);
    fails_with(&run(&["gen", "-m", m, "-z", t, "-p", &very_long, "-n", "512"]), "prompt");
    fails_with(&run(&["gen", "-m", m, "-z", t, "-p", "hi", "--quant", "q4"]), "q4");
}

fn run_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_built_in_model_runs_with_no_model_argument() {
    let out = run(&["gen", "--prompt", "Once upon a time", "-n", "60"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Once upon a time"), "{text}");
    assert!(text.split_whitespace().count() > 15, "{text}");

    let out = run_stdin(&["console"], b"gen Once upon a time\nquit\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("ruvllm-esp32 console on host"), "{shown}");
    assert!(shown.contains("Once upon a time"), "{shown}");
}

/// The console's knowledge commands on the host: good and bad input, one line per error, and
/// `ask` answering from the best text with the built-in model.
#[test]
fn the_console_adds_asks_checks_and_forgets_knowledge() {
    let script = b"ask the cat\nanomaly the cat\nadd The cat sleeps on the warm kitchen floor.\n\
add Tom the dog digs holes in the garden.\nadd Lily plants red flowers in the garden.\n\
add The cat drinks milk in the kitchen.\nadd\nadd ...\nforget 9\nforget x\nset steps 48\n\
ask where does the cat sleep\nanomaly The cat sleeps in the kitchen.\nforget 2\nstats\nquit\n";
    let out = run_stdin(&["console"], script);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8(out.stdout).unwrap();
    let reply = |line: &str| -> String {
        let after = shown.split(&format!("> {line}\r\n")).nth(1).unwrap_or_else(|| panic!("{line}: {shown}"));
        after.split("\r\n> ").next().unwrap().to_string()
    };
    assert_eq!(reply("ask the cat"), "No results found");
    assert!(reply("anomaly the cat").starts_with("NORMAL (score: "), "{shown}");
    assert_eq!(reply("add The cat sleeps on the warm kitchen floor."), "Added knowledge #1");
    assert_eq!(reply("add The cat drinks milk in the kitchen."), "Added knowledge #4");
    assert_eq!(reply("add"), "error: no text given (usage: add <text>)");
    assert_eq!(
        reply("add ..."),
        "error: nothing stored: the text has no words, only symbols (write it with letters or digits)"
    );
    assert_eq!(reply("forget 9"), "error: no knowledge #9");
    assert!(reply("forget x").starts_with("error: usage: forget <id>"), "{shown}");
    let ask = reply("ask where does the cat sleep");
    let mut lines = ask.split("\r\n");
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("Found: The cat sleeps on the warm kitchen floor. (#1, similarity "),
        "{shown}"
    );
    // Then the model's answer, copied from the best text.
    assert_eq!(
        lines.find(|l| !l.starts_with("Found: ")),
        Some("Answer: on the warm kitchen floor"),
        "{shown}"
    );
    assert!(reply("anomaly The cat sleeps in the kitchen.").starts_with("NORMAL (score: "), "{shown}");
    assert_eq!(reply("forget 2"), "Forgot knowledge #2");
    let stats = reply("stats");
    assert!(stats.contains("knowledge: 3/256 entries, RAG store "), "{stats}");
    assert!(stats.contains("anomaly detector: 4/64 references, threshold "), "{stats}");
    assert!(stats.contains("last ask (embedding + retrieval): "), "{stats}");
    assert!(stats.contains("last ask with its answer: "), "{stats}");
    assert_eq!(shown.matches("error:").count(), 4, "{shown}");
}

/// `anomaly` on a fresh console needs no setup: the published examples verbatim, and the
/// anomalies of issue 16 that the distance to knowledge alone missed (symbols only was refused)
/// are scored by the built-in model's view of their tokens.
#[test]
fn anomaly_works_on_a_fresh_console() {
    let lines = [
        ("this is normal text", "NORMAL"),
        ("xkcd random gibberish 12345", "ANOMALY"),
        ("qwzx vbnm plkj hgfd 9981 zzzt", "ANOMALY"),
        ("%%%% #### @@@@", "ANOMALY"),
        ("' OR '1'='1' --", "ANOMALY"),
        ("00000040: 4f 2a 91 00 ff 3c 7e 10", "ANOMALY"),
        ("Lorem ipsum dolor sit amet, consectetur adipiscing elit", "ANOMALY"),
        ("let mut buf = [0u8; 256];", "ANOMALY"),
        ("when is the team meeting", "NORMAL"),
        ("Please water the tomatoes before the weekend.", "NORMAL"),
    ];
    let mut script: String = lines.iter().map(|(l, _)| format!("anomaly {l}\n")).collect();
    script.push_str("quit\n");
    let out = run_stdin(&["console"], script.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8(out.stdout).unwrap();
    for (line, verdict) in lines {
        assert!(shown.contains(&format!("> anomaly {line}\r\n{verdict} (score: ")), "{line}: {shown}");
    }
}

#[test]
fn train_refuses_bad_corpora_and_mismatched_checkpoints_in_one_line() {
    let out_model = scratch("t.gguf");
    let o = s(&out_model);
    let empty = scratch("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    fails_with(&run(&["train", "--text", s(&empty), "--preset", "tiny", "-o", o]), "empty");
    let binary = scratch("binary.txt");
    std::fs::write(&binary, (0..4096u32).map(|i| (i * 7 % 256) as u8).collect::<Vec<_>>()).unwrap();
    fails_with(&run(&["train", "--text", s(&binary), "--preset", "tiny", "-o", o]), "binary.txt");
    let small = scratch("small.txt");
    std::fs::write(&small, "Tom had a red ball. He liked it.\n\nSam saw a cat.\n").unwrap();
    fails_with(&run(&["train", "--text", s(&small), "--preset", "tiny", "-o", o]), "too small");
    fails_with(&run(&["train", "--preset", "huge", "-o", o]), "unknown preset");
    fails_with(&run(&["train", "--quant", "q4", "-o", o]), "unknown quantization");

    // A short real run, then a resume that asks for another format.
    let corpus = scratch("corpus.txt");
    let out = run(&["corpus", "-o", s(&corpus), "--docs", "1500"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args =
        ["train", "--text", s(&corpus), "--preset", "tiny", "--steps", "2", "--eval-every", "1", "-o", o];
    let out = run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out_model.with_extension("loss.svg").exists());
    let ckpt = out_model.with_extension("ckpt");
    let out = run(&["gen", "-m", o, "-p", "Once", "-n", "8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut resume = args.to_vec();
    resume.extend(["--resume", s(&ckpt), "--quant", "ternary"]);
    fails_with(&run(&resume), "weight format differs");
    std::fs::write(&ckpt, b"not a checkpoint").unwrap();
    resume.truncate(args.len() + 2);
    fails_with(&run(&resume), "not a ruvllm-esp32 training checkpoint");
}

/// `dim`-float rows as .fvecs (or i32 rows as .ivecs: same layout).
fn vecs_bytes<T: Copy>(dim: usize, data: &[T], le: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in data.chunks(dim) {
        out.extend((dim as i32).to_le_bytes());
        for &x in row {
            out.extend(le(x));
        }
    }
    out
}

/// The value after `key: ` on its line of `index bench`'s report, one per --ef-search value.
fn figures(out: &str, key: &str) -> Vec<f64> {
    out.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix(": ")?.parse().ok()).collect()
}

#[test]
fn index_bench_measures_recall_on_mnist_in_every_mode() {
    let Some(mnist) = shared("data/mnist-t10k-images-idx3-ubyte.gz") else { return };
    // 3,000 base images and 200 held-out queries (the file's last 1,000, first 200 of them).
    let common = ["index", "bench", "--base", s(&mnist), "--max-base", "3000", "--max-queries", "200"];
    let bench = |extra: &[&str]| {
        let out = run(&[&common[..], extra].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let f32_out = bench(&["--mode", "f32", "--ef-search", "16,64"]);
    let r10 = figures(&f32_out, "recall@10");
    assert_eq!(r10.len(), 2, "{f32_out}");
    assert!(r10[1] >= 0.95 && r10[1] >= r10[0], "{f32_out}");
    assert!(figures(&f32_out, "recall@1")[1] >= 0.95, "{f32_out}");
    assert!(figures(&f32_out, "qps").iter().all(|&q| q > 0.0), "{f32_out}");
    // 784 floats plus links: an exact size, the same for every ef
    assert!(figures(&f32_out, "bytes/vector").iter().all(|&b| (3136.0..3300.0).contains(&b)), "{f32_out}");

    let i8_out = bench(&["--mode", "i8"]);
    assert!(figures(&i8_out, "recall@10")[0] >= 0.95, "{i8_out}");
    assert!(figures(&i8_out, "bytes/vector")[0] < 900.0, "{i8_out}");

    // 784 sign bits of the centred pixels keep much of the neighbourhood, not all of it
    let bin_out = bench(&["--mode", "binary", "--ef-search", "128"]);
    let rb = figures(&bin_out, "recall@10")[0];
    assert!(rb > 0.5 && rb < r10[1], "{bin_out}");
    assert!(figures(&bin_out, "bytes/vector")[0] < 200.0, "{bin_out}");

    // PQ: ADC alone, then the same codes with exact re-ranking of 100 candidates
    let adc = figures(&bench(&["--mode", "pq", "--pq-centroids", "64"]), "recall@10")[0];
    let rerank =
        figures(&bench(&["--mode", "pq", "--pq-centroids", "64", "--rerank", "100"]), "recall@10")[0];
    assert!(adc > 0.6 && rerank > adc && rerank >= 0.95, "adc {adc}, rerank {rerank}");
}

#[test]
fn index_bench_reads_fvecs_and_ivecs_ground_truth() {
    let Some(mnist) = shared("data/mnist-t10k-images-idx3-ubyte.gz") else { return };
    let all = ruvllm_cli::datasets::read_vectors(&mnist).unwrap();
    let dim = all.dim;
    let (base, queries) = (&all.data[..2000 * dim], &all.data[9000 * dim..9100 * dim]);
    let truth =
        ruvllm_cli::datasets::ground_truth(base, queries, dim, 10, ruvllm_cli::datasets::Metric::Euclidean)
            .unwrap();
    let f = |x: f32| x.to_le_bytes();
    let (bp, qp, gp) = (scratch("base.fvecs"), scratch("query.fvecs"), scratch("gt.ivecs"));
    std::fs::write(&bp, vecs_bytes(dim, base, f)).unwrap();
    std::fs::write(&qp, vecs_bytes(dim, queries, f)).unwrap();
    std::fs::write(&gp, vecs_bytes(10, &truth.data, |x: u32| x.to_le_bytes())).unwrap();
    let given = run(&["index", "bench", "--base", s(&bp), "--queries", s(&qp), "--ground-truth", s(&gp)]);
    let computed = run(&["index", "bench", "--base", s(&bp), "--queries", s(&qp)]);
    let (given, computed) =
        (String::from_utf8_lossy(&given.stdout), String::from_utf8_lossy(&computed.stdout));
    assert!(figures(&given, "recall@10")[0] >= 0.95, "{given}");
    assert_eq!(figures(&given, "recall@10"), figures(&computed, "recall@10"));
    assert_eq!(figures(&given, "recall@1"), figures(&computed, "recall@1"));
}

#[test]
fn index_bench_refuses_bad_datasets_in_one_line() {
    let f = |x: f32| x.to_le_bytes();
    let good: Vec<f32> = (0..40 * 8).map(|i| (i % 17) as f32).collect();
    let base = scratch("ok.fvecs");
    std::fs::write(&base, vecs_bytes(8, &good, f)).unwrap();
    let bytes = vecs_bytes(8, &good, f);
    let truncated = scratch("truncated.fvecs");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let mut bad = good.clone();
    bad[8 * 5 + 2] = f32::NAN;
    let nan = scratch("nan.fvecs");
    std::fs::write(&nan, vecs_bytes(8, &bad, f)).unwrap();
    let wide = scratch("wide.fvecs");
    std::fs::write(&wide, vecs_bytes(16, &good, f)).unwrap();
    let empty = scratch("empty.fvecs");
    std::fs::write(&empty, b"").unwrap();
    let gt_far = scratch("far.ivecs");
    std::fs::write(&gt_far, vecs_bytes(10, &[1000i32; 100], |x: i32| x.to_le_bytes())).unwrap();
    // 40 base vectors: hold out 10 as queries
    let bench = |args: &[&str]| run(&[&["index", "bench", "--holdout", "10"][..], args].concat());
    fails_with(&bench(&["--base", s(&truncated)]), "truncated");
    fails_with(&bench(&["--base", s(&nan)]), "vector 5 holds NaN");
    fails_with(&bench(&["--base", s(&base), "--queries", s(&nan)]), "nan.fvecs");
    fails_with(&bench(&["--base", s(&base), "--queries", s(&wide)]), "dimension 16");
    fails_with(&bench(&["--base", s(&empty)]), "no vectors");
    fails_with(&bench(&["--base", s(&scratch("missing.fvecs"))]), "missing.fvecs");
    fails_with(&bench(&["--base", s(&base), "--m", "5"]), "supported values");
    fails_with(&run(&["index", "bench", "--base", s(&base), "--holdout", "40"]), "--holdout");
    fails_with(&bench(&["--base", s(&base), "--ground-truth", s(&gt_far)]), "not one of");
    fails_with(&bench(&["--base", s(&base), "--mode", "pq", "--pq-subspaces", "3"]), "divisible");
}

/// The perplexity `eval` prints.
fn perplexity(out: &Output) -> f64 {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().find_map(|l| l.strip_prefix("perplexity: ")).unwrap().parse().unwrap()
}

/// `convert --prune` on the built-in model: unstructured pruning keeps the shape, structured
/// pruning shrinks the feed-forward width (a smaller image that `info`, `gen` and `eval` on
/// both paths take), more pruning costs more perplexity, and a bad sparsity is refused.
#[test]
fn pruned_models_convert_run_and_lose_perplexity_with_sparsity() {
    let docs = scratch("prune-heldout.txt");
    let out = run(&["corpus", "-o", s(&docs), "--docs", "60", "--seed", "7"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ppl = |model: &Path| {
        perplexity(&run(&["eval", "-m", s(model), "--text", s(&docs), "--documents", "--int"]))
    };
    let base = scratch("prune-base.gguf");
    let builtin = concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf");
    assert!(run(&["convert", builtin, "--quant", "q8", "-o", s(&base)]).status.success());
    let mut last = ppl(&base);
    for sparsity in ["0.25", "0.5"] {
        let unstructured = scratch(&format!("prune-u{sparsity}.gguf"));
        let out = run(&["convert", s(&base), "--prune", sparsity, "-o", s(&unstructured)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.contains("feed-forward width 144 -> 144"), "{err}");
        let structured = scratch(&format!("prune-s{sparsity}.gguf"));
        let out = run(&[
            "convert",
            s(&base),
            "--prune",
            sparsity,
            "--structured",
            "--quant",
            "q8",
            "-o",
            s(&structured),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        let width = if sparsity == "0.25" { "144 -> 108" } else { "144 -> 72" };
        assert!(out.status.success() && err.contains(width), "{err}");
        assert!(std::fs::metadata(&structured).unwrap().len() < std::fs::metadata(&base).unwrap().len());
        let info = String::from_utf8(run(&["info", s(&structured)]).stdout).unwrap();
        assert!(info.contains(&format!("dim 64 hidden {} layers 5", &width[7..])), "{info}");
        let gen = run(&["gen", "-m", s(&structured), "-p", "Once upon a time", "-n", "24", "--int"]);
        assert!(gen.status.success() && String::from_utf8_lossy(&gen.stdout).starts_with("Once upon a time"));
        let (pu, ps) = (ppl(&unstructured), ppl(&structured));
        assert!(
            pu >= last * 0.98 && ps > last,
            "sparsity {sparsity}: base/previous {last}, unstructured {pu}, structured {ps}"
        );
        last = pu;
    }
    for bad in ["1.5", "-0.1", "nan", "x"] {
        let arg = format!("--prune={bad}");
        let out = run(&["convert", s(&base), &arg, "-o", s(&scratch("prune-bad.gguf"))]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("use a number from 0 to 0.95"), "{bad}: {err}");
    }
}

/// `convert --prune 0.9` stores the pruned matrices as sparse rows (a smaller image) and
/// `--dense` keeps them dense: `gen` writes the same text from both, on the integer path and
/// the float one; `info` counts the sparse matrices; a flag that makes no sense is one line.
#[test]
fn unstructured_pruning_past_the_break_even_writes_sparse_rows_that_generate_the_same_text() {
    let builtin = concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf");
    let (sparse, dense) = (scratch("prune-sparse-0.9.gguf"), scratch("prune-dense-0.9.gguf"));
    let out = run(&["convert", builtin, "--quant", "q8", "--prune", "0.9", "-o", s(&sparse)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("stored 35 of 35 block matrices as sparse rows"), "{err}");
    assert!(err.contains("llama.cpp does not"), "{err}");
    let out = run(&["convert", builtin, "--quant", "q8", "--prune", "0.9", "--dense", "-o", s(&dense)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("sparse rows"), "{err}");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&sparse) * 2 < size(&dense), "{} vs {}", size(&sparse), size(&dense));
    let info = String::from_utf8(run(&["info", s(&sparse)]).stdout).unwrap();
    assert!(info.contains("sparse rows: 35 block matrices"), "{info}");
    for int in [true, false] {
        let text = |m: &Path| {
            let mut args = vec!["gen", "-m", s(m), "-p", "Once upon a time", "-n", "48", "--seed", "5"];
            if int {
                args.push("--int");
            }
            let out = run(&args);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        assert_eq!(text(&sparse), text(&dense), "int {int}");
    }
    // Below the break-even (75% of a matrix's codes zero) every matrix stays dense.
    let half = scratch("prune-sparse-0.5.gguf");
    let out = run(&["convert", builtin, "--quant", "q8", "--prune", "0.5", "-o", s(&half)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("every block matrix stays dense"), "{err}");
    for bad in [vec!["--dense"], vec!["--prune", "0.5", "--structured", "--dense"]] {
        let mut args = vec!["convert", builtin, "-o", s(&half)];
        args.extend(bad.iter().copied());
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.starts_with("error:"), "{bad:?}: {err}");
    }
}

/// `convert --prune-heads N`: the image shrinks, runs on both paths, and removing no head
/// writes the same bytes as not asking; removing every key/value head is one line.
#[test]
fn removing_attention_heads_shrinks_the_image_and_zero_changes_nothing() {
    let builtin = concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf");
    let (plain, zero, one) = (scratch("heads-plain.gguf"), scratch("heads-0.gguf"), scratch("heads-1.gguf"));
    assert!(run(&["convert", builtin, "--quant", "q8", "-o", s(&plain)]).status.success());
    assert!(run(&["convert", builtin, "--quant", "q8", "--prune-heads", "0", "-o", s(&zero)])
        .status
        .success());
    assert_eq!(std::fs::read(&plain).unwrap(), std::fs::read(&zero).unwrap());
    let out = run(&["convert", builtin, "--quant", "q8", "--prune-heads", "1", "-o", s(&one)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("attention heads 8 -> 6 (key/value heads 4 -> 3)"), "{err}");
    assert!(std::fs::metadata(&one).unwrap().len() < std::fs::metadata(&plain).unwrap().len());
    let info = String::from_utf8(run(&["info", s(&one)]).stdout).unwrap();
    assert!(info.contains("heads 6 kv_heads 3 head_size 8"), "{info}");
    for int in [true, false] {
        let mut args = vec!["gen", "-m", s(&one), "-p", "Once upon a time", "-n", "24"];
        if int {
            args.push("--int");
        }
        let out = run(&args);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("Once upon a time"));
    }
    for bad in ["4", "9", "-1", "x"] {
        let arg = format!("--prune-heads={bad}");
        let out = run(&["convert", builtin, &arg, "-o", s(&scratch("heads-bad.gguf"))]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.starts_with("error:") && err.lines().count() <= 4,
            "{bad}: {err}"
        );
    }
}

/// The loss before and after that `lora train` prints.
fn lora_losses(err: &str) -> Vec<f64> {
    let line = err.split("loss ").nth(1).unwrap();
    line.split(" nats").next().unwrap().split(" -> ").map(|v| v.parse().unwrap()).collect()
}

/// `lora train` on the built-in model lowers the loss of the phrases it learns, writes an
/// adapter that `gen --lora` applies (changing the text), and bad adapters or texts get one
/// line and a non-zero exit.
#[test]
fn lora_train_writes_an_adapter_that_gen_applies_and_bad_ones_are_refused() {
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/lora/train.txt");
    let adapter = scratch("adapter.bin");
    let out = run(&["lora", "train", "--text", text, "-o", s(&adapter)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let losses = lora_losses(&err);
    assert!(losses[1] < losses[0], "{err}");
    let plain = run(&["gen", "--int", "-p", "My dog", "-n", "24"]);
    let adapted = run(&["gen", "--lora", s(&adapter), "-p", "My dog", "-n", "24"]);
    assert!(plain.status.success() && adapted.status.success());
    assert_ne!(plain.stdout, adapted.stdout, "the adapter changed nothing");
    // Damaged, of another model, not an adapter at all, or no text: one line each.
    let mut bytes = std::fs::read(&adapter).unwrap();
    bytes[30] ^= 1;
    let damaged = scratch("adapter-damaged.bin");
    std::fs::write(&damaged, &bytes).unwrap();
    let pruned = scratch("adapter-other-model.gguf");
    let builtin = concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf");
    assert!(run(&["convert", builtin, "--quant", "q8", "--prune", "0.25", "-o", s(&pruned)])
        .status
        .success());
    for (args, want) in [
        (vec!["gen", "--lora", s(&damaged), "-n", "4"], "checksum"),
        (vec!["gen", "-m", s(&pruned), "--lora", s(&adapter), "-n", "4"], "different model"),
        (vec!["gen", "--lora", text, "-n", "4"], "wrong magic"),
        (vec!["lora", "train", "--text", "/dev/null", "-o", s(&scratch("x.bin"))], "regular file"),
        (vec!["lora", "train", "--text", text, "--rank", "3", "-o", s(&scratch("x.bin"))], "rank"),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want) && err.trim().lines().count() <= 3,
            "{args:?}: {err}"
        );
    }
}

/// `lora train --layers --targets`: a set on every layer's wq and wv trains and `gen --lora`
/// applies it; a layer or projection that does not exist, a rank outside 1-2 and a set above
/// the memory budget each get one line naming the values, and a non-zero exit.
#[test]
fn lora_train_on_chosen_layers_and_projections_and_bad_sets_are_refused() {
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/lora/train.txt");
    let adapter = scratch("adapter-wq-wv.bin");
    let out = run(&[
        "lora",
        "train",
        "--text",
        text,
        "--layers",
        "all",
        "--targets",
        "wq,wv",
        "--epochs",
        "1",
        "-o",
        s(&adapter),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("rank 2 on 0.wq,0.wv,1.wq,1.wv,2.wq,2.wv,3.wq,3.wv,4.wq,4.wv;"), "{err}");
    let losses = lora_losses(&err);
    assert!(losses[1] < losses[0] - 0.3, "{err}");
    let plain = run(&["gen", "--int", "-p", "My dog", "-n", "24"]);
    let adapted = run(&["gen", "--lora", s(&adapter), "-p", "My dog", "-n", "24"]);
    assert!(plain.status.success() && adapted.status.success());
    assert_ne!(plain.stdout, adapted.stdout, "the wq/wv adapters changed nothing");
    let o = s(&scratch("x.bin")).to_string();
    let train = |extra: &[&'static str]| {
        let mut args = vec!["lora", "train", "--text", text, "-o", &o];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    for (args, want) in [
        (train(&["--layers", "5"]), vec!["layer \"5\" does not exist", "layers 0 to 4"]),
        (train(&["--layers", "0,x"]), vec!["layer \"x\" does not exist"]),
        (
            train(&["--targets", "wq,wx"]),
            vec!["projection \"wx\" does not exist", "wq, wk, wv, wo, w1, w2, w3"],
        ),
        (train(&["--rank", "3"]), vec!["'3'", "--rank", "1..=2"]),
        (train(&["--rank", "0"]), vec!["'0'", "--rank", "1..=2"]),
        (
            train(&["--layers", "all", "--targets", "wq,wv", "--budget", "100000"]),
            vec!["--layers all --targets wq,wv at --rank 2 needs", "above the memory budget of 100000 bytes"],
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(want.iter().all(|w| err.contains(w)) && err.trim().lines().count() <= 3, "{args:?}: {err}");
    }
}

/// `models/nano.gguf` (scripts/train-models.sh nano) is the published resource table's model:
/// about 16 K int8 weights and, on the integer path, activations and KV cache for its whole
/// context within the table's ~20 KB of RAM.
#[test]
fn the_committed_nano_model_fits_the_published_table() {
    let img = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/nano.gguf");
    let (info, _) = ok(&["info", s(&img)]);
    let after = |label: &str| -> u64 {
        let rest =
            &info[info.find(label).unwrap_or_else(|| panic!("no {label:?} in {info}")) + label.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).find(|t| !t.is_empty()).unwrap().parse().unwrap()
    };
    assert!((15_000..=16_384).contains(&after("parameters: ")), "{info}");
    assert!(after("int8 ") <= 16 * 1024, "{info}");
    assert!(after("on the integer path (chips without an FPU): ") <= 20 * 1024, "{info}");
}

/// The committed character trigram table is what `train-chars` writes from the built-in
/// corpus and WordNet (Debian's wordnet-base, which `.ci/run` installs), byte for byte.
#[test]
fn train_chars_rebuilds_the_committed_table() {
    let wordnet = std::path::Path::new("/usr/share/wordnet");
    if !wordnet.join("data.noun").exists() {
        let _ = missing("WordNet (/usr/share/wordnet, apt-get install wordnet-base)");
        return;
    }
    let out = scratch("char-trigrams.bin");
    let r = run(&["train-chars", "--wordnet", s(wordnet), "-o", s(&out)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-esp32/data/char-trigrams.bin");
    assert!(std::fs::read(&out).unwrap() == std::fs::read(committed).unwrap(), "the table differs");
}

/// `convert --llama2c`: llama2.c's int8 checkpoint (ak42 version 2, for runq.c), groups that
/// divide the FFN width; it reads back (llama2.c's layout) and writes the story. Not q8, or
/// heads removed: one line, nothing written.
#[test]
fn convert_writes_a_llama2c_int8_checkpoint() {
    let Some(f) = files() else { return };
    for (pad, group) in [(None, 4u32), (Some("64"), 64)] {
        let out_path = scratch(&format!("stories260K-q8-{group}.bin"));
        let mut args =
            vec!["convert", s(&f.model), "-z", s(&f.tok), "--quant", "q8", "--llama2c", "-o", s(&out_path)];
        if let Some(n) = pad {
            args.extend(["--pad-ffn", n]);
        }
        let (_, err) = ok(&args);
        assert!(err.contains(&format!("llama2.c int8 checkpoint, groups of {group}")), "{err}");
        let bytes = std::fs::read(&out_path).unwrap();
        assert_eq!((&bytes[..4], &bytes[4..8]), (&b"24ka"[..], &2i32.to_le_bytes()[..]));
        assert_eq!(bytes[37..41], group.to_le_bytes());
        let (text, _) =
            ok(&["gen", "-m", s(&out_path), "-z", s(&f.tok), "-p", "Once upon a time", "-n", "24"]);
        assert!(text.starts_with("Once upon a time, there was a little girl"), "{text}");
    }
    let refused = scratch("refused.bin");
    let _ = std::fs::remove_file(&refused);
    for (extra, needle) in
        [(&[][..], "use it with --quant q8"), (&["--quant", "q8", "--prune-heads", "1"][..], "heads")]
    {
        let mut args = vec!["convert", s(&f.model), "-z", s(&f.tok), "--llama2c", "-o", s(&refused)];
        args.extend_from_slice(extra);
        fails_with(&run(&args), needle);
        assert!(!refused.exists());
    }
}
