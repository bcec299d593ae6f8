//! A counting global allocator: the most heap bytes one thread held at once while it ran a
//! reader, so that an input which makes a reader allocate far beyond its size is caught.
//!
//! Counts are per thread (each fuzz target runs on its own thread while other tests run
//! beside it). A request larger than [`REFUSED_ABOVE`] is refused outright: a reader that asks
//! for that much from a small file has already failed, and serving it could exhaust the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// No reader may ask for this much at once from the small files the fuzzer writes.
const REFUSED_ABOVE: usize = 1 << 30;

pub struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn record(delta: isize) {
    // `try_with`: the thread-locals may already be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > REFUSED_ABOVE {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        record(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > REFUSED_ABOVE {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            record(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Starts measuring on this thread: the peak becomes what it holds now.
pub fn reset_peak() {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
}

/// Bytes above the level at the last [`reset_peak`] this thread held at its most.
pub fn peak_since_reset(base: isize) -> usize {
    (PEAK.with(Cell::get) - base).max(0) as usize
}

/// Bytes this thread holds now (what a later peak is measured from).
pub fn live() -> isize {
    LIVE.with(Cell::get)
}
