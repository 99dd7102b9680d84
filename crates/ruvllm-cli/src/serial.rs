//! Real boards over a serial port: `ports` (which ports look like an ESP32) and the terminal
//! that `console --port` and `monitor` open (keys to the board, the board's bytes to the screen).
//!
//! The board runs the same library console as `ruvllm-esp32 console` on this machine, so it
//! echoes and handles backspace itself: the terminal only passes bytes. Every failure is one
//! line naming the port: missing, busy (another program holds its lock), no permission, or
//! unplugged mid-session.

use crate::outln;
use anyhow::{anyhow, bail, Result};
use std::io::{ErrorKind, IsTerminal, Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The USB product id of the ESP32-C3/C6/S3/H2's own USB port, the USB-Serial-JTAG controller
/// (vendor Espressif, 0x303a). espflash resets the chip into its bootloader differently on it
/// than through a bridge's DTR/RTS lines, and tells the two apart by this id.
pub const USB_SERIAL_JTAG: (u16, u16) = (0x303a, 0x1001);

/// The USB ids ESP32 boards show, by (vendor id, product id): the chips' own USB ports, then
/// the USB-UART bridges of boards that wire UART0 to one.
const BOARD_USB: &[(u16, u16, &str)] = &[
    (USB_SERIAL_JTAG.0, USB_SERIAL_JTAG.1, "ESP32-C3/C6/S3/H2 native USB (USB-Serial-JTAG)"),
    (0x303a, 0x0002, "ESP32-S2/S3 native USB-OTG (ROM download mode: flashing only)"),
    (0x10c4, 0xea60, "Silicon Labs CP210x USB-UART bridge"),
    (0x1a86, 0x7523, "WCH CH340 USB-UART bridge"),
    (0x1a86, 0x55d4, "WCH CH9102 USB-UART bridge"),
    (0x0403, 0x6001, "FTDI FT232R USB-UART bridge"),
    (0x0403, 0x6010, "FTDI FT2232 USB-UART bridge"),
    (0x0403, 0x6014, "FTDI FT232H USB-UART bridge"),
    (0x0403, 0x6015, "FTDI FT231X USB-UART bridge"),
];

/// What an ESP32 board's USB port with this id is, if it is one.
pub fn board_usb(vid: u16, pid: u16) -> Option<&'static str> {
    BOARD_USB.iter().find(|(v, p, _)| *v == vid && *p == pid).map(|(_, _, n)| *n)
}

/// A serial port and, for USB ones, its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub path: String,
    pub usb: Option<(u16, u16)>,
    pub product: Option<String>,
}

impl Port {
    /// What ESP32 board port it is, if any.
    pub fn board_usb(&self) -> Option<&'static str> {
        self.usb.and_then(|(v, p)| board_usb(v, p))
    }
}

/// The port `name` names in `ports`, also through a symlink such as
/// `/dev/serial/by-id/usb-Espressif_USB_JTAG_serial_debug_unit_...`.
pub fn find<'a>(ports: &'a [Port], name: &str) -> Option<&'a Port> {
    let real = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
    let wanted = real(name);
    ports.iter().find(|p| p.path == name || real(&p.path) == wanted)
}

fn read_hex(path: &Path) -> Option<u16> {
    u16::from_str_radix(std::fs::read_to_string(path).ok()?.trim(), 16).ok()
}

/// Serial ports as Linux's sysfs under `sys` describes them (`/sys` on a real system): every
/// `class/tty/NAME` with a `device`, and the USB ids of the first ancestor device that has them.
/// Virtual consoles and ptys have no `device` and are skipped.
pub fn sysfs_ports(sys: &Path) -> Vec<Port> {
    let Ok(entries) = std::fs::read_dir(sys.join("class/tty")) else { return Vec::new() };
    let mut ports: Vec<Port> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let device = std::fs::canonicalize(e.path().join("device")).ok()?;
            // Legacy 8250 UARTs without hardware behind them are listed too; keep only the
            // ones that are not the platform's placeholder serial8250 ports.
            if device.file_name().is_some_and(|n| n == "serial8250") {
                return None;
            }
            let mut usb = None;
            let mut product = None;
            let mut dir: Option<&Path> = Some(&device);
            while let Some(d) = dir {
                if let (Some(v), Some(p)) = (read_hex(&d.join("idVendor")), read_hex(&d.join("idProduct"))) {
                    usb = Some((v, p));
                    product = std::fs::read_to_string(d.join("product")).ok().map(|s| s.trim().to_string());
                    break;
                }
                if d == sys {
                    break;
                }
                dir = d.parent();
            }
            Some(Port { path: format!("/dev/{name}"), usb, product })
        })
        .collect();
    ports.sort_by(|a, b| a.path.cmp(&b.path));
    ports
}

/// This machine's serial ports.
pub fn ports() -> Vec<Port> {
    if cfg!(target_os = "linux") {
        return sysfs_ports(Path::new("/sys"));
    }
    serialport::available_ports()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let (usb, product) = match p.port_type {
                serialport::SerialPortType::UsbPort(u) => (Some((u.vid, u.pid)), u.product),
                _ => (None, None),
            };
            Port { path: p.port_name, usb, product }
        })
        .collect()
}

/// `ports`: the ports that look like ESP32 boards (all serial ports with `all`).
pub fn ports_cmd(all: bool) -> Result<()> {
    for line in listing(&ports(), all) {
        outln!("{line}");
    }
    Ok(())
}

/// `ports`' lines for `ports`: path, USB ids and what the port is.
pub fn listing(ports: &[Port], all: bool) -> Vec<String> {
    let shown: Vec<&Port> = ports.iter().filter(|p| all || p.board_usb().is_some()).collect();
    if shown.is_empty() {
        return vec![if all || ports.is_empty() {
            "no serial ports found".to_string()
        } else {
            format!(
                "no port looks like an ESP32 board ({} other serial ports: --all lists them)",
                ports.len()
            )
        }];
    }
    shown
        .into_iter()
        .map(|p| {
            let ids = p.usb.map(|(v, d)| format!("{v:04x}:{d:04x}")).unwrap_or_else(|| "-".into());
            let what = p.board_usb().or(p.product.as_deref()).unwrap_or("");
            format!("{:<16} {ids:<10} {what}", p.path).trim_end().to_string()
        })
        .collect()
}

/// A serial port opened for the terminal.
pub struct Opened {
    port: serialport::TTYPort,
    name: String,
}

impl Opened {
    /// The open, locked port and its name, for a reader of its own (`cluster monitor`).
    pub fn into_parts(self) -> (serialport::TTYPort, String) {
        (self.port, self.name)
    }
}

/// Opens `name` at `baud` (8N1, no flow control) and takes an exclusive advisory lock on it, so
/// a second terminal, flasher or monitor that locks too is refused instead of stealing bytes.
pub fn open(name: &str, baud: u32) -> Result<Opened> {
    if !Path::new(name).exists() {
        bail!("{name}: no such serial port (`ruvllm-esp32 ports` lists them)");
    }
    let port = serialport::new(name, baud).timeout(Duration::from_millis(20)).open_native().map_err(|e| {
        if e.description.contains("busy") || e.description.contains("exclusive") {
            return anyhow!("{name}: busy: another program (a monitor, a flasher, a console) has it open");
        }
        match e.kind() {
            serialport::ErrorKind::Io(ErrorKind::PermissionDenied) => {
                anyhow!("{name}: permission denied (on Linux: add yourself to the dialout group)")
            }
            serialport::ErrorKind::NoDevice => anyhow!("{name}: no such serial port ({e})"),
            _ => anyhow!("{name}: cannot open: {e}"),
        }
    })?;
    lock(&port, name)?;
    Ok(Opened { port, name: name.to_string() })
}

#[cfg(unix)]
fn lock(port: &serialport::TTYPort, name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the port owns for its whole life.
    let r = unsafe { nix::libc::flock(port.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == ErrorKind::WouldBlock {
            bail!("{name}: busy: another program (a monitor, a flasher, a console) has it open");
        }
        bail!("{name}: cannot lock: {err}");
    }
    Ok(())
}

/// The terminal's keys reach the board one at a time: raw mode while the session lasts.
struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        let Ok(saved) = tcgetattr(&stdin) else { return RawMode { saved: None } };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, t);
        }
    }
}

/// Ends an interactive session (Ctrl-], as telnet and miniterm do).
const EXIT_KEY: u8 = 0x1d;

/// After the input ends (a pipe), how long the board may stay silent before the session ends.
const DRAIN: Duration = Duration::from_millis(1500);

/// Piped input goes one line at a time, each after the board's prompt (or this much silence),
/// as a person types after each reply: the console keeps lines that arrive while it is busy,
/// but only `TYPEAHEAD` bytes of them, which a long script sent at once would overflow.
const PACE: Duration = Duration::from_secs(3);

/// The console's prompt at the start of a line, which ends every reply (a bare "> " also ends
/// `<text> ` in the help text, where a read may happen to stop).
const PROMPT: &[u8] = b"\n> ";

/// Paces piped input to a console: the next line goes after the console's prompt (or
/// [`PACE`] of silence). `console --port` and the QEMU `board` share it.
pub struct Pacer {
    /// Input not yet sent.
    pending: std::collections::VecDeque<u8>,
    /// The console's output ends with its prompt.
    at_prompt: bool,
    tail: [u8; 3],
    last_byte: Instant,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer { pending: Default::default(), at_prompt: false, tail: [0; 3], last_byte: Instant::now() }
    }
}

impl Pacer {
    /// Input to send, in order.
    pub fn input(&mut self, bytes: &[u8]) {
        self.pending.extend(bytes);
    }

    /// What the console printed.
    pub fn output(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.last_byte = Instant::now();
        for &b in bytes {
            self.tail = [self.tail[1], self.tail[2], b];
        }
        self.at_prompt = self.tail == PROMPT;
    }

    /// The next line to send, when the console is ready for it.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        if self.pending.is_empty() || !(self.at_prompt || self.last_byte.elapsed() >= PACE) {
            return None;
        }
        let end = self.pending.iter().position(|&b| b == b'\n').map_or(self.pending.len(), |i| i + 1);
        self.at_prompt = false;
        self.last_byte = Instant::now();
        Some(self.pending.drain(..end).collect())
    }

    /// Everything was sent and the console has answered the last line (its prompt is back).
    pub fn answered(&self) -> bool {
        self.pending.is_empty() && self.at_prompt
    }

    /// Everything was sent and the console has been silent for `d`.
    pub fn sent_and_silent_for(&self, d: Duration) -> bool {
        self.pending.is_empty() && self.last_byte.elapsed() >= d
    }
}

/// stdin as it arrives, read by a thread of its own; `None` once it ends (or fails).
pub fn stdin_chunks() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    if tx.send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Passes stdin to the board and the board's bytes to stdout until Ctrl-] (a terminal), the end
/// of the input and then `DRAIN` of silence (a pipe), or the port failing (an error naming it).
pub fn terminal(mut opened: Opened) -> Result<()> {
    let name = opened.name.clone();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("connected to {name}; Ctrl-] quits\r");
    }
    let raw = RawMode::enter();
    let rx = stdin_chunks();
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 1024];
    let mut input_done = false;
    let mut pacer = Pacer::default();
    let result = 'session: loop {
        while !input_done {
            match rx.try_recv() {
                Ok(Some(bytes)) if interactive => {
                    if bytes.contains(&EXIT_KEY) {
                        break 'session Ok(());
                    }
                    if let Err(e) = opened.port.write_all(&bytes).and_then(|_| opened.port.flush()) {
                        break 'session Err(anyhow!("{name}: disconnected ({e})"));
                    }
                }
                Ok(Some(bytes)) => pacer.input(&bytes),
                Ok(None) | Err(mpsc::TryRecvError::Disconnected) => input_done = true,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if let Some(line) = pacer.next_line() {
            if let Err(e) = opened.port.write_all(&line).and_then(|_| opened.port.flush()) {
                break 'session Err(anyhow!("{name}: disconnected ({e})"));
            }
        }
        match opened.port.read(&mut buf) {
            Ok(0) => break Err(anyhow!("{name}: disconnected (the port closed)")),
            Ok(n) => {
                pacer.output(&buf[..n]);
                if let Err(e) = stdout.write_all(&buf[..n]).and_then(|_| stdout.flush()) {
                    break Err(crate::out::write_error(e));
                }
            }
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(anyhow!("{name}: disconnected ({e})")),
        }
        if input_done && pacer.sent_and_silent_for(DRAIN) {
            break Ok(());
        }
    };
    drop(raw);
    result
}
