//! Standard output that reports a failed write instead of panicking. `println!` panics when
//! stdout cannot be written (`> /dev/full`, a closed pipe with SIGPIPE ignored); every command
//! prints through [`outln!`](crate::outln) instead, and clippy's `print_stdout` lint keeps
//! `println!` out of the crate.

use std::io::Write;

/// The error every failed stdout write becomes: one line, with the cause.
pub fn write_error(e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot write to stdout: {e}")
}

/// Writes `args` and a newline to stdout.
pub fn line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{args}").map_err(write_error)
}

/// Writes `bytes` to stdout and flushes them.
pub fn bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(write_error)
}

/// `println!` for commands: on a failed write it returns the error from the enclosing function
/// (which returns `anyhow::Result`).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))?
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))?
    };
}
