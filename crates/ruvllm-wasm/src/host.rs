//! The functions the module imports from its host (module `ruvllm`), and their stand-ins
//! on the machine that runs the crate's tests (output and saves collected per thread).

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "ruvllm")]
    extern "C" {
        fn write(ptr: *const u8, len: usize);
        fn now_us() -> f64;
        fn save(ptr: *const u8, len: usize) -> i32;
        fn interrupt() -> i32;
    }

    pub fn write_bytes(bytes: &[u8]) {
        // SAFETY: the host only reads `len` bytes at `ptr` during the call.
        unsafe { write(bytes.as_ptr(), bytes.len()) }
    }

    pub fn now() -> u64 {
        // SAFETY: no arguments; the host returns a number.
        unsafe { now_us() as u64 }
    }

    pub fn save_bytes(bytes: &[u8]) -> bool {
        // SAFETY: as for `write_bytes`.
        unsafe { save(bytes.as_ptr(), bytes.len()) == 1 }
    }

    pub fn interrupted() -> bool {
        // SAFETY: no arguments; the host returns a number.
        unsafe { interrupt() == 1 }
    }
}

#[cfg(target_arch = "wasm32")]
pub use imports::{interrupted, now as now_us, save_bytes as save, write_bytes as write};

#[cfg(not(target_arch = "wasm32"))]
mod stand_in {
    use std::cell::RefCell;
    use std::time::Instant;

    std::thread_local! {
        static WRITTEN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        /// What `save` last kept, and whether the next saves fail.
        static SAVED: RefCell<(Option<Vec<u8>>, bool)> = const { RefCell::new((None, false)) };
        static START: Instant = Instant::now();
        /// Polls of `interrupted` left before it reports a Stop (`None`: never).
        static STOP_AFTER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }

    pub fn write(bytes: &[u8]) {
        WRITTEN.with_borrow_mut(|w| w.extend_from_slice(bytes));
    }

    pub fn now_us() -> u64 {
        START.with(|s| s.elapsed().as_micros() as u64)
    }

    pub fn save(bytes: &[u8]) -> bool {
        SAVED.with_borrow_mut(|(saved, failing)| {
            if !*failing {
                *saved = Some(bytes.to_vec());
            }
            !*failing
        })
    }

    pub fn interrupted() -> bool {
        STOP_AFTER.with(|s| match s.get() {
            Some(0) => {
                s.set(None);
                true
            }
            Some(n) => {
                s.set(Some(n - 1));
                false
            }
            None => false,
        })
    }

    /// The user presses Stop after `polls` more polls.
    #[cfg(test)]
    pub fn stop_after(polls: usize) {
        STOP_AFTER.with(|s| s.set(Some(polls)));
    }

    /// Everything written since the last call.
    #[cfg(test)]
    pub fn take_written() -> String {
        String::from_utf8_lossy(&WRITTEN.with_borrow_mut(std::mem::take)).into_owned()
    }

    /// The image the last successful save kept.
    #[cfg(test)]
    pub fn saved() -> Option<Vec<u8>> {
        SAVED.with_borrow(|(s, _)| s.clone())
    }

    /// Makes the following saves fail (a full or blocked browser storage).
    #[cfg(test)]
    pub fn fail_saves(on: bool) {
        SAVED.with_borrow_mut(|(_, failing)| *failing = on);
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use stand_in::*;
