//! The examples of README.md and docs/*.md, checked so that a stale one fails the suite:
//! - every ```console block is a transcript: each `$ ruvllm-esp32 ...` line runs (the binary of
//!   this build, in a scratch directory that sees the checkout's `models/` and `testdata/`) and
//!   its output (stdout and stderr, merged as a terminal shows them) must match the lines under
//!   it. Measured figures are masked with snapbox's wildcards: `[..]` inside a line, `...` for
//!   whole lines. A first line `? failed` expects a non-zero exit. For `console` (no `--port`),
//!   the lines typed at its prompt (`> add ...`) are its input, as in a piped session, where the
//!   console echoes them. So a console block must run on a fresh clone: examples that need
//!   ../shared go in ```bash blocks.
//! - every `ruvllm-esp32 ...` or `cargo run ... -- ...` line of a ```bash block must parse: the
//!   CLI accepts it with `--help` appended (a renamed option or subcommand fails), without
//!   running it.
//! - every relative link names a file that exists and, with `#anchor`, one of its headings.
//! - every `cargo test` command quoted names a crate, test file and filter that exist.

use snapbox::cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and docs/*.md: (name, text).
fn documents() -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|n| (std::fs::read_to_string(root().join(&n)).unwrap(), n))
        .map(|(t, n)| (n, t))
        .collect()
}

/// The fenced blocks of `text` whose info string is `lang`: (line of the opening fence, body).
fn blocks(name: &str, text: &str, lang: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, bool, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        match open.as_mut() {
            None if line.starts_with("```") => open = Some((i + 1, line[3..].trim() == lang, Vec::new())),
            None => {}
            Some((at, wanted, body)) => {
                if line.starts_with("```") {
                    if *wanted {
                        out.push((*at, std::mem::take(body)));
                    }
                    open = None;
                } else {
                    body.push(line.to_string());
                }
            }
        }
    }
    assert!(open.is_none(), "{name}: a code block is not closed");
    out
}

/// One `$ command` of a console block and the output written under it.
struct Step {
    at: String,
    args: Vec<String>,
    fails: bool,
    expected: String,
}

fn steps(name: &str, at: usize, body: &[String]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (i, line) in body.iter().enumerate() {
        let line_no = format!("{name}:{}", at + 1 + i);
        if let Some(cmd) = line.strip_prefix("$ ") {
            let words = shlex::split(cmd).unwrap_or_else(|| panic!("{line_no}: unbalanced quotes"));
            assert_eq!(
                words.first().map(String::as_str),
                Some("ruvllm-esp32"),
                "{line_no}: console blocks run ruvllm-esp32 commands only"
            );
            steps.push(Step {
                at: line_no,
                args: words[1..].to_vec(),
                fails: false,
                expected: String::new(),
            });
        } else {
            let step = steps.last_mut().unwrap_or_else(|| panic!("{line_no}: output before any `$ ` line"));
            if step.expected.is_empty() && line == "? failed" {
                step.fails = true;
            } else {
                step.expected.push_str(line);
                step.expected.push('\n');
            }
        }
    }
    steps
}

/// A scratch directory that sees the checkout's models/ and testdata/ as a clone's root does.
fn workdir(n: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ruvllm-readme-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for d in ["models", "testdata"] {
        std::os::unix::fs::symlink(root().join(d), dir.join(d)).unwrap();
    }
    dir
}

#[test]
fn console_blocks_print_what_the_docs_show() {
    let mut ran = 0;
    for (name, text) in documents() {
        for (at, body) in blocks(&name, &text, "console") {
            let dir = workdir(ran);
            for step in steps(&name, at, &body) {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
                    .args(&step.args)
                    .current_dir(&dir)
                    .stderr_to_stdout()
                    .timeout(std::time::Duration::from_secs(120));
                if step.args.first().is_some_and(|c| c == "console")
                    && !step.args.iter().any(|a| a == "--port")
                {
                    let typed: String = step
                        .expected
                        .lines()
                        .filter_map(|l| l.strip_prefix("> "))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    cmd = cmd.stdin(typed);
                }
                eprintln!("{}: $ ruvllm-esp32 {}", step.at, step.args.join(" "));
                let run = cmd.assert();
                let run = if step.fails { run.failure() } else { run.success() };
                run.stdout_eq(step.expected.as_str());
            }
            std::fs::remove_dir_all(&dir).unwrap();
            ran += 1;
        }
    }
    assert!(ran > 0, "README.md has no console block");
}

/// The words of a shell line that the CLI receives: after `ruvllm-esp32` or `cargo run ... --`,
/// up to a pipe, redirection or command separator. `None` when the line runs no CLI command.
fn cli_args(line: &str) -> Option<Vec<String>> {
    let words = shlex::split(line)?;
    let start = if let Some(i) = words.iter().position(|w| w == "ruvllm-esp32") {
        i + 1
    } else if words.first().is_some_and(|w| w == "cargo") && words.get(1).is_some_and(|w| w == "run") {
        words.iter().position(|w| w == "--")? + 1
    } else {
        return None;
    };
    let end = words[start..]
        .iter()
        .position(|w| {
            ["|", ">", ">>", "<", ";", "&&", "||", "2>&1"].contains(&w.as_str()) || w.starts_with('>')
        })
        .map_or(words.len(), |e| start + e);
    Some(words[start..end].to_vec())
}

#[test]
fn bash_block_commands_parse() {
    let mut checked = 0;
    for (name, text) in documents() {
        for (at, body) in blocks(&name, &text, "bash") {
            // Continuation lines joined, so a line number points at the command's first line.
            let mut pending = String::new();
            let mut first = 0;
            for (i, line) in body.iter().enumerate() {
                if pending.is_empty() {
                    first = at + 1 + i;
                }
                if let Some(head) = line.strip_suffix('\\') {
                    pending.push_str(head);
                    continue;
                }
                pending.push_str(line);
                let full = std::mem::take(&mut pending);
                let Some(args) = cli_args(&full) else { continue };
                if args.is_empty() {
                    continue; // the bare tool name in a comment
                }
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
                    .args(&args)
                    .arg("--help")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{name}:{first}: `{}` does not parse: {}",
                    full.trim(),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "README.md: no ruvllm-esp32 command in a bash block");
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn links_between_the_docs_resolve() {
    let mut into_docs = 0;
    for (name, text) in documents() {
        let base = root().join(&name).parent().unwrap().to_path_buf();
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let Some(end) = target.find(')') else { continue };
            let target = &target[..end];
            if target.contains("://") || target.starts_with('#') || target.contains(' ') {
                continue;
            }
            let (file, frag) = target.split_once('#').map_or((target, None), |(f, a)| (f, Some(a)));
            let path = base.join(file);
            assert!(path.exists(), "{name} links to {file}, which does not exist");
            if let Some(frag) = frag {
                assert!(
                    anchors(&path).iter().any(|a| a == frag),
                    "{name} links to {target}: no such heading in {file}"
                );
            }
            into_docs += usize::from(name == "README.md" && file.starts_with("docs/"));
        }
    }
    assert!(into_docs > 0, "README.md links to nothing in docs/");
}

/// Every `cargo test` command quoted in README.md and docs/*.md (inline or on a line of a code
/// block) names a crate, a `--test` file and a filter that exist, so a renamed or moved test
/// leaves no figure pointing at a command that runs nothing.
#[test]
fn cargo_test_commands_in_the_docs_name_real_tests() {
    let mut checked = 0;
    for (name, text) in documents() {
        let flat = text.replace('\n', " ");
        let inline = flat.split('`').skip(1).step_by(2).filter(|s| s.starts_with("cargo test"));
        let lines = text.lines().filter(|l| l.starts_with("cargo test"));
        for cmd in inline.chain(lines) {
            let words =
                shlex::split(cmd).unwrap_or_else(|| cmd.split_whitespace().map(str::to_string).collect());
            let (mut krate, mut test, mut filters) = (None, None, Vec::new());
            let mut it = words[2..].iter().take_while(|w| *w != "--" && *w != "#");
            while let Some(w) = it.next() {
                match w.as_str() {
                    "-p" | "--package" => krate = it.next(),
                    "--test" => test = it.next(),
                    "--features" | "-F" | "--bench" | "--target" => {
                        it.next();
                    }
                    w if w.starts_with('-') => {}
                    _ => filters.push(w),
                }
            }
            let Some(krate) = krate else { continue };
            let dir = root().join("crates").join(krate);
            assert!(dir.is_dir(), "{name}: `{cmd}`: no crate {krate}");
            if let Some(t) = test {
                let tests = dir.join("tests");
                assert!(
                    tests.join(format!("{t}.rs")).is_file() || tests.join(t).join("main.rs").is_file(),
                    "{name}: `{cmd}`: no test file {t} in {krate}"
                );
            }
            let names = item_names(&dir);
            for f in filters {
                let last = f.rsplit("::").next().unwrap();
                assert!(
                    names.iter().any(|n| n.contains(last)),
                    "{name}: `{cmd}`: no test matches {f:?} in {krate}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no cargo test command found in the docs");
}

/// The names a test filter can match in a crate: its .rs files, modules and functions.
fn item_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                names.push(p.file_stem().unwrap().to_string_lossy().into_owned());
                let src = std::fs::read_to_string(&p).unwrap();
                let words: Vec<&str> = src
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                    .collect();
                names.extend(
                    words.windows(2).filter(|w| w[0] == "fn" || w[0] == "mod").map(|w| w[1].to_string()),
                );
            }
        }
    }
    names
}
