//! `cluster monitor` (every board's serial output in one stream, each line prefixed by its
//! node id) and `cluster flash` (every board of cluster.toml flashed as `flash` does).

use crate::firmware::{self, FlashArgs};
use crate::ModelArgs;
use anyhow::{anyhow, bail, Result};
use ruvllm_cli::cluster::config::ClusterFile;
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A line longer than this is shown in pieces (a board that never ends its line).
const MAX_LINE: usize = 4096;

/// A partial line is shown once its board has been silent this long (a prompt, say).
const SILENCE: Duration = Duration::from_millis(300);

enum Event {
    Line(u8, Vec<u8>),
    Gone(u8, String),
}

/// `cluster monitor`: opens every node's serial port (locked, as `monitor` does) and prints
/// their lines as they come, `node ID: ` before each; a board that goes away is reported on
/// stderr and the others go on. Ends (with an error) when every board is gone, or on Ctrl-C.
pub fn monitor(config: &Path, baud: u32) -> Result<()> {
    let file = super::tools::read_config(config)?;
    let ports = file.serial_ports(true)?;
    // Every port opened before anything is shown: a busy or missing one is one error.
    let mut opened = Vec::with_capacity(ports.len());
    for (id, name) in &ports {
        let o = crate::serial::open(name, baud).map_err(|e| anyhow!("node {id}: {e:#}"))?;
        opened.push((*id, o.into_parts()));
    }
    let (tx, rx) = mpsc::channel();
    for (id, (mut port, name)) in opened {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let (mut line, mut buf, mut last) = (Vec::new(), [0u8; 512], Instant::now());
            let why = loop {
                match port.read(&mut buf) {
                    Ok(0) => break format!("{name}: disconnected (the port closed)"),
                    Ok(n) => {
                        last = Instant::now();
                        for &b in &buf[..n] {
                            if b == b'\n' || line.len() >= MAX_LINE {
                                let _ = tx.send(Event::Line(id, std::mem::take(&mut line)));
                            }
                            if b != b'\n' && b != b'\r' {
                                line.push(b);
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::Interrupted => {
                        if !line.is_empty() && last.elapsed() >= SILENCE {
                            let _ = tx.send(Event::Line(id, std::mem::take(&mut line)));
                        }
                    }
                    Err(e) => break format!("{name}: disconnected ({e})"),
                }
            };
            if !line.is_empty() {
                let _ = tx.send(Event::Line(id, line));
            }
            let _ = tx.send(Event::Gone(id, why));
        });
    }
    drop(tx);
    let (mut left, mut out) = (ports.len(), std::io::stdout().lock());
    while let Ok(ev) = rx.recv() {
        match ev {
            Event::Line(id, text) => {
                let mut shown = format!("node {id}: ").into_bytes();
                shown.extend_from_slice(&text);
                shown.push(b'\n');
                out.write_all(&shown).and_then(|()| out.flush()).map_err(ruvllm_cli::out::write_error)?;
            }
            Event::Gone(id, why) => {
                left -= 1;
                if left == 0 {
                    bail!("node {id}: {why}; every board is gone");
                }
                eprintln!("node {id}: {why}");
            }
        }
    }
    Ok(())
}

/// What `cluster flash` asks for.
pub struct ClusterFlash {
    pub config: PathBuf,
    pub chip: String,
    pub elf: Option<PathBuf>,
    pub dry_run: bool,
    /// With --dry-run: the directory the flash images go to (`node-ID.bin`).
    pub output: Option<PathBuf>,
    pub baud: u32,
}

/// `cluster flash`: every board of cluster.toml flashed in turn with the firmware and its
/// node's model (`[model]`, or the node's own `model`), as `flash` does; with --dry-run one
/// flash image per node instead. Every port is checked before anything is built or written.
pub fn flash(a: &ClusterFlash) -> Result<()> {
    let file: ClusterFile = super::tools::read_config(&a.config)?;
    let ports = file.serial_ports(!a.dry_run)?;
    let dir = match (&a.output, a.dry_run) {
        (Some(d), true) => Some(d.clone()),
        (None, true) => bail!("--dry-run writes one flash image per node: pass -o DIR"),
        (Some(_), false) => {
            bail!("-o is for --dry-run (the flash images); without it the boards are flashed")
        }
        (None, false) => None,
    };
    if let Some(d) = &dir {
        std::fs::create_dir_all(d).map_err(|e| anyhow!("{}: cannot create: {e}", d.display()))?;
    }
    for ((id, port), e) in ports.iter().zip(&file.chips.nodes) {
        let path = e.model.clone().or_else(|| file.model.path.clone());
        let model = ModelArgs {
            model: path.map(PathBuf::from),
            tokenizer: file.model.tokenizer.as_ref().map(PathBuf::from),
        };
        eprintln!("node {id}: {}", if a.dry_run { "flash image" } else { port.as_str() });
        let args = FlashArgs {
            port: Some(port.clone()),
            chip: a.chip.clone(),
            model,
            elf: a.elf.clone(),
            dry_run: a.dry_run,
            output: dir.as_ref().map(|d| d.join(format!("node-{id}.bin"))),
            baud: a.baud,
        };
        firmware::flash(&args).map_err(|e| anyhow!("node {id}: {e:#}"))?;
    }
    Ok(())
}
