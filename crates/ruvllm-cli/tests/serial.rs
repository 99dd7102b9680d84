//! The serial path against a pseudo-terminal pair standing in for a board: the library console
//! (the one the firmware runs, with the built-in model) serves the pty's master side, and
//! `ruvllm-esp32 monitor --port <pty>` talks to it like to a USB serial port. Also: a missing
//! port, a busy one, a board unplugged mid-session, and `ports` reading a sysfs tree.

mod pty;

use ruvllm_esp32::console::{Board, Console, IntegerEngine, Knowledge};
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::model::Model;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
}

/// The board side of the pty as an embedded-io byte stream.
struct Master(File);

impl embedded_io::ErrorType for Master {
    type Error = std::io::Error;
}

impl embedded_io::Read for Master {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            // The other side closed (EIO on Linux): end of input for the console.
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => Ok(0),
            r => r,
        }
    }
}

impl embedded_io::ReadReady for Master {
    fn read_ready(&mut self) -> std::io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        Ok(poll(&mut fds, PollTimeout::ZERO).map_err(std::io::Error::from)? > 0)
    }
}

impl embedded_io::Write for Master {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A pty pair: the master, the slave's path, and the slave kept open by the test (so the
/// board side does not see a hang-up before the CLI opens the port by name, as it would
/// `/dev/ttyUSB0`). A USB serial port does not echo: the slave is in raw mode from the start,
/// before the board's first bytes arrive (the CLI sets raw mode too, but only once it opens it).
fn pty() -> (File, String, File) {
    pty::open(true)
}

/// Runs the library console with the built-in model on `master` until its input ends.
fn board(master: File) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf")).unwrap();
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        let model = <Model<'_>>::from_gguf(&bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()]).unwrap();
        let seq = model.config.seq_len;
        let mut arena = vec![0i32; IntState::arena_len(&model, seq)];
        let engine = IntegerEngine::new(&model, &mut arena, seq).unwrap();
        let mut k = Box::new(Knowledge::new());
        let mut c = Console::with_knowledge(Master(master), engine, Board::PLAIN, &mut k);
        let _ = c.run();
    })
}

fn monitor(port: &str, input: &[u8]) -> Output {
    terminal("monitor", port, input)
}

/// `ruvllm-esp32 <cmd> --port <port>` with `input` piped in.
fn terminal(cmd: &str, port: &str, input: &[u8]) -> Output {
    let mut child = bin()
        .args([cmd, "--port", port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn a_board_on_a_pty_answers_through_monitor() {
    let (master, port, _slave) = pty();
    let b = board(master);
    let out = monitor(
        &port,
        b"help\nadd Cats purr when they are happy.\nask what do cats do\nset steps 12\ngen Once upon a timx\x7fe\nfrobnicate\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // The board echoes (a serial console) and answers every command.
    assert!(text.contains("> help\r\n"), "{text}");
    assert!(text.contains("gen <text>"), "{text}");
    assert!(text.contains("Added knowledge #1"), "{text}");
    assert!(text.contains("Found: Cats purr when they are happy. (#1, similarity"), "{text}");
    // Backspace (DEL) erased the x: the board echoed the erase and ran the corrected line.
    assert!(text.contains("> gen Once upon a timx\x08 \x08e\r\nOnce upon a time"), "{text}");
    assert!(text.contains("error: unknown command \"frobnicate\""), "{text}");
    drop(b);
}

#[test]
fn console_port_is_the_same_terminal() {
    let (master, port, _slave) = pty();
    let _b = board(master);
    let out = terminal("console", &port, b"add Dogs can smell things very well.\nstats\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("> add Dogs can smell things very well.\r\nAdded knowledge #1\r\n"), "{text}");
    // An in-process stand-in for the board: the host's capacity.
    let cap = ruvllm_esp32::console::KNOWLEDGE_CAP;
    assert!(text.contains(&format!("knowledge: 1/{cap} entries")), "{text}");
}

#[test]
fn a_missing_port_is_one_line() {
    let out = bin().args(["monitor", "--port", "/dev/ttyUSB-no-such"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/dev/ttyUSB-no-such: no such serial port"), "{err}");
}

#[test]
fn a_busy_port_is_one_line() {
    let (_master, port, _slave) = pty();
    let held = ruvllm_cli::serial::open(&port, 115_200).unwrap();
    let out = bin().args(["monitor", "--port", &port]).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{port}: busy")), "{err}");
    drop(held);
}

#[test]
fn unplugging_the_board_mid_session_is_one_line() {
    let (mut master, port, _slave) = pty();
    let child = bin()
        .args(["monitor", "--port", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The board says something, then goes away while the session is open.
    master.write_all(b"ruvllm-esp32 console\r\n> ").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(master);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ruvllm-esp32 console"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{port}: disconnected")), "{err}");
}

/// `ports` reads Linux's sysfs: a fake tree with a CP210x board, a board whose only USB port is
/// the chip's own USB-Serial-JTAG (many ESP32-C3/C6 boards), an unknown USB serial adapter and a
/// built-in UART. The two boards are listed and labelled (native USB or bridge); the other ports
/// only with `--all`.
#[test]
fn ports_are_found_and_recognised_in_sysfs() {
    use ruvllm_cli::serial::{board_usb, listing, sysfs_ports, USB_SERIAL_JTAG};
    let root = std::env::temp_dir().join(format!("ruvllm-sysfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let usb = |dev: &str, vid: &str, pid: &str, product: &str| {
        let d = root.join("devices/pci0000:00/usb1").join(dev);
        let iface = d.join(format!("{dev}:1.0"));
        std::fs::create_dir_all(&iface).unwrap();
        std::fs::write(d.join("idVendor"), format!("{vid}\n")).unwrap();
        std::fs::write(d.join("idProduct"), format!("{pid}\n")).unwrap();
        std::fs::write(d.join("product"), format!("{product}\n")).unwrap();
        iface
    };
    let tty = |name: &str, device: &Path| {
        let t = root.join("class/tty").join(name);
        std::fs::create_dir_all(&t).unwrap();
        std::os::unix::fs::symlink(device, t.join("device")).unwrap();
    };
    tty("ttyUSB0", &usb("1-1", "10c4", "ea60", "CP2102 USB to UART Bridge Controller"));
    tty("ttyACM0", &usb("1-2", "2341", "0043", "Some Arduino"));
    tty("ttyACM1", &usb("1-3", "303a", "1001", "USB JTAG/serial debug unit"));
    let uart = root.join("devices/platform/soc/uart0");
    std::fs::create_dir_all(&uart).unwrap();
    tty("ttyAMA0", &uart);
    std::fs::create_dir_all(root.join("class/tty/tty1")).unwrap(); // a virtual console: no device

    let ports = sysfs_ports(&root);
    let names: Vec<&str> = ports.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(names, ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyAMA0", "/dev/ttyUSB0"]);
    assert_eq!(ports[3].usb, Some((0x10c4, 0xea60)));
    assert_eq!(ports[3].board_usb(), Some("Silicon Labs CP210x USB-UART bridge"));
    assert_eq!(ports[1].usb, Some(USB_SERIAL_JTAG));
    assert_eq!(ports[0].usb, Some((0x2341, 0x0043)));
    assert_eq!(ports[0].board_usb(), None);
    assert_eq!(ports[2].usb, None);
    assert_eq!(
        listing(&ports, false),
        [
            "/dev/ttyACM1     303a:1001  ESP32-C3/C6/S3/H2 native USB (USB-Serial-JTAG)",
            "/dev/ttyUSB0     10c4:ea60  Silicon Labs CP210x USB-UART bridge",
        ]
    );
    let all = listing(&ports, true);
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], "/dev/ttyACM0     2341:0043  Some Arduino");
    assert_eq!(all[2], "/dev/ttyAMA0     -");
    // No ESP32 board: one line saying so.
    assert_eq!(
        listing(&ports[..1], false),
        ["no port looks like an ESP32 board (1 other serial ports: --all lists them)"]
    );
    assert_eq!(listing(&[], true), ["no serial ports found"]);
    // The S2/S3's USB-OTG shows this id only in the ROM's download mode: no console there.
    assert_eq!(
        board_usb(0x303a, 0x0002),
        Some("ESP32-S2/S3 native USB-OTG (ROM download mode: flashing only)")
    );
    assert_eq!(USB_SERIAL_JTAG, (0x303a, 0x1001));
    let _ = std::fs::remove_dir_all(&root);
}

/// `flash --port` also takes a symlink to the port (udev's `/dev/serial/by-id/...` names): its
/// USB ids are found through it, so espflash gets the USB-Serial-JTAG id and uses that port's
/// reset into the bootloader instead of a bridge's DTR/RTS sequence.
#[test]
fn a_port_is_found_through_a_symlink_to_it() {
    use ruvllm_cli::serial::{find, Port};
    let dir = std::env::temp_dir().join(format!("ruvllm-by-id-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("by-id")).unwrap();
    let tty = dir.join("ttyACM0");
    std::fs::write(&tty, b"").unwrap();
    let link = dir.join("by-id/usb-Espressif_USB_JTAG_serial_debug_unit_F4:12:FA:00:00:00-if00");
    std::os::unix::fs::symlink("../ttyACM0", &link).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let ports = [
        Port { path: path(&dir.join("ttyUSB0")), usb: Some((0x10c4, 0xea60)), product: None },
        Port { path: path(&tty), usb: Some((0x303a, 0x1001)), product: None },
    ];
    assert_eq!(find(&ports, &path(&link)).map(|p| p.usb), Some(Some((0x303a, 0x1001))));
    assert_eq!(find(&ports, &path(&tty)).map(|p| p.usb), Some(Some((0x303a, 0x1001))));
    assert_eq!(find(&ports, &path(&dir.join("ttyUSB0"))).map(|p| p.usb), Some(Some((0x10c4, 0xea60))));
    assert_eq!(find(&ports, &path(&dir.join("by-id/nothing"))), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stdout_that_cannot_be_written_ends_the_terminal_with_an_error() {
    let (master, port, _slave) = pty();
    let b = board(master);
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut child = bin()
        .args(["monitor", "--port", &port])
        .stdin(Stdio::piped())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The terminal may already have failed on the board's first output and closed its stdin.
    let _ = child.stdin.take().unwrap().write_all(b"help\n");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("error: cannot write to stdout: No space left on device"), "{err}");
    drop(_slave);
    let _ = b.join();
}
