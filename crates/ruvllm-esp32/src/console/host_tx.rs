//! Output to a port that drains only while a host reads it, such as the ESP32-C3/C6/S3's own USB
//! port (USB-Serial-JTAG): with no USB host attached, or the port not open on it, the transmit
//! FIFO stays full and a blocking write would hang the console. [`HostTx`] waits a bounded time
//! for room, then counts the port as unread and drops output without waiting, until the host
//! takes data again (ESP-IDF's USB-Serial-JTAG console drops the same way).

/// A transmit FIFO that never blocks.
pub trait TryTx {
    /// Queues `b` if the FIFO has room.
    fn try_put(&mut self, b: u8) -> bool;
    /// Hands what is queued to the host now, not only once the FIFO is full.
    fn commit(&mut self);
}

/// Writes to a [`TryTx`] with at most `timeout` of waiting while the port counts as read, and
/// none while it counts as unread.
pub struct HostTx<T> {
    tx: T,
    /// The board's clock, in the unit of `timeout` (microseconds on the firmware).
    now: fn() -> u64,
    timeout: u64,
    /// The last wait timed out and no byte has gone into the FIFO since.
    unread: bool,
}

impl<T: TryTx> HostTx<T> {
    pub const fn new(tx: T, now: fn() -> u64, timeout: u64) -> Self {
        HostTx { tx, now, timeout, unread: false }
    }

    /// Queues `bytes` and commits them; returns how many were queued: the rest is dropped, once
    /// the port counts as unread.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let queued = bytes.iter().take_while(|&&b| self.put(b)).count();
        if queued > 0 {
            self.tx.commit();
        }
        queued
    }

    /// Whether the port counts as unread (output to it is being dropped).
    pub fn unread(&self) -> bool {
        self.unread
    }

    fn put(&mut self, b: u8) -> bool {
        let mut since = None;
        loop {
            if self.tx.try_put(b) {
                self.unread = false;
                return true;
            }
            if self.unread {
                return false;
            }
            let now = (self.now)();
            match since {
                // Full: make sure what it holds is on its way, then wait for the host.
                None => {
                    self.tx.commit();
                    since = Some(now);
                }
                Some(t) if now.wrapping_sub(t) > self.timeout => {
                    self.unread = true;
                    return false;
                }
                Some(_) => core::hint::spin_loop(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::VecDeque;

    thread_local! {
        /// The fake clock: each reading advances it by one microsecond.
        static CLOCK: Cell<u64> = const { Cell::new(0) };
        /// Clock readings, i.e. rounds spent waiting.
        static READINGS: Cell<u64> = const { Cell::new(0) };
    }

    fn now() -> u64 {
        READINGS.with(|r| r.set(r.get() + 1));
        CLOCK.with(|c| {
            c.set(c.get() + 1);
            c.get()
        })
    }

    fn readings() -> u64 {
        READINGS.with(|r| r.replace(0))
    }

    /// A 64-byte FIFO whose host takes one byte every `every` attempts to queue one (never, at 0).
    struct Fifo {
        queued: VecDeque<u8>,
        sent: Vec<u8>,
        every: usize,
        attempts: usize,
        commits: usize,
    }

    impl Fifo {
        fn new(every: usize) -> Fifo {
            Fifo { queued: VecDeque::new(), sent: Vec::new(), every, attempts: 0, commits: 0 }
        }
    }

    impl TryTx for Fifo {
        fn try_put(&mut self, b: u8) -> bool {
            self.attempts += 1;
            if self.every > 0 && self.attempts.is_multiple_of(self.every) {
                self.sent.extend(self.queued.pop_front());
            }
            if self.queued.len() == 64 {
                return false;
            }
            self.queued.push_back(b);
            true
        }
        fn commit(&mut self) {
            self.commits += 1;
        }
    }

    const TIMEOUT: u64 = 50_000;

    #[test]
    fn with_no_host_one_bounded_wait_then_none() {
        let mut tx = HostTx::new(Fifo::new(0), now, TIMEOUT);
        readings();
        assert_eq!(tx.write(&[b'x'; 100]), 64, "the FIFO's worth is queued, the rest dropped");
        assert!(tx.unread());
        let waited = readings();
        assert!(waited > TIMEOUT && waited < TIMEOUT + 10, "{waited}");
        // From now on nothing waits: the console runs at full speed with nobody reading USB.
        for _ in 0..1000 {
            assert_eq!(tx.write(b"Once upon a time\r\n"), 0);
        }
        assert_eq!(readings(), 0);
        assert!(tx.unread());
    }

    #[test]
    fn a_host_that_reads_again_turns_output_back_on() {
        let mut tx = HostTx::new(Fifo::new(0), now, TIMEOUT);
        tx.write(&[b'x'; 100]);
        assert!(tx.unread());
        // The host opens the port and reads the FIFO out.
        tx.tx.queued.clear();
        assert_eq!(tx.write(b"> "), 2);
        assert!(!tx.unread());
        assert_eq!(tx.tx.queued, b"> ");
    }

    #[test]
    fn a_reading_host_gets_every_byte() {
        let text: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut tx = HostTx::new(Fifo::new(3), now, TIMEOUT);
        for chunk in text.chunks(16) {
            assert_eq!(tx.write(chunk), chunk.len());
        }
        assert!(!tx.unread());
        let mut got = tx.tx.sent.clone();
        got.extend(tx.tx.queued.iter());
        assert_eq!(got, text);
    }

    #[test]
    fn each_write_is_handed_to_the_host() {
        let mut tx = HostTx::new(Fifo::new(0), now, TIMEOUT);
        tx.write(b"> ");
        tx.write(b"h");
        assert_eq!(tx.tx.commits, 2, "no flush needed for output to appear");
        tx.write(b"");
        assert_eq!(tx.tx.commits, 2);
    }
}
