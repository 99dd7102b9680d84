//! The virt board's ns16550 UART at 0x1000_0000 as an `embedded-io` byte stream.
//!
//! Reception is polled, not interrupt-driven: the console polls after every token and keeps
//! what arrived as type-ahead (its bounded queue), and QEMU's UART model never loses a byte
//! between polls: it takes the next byte from the host only once the firmware has read the
//! previous one (the FIFO is left off), so unread input waits in the host's pipe. The chip needs
//! more (firmware/esp/src/serial.rs: RX interrupts into a ring buffer).

use core::convert::Infallible;
use embedded_io::{ErrorType, Read, ReadReady, Write};

const BASE: usize = 0x1000_0000;
/// Receive buffer (read) / transmit holding register (write).
const RBR_THR: usize = 0;
const LSR: usize = 5;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// The one UART; only `main` makes it.
pub struct Uart(());

impl Uart {
    /// # Safety
    /// At most one `Uart` may exist: it owns the device registers.
    pub unsafe fn new() -> Uart {
        Uart(())
    }

    fn lsr(&self) -> u8 {
        // SAFETY: a device register of the virt board, readable at any time.
        unsafe { core::ptr::read_volatile((BASE + LSR) as *const u8) }
    }

    fn read_byte(&mut self) -> Option<u8> {
        if self.lsr() & LSR_DATA_READY == 0 {
            return None;
        }
        // SAFETY: as above; reading RBR pops the byte the LSR announced.
        Some(unsafe { core::ptr::read_volatile((BASE + RBR_THR) as *const u8) })
    }

    pub fn write_byte(&mut self, b: u8) {
        while self.lsr() & LSR_THR_EMPTY == 0 {}
        // SAFETY: as above; THR accepts a byte once the LSR says it is empty.
        unsafe { core::ptr::write_volatile((BASE + RBR_THR) as *mut u8, b) }
    }
}

impl ErrorType for Uart {
    type Error = Infallible;
}

impl Read for Uart {
    /// Waits for the first byte, then takes whatever else is already there.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        while n == 0 {
            for slot in buf.iter_mut() {
                match self.read_byte() {
                    Some(b) => {
                        *slot = b;
                        n += 1;
                    }
                    None => break,
                }
            }
        }
        Ok(n)
    }
}

impl ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.lsr() & LSR_DATA_READY != 0)
    }
}

impl Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            self.write_byte(b);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
