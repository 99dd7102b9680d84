//! A `ruvllm-esp32 console --knowledge FILE` driven a line at a time through pipes, so a test
//! can act between commands (read a reply, kill the process), and the knowledge a file holds,
//! read as the console would restore it.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use ruvllm_cli::snapshot::open_knowledge_file;
use ruvllm_esp32::console::{Knowledge, Restored};

/// `ruvllm-esp32 console --knowledge FILE`, its stdin, stdout and stderr piped.
pub fn spawn_console(file: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .args(["console", "--knowledge"])
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs")
}

pub struct Live {
    pub child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Everything the console printed so far.
    pub shown: String,
}

impl Live {
    /// Starts the console on `file` and waits for its first prompt (`None`: it exited first).
    pub fn start(file: &Path) -> Option<Live> {
        let mut child = spawn_console(file);
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let mut live = Live { child, stdin, stdout, shown: String::new() };
        live.read_until(0, "\n> ").then_some(live)
    }

    /// Reads output until `marker` appears after byte `from` of [`Self::shown`]; false at the
    /// end of the output.
    fn read_until(&mut self, from: usize, marker: &str) -> bool {
        let mut buf = [0u8; 4096];
        while !self.shown[from..].contains(marker) {
            match self.stdout.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.shown.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        true
    }

    /// Sends `line` without waiting for anything.
    pub fn send(&mut self, line: &str) {
        let _ = self.stdin.write_all(format!("{line}\n").as_bytes());
        let _ = self.stdin.flush();
    }

    /// Sends `line` and returns its reply (the lines up to the next prompt), `None` if the
    /// console ended first.
    pub fn command(&mut self, line: &str) -> Option<String> {
        let from = self.shown.len();
        self.send(line);
        let echo = format!("{line}\r\n");
        if !self.read_until(from, &echo) {
            return None;
        }
        let start = from + self.shown[from..].find(&echo).unwrap() + echo.len();
        if !self.read_until(start, "\r\n> ") {
            return None;
        }
        let end = start + self.shown[start..].find("\r\n> ").unwrap();
        Some(self.shown[start..end].to_string())
    }

    /// Ends the console with `quit` and returns its stderr.
    pub fn quit(mut self) -> String {
        self.send("quit");
        drop(self.stdin);
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// The knowledge `file` restores to, as the console loads it: the restore report and every
/// entry's (id, text).
pub fn restored(file: &Path) -> (Restored, Vec<(u32, String)>) {
    let (mut store, existed) = open_knowledge_file(file).unwrap_or_else(|e| panic!("{e}"));
    let mut k = Box::new(Knowledge::new());
    if !existed {
        return (Restored::default(), Vec::new());
    }
    let r = k.restore(&mut store).unwrap();
    let entries = (1..=k.capacity() as u32).filter_map(|id| Some((id, k.text(id)?.to_string()))).collect();
    (r, entries)
}
