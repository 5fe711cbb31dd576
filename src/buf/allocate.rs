//! The entry points that hand out buffers: [`AdaptiveAllocator::allocate`], `try_allocate`
//! and `allocate_with`. They live with the buffer they make (module `buf`), so the allocator
//! hands out regions and knows nothing of buffers; their slow paths sample allocations (the
//! live-buffer record) and `allocate_with` holds the allocator's `InitGuard` while the
//! caller's initialiser runs (outside every critical section of the pool).
//!
//! Owns: nothing but these methods. May import: `allocator` (regions, the init guard),
//! `error`, and the parent.

use std::panic::Location;

use crate::allocator::{AdaptiveAllocator, InitGuard};
use crate::error::{AllocError, InitError};

use super::PooledBuf;

/// The allocation entry points: they live here, next to the buffer they make, so that the
/// allocator hands out regions and knows nothing of buffers.
impl AdaptiveAllocator {
    /// Allocates a buffer with room for at least `capacity` bytes, empty (`len() == 0`).
    ///
    /// # Panics
    /// If the allocation fails (see [`try_allocate`](Self::try_allocate)), with the error's
    /// message, as `Vec` does.
    // Always inlined: the fast path is a few dozen instructions, the rest is out of line, and
    // a call (with its saved registers) would add a fifth to an allocate + drop.
    #[inline(always)]
    #[track_caller]
    pub fn allocate(&self, capacity: usize) -> PooledBuf {
        // The fast path returns the buffer itself, not a `Result` the caller must unpack, and
        // every other way out is a call in tail position, so it saves no registers.
        match self.region_fast(capacity) {
            Some(region) => {
                debug_assert!(
                    !region.needs_check(),
                    "the fast path answers checked regions"
                );
                PooledBuf::from_region(region)
            }
            None => self.allocate_slow(capacity),
        }
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn allocate_slow(&self, capacity: usize) -> PooledBuf {
        match self.try_allocate_slow(capacity) {
            Ok(buf) => buf,
            Err(e) => panic!("adaptive-pool: allocating a buffer of {capacity} bytes failed: {e}"),
        }
    }

    /// Allocates a buffer with room for at least `capacity` bytes, empty.
    ///
    /// Capacity 0 is valid. Errors: [`AllocError::CapacityOverflow`] within 1 MiB of
    /// `isize::MAX` or above,
    /// [`AllocError::MemoryLimit`] past `max_memory`, [`AllocError::System`] if the system
    /// refuses memory; in every case nothing is left allocated.
    #[inline(always)]
    #[track_caller]
    pub fn try_allocate(&self, capacity: usize) -> Result<PooledBuf, AllocError> {
        match self.region_fast(capacity) {
            Some(region) => {
                debug_assert!(
                    !region.needs_check(),
                    "the fast path answers checked regions"
                );
                Ok(PooledBuf::from_region(region))
            }
            None => self.try_allocate_slow(capacity),
        }
    }

    /// Everything but the fast path, and the sampling of an allocator that samples (whose
    /// allocations all come here: its magazine is never the fast path's cached one).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn try_allocate_slow(&self, capacity: usize) -> Result<PooledBuf, AllocError> {
        let mut buf = PooledBuf::from_region(self.region_slow(capacity)?);
        if let Some(t) = self.tracker() {
            if let Some(id) = t.tick() {
                buf.start_sample(t, id, Location::caller());
            }
        }
        Ok(buf)
    }

    /// Allocates a buffer and runs `init` on it. If the allocation fails, or `init` returns
    /// an error or panics, the buffer is returned and every chunk the calling thread acquired
    /// meanwhile (for the buffer, or for its growth inside `init`) that is now empty is given
    /// back, so `stats()` reads as before (the cumulative `chunk_allocations` and
    /// `chunk_releases` counters record both events); a panic then continues to unwind.
    ///
    /// `init` may use the allocator freely (allocate, grow, `trim()`, other threads too):
    /// the rollback finds the chunks to give back by age in the thread's magazine, so a chunk
    /// that `init` caused to be freed is simply not among them.
    ///
    /// ```
    /// use adaptive_pool::{AdaptiveAllocator, InitError};
    /// use std::io::Read;
    ///
    /// let pool = AdaptiveAllocator::new();
    /// let mut source: &[u8] = b"payload";
    /// let buf = pool.allocate_with(64, |buf| {
    ///     let mut tmp = [0u8; 64];
    ///     let n = source.read(&mut tmp)?;
    ///     buf.extend_from_slice(&tmp[..n]);
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// assert_eq!(&buf[..], b"payload");
    ///
    /// let before = pool.stats();
    /// let failed = pool.allocate_with(64, |_| Err("no data"));
    /// assert_eq!(failed.unwrap_err(), InitError::Init("no data"));
    /// assert_eq!(pool.stats().live_buffers, before.live_buffers);
    /// # Ok::<(), InitError<std::io::Error>>(())
    /// ```
    #[track_caller]
    pub fn allocate_with<E, F>(&self, capacity: usize, init: F) -> Result<PooledBuf, InitError<E>>
    where
        F: FnOnce(&mut PooledBuf) -> Result<(), E>,
    {
        let mut guard = InitGuard::new(self);
        let buf = guard.hold(self.try_allocate(capacity)?);
        match init(buf) {
            Ok(()) => Ok(guard.commit()),
            // Dropping the guard returns the buffer and rolls back.
            Err(e) => Err(InitError::Init(e)),
        }
    }
}
