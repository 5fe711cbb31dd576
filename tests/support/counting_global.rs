//! A global allocator for test binaries: forwards to `System`, counts the bytes currently
//! allocated (allocations minus deallocations, reallocations by their difference), and
//! refuses the allocations its `refuse` function names (returning null, which `GlobalAlloc`
//! allows). A test binary includes this file with `#[path]` and installs its own static:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: Counting = Counting::new(|_| false); // refuses nothing
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::SeqCst};

/// The counting (and, on demand, failing) global allocator.
pub struct Counting {
    refuse: fn(Layout) -> bool,
    current: AtomicIsize,
}

impl Counting {
    /// Counts every allocation; refuses `alloc` and `alloc_zeroed` calls for which `refuse`
    /// answers `true` (reallocations are never refused).
    pub const fn new(refuse: fn(Layout) -> bool) -> Self {
        Counting {
            refuse,
            current: AtomicIsize::new(0),
        }
    }

    /// Bytes allocated now.
    pub fn current(&self) -> isize {
        self.current.load(SeqCst)
    }

    fn counted(&self, p: *mut u8, bytes: isize) -> *mut u8 {
        if !p.is_null() {
            self.current.fetch_add(bytes, SeqCst);
        }
        p
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments, or returns null (a
// refusal, which `GlobalAlloc` allows), and only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if (self.refuse)(layout) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as received.
        self.counted(unsafe { System.alloc(layout) }, layout.size() as isize)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if (self.refuse)(layout) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as received.
        self.counted(
            unsafe { System.alloc_zeroed(layout) },
            layout.size() as isize,
        )
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        self.current.fetch_sub(layout.size() as isize, SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        self.counted(p, new_size as isize - layout.size() as isize)
    }
}
