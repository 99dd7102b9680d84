//! One node of a federated pipeline on the board's UART (feature `federation-node`): the
//! host opens the link (the handshake checks the protocol version and the CRC-32 of the model
//! image linked here), then every message it sends runs through this node's layers
//! (`NODE_LAYERS`, set at build time) and the result goes back; `Finish` ends the run with the
//! node's costs (instructions in its layers). The host relays between boards.

use crate::uart::Uart;
use core::convert::Infallible;
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use embedded_io::{Read as _, ReadReady as _, Write as _};
use ruvllm_esp32::federation::link::{Clock, Link, LinkConfig};
use ruvllm_esp32::federation::pipeline::{Slot, Stage};
use ruvllm_esp32::federation::tensor::TensorNode;
use ruvllm_esp32::federation::wire::{Body, Hello, NodeStats, VERSION};
use ruvllm_esp32::infer::{IntState, Shard, TensorState};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::Sampling;

/// The UART for the link: a read waits (as a pending future) until a byte is there.
struct Port(Uart);

impl embedded_io_async::ErrorType for Port {
    type Error = Infallible;
}

impl embedded_io_async::Read for Port {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        poll_fn(|_| match self.0.read_ready() {
            Ok(true) => Poll::Ready(self.0.read(buf)),
            _ => Poll::Pending,
        })
        .await
    }
}

impl embedded_io_async::Write for Port {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.0.write(buf)
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// The virt board's CLINT timer (10 MHz; virtual time under -icount).
struct Mtime;

const MTIME: usize = 0x0200_bff8;

impl Clock for Mtime {
    fn now_ms(&self) -> u64 {
        // SAFETY: the virt board's CLINT mtime register, readable at any time.
        unsafe { core::ptr::read_volatile(MTIME as *const u64) / 10_000 }
    }

    async fn within<F: Future>(&self, ms: u64, f: F) -> Option<F::Output> {
        let deadline = self.now_ms().saturating_add(ms);
        let mut f = pin!(f);
        poll_fn(|cx| match f.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending if self.now_ms() >= deadline => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await
    }
}

/// Runs `f` to completion by polling it again and again (nothing else runs on the board).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A pipeline node: serves the link until the run's `Finish`; the exit code for QEMU.
#[allow(clippy::too_many_arguments)]
pub fn run<const L: usize>(
    uart: Uart,
    model: &Model<'_, L>,
    image: &[u8],
    arena: &mut [i32],
    seq_len: usize,
    id: u8,
    layers: core::ops::Range<usize>,
    instret: fn() -> u64,
    ram: fn() -> u32,
) -> u32 {
    let Ok(state) = IntState::new(model, arena, seq_len) else { return 3 };
    let mut slots = [Slot { state, sampling: Sampling::GREEDY }];
    let Ok(mut stage) = Stage::new(id, model, layers, &mut slots) else { return 4 };
    serve(uart, image, id, (instret, ram), |b| matches!(b, Body::Forward(_)), |b| stage.handle(b))
}

/// A tensor-parallel node (its shard of every layer): as [`run`].
#[allow(clippy::too_many_arguments)]
pub fn run_tensor<const L: usize>(
    uart: Uart,
    model: &Model<'_, L>,
    image: &[u8],
    arena: &mut [i32],
    acc: &mut [i64],
    seq_len: usize,
    id: u8,
    shard: Shard,
    instret: fn() -> u64,
    ram: fn() -> u32,
) -> u32 {
    let Ok(state) = TensorState::new(model, shard, arena, seq_len) else { return 3 };
    let mut slots = [state];
    let Ok(mut node) = TensorNode::new(id, model, &mut slots, acc) else { return 4 };
    serve(uart, image, id, (instret, ram), |b| matches!(b, Body::Round(_)), |b| node.handle(b))
}

/// The link's loop: every body from the host answered by `handle`, the instructions of the
/// bodies that are `work` counted, until `Finish` (answered by this node's costs, its peak RAM
/// from `ram`).
fn serve(
    uart: Uart,
    image: &[u8],
    id: u8,
    (instret, ram): (fn() -> u64, fn() -> u32),
    work: fn(&Body) -> bool,
    mut handle: impl FnMut(Body) -> Body,
) -> u32 {
    let checksum = crc32fast::hash(image);
    let mut link = Link::new(Port(uart), Mtime, LinkConfig { ack_ms: 2000, retries: 10 });
    let me = Hello { version: VERSION, model: checksum, node: id };
    block_on(async {
        if link.accept(me, u64::MAX / 4).await.is_err() {
            return 5;
        }
        let mut own = NodeStats { node: id, ..NodeStats::default() };
        loop {
            let Ok(body) = link.recv(None).await else { return 6 };
            let finish = body == Body::Finish;
            if finish {
                own.sent_bytes = link.stats.sent_bytes;
                own.retransmits = link.stats.retransmits;
                own.bad_frames = link.stats.bad_frames;
                own.peak_ram = ram();
                if link.send(Body::Stats(own)).await.is_err() {
                    return 7;
                }
            }
            let position = work(&body);
            let t = instret();
            let out = handle(body);
            if position {
                // On the board: instructions, not microseconds.
                own.busy_us += instret() - t;
                own.positions += 1;
            }
            if link.send(out).await.is_err() {
                return 7;
            }
            if finish {
                return 0;
            }
        }
    })
}
