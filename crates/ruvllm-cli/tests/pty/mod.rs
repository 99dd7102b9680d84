//! A pseudo-terminal pair for the terminal and serial tests.

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::fs::OpenOptionsExt;

/// The master, the slave's path and the slave itself (raw mode when `raw`). Both descriptors are
/// close-on-exec from the start: the CLI processes that other tests spawn meanwhile must not
/// inherit them, or a closed master would not hang up.
pub fn open(raw: bool) -> (File, String, File) {
    let m = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
    grantpt(&m).unwrap();
    unlockpt(&m).unwrap();
    let path = ptsname_r(&m).unwrap();
    // SAFETY: the descriptor comes from posix_openpt and is owned by nothing else.
    let master = unsafe { File::from_raw_fd(m.into_raw_fd()) };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(&path)
        .unwrap();
    if raw {
        let mut t = tcgetattr(&slave).unwrap();
        cfmakeraw(&mut t);
        tcsetattr(&slave, SetArg::TCSANOW, &t).unwrap();
    }
    (master, path, slave)
}
