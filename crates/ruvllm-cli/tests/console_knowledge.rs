//! `ruvllm-esp32 console --knowledge FILE`: the knowledge survives a restart, a forget stays
//! forgotten, and a damaged file is refused in one line and left as it was.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn run_console(file: &PathBuf, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .args(["console", "--knowledge"])
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // A refused file ends the program before it reads: the pipe may be closed already.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ruvllm-console-knowledge-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join(name);
    let _ = std::fs::remove_file(&f);
    f
}

fn session(file: &PathBuf, script: &[u8]) -> String {
    let out = run_console(file, script);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The reply to the command `line` (up to the next prompt).
fn reply(shown: &str, line: &str) -> String {
    let after = shown.split(&format!("> {line}\r\n")).nth(1).unwrap_or_else(|| panic!("{line}: {shown}"));
    after.split("\r\n> ").next().unwrap().to_string()
}

const CAT: &str = "The cat sleeps on the warm kitchen floor.";
const DOG: &str = "Tom the dog digs holes in the garden.";

#[test]
fn knowledge_survives_restarts_and_forget_stays_forgotten() {
    let file = scratch("facts.rvk");
    let shown = session(&file, format!("add {CAT}\nadd {DOG}\nstats\nquit\n").as_bytes());
    assert!(shown.contains("does not exist yet; the first add creates it"), "{shown}");
    assert_eq!(reply(&shown, &format!("add {CAT}")), "Added knowledge #1");
    assert_eq!(reply(&shown, &format!("add {DOG}")), "Added knowledge #2");
    assert!(reply(&shown, "stats").contains("knowledge saving: on"), "{shown}");
    assert!(file.is_file());

    // Again with the same file: both are found, then one is forgotten.
    let shown = session(
        &file,
        b"set steps 1\nask where does the cat sleep\nask what does the dog dig\nforget 1\nquit\n",
    );
    assert!(shown.contains("knowledge: restored 2 entries, 2 detector references from "), "{shown}");
    assert!(
        reply(&shown, "ask where does the cat sleep").starts_with(&format!("Found: {CAT} (#1, similarity ")),
        "{shown}"
    );
    assert!(
        reply(&shown, "ask what does the dog dig").starts_with(&format!("Found: {DOG} (#2, similarity ")),
        "{shown}"
    );
    assert_eq!(reply(&shown, "forget 1"), "Forgot knowledge #1");

    // And again: the forgotten one stays forgotten, the other is still there.
    let shown = session(&file, b"set steps 1\nask where does the cat sleep\nquit\n");
    assert!(shown.contains("knowledge: restored 1 entry, 2 detector references from "), "{shown}");
    let ask = reply(&shown, "ask where does the cat sleep");
    assert!(!ask.contains(CAT), "{shown}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_damaged_knowledge_file_is_refused_in_one_line_and_left_unchanged() {
    let file = scratch("damaged.rvk");
    session(&file, format!("add {CAT}\nquit\n").as_bytes());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x5A;
    std::fs::write(&file, &bytes).unwrap();
    let truncated = scratch("truncated.rvk");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for (f, why) in [(&file, "CRC-32 mismatch"), (&truncated, "truncated")] {
        let before = std::fs::read(f).unwrap();
        let out = run_console(f, format!("add {DOG}\nquit\n").as_bytes());
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("error: {}: not a valid snapshot: ", f.display())), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("Added"));
        assert_eq!(std::fs::read(f).unwrap(), before, "the file is left as it was");
        let _ = std::fs::remove_file(f);
    }
}
