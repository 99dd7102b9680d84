//! The library's console (the one the chips run) for WebAssembly hosts: the web page's worker
//! (`web/`) and the Node package (`npm/`) load the same `ruvllm_wasm.wasm`.
//!
//! A small C-like ABI rather than wasm-bindgen (docs/WEB.md says why): every call passes
//! integers, bytes travel through one staging buffer in linear memory, and the module imports
//! four functions from the host (module `ruvllm`):
//!
//! | import | what the host does |
//! |---|---|
//! | `write(ptr, len)` | shows console output (called at every flush: each generated token) |
//! | `now_us() -> f64` | a monotonic clock in microseconds (the console's tok/s) |
//! | `save(ptr, len) -> i32` | keeps the knowledge image durably; 1 when it did |
//! | `interrupt() -> i32` | 1 once after the user asked to stop (the console's Ctrl-C), else 0 |
//!
//! | export | |
//! |---|---|
//! | `rv_buffer(len) -> ptr` | the staging buffer resized to `len` bytes (0: no memory for it) |
//! | `rv_start(len) -> i32` | the console on the built-in model; the buffer holds the saved knowledge image (or `len` 0) |
//! | `rv_load(model_len, tok_len) -> i32` | switches to the model in the buffer (a llama2.c tokenizer after it); the old one stays on error |
//! | `rv_feed(len) -> i32` | the buffer's bytes typed into the console (1 after `quit`) |
//! | `rv_stats() -> len` | `stats json` into the buffer (read it at `rv_buffer(len)`) |
//! | `rv_plan() -> len` | how the model fits each ESP32 (the native `info` plan), JSON, into the buffer |
//!
//! Each call returns 0 on success; a refusal is one `error: ...` line in the output and a
//! non-zero return, and the console keeps working.

use ruvllm_esp32::console::{Board, Console, Flow, IntegerEngine, Knowledge, KnowledgeStore, SavingOff};
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::model::chips::plan;
use ruvllm_esp32::model::weights::DEFAULT_MAX_LAYERS;
use ruvllm_esp32::model::Model;

mod host;
mod load;
mod store;

pub use load::{model_image, Image, MAX_MODEL_BYTES};
pub use store::{BrowserKnowledge, KNOWLEDGE_IMAGE_BYTES};

/// Longest context a session runs: the arena grows with it, and the console's generations are
/// at most [`ruvllm_esp32::console::DEFAULT_STEPS`] long anyway.
pub const MAX_CONTEXT: usize = 2048;

/// The console's byte stream: output is buffered and handed to the host at each flush (the
/// console flushes after every generated token), or captured for `rv_stats`.
pub struct Io;

#[derive(Default)]
struct Output {
    pending: Vec<u8>,
    capture: Option<Vec<u8>>,
    /// The host reported a Stop that the console has not read yet.
    interrupt: bool,
}

std::thread_local! {
    static OUTPUT: core::cell::RefCell<Output> = core::cell::RefCell::new(Output::default());
}

impl embedded_io::ErrorType for Io {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Io {
    /// Input arrives through [`Session::feed`]; a read only ever gives the Ctrl-C of a Stop.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let stop = OUTPUT.with_borrow_mut(|o| core::mem::take(&mut o.interrupt));
        match buf.first_mut() {
            Some(b) if stop => {
                *b = CTRL_C;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

impl embedded_io::ReadReady for Io {
    /// Polled during a generation: ready only when the host reports a Stop (a line typed
    /// meanwhile waits in the host's message queue until the generation ends).
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(OUTPUT.with_borrow_mut(|o| {
            o.interrupt |= host::interrupted();
            o.interrupt
        }))
    }
}

/// What a Stop types into the console: the serial line's Ctrl-C.
const CTRL_C: u8 = 0x03;

impl embedded_io::Write for Io {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        OUTPUT.with_borrow_mut(|o| match &mut o.capture {
            Some(c) => c.extend_from_slice(buf),
            None => o.pending.extend_from_slice(buf),
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        let pending = OUTPUT.with_borrow_mut(|o| core::mem::take(&mut o.pending));
        if !pending.is_empty() {
            host::write(&pending);
        }
        Ok(())
    }
}

type Engine = IntegerEngine<'static, 'static, 'static, DEFAULT_MAX_LAYERS>;

/// The console over one model. The console borrows the model, its arena and the image, which
/// this struct owns: fields drop in declaration order, so the console goes first.
struct Loaded {
    console: Console<'static, Io, Engine>,
    model: Box<Model<'static>>,
    _arena: Box<[i32]>,
    image: Image,
}

/// What lives as long as the module: the knowledge (kept across model switches), where it is
/// saved, and the console on the current model.
pub struct Session {
    loaded: Option<Loaded>,
    /// Leaked once per session; only the one console of `loaded` ever borrows them.
    knowledge: *mut Knowledge,
    store: Option<*mut BrowserKnowledge>,
}

fn micros() -> u64 {
    host::now_us()
}

const BOARD: Board = Board { name: "wasm", counter: Some(micros), counter_unit: "us", ram: None };

impl Session {
    /// The session on the built-in model, its knowledge restored from `saved` (the image
    /// `save` last received; empty: none). Lines about the restore go to the output.
    pub fn start(saved: &[u8]) -> Session {
        let knowledge = Box::into_raw(Box::new(Knowledge::new()));
        let mut lines = String::new();
        let store = match store::open(saved) {
            Ok(mut store) => {
                // SAFETY: just allocated, and no console borrows it yet.
                match unsafe { &mut *knowledge }.restore(&mut store) {
                    Ok(restored) if !saved.is_empty() => lines.push_str(&format!("{restored}\r\n")),
                    Ok(_) => {}
                    Err(e) => lines.push_str(&format!("{}\r\n", SavingOff(e))),
                }
                Some(Box::into_raw(Box::new(store)))
            }
            Err(e) => {
                lines.push_str(&format!("{}\r\n", SavingOff(e)));
                None
            }
        };
        host::write(lines.as_bytes());
        let mut session = Session { loaded: None, knowledge, store };
        let builtin = model_image(load::BUILTIN_MODEL, None);
        match builtin {
            Ok(image) => {
                let _ = session.switch(image);
            }
            Err(e) => host::write(format!("error: built-in model: {e}\r\n").as_bytes()),
        }
        session
    }

    /// Runs the engine image `image` (from [`model_image`]) in a new console; on error the
    /// current one stays.
    pub fn switch(&mut self, image: Image) -> Result<(), String> {
        // SAFETY: `image` moves into `Loaded`, which drops the console (the only borrower)
        // before the image; its boxed words never move.
        let bytes: &'static [u8] =
            unsafe { core::slice::from_raw_parts(image.bytes().as_ptr(), image.len()) };
        let model = Box::new(Model::from_gguf_unverified(bytes).map_err(|e| format!("the model: {e}"))?);
        // SAFETY: as for the image: the box is owned by `Loaded` and outlives its console.
        let model_ref: &'static Model<'static> = unsafe { &*(model.as_ref() as *const Model<'static>) };
        let seq = model_ref.config.seq_len.min(MAX_CONTEXT);
        let words = IntState::arena_len(model_ref, seq);
        let mut arena = Vec::new();
        arena.try_reserve_exact(words).map_err(|_| too_large(words * 4))?;
        arena.resize(words, 0i32);
        let mut arena = arena.into_boxed_slice();
        // SAFETY: the arena is owned by `Loaded` too, borrowed only by its console's engine.
        let arena_ref: &'static mut [i32] =
            unsafe { core::slice::from_raw_parts_mut(arena.as_mut_ptr(), words) };
        let engine = IntegerEngine::new(model_ref, arena_ref, seq)
            .map_err(|e| format!("this model cannot run on the integer engine ({e}): convert it to q8"))?;
        // The old console goes before a new one borrows the knowledge; its prompt is ended.
        if self.loaded.take().is_some() {
            host::write(b"\r\n");
        }
        let io = Io;
        // SAFETY: the knowledge and its store live as long as the session, and the console
        // just dropped was their only borrower.
        let mut console = Console::with_knowledge(io, engine, BOARD, unsafe { &mut *self.knowledge });
        if let Some(store) = self.store {
            console = console.saving_to(unsafe { &mut *store } as &mut dyn KnowledgeStore);
        }
        console.set_echo(true);
        let _ = console.banner();
        let _ = embedded_io::Write::flush(&mut Io);
        self.loaded = Some(Loaded { console, model, _arena: arena, image });
        Ok(())
    }

    /// Types `bytes` into the console; `Flow::Quit` after `quit`.
    pub fn feed(&mut self, bytes: &[u8]) -> Flow {
        let Some(loaded) = self.loaded.as_mut() else {
            host::write(b"error: no model is loaded: reload the page\r\n");
            return Flow::Continue;
        };
        let mut flow = Flow::Continue;
        for &b in bytes {
            if let Ok(Flow::Quit) = loaded.console.feed(b) {
                flow = Flow::Quit;
                break;
            }
        }
        let _ = embedded_io::Write::flush(&mut Io);
        flow
    }

    /// The console's `stats json` line, without showing it.
    pub fn stats_json(&mut self) -> Vec<u8> {
        let Some(loaded) = self.loaded.as_mut() else { return Vec::new() };
        let _ = embedded_io::Write::flush(&mut Io);
        OUTPUT.with_borrow_mut(|o| o.capture = Some(Vec::new()));
        for &b in b"stats json\r" {
            let _ = loaded.console.feed(b);
        }
        let out = OUTPUT.with_borrow_mut(|o| o.capture.take()).unwrap_or_default();
        // Only the JSON line: the console also echoed the command and printed its prompt.
        out.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .find(|l| l.starts_with(b"{"))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }
}

impl Session {
    /// How the current model fits each ESP32 (the native `info` plan), as one JSON object.
    pub fn plan_json(&self) -> String {
        let Some(loaded) = self.loaded.as_ref() else { return String::new() };
        let (model, image_len) = (&loaded.model, loaded.image.len());
        let chips: Vec<String> = plan(model, image_len)
            .iter()
            .map(|f| {
                format!(
                    r#"{{"chip":"{}","data_ram":{},"arena_budget":{},"image_budget":{},"fpu":{},"path":"{}","arena_full":{},"max_context":{},"flash_ok":{},"fits":{}}}"#,
                    f.chip.name,
                    f.chip.data_ram,
                    f.chip.arena_budget(),
                    f.chip.image_budget(),
                    f.chip.has_fpu,
                    if f.integer { "integer" } else { model.precision.name() },
                    f.arena_full,
                    f.max_context,
                    f.flash_ok,
                    f.fits()
                )
            })
            .collect();
        format!(
            r#"{{"image":{image_len},"context":{},"parameters":{},"chips":[{}]}}"#,
            model.config.seq_len,
            model.config.n_params(),
            chips.join(",")
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The console first: it borrows the knowledge and the store.
        self.loaded = None;
        // SAFETY: both came from `Box::into_raw` in `start`, and nothing borrows them now.
        unsafe {
            drop(Box::from_raw(self.knowledge));
            if let Some(store) = self.store {
                drop(Box::from_raw(store));
            }
        }
    }
}

fn too_large(bytes: usize) -> String {
    format!(
        "the model needs {} MiB more than this browser gives the page: choose a smaller model",
        bytes.div_ceil(1 << 20)
    )
}

/// The one session of this module instance (WebAssembly here is single-threaded).
struct Global {
    session: Option<Session>,
    buffer: Vec<u8>,
}

static mut GLOBAL: Global = Global { session: None, buffer: Vec::new() };

fn global() -> &'static mut Global {
    // SAFETY: a wasm32-unknown-unknown instance runs one thread, and no export re-enters
    // another (the host's imports never call back).
    unsafe { &mut *core::ptr::addr_of_mut!(GLOBAL) }
}

/// The staging buffer, resized to `len` bytes; null when there is no memory for it.
#[no_mangle]
pub extern "C" fn rv_buffer(len: usize) -> *mut u8 {
    let g = global();
    if len > g.buffer.len() && g.buffer.try_reserve_exact(len - g.buffer.len()).is_err() {
        return core::ptr::null_mut();
    }
    g.buffer.resize(len, 0);
    g.buffer.as_mut_ptr()
}

/// Starts the console on the built-in model with the saved knowledge image in the buffer's
/// first `len` bytes.
#[no_mangle]
pub extern "C" fn rv_start(len: usize) -> i32 {
    let g = global();
    let saved = g.buffer.get(..len).unwrap_or_default();
    g.session = Some(Session::start(saved));
    0
}

/// Switches to the model in the buffer's first `model_len` bytes (with a llama2.c tokenizer
/// in the next `tok_len`, or 0).
#[no_mangle]
pub extern "C" fn rv_load(model_len: usize, tok_len: usize) -> i32 {
    let g = global();
    let Some(session) = g.session.as_mut() else { return 1 };
    let model = g.buffer.get(..model_len).unwrap_or_default();
    let tok = g.buffer.get(model_len..model_len.saturating_add(tok_len)).filter(|t| !t.is_empty());
    let result = model_image(model, tok).and_then(|image| {
        // The file's copy is no longer needed: free it before the arena is allocated.
        g.buffer = Vec::new();
        session.switch(image)
    });
    g.buffer = Vec::new();
    match result {
        Ok(()) => 0,
        Err(e) => {
            host::write(format!("\r\nerror: {e}\r\n> ").as_bytes());
            1
        }
    }
}

/// Types the buffer's first `len` bytes into the console: 1 after `quit`, else 0.
#[no_mangle]
pub extern "C" fn rv_feed(len: usize) -> i32 {
    let g = global();
    let Some(session) = g.session.as_mut() else { return 0 };
    let bytes = core::mem::take(&mut g.buffer);
    let flow = session.feed(bytes.get(..len).unwrap_or_default());
    g.buffer = bytes;
    i32::from(flow == Flow::Quit)
}

/// `stats json` into the buffer; its length.
#[no_mangle]
pub extern "C" fn rv_stats() -> usize {
    let g = global();
    let Some(session) = g.session.as_mut() else { return 0 };
    g.buffer = session.stats_json();
    g.buffer.len()
}

/// The model's fit on each ESP32 ([`Session::plan_json`]) into the buffer; its length.
#[no_mangle]
pub extern "C" fn rv_plan() -> usize {
    let g = global();
    let Some(session) = g.session.as_ref() else { return 0 };
    g.buffer = session.plan_json().into_bytes();
    g.buffer.len()
}

#[cfg(test)]
mod tests;
