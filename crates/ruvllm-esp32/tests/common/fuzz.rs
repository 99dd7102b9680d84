//! What the fuzz targets share: a global allocator that refuses any allocation over `MAX`
//! bytes (the test then aborts, so a parser sizing memory from hostile input fails loudly),
//! and the case count from env `FUZZ_CASES` (default 256). Included by path, also from the
//! CLI's tests: `#[path = ".../common/fuzz.rs"] mod fuzz;`, then
//! `#[global_allocator] static ALLOC: fuzz::Capped<{ 64 << 20 }> = fuzz::Capped;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};

pub struct Capped<const MAX: usize>;

unsafe impl<const MAX: usize> GlobalAlloc for Capped<MAX> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

pub fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}
