//! A counting global allocator: every server in this binary runs under it,
//! so the runner can report heap allocations per message for each target
//! (the "no allocation per message in steady-state echo").
//!
//! It also keeps the live heap (blocks and bytes allocated and not yet
//! freed), which the memory scenario reports per connection next to the
//! resident set. The cost is a few relaxed atomic adds per call, the same
//! for every target.
//!
//! Underneath is mimalloc, the allocator the `wharf` binary ships with, so
//! that every server is measured on the allocator a deployment would use.
//! With glibc's malloc, each of the two 128-byte-aligned blocks tokio takes
//! per connection (its task and its socket registration) leaves a hole
//! behind, and the resident set per idle connection is ~450 B above the
//! live heap; with mimalloc it is within ~40 B. mimalloc 2, built (see
//! `.cargo/config.toml`) to commit arena memory as it is used: committed
//! eagerly, the resident set grows in steps of about 1 MiB (~100 B per
//! connection at 10,000 connections).

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as Inner;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

/// mimalloc, counting allocations and bytes requested.
#[derive(Debug)]
pub(crate) struct Counting;

/// The counters at one instant.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub(crate) struct Totals {
    /// Allocations (and reallocations) so far.
    pub(crate) allocs: u64,
    /// Bytes requested by them.
    pub(crate) bytes: u64,
    /// Blocks allocated and not freed.
    pub(crate) live_blocks: i64,
    /// Bytes allocated and not freed.
    pub(crate) live_bytes: i64,
}

/// This process's counters now.
pub(crate) fn totals() -> Totals {
    Totals {
        allocs: ALLOCS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        live_blocks: LIVE_BLOCKS.load(Ordering::Relaxed),
        live_bytes: LIVE_BYTES.load(Ordering::Relaxed),
    }
}

fn count(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    LIVE_BYTES.fetch_add(size as i64, Ordering::Relaxed);
}

fn uncount(size: usize) {
    LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    LIVE_BYTES.fetch_sub(size as i64, Ordering::Relaxed);
}

// SAFETY: every method forwards its arguments unchanged to mimalloc, which
// upholds the `GlobalAlloc` contract; counting touches only atomics and never
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { Inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { Inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        uncount(layout.size());
        // SAFETY: `ptr` was allocated by mimalloc with `layout` (every
        // allocation goes through this type to mimalloc).
        unsafe { Inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        uncount(layout.size());
        count(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, unchanged.
        unsafe { Inner.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocations() {
        let t0 = totals();
        let v: Vec<u8> = Vec::with_capacity(1000);
        std::hint::black_box(&v);
        let t1 = totals();
        // Other tests may allocate concurrently: at least ours was counted.
        assert!(t1.allocs > t0.allocs);
        assert!(t1.bytes >= t0.bytes + 1000);
    }
}
