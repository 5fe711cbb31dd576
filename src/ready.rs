//! Back-pressure at the memory limit: [`Ready`], the future of
//! [`AdaptiveAllocator::ready`], which waits until an allocation would fit under the
//! allocator's watermark.
//!
//! Owns: the future's state (its key in the allocator's waiter registry, whether it has
//! reclaimed). May import: `allocator` (the condition, the registry, the reclaim) and
//! `waiters`. Needs no runtime: it is a plain [`Future`] woken through [`std::task::Waker`],
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

impl<'a> Ready<'a> {
    pub(crate) fn new(alloc: &'a AdaptiveAllocator, bytes: usize) -> Self {
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
