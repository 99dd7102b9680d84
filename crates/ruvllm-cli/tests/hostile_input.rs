//! The CLI under hostile input (issue 14): files that are not regular files or are too large,
//! gzip bombs, a stdout that cannot be written, numbers out of range, paths with control
//! characters. Every case ends quickly with one error line and a non-zero exit: no panic, no
//! hang, no memory blow-up. Each child runs with its address space capped at 2 GiB and a
//! 60 s deadline, so a regression fails the test instead of the machine.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADDRESS_SPACE: u64 = 2 << 30;
const DEADLINE: Duration = Duration::from_secs(60);

/// The binary with `args` under the address-space cap and the deadline, stdout to `stdout`.
fn run_capped_to(args: &[&str], stdout: Stdio) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"));
    cmd.args(args).stdin(Stdio::null()).stdout(stdout).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::resource::{setrlimit, Resource};
            setrlimit(Resource::RLIMIT_AS, ADDRESS_SPACE, ADDRESS_SPACE).map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().expect("the binary runs");
    wait_within(child, Instant::now(), DEADLINE, &format!("{args:?}"))
}

fn run_capped(args: &[&str]) -> Output {
    run_capped_to(args, Stdio::piped())
}

fn builtin_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/default.gguf")
}

/// A FIFO nobody writes to: reading it would block forever.
fn fifo(name: &str) -> PathBuf {
    let p = scratch(name);
    let _ = std::fs::remove_file(&p);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    p
}

/// A sparse file of `len` bytes (no disk used): larger than any valid input of its kind.
fn sparse(name: &str, len: u64) -> PathBuf {
    let p = scratch(name);
    std::fs::File::create(&p).unwrap().set_len(len).unwrap();
    p
}

#[test]
fn inputs_that_are_not_regular_files_are_refused_without_reading() {
    let model = builtin_model();
    let m = s(&model);
    let text = scratch("story.txt");
    std::fs::write(&text, "Once upon a time there was a cat.").unwrap();
    let dir = scratch("a-directory");
    std::fs::create_dir_all(&dir).unwrap();

    // Devices that never end: read until memory ran out before.
    let zero = "/dev/zero";
    fails_with(
        &run_capped(&["gen", "-m", m, "--tokenizer", zero, "-n", "4"]),
        "/dev/zero: is a character device",
    );
    fails_with(&run_capped(&["eval", "--text", zero]), "a text file must be a regular file");
    fails_with(
        &run_capped(&["train", "--text", zero, "-o", s(&scratch("t.gguf"))]),
        "/dev/zero: is a character device",
    );
    fails_with(&run_capped(&["index", "bench", "--base", zero]), "/dev/zero: is a character device");
    // A FIFO with no writer: opening or reading it hung before.
    for args in [
        vec!["info", s(&fifo("model.fifo"))],
        vec!["gen", "-m", s(&fifo("model2.fifo")), "-n", "4"],
        vec!["eval", "--text", s(&fifo("text.fifo"))],
        vec!["index", "bench", "--base", s(&fifo("base.fifo"))],
    ] {
        fails_with(&run_capped(&args), "is a FIFO; a");
    }
    // What it is, not "No such device (os error 19)".
    fails_with(&run_capped(&["info", s(&dir)]), "is a directory, not a model file");
    fails_with(
        &run_capped(&["gen", "-m", "/dev/null"]),
        "/dev/null: is a character device; a model file must be a regular file",
    );
    fails_with(&run_capped(&["eval", "--text", s(&dir)]), "is a directory, not a text file");
    // Larger than any valid file of the kind: refused by its size, before a byte is read.
    let big_tok = sparse("huge-tokenizer.bin", ruvllm_cli::input::MAX_TOKENIZER_BYTES + 1);
    fails_with(&run_capped(&["gen", "-m", m, "-z", s(&big_tok)]), "more than a tokenizer file can be");
    let big_text = sparse("huge.txt", ruvllm_cli::input::MAX_TEXT_BYTES + 1);
    fails_with(&run_capped(&["eval", "--text", s(&big_text)]), "more than a text file can be");
    fails_with(
        &run_capped(&["train", "--text", s(&big_text), "-o", s(&scratch("t.gguf"))]),
        "more than a text file can be",
    );
    let big_base = sparse("huge.fvecs", ruvllm_cli::input::MAX_DATASET_BYTES + 1);
    fails_with(&run_capped(&["index", "bench", "--base", s(&big_base)]), "more than a vector dataset can be");
    // And a normal text still scores.
    let out = run_capped(&["eval", "--text", s(&text)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn io_errors_print_their_cause_once() {
    let missing = scratch("no-such-file");
    for args in [
        vec!["info", s(&missing)],
        vec!["eval", "--text", s(&missing)],
        vec!["train", "--resume", s(&missing), "-o", s(&scratch("r.gguf")), "--preset", "tiny"],
        vec!["index", "bench", "--base", s(&missing)],
        // a write into a missing directory (the trainer's own I/O error)
        vec!["corpus", "--docs", "1", "-o", s(&missing.join("corpus.txt"))],
    ] {
        let out = run_capped(&args);
        fails_with(&out, "no-such-file");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches("No such file or directory").count(), 1, "{args:?}: {err}");
    }
}

/// `dim`-float rows as .fvecs.
fn fvecs(dim: usize, data: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in data.chunks(dim) {
        out.extend((dim as i32).to_le_bytes());
        row.iter().for_each(|x| out.extend(x.to_le_bytes()));
    }
    out
}

/// A dataset of 40 vectors of 8 dims (`--holdout 10` leaves 30 base vectors).
fn small_dataset() -> PathBuf {
    let p = scratch("small.fvecs");
    let data: Vec<f32> = (0..40 * 8).map(|i| ((i * 7) % 23) as f32).collect();
    std::fs::write(&p, fvecs(8, &data)).unwrap();
    p
}

/// A clap refusal: non-zero exit, the valid range named, no panic.
fn refused_with_range(out: &Output, range: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: ") && err.contains(range), "expected {range:?} in {err}");
}

#[test]
fn index_bench_numbers_are_checked_before_any_work() {
    let base = small_dataset();
    let b = s(&base);
    let bench =
        |args: &[&str]| run_capped(&[&["index", "bench", "--base", b, "--holdout", "10"][..], args].concat());
    let start = Instant::now();
    refused_with_range(&bench(&["-k", "18446744073709551615"]), "not in 1..=256");
    refused_with_range(&bench(&["--project", "1152921504606846977"]), "not in 1..=1024");
    refused_with_range(&bench(&["--project", "1000000000"]), "not in 1..=1024");
    refused_with_range(&bench(&["--project", "300000"]), "not in 1..=1024");
    refused_with_range(&bench(&["--max-base", "1152921504606846977"]), "not in 1..=65534");
    refused_with_range(&bench(&["--ef-search", "0"]), "not in 1..=256");
    refused_with_range(&bench(&["--ef-search", "16,0"]), "not in 1..=256");
    refused_with_range(&bench(&["--ef-construction", "0"]), "not in 1..=256");
    refused_with_range(&bench(&["--pq-centroids", "1000", "--mode", "pq"]), "not in 1..=256");
    refused_with_range(&run_capped(&["index", "bench", "--base", b, "--holdout", "0"]), "not in 1..=");
    // Ranges that depend on the data: after reading it, before the ground truth.
    fails_with(&bench(&["-k", "31"]), "-k 31: use 1 to 30");
    fails_with(&bench(&["--project", "9"]), "--project 9: use 1 to 8");
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
    let out = bench(&["-k", "30", "--project", "4", "--ef-search", "8,256"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("recall@30: "));
}

#[test]
fn other_options_out_of_range_are_refused() {
    refused_with_range(&run_capped(&["gen", "--temp", "1e38"]), "from 0 to 10");
    refused_with_range(&run_capped(&["gen", "--temp", "NaN"]), "from 0 to 10");
    refused_with_range(&run_capped(&["gen", "--temp=-1"]), "from 0 to 10");
    refused_with_range(&run_capped(&["gen", "--top-p", "1.5"]), "from 0 to 1");
    fails_with(&run_capped(&["gen", "--top-k", "100000", "-n", "4"]), "use 0 to 512");
    refused_with_range(&run_capped(&["bench", "--repeat", "0"]), "not in 1..=1000");
    refused_with_range(&run_capped(&["train", "--threads", "0", "-o", "x.gguf"]), "not in 1..=1024");
    refused_with_range(&run_capped(&["train", "--eval-every", "0", "-o", "x.gguf"]), "not in 1..");
    refused_with_range(&run_capped(&["train", "--steps", "0", "-o", "x.gguf"]), "not in 1..");
    refused_with_range(&run_capped(&["train-embedder", "--rows", "0", "-o", "x.bin"]), "not in 1..=1048576");
    refused_with_range(&run_capped(&["train-chars", "--docs", "0", "-o", "x.bin"]), "not in 1..=2000000");
    refused_with_range(
        &run_capped(&["train-chars", "--docs", "18446744073709551615", "-o", "x.bin"]),
        "not in 1..=2000000",
    );
    refused_with_range(
        &run_capped(&["corpus", "--docs", "18446744073709551615", "-o", "x.txt"]),
        "not in 1..=2000000",
    );
    for args in
        [&["monitor", "--port", "/dev/null", "--baud", "0"][..], &["cluster", "--chips", "1", "--baud", "0"]]
    {
        refused_with_range(&run_capped(args), "not in 300..=10000000");
    }
    let out = run_capped(&["gen", "--temp", "0.8", "--top-k", "40", "-n", "8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `bytes` gzipped, as many members as it takes to decompress to `total` bytes (each member
/// is `bytes` once): a small file that inflates enormously.
fn gzip_bomb(bytes: &[u8], total: u64) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    let member = e.finish().unwrap();
    let n = total.div_ceil(bytes.len() as u64) as usize;
    member.repeat(n)
}

#[test]
fn gzip_bombs_cost_no_more_than_their_header_allows() {
    let mib = vec![0u8; 1 << 20];
    // 4 GiB of zeros after the gzip magic: dimension 0, refused at the first record.
    let zeros = scratch("bomb.fvecs.gz");
    std::fs::write(&zeros, gzip_bomb(&mib, 4 << 30)).unwrap();
    fails_with(&run_capped(&["index", "bench", "--base", s(&zeros)]), "absurd dimension 0");
    // A valid vector of 4 dims, then zeros: refused at the second record.
    let mut first = fvecs(4, &[1.0, 2.0, 3.0, 4.0]);
    first.extend_from_slice(&mib[..(1 << 20) - first.len()]);
    let mut data = gzip_bomb(&first, 1 << 20);
    data.extend(gzip_bomb(&mib, 4 << 30));
    let bomb = scratch("bomb2.fvecs.gz");
    std::fs::write(&bomb, data).unwrap();
    fails_with(&run_capped(&["index", "bench", "--base", s(&bomb)]), "vector 1 has dimension 0");
    // An IDX header for 100 images of 28x28, then 4 GiB: read up to what the header announces.
    let mut header = vec![0, 0, 8, 3];
    for v in [100u32, 28, 28] {
        header.extend(v.to_be_bytes());
    }
    header.extend_from_slice(&mib[..(1 << 20) - 16]);
    let mut data = gzip_bomb(&header, 1 << 20);
    data.extend(gzip_bomb(&mib, 4 << 30));
    let idx = scratch("bomb-idx3-ubyte.gz");
    std::fs::write(&idx, data).unwrap();
    fails_with(
        &run_capped(&["index", "bench", "--base", s(&idx)]),
        "more data than the 78416 bytes its header announces",
    );
    // A header announcing more than a dataset may hold: refused before reading on.
    let mut huge = vec![0, 0, 8, 3];
    for v in [u32::MAX, 1024, 1024] {
        huge.extend(v.to_be_bytes());
    }
    let p = scratch("huge-idx3-ubyte.gz");
    std::fs::write(&p, gzip_bomb(&huge, 16)).unwrap();
    fails_with(&run_capped(&["index", "bench", "--base", s(&p)]), "the header announces");
}

fn dev_full() -> Stdio {
    Stdio::from(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
}

#[test]
fn a_stdout_that_cannot_be_written_is_one_error_line() {
    let text = scratch("full.txt");
    std::fs::write(&text, "Once upon a time there was a cat.").unwrap();
    let base = small_dataset();
    let toml = scratch("full-cluster.toml");
    let knowledge = scratch("full-knowledge.rvk");
    let _ = std::fs::remove_file(&knowledge);
    for args in [
        vec!["info"],
        vec!["info", "--json"],
        vec!["eval", "--text", s(&text)],
        vec!["bench", "-n", "8", "--repeat", "1"],
        vec!["cluster", "--chips", "2", "-o", s(&toml), "--force"],
        vec!["index", "bench", "--base", s(&base), "--holdout", "10"],
        vec!["ports", "--all"],
        vec!["install"],
        vec!["completions", "bash"],
        vec!["gen", "-n", "8"],
        vec!["console", "--knowledge", s(&knowledge)],
    ] {
        let out = run_capped_to(&args, dev_full());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        let last = err.trim_end().lines().last().unwrap_or("");
        assert_eq!(
            last, "error: cannot write to stdout: No space left on device (os error 28)",
            "{args:?}: {err}"
        );
        // Progress and status lines may precede it on stderr; the error itself is one line.
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn cluster_toml_holds_any_path_as_valid_toml() {
    let dir = scratch("cluster-paths");
    std::fs::create_dir_all(&dir).unwrap();
    let name = "m\u{1}\u{7f}\"quoted\"\\back\nline\ttab.gguf";
    let model = dir.join(name);
    std::fs::copy(builtin_model(), &model).unwrap();
    let out_path = dir.join("cluster.toml");
    let out = run_capped(&["cluster", "--chips", "2", "-m", s(&model), "-o", s(&out_path), "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&out_path).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("invalid TOML: {e}\n{text}"));
    assert_eq!(v["cluster"]["name"].as_str(), Some(s(&model)));
    assert_eq!(v["model"]["path"].as_str(), Some(s(&model)));
    assert_eq!(v["chips"]["nodes"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// `train-embedder --wordnet DIR` and `train-chars --wordnet DIR` read WordNet's files through the bounded reader: a FIFO
/// with no writer (it hung), /dev/zero (it read until memory ran out) and a file larger than
/// any WordNet file are refused in one line before reading, naming the file.
#[test]
fn wordnet_files_that_are_not_regular_or_too_large_are_refused() {
    let out = scratch("embedder.bin");
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Make, &str); 3] = [
        (
            "fifo",
            &|p| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap(),
            "index.noun",
        ),
        ("zero", &|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(), "is a character device"),
        ("huge", &|p| std::fs::File::create(p).unwrap().set_len(1 << 40).unwrap(), "index.noun"),
    ];
    for (name, make, want) in cases {
        let dir = scratch(&format!("wordnet-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        make(&dir.join("index.noun"));
        // Both tables that read WordNet: the embedder and the character trigrams.
        for cmd in [&["train-embedder", "--steps", "1"][..], &["train-chars", "--docs", "1"]] {
            let r = run_capped(&[cmd, &["--wordnet", s(&dir), "-o", s(&out)]].concat());
            fails_with(&r, want);
            assert!(!out.exists(), "{name}, {}: a table was written", cmd[0]);
        }
        // `train-embedder --lexicon FILE` reads its file the same way.
        let r = run_capped(&[
            "train-embedder",
            "--steps",
            "1",
            "--lexicon",
            s(&dir.join("index.noun")),
            "-o",
            s(&out),
        ]);
        fails_with(&r, if name == "zero" { want } else { "lexicon" });
        assert!(!out.exists(), "{name}, --lexicon: a table was written");
    }
    // A lexicon line that is not `topic: phrase, ...`: one line naming the file and the line.
    let bad = scratch("bad-lexicon.txt");
    std::fs::write(&bad, "pets: vet, dog\nno colon here\n").unwrap();
    let r = run_capped(&["train-embedder", "--steps", "1", "--lexicon", s(&bad), "-o", s(&out)]);
    fails_with(&r, "lexicon line 2: no `:`");
    assert!(!out.exists(), "a bad lexicon wrote a table");
}
