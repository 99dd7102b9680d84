//! Running sequential-storage's async API on a blocking flash driver.
//!
//! sequential-storage is written against `embedded-storage-async`. A chip's flash driver
//! (esp-storage's `FlashStorage`) is blocking: each call returns when the flash has finished.
//! [`Blocking`] presents such a driver through the async traits (every future it returns is
//! ready on its first poll), and [`block_on`] polls a future to completion with a no-op
//! waker. Together they give a plain blocking API without an executor or allocation.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash as asynch;

/// A blocking NOR-flash driver seen through the async `embedded-storage-async` traits.
pub struct Blocking<F>(pub F);

impl<F: blocking::ErrorType> asynch::ErrorType for Blocking<F> {
    type Error = F::Error;
}

impl<F: blocking::ReadNorFlash> asynch::ReadNorFlash for Blocking<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: blocking::NorFlash> asynch::NorFlash for Blocking<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: blocking::MultiwriteNorFlash> asynch::MultiwriteNorFlash for Blocking<F> {}

/// Polls `future` until it completes. Meant for futures that never wait on anything outside
/// the current call (the ones sequential-storage returns over [`Blocking`]): they finish on
/// the first poll, so the loop never spins in practice.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        core::hint::spin_loop();
    }
}
