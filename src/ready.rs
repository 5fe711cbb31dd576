//! Back-pressure at the memory limit: [`Ready`], the future of
//! [`AdaptiveAllocator::ready`], which waits until an allocation would fit under the
//! allocator's watermark, and the public entry points `ready` and `waiting_for_memory`
//! (defined here, next to the future, as `buf` defines `allocate`).
//!
//! Owns: the future's state (its key in the allocator's waiter registry, whether it has
//! reclaimed). May import: `allocator` (the condition, the registry, the reclaim; the arrow
//! runs one way: the allocator knows nothing of this future). Needs no runtime: it is a plain [`Future`] woken through [`std::task::Waker`],
//! so it works under tokio or any other executor. The wake-up protocol is in module
//! `waiters`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::allocator::AdaptiveAllocator;

/// A future that resolves when an allocation of a given size would fit under the
/// allocator's watermark; see [`AdaptiveAllocator::ready`] for the exact condition.
///
/// Dropping it before it resolves leaves nothing registered
/// ([`AdaptiveAllocator::waiting_for_memory`] counts the futures registered).
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Ready<'a> {
    alloc: &'a AdaptiveAllocator,
    bytes: usize,
    /// Its key in the allocator's waiter registry while registered.
    key: Option<usize>,
    /// Whether it has made room once (as an allocation at the limit does).
    reclaimed: bool,
}

impl AdaptiveAllocator {
    /// A future that resolves when an allocation of `bytes` would fit under the allocator's
    /// watermark: when the bytes held from the system, less those idle in the central
    /// cache, plus `bytes` (rounded up as a region of its own is: to 16 bytes, at least 32;
    /// to the page from 1 MiB when mapped), are at most
    /// [`ready_watermark`](crate::Builder::ready_watermark) (by default `max_memory`). A
    /// server near the limit awaits it before it allocates a read buffer, and so waits
    /// instead of failing with [`AllocError::MemoryLimit`](crate::AllocError::MemoryLimit).
    ///
    /// * An allocator without `max_memory` is always ready, and so is a request larger than
    ///   the watermark (it can never fit: the allocation that follows reports the error).
    /// * Before it waits, it frees idle memory everywhere once (the central cache and every
    ///   thread's empty chunks), as an allocation at the limit does.
    /// * While it waits it is woken whenever held memory goes down: a chunk or an unpooled
    ///   buffer given back to the system, or a chunk entering the central cache. A chunk
    ///   emptied and kept by its thread's magazine (within `max_thread_idle_bytes`) is not
    ///   counted as free and wakes nobody; the idle sweep or `trim()` gives it back.
    /// * It is a hint, not a reservation: another task may take the room first, so the
    ///   allocation after it can still fail (and a request needs a whole chunk when its
    ///   thread has none with room). Every waiter is woken and re-checks its own condition.
    /// * Dropping the future before it resolves leaves nothing registered.
    ///
    /// It needs no runtime: any executor drives it.
    ///
    /// ```
    /// use adaptive_pool::AdaptiveAllocator;
    /// use std::future::Future;
    /// use std::pin::pin;
    /// use std::task::{Context, Poll, Waker};
    ///
    /// let pool = AdaptiveAllocator::builder().max_memory(4 << 20).build()?;
    /// let big = pool.allocate(3 << 20); // held: 3 MiB, unpooled
    /// let mut cx = Context::from_waker(Waker::noop());
    /// {
    ///     let mut ready = pin!(pool.ready(2 << 20));
    ///     assert!(ready.as_mut().poll(&mut cx).is_pending()); // 3 + 2 > 4 MiB
    ///     assert_eq!(pool.waiting_for_memory(), 1);
    ///     drop(big); // woken here
    ///     assert!(ready.as_mut().poll(&mut cx).is_ready());
    /// }
    /// assert_eq!(pool.waiting_for_memory(), 0);
    /// # Ok::<(), adaptive_pool::ConfigError>(())
    /// ```
    pub fn ready(&self, bytes: usize) -> Ready<'_> {
        Ready::new(self, bytes)
    }

    /// How many [`ready`](Self::ready) futures are registered, waiting for memory now.
    pub fn waiting_for_memory(&self) -> usize {
        self.memory_waiters().registered()
    }
}

impl<'a> Ready<'a> {
    fn new(alloc: &'a AdaptiveAllocator, bytes: usize) -> Self {
        Ready {
            alloc,
            bytes,
            key: None,
            reclaimed: false,
        }
    }

    fn done(&mut self) -> Poll<()> {
        self.alloc.memory_waiters().deregister(&mut self.key);
        Poll::Ready(())
    }
}

impl Future for Ready<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.alloc.fits_under_watermark(this.bytes) {
            return this.done();
        }
        if !this.reclaimed {
            // What an allocation at the limit does before it gives up: free idle memory
            // everywhere (the cache, every magazine's empty chunks). Once per future.
            this.reclaimed = true;
            this.alloc.reclaim_for_waiter();
            if this.alloc.fits_under_watermark(this.bytes) {
                return this.done();
            }
        }
        // Register, then re-check: a release that came before the registration is seen by
        // the re-check, one after it wakes us (module `waiters`).
        this.alloc
            .memory_waiters()
            .register(&mut this.key, cx.waker());
        if this.alloc.fits_under_watermark(this.bytes) {
            return this.done();
        }
        Poll::Pending
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        self.alloc.memory_waiters().deregister(&mut self.key);
    }
}
