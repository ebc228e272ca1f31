//! A global allocator that survives absurd up-front reservations.
//!
//! kafka-protocol 0.18.0 sizes `Vec::with_capacity` from array lengths read
//! off the wire before decoding a single element (upstream PRs #152, #161 and
//! #200 propose the fix; no release has it). A few bytes claiming 2^31
//! elements would ask for over 100 GiB; the system allocator refuses, and
//! Rust aborts the process: one bad frame would kill the broker.
//!
//! This allocator serves requests of at least [`LAZY_THRESHOLD_BYTES`] with
//! `mmap(MAP_NORESERVE)`: address space without committed memory. The decoder
//! then fails cleanly on the next missing element and the mapping is
//! released, never having been touched. Everything smaller goes to the system
//! allocator unchanged. Install it in each binary with
//! `#[global_allocator] static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// No legitimate allocation in sluice comes near this: requests are capped
/// by `socket.request.max.bytes` (100 MiB by default).
pub const LAZY_THRESHOLD_BYTES: usize = 1 << 30;

/// Page alignment that `mmap` guarantees.
const PAGE_BYTES: usize = 4096;

pub struct LazyHugeAlloc;

fn lazy(layout: Layout) -> bool {
    layout.size() >= LAZY_THRESHOLD_BYTES && layout.align() <= PAGE_BYTES
}

// SAFETY: small requests are passed to `System` as they are; huge ones are
// page-aligned anonymous private mappings of exactly `layout.size()` bytes,
// unmapped with the same size, so every pointer is released the way it was
// obtained.
unsafe impl GlobalAlloc for LazyHugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !lazy(layout) {
            return unsafe { System.alloc(layout) };
        }
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if pointer == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            pointer.cast()
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if lazy(layout) {
            unsafe { libc::munmap(pointer.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(pointer, layout) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !lazy(layout) && !lazy(new_layout) {
            return unsafe { System.realloc(pointer, layout, new_size) };
        }
        let fresh = unsafe { self.alloc(new_layout) };
        if !fresh.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(pointer, fresh, layout.size().min(new_size));
                self.dealloc(pointer, layout);
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_untouched_reservation_succeeds_and_is_released() {
        let layout = Layout::from_size_align(200 << 30, 8).unwrap();
        unsafe {
            let pointer = LazyHugeAlloc.alloc(layout);
            assert!(
                !pointer.is_null(),
                "200 GiB of address space is available lazily"
            );
            pointer.write(7);
            assert_eq!(pointer.read(), 7);
            LazyHugeAlloc.dealloc(pointer, layout);
        }
    }
}
