//! UART0 for the console with interrupt-driven reception: at 115200 baud one token's time brings
//! more bytes than the 128-byte hardware FIFO holds, so the FIFO-full and receive-timeout
//! interrupts move every received byte into a RAM ring buffer as it arrives. The console reads
//! the ring ([`Serial`] is its `embedded-io` stream) and keeps lines typed while it generates
//! as type-ahead; bytes the ring has no room for are counted ([`rx_lost`]) and the console
//! reports them.

use core::cell::RefCell;
use critical_section::Mutex;
use esp_hal::uart::{TxError, Uart, UartInterrupt};
use esp_hal::Blocking;

/// Bytes the ring holds: about 90 ms of input at 115200 baud, several tokens' time.
const RX_RING: usize = 1024;
/// Bytes written per critical section, so reception waits at most a few byte times.
const TX_CHUNK: usize = 16;

struct Shared {
    uart: Uart<'static, Blocking>,
    ring: heapless::Deque<u8, RX_RING>,
    /// Bytes dropped (ring full, or a receive error such as a FIFO overrun) since [`rx_lost`].
    lost: usize,
}

impl Shared {
    /// Moves what the hardware FIFO holds into the ring.
    fn fill(&mut self) {
        let mut buf = [0u8; 32];
        // A bounded number of rounds: bytes keep arriving while the FIFO is read.
        for _ in 0..8 {
            match self.uart.read_buffered(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for &b in buf.get(..n).unwrap_or_default() {
                        if self.ring.push_back(b).is_err() {
                            self.lost += 1;
                        }
                    }
                }
                // Overrun, framing or parity error: at least one byte is gone.
                Err(_) => self.lost += 1,
            }
        }
    }
}

/// The UART, shared by the interrupt handler and the console's stream.
static SHARED: Mutex<RefCell<Option<Shared>>> = Mutex::new(RefCell::new(None));

fn with<R>(f: impl FnOnce(&mut Shared) -> R) -> Option<R> {
    critical_section::with(|cs| SHARED.borrow_ref_mut(cs).as_mut().map(f))
}

#[esp_hal::handler]
fn on_receive() {
    with(|s| {
        s.fill();
        s.uart.clear_interrupts(UartInterrupt::RxFifoFull | UartInterrupt::RxTimeout);
    });
}

/// The console's stream over `uart`, whose reception is interrupt-driven from here on.
pub fn install(mut uart: Uart<'static, Blocking>) -> Serial {
    uart.set_interrupt_handler(on_receive);
    critical_section::with(|cs| {
        uart.listen(UartInterrupt::RxFifoFull | UartInterrupt::RxTimeout);
        SHARED.borrow_ref_mut(cs).replace(Shared { uart, ring: heapless::Deque::new(), lost: 0 });
    });
    Serial(())
}

/// Bytes received input lost since the last call (for the console's report).
pub fn rx_lost() -> usize {
    with(|s| core::mem::take(&mut s.lost)).unwrap_or(0)
}

/// The console's byte stream: reads from the ring, writes to UART0.
pub struct Serial(());

impl embedded_io::ErrorType for Serial {
    type Error = TxError;
}

impl embedded_io::Read for Serial {
    /// Waits for the first byte, then takes whatever else is already there.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TxError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = with(|s| {
                s.fill();
                let mut n = 0;
                while let (Some(slot), Some(b)) = (buf.get_mut(n), s.ring.front()) {
                    *slot = *b;
                    s.ring.pop_front();
                    n += 1;
                }
                n
            });
            if let Some(n @ 1..) = n {
                return Ok(n);
            }
            core::hint::spin_loop();
        }
    }
}

impl embedded_io::ReadReady for Serial {
    fn read_ready(&mut self) -> Result<bool, TxError> {
        Ok(with(|s| {
            s.fill();
            !s.ring.is_empty()
        })
        .unwrap_or(false))
    }
}

impl embedded_io::Write for Serial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, TxError> {
        let chunk = buf.get(..buf.len().min(TX_CHUNK)).unwrap_or_default();
        with(|s| s.uart.write(chunk)).unwrap_or(Ok(0))
    }

    /// Nothing to do: written bytes are in the hardware FIFO, which sends them on its own
    /// (waiting for it to drain here would hold reception off for up to 11 ms).
    fn flush(&mut self) -> Result<(), TxError> {
        Ok(())
    }
}
