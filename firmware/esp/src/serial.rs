//! The console's byte stream: UART0 and, on the chips that have one, the USB-Serial-JTAG
//! controller (the only USB port of many ESP32-C3/C6 boards), served at once. Input from either
//! goes into one RAM ring buffer; output goes to both.
//!
//! Reception is interrupt-driven: at 115200 baud one token's time brings more bytes than UART0's
//! 128-byte hardware FIFO holds, so the FIFO-full and receive-timeout interrupts move every
//! received byte into the ring as it arrives. USB input is moved by the packet-received
//! interrupt, but only while the ring has room: the host holds what does not fit (USB flow
//! control), so USB input is never dropped. The console reads the ring ([`Serial`] is its
//! `embedded-io` stream) and keeps lines typed while it generates as type-ahead; UART bytes the
//! ring has no room for are counted ([`rx_lost`]) and the console reports them.
//!
//! Output goes to both ports, so the boot lines and errors reach whichever one the user watches,
//! with no port to pick. UART0 always drains (at the baud rate). USB output only leaves when a
//! host reads it: with no host attached, or the port not open there, the 64-byte FIFO stays
//! full. So a USB write waits at most 50 ms for room, then the USB side counts as unread and
//! drops output without waiting, until the host takes data again (the library's
//! [`HostTx`](ruvllm_esp32::console::HostTx)). The console never hangs on a USB port nobody reads.

use core::cell::RefCell;
use critical_section::Mutex;
use esp_hal::uart::{TxError, Uart, UartInterrupt};
use esp_hal::Blocking;

/// Bytes the ring holds: about 90 ms of input at 115200 baud, several tokens' time.
const RX_RING: usize = 1024;
/// Bytes written per critical section, so reception waits at most a few byte times.
const TX_CHUNK: usize = 16;

type Ring = heapless::Deque<u8, RX_RING>;

struct Shared {
    uart: Uart<'static, Blocking>,
    usb: usb::Input,
    ring: Ring,
    /// Bytes dropped (ring full, or a receive error such as a FIFO overrun) since [`rx_lost`].
    lost: usize,
}

impl Shared {
    /// Moves what the hardware FIFOs hold into the ring.
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
        self.usb.fill(&mut self.ring);
    }
}

/// The ports, shared by the interrupt handlers and the console's stream.
static SHARED: Mutex<RefCell<Option<Shared>>> = Mutex::new(RefCell::new(None));

fn with<R>(f: impl FnOnce(&mut Shared) -> R) -> Option<R> {
    critical_section::with(|cs| SHARED.borrow_ref_mut(cs).as_mut().map(f))
}

#[esp_hal::handler]
fn on_uart_receive() {
    with(|s| {
        s.fill();
        s.uart.clear_interrupts(UartInterrupt::RxFifoFull | UartInterrupt::RxTimeout);
    });
}

/// The console's stream over `uart` and `usb`, whose reception is interrupt-driven from here on.
pub fn install(mut uart: Uart<'static, Blocking>, usb: usb::Port) -> Serial {
    uart.set_interrupt_handler(on_uart_receive);
    let (input, output) = usb::split(usb);
    critical_section::with(|cs| {
        uart.listen(UartInterrupt::RxFifoFull | UartInterrupt::RxTimeout);
        let shared = Shared { uart, usb: input, ring: Ring::new(), lost: 0 };
        SHARED.borrow_ref_mut(cs).replace(shared);
    });
    Serial { usb: output }
}

/// Bytes received input lost since the last call (for the console's report).
pub fn rx_lost() -> usize {
    with(|s| core::mem::take(&mut s.lost)).unwrap_or(0)
}

/// The console's byte stream: reads from the ring, writes to UART0 and USB.
pub struct Serial {
    usb: usb::Output,
}

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
    /// What UART0 takes (at most [`TX_CHUNK`] bytes) goes to USB too, outside the critical
    /// section: a USB wait never holds reception off.
    fn write(&mut self, buf: &[u8]) -> Result<usize, TxError> {
        let chunk = buf.get(..buf.len().min(TX_CHUNK)).unwrap_or_default();
        let n = with(|s| s.uart.write(chunk)).unwrap_or(Ok(0))?;
        self.usb.write(chunk.get(..n).unwrap_or_default());
        Ok(n)
    }

    /// Nothing to do: written bytes are in UART0's hardware FIFO, which sends them on its own
    /// (waiting for it to drain here would hold reception off for up to 11 ms), and each USB
    /// write is already handed to the host.
    fn flush(&mut self) -> Result<(), TxError> {
        Ok(())
    }
}

/// The last words (the panic handler's): to both ports, UART0 drained, USB with the same
/// bounded wait as the console's writes.
pub fn last_words(mut uart: Uart<'static, Blocking>, usb: usb::Port, args: core::fmt::Arguments<'_>) {
    use embedded_io::Write as _;
    let _ = uart.write_fmt(args);
    let _ = uart.flush();
    let _ = core::fmt::Write::write_fmt(&mut usb::Output::new(usb), args);
}

/// USB-Serial-JTAG (ESP32-C3, C6, S3).
#[cfg(usb_serial_jtag)]
pub mod usb {
    use super::Ring;
    use esp_hal::usb::usb_serial_jtag::{UsbSerialJtag, UsbSerialJtagRx, UsbSerialJtagTx};
    use esp_hal::Blocking;
    use ruvllm_esp32::console::{HostTx, TryTx};

    /// The console's USB port.
    pub type Port = UsbSerialJtag<'static, Blocking>;

    /// How long a write waits for the host to take data before the port counts as unread, in
    /// microseconds. A host that has the port open polls it every USB frame (1 ms).
    pub const TX_TIMEOUT_US: u64 = 50_000;

    /// The receiving half, in the interrupt handlers' shared state.
    pub struct Input(UsbSerialJtagRx<'static, Blocking>);

    /// The sending half, the console's: it never waits long for a host that is not reading.
    pub struct Output(HostTx<Fifo>);

    /// The transmit FIFO, written without blocking.
    pub struct Fifo(UsbSerialJtagTx<'static, Blocking>);

    impl TryTx for Fifo {
        fn try_put(&mut self, b: u8) -> bool {
            self.0.write_byte_nb(b).is_ok()
        }
        fn commit(&mut self) {
            let _ = self.0.flush_tx_nb();
        }
    }

    #[esp_hal::handler]
    fn on_receive() {
        super::with(|s| {
            s.fill();
            s.usb.0.reset_rx_packet_recv_interrupt();
        });
    }

    /// Both halves, with packet reception interrupt-driven from here on.
    pub fn split(mut port: Port) -> (Input, Output) {
        port.set_interrupt_handler(on_receive);
        let (mut rx, tx) = port.split();
        rx.listen_rx_packet_recv_interrupt();
        (Input(rx), Output::with_tx(tx))
    }

    impl Input {
        /// Moves received bytes into `ring` while it has room (the rest waits in the host).
        pub(super) fn fill(&mut self, ring: &mut Ring) {
            while !ring.is_full() {
                match self.0.read_byte() {
                    Ok(b) => {
                        let _ = ring.push_back(b);
                    }
                    Err(_) => break,
                }
            }
        }
    }

    impl Output {
        /// The sending half alone, reception left off (the panic handler's).
        pub fn new(port: Port) -> Output {
            Output::with_tx(port.split().1)
        }

        fn with_tx(tx: UsbSerialJtagTx<'static, Blocking>) -> Output {
            Output(HostTx::new(Fifo(tx), crate::micros, TX_TIMEOUT_US))
        }

        /// Queues `bytes` and hands them to the host, dropping what finds no room within
        /// [`TX_TIMEOUT_US`] (at once while the port counts as unread).
        pub fn write(&mut self, bytes: &[u8]) {
            self.0.write(bytes);
        }
    }

    impl core::fmt::Write for Output {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.write(s.as_bytes());
            Ok(())
        }
    }
}

/// The ESP32 has no USB, the ESP32-S2 only USB OTG: UART0 alone.
#[cfg(not(usb_serial_jtag))]
pub mod usb {
    use super::Ring;

    /// No USB console port on this chip.
    pub type Port = ();
    pub struct Input;
    pub struct Output;

    pub fn split(_: Port) -> (Input, Output) {
        (Input, Output)
    }

    impl Input {
        pub(super) fn fill(&mut self, _: &mut Ring) {}
    }

    impl Output {
        pub fn new(_: Port) -> Output {
            Output
        }

        pub fn write(&mut self, _: &[u8]) {}
    }

    impl core::fmt::Write for Output {
        fn write_str(&mut self, _: &str) -> core::fmt::Result {
            Ok(())
        }
    }
}
