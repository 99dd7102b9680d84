//! Input that arrives while the console is busy (a generation, a bench), kept as a terminal
//! keeps type-ahead: in a bounded queue, run in order once the command is done. Ctrl-C is never
//! queued: it stops the command and discards what was typed before it, as a terminal's
//! interrupt flushes its input. What does not fit is dropped a whole line at a time (never half
//! a line, which would run as a different command) and reported after the command.

use super::MAX_LINE;

/// Bytes of type-ahead the console keeps while it is busy: two full lines.
pub const TYPEAHEAD: usize = 2 * (MAX_LINE + 1);

/// Ctrl-C.
pub(super) const INTERRUPT: u8 = 0x03;

fn ends_line(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// What the input lost during one command, for the line reported after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lost {
    pub bytes: usize,
    /// Lines that lost bytes (empty lines are not counted).
    pub lines: usize,
    /// A Ctrl-C arrived (the bytes and lines are what it discarded, plus any overflow).
    pub interrupted: bool,
}

#[derive(Default)]
pub(super) struct TypeAhead {
    queue: heapless::Deque<u8, TYPEAHEAD>,
    lost: Lost,
    /// The queue overflowed during this command: the rest of its input is dropped.
    full: bool,
    /// The last dropped byte was inside a line whose end has not been seen yet.
    in_line: bool,
    /// After the report, the rest of a dropped line is still to be skipped.
    skip_rest: bool,
}

impl TypeAhead {
    /// The next queued byte, oldest first.
    pub fn next(&mut self) -> Option<u8> {
        self.queue.pop_front()
    }

    /// Whether a Ctrl-C arrived since the last report.
    pub fn interrupted(&self) -> bool {
        self.lost.interrupted
    }

    /// Takes one byte that arrived while the console was busy.
    pub fn take(&mut self, b: u8) {
        if b == INTERRUPT {
            self.lost.interrupted = true;
            while let Some(q) = self.queue.pop_front() {
                self.drop_byte(q);
            }
            (self.full, self.in_line, self.skip_rest) = (false, false, false);
            return;
        }
        if self.skips(b) {
            return;
        }
        if self.full {
            return self.drop_byte(b);
        }
        if let Err(b) = self.queue.push_back(b) {
            // The line this byte belongs to goes as a whole, and everything after it.
            self.full = true;
            let mut partial = 0;
            while self.queue.back().is_some_and(|&c| !ends_line(c)) {
                self.queue.pop_back();
                partial += 1;
            }
            if partial > 0 {
                self.lost.bytes += partial;
                self.lost.lines += 1;
                self.in_line = true;
            }
            self.drop_byte(b);
        }
    }

    /// Whether `b` is the rest of a line already dropped and reported (it must not run as a
    /// command of its own); such bytes are skipped silently.
    pub fn skips(&mut self, b: u8) -> bool {
        if !self.skip_rest {
            return false;
        }
        self.skip_rest = !ends_line(b);
        true
    }

    fn drop_byte(&mut self, b: u8) {
        self.lost.bytes += 1;
        if ends_line(b) {
            self.in_line = false;
        } else if !self.in_line {
            self.in_line = true;
            self.lost.lines += 1;
        }
    }

    /// What was lost since the last report; the next command starts afresh (except that the
    /// rest of a line cut off by the overflow is still skipped).
    pub fn report(&mut self) -> Lost {
        self.skip_rest |= self.in_line;
        (self.full, self.in_line) = (false, false);
        core::mem::take(&mut self.lost)
    }
}
