//! Statistics: the counters every other room updates, and the [`Stats`] snapshot users read.
//!
//! Owns: [`Counters`] (one per allocator) and [`Shard`]s (one per magazine, one per thread
//! that releases the allocator's buffers without a magazine of it, plus one shared shard for
//! the rest). May import: `sync`, `error`, `waiters` (the counters hold the allocator's
//! registry of tasks waiting for memory, and notify it where held memory goes down).
//!
//! Invariants:
//! * Counters that change on slow paths only (chunk creation and release, caching, unpooled
//!   buffers) are plain shared atomics.
//! * `live_bytes` and `live_buffers` change on every allocation and release, so they are
//!   sharded: a magazine's owner thread updates its own cache-line-padded [`Shard`] with a
//!   relaxed load and a relaxed store (no read-modify-write, no contention); so does a thread
//!   that releases regions it does not own, in its own magazine's shard or its *release shard*
//!   for that allocator; only a release at thread exit or into a closed allocator pays a
//!   `fetch_add` on the shared shard. A shard may go negative; the sum is exact.
//! * A magazine's (or release) shard is folded into the shared shard under the registry lock
//!   when the magazine dies (the thread exits), so a snapshot never counts it twice or loses it.
//! * A snapshot is exact whenever no thread is allocating or releasing concurrently.

use std::fmt;
use std::sync::Arc;

use crate::error::AllocError;
use crate::sync::{AtomicI64, AtomicU64, AtomicUsize, Mutex, Ordering::*};
use crate::waiters::Waiters;

/// A snapshot of an allocator's statistics.
///
/// Cheap to take (one short lock to sum the per-thread shards) and exact when no other thread
/// is allocating or releasing at the same moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Bytes held from the system: every chunk (in use or cached) plus every unpooled buffer.
    /// Bounded by `max_memory`.
    pub allocated_bytes: usize,
    /// Bytes of idle chunks waiting in the central queue (part of `allocated_bytes`).
    /// Bounded by `max_cached_bytes`.
    pub cached_bytes: usize,
    /// Capacity of all live regions. Handles made by `split_to`/`split_off` share one region
    /// and count once; a frozen `Bytes` keeps its region live until its last clone drops.
    pub live_bytes: usize,
    /// Number of live regions (buffers), counted like `live_bytes`.
    pub live_buffers: usize,
    /// Chunks currently held from the system (in magazines or cached), not counting unpooled
    /// buffers.
    pub chunks: usize,
    /// Chunks ever allocated from the system.
    pub chunk_allocations: u64,
    /// Chunks ever given back to the system.
    pub chunk_releases: u64,
    /// Buffers ever served directly by the system because they were too large to pool.
    pub unpooled_allocations: u64,
    /// Per-thread magazines currently alive for this allocator. A magazine lives from its
    /// thread's first allocation until the thread exits (or the allocator is dropped).
    pub magazines: usize,
    /// Chunks of exited threads parked for other threads to adopt: they still hold live
    /// buffers, and come back when those do, as abandoned chunks would (see
    /// [`Builder::max_parked_chunks`](crate::Builder::max_parked_chunks)). Part of `chunks`.
    pub parked_chunks: usize,
    /// Bytes of address space mapped from the operating system for this allocator
    /// ([`MemorySource::Os`](crate::MemorySource::Os)): the spans chunks are carved from (a
    /// few kept empty and decommitted) and buffers mapped on their own. Address space, not
    /// resident memory: free slots of a span are decommitted (recently freed ones, within a
    /// budget of `max_cached_bytes` plus half the chunk bytes in use, at the next idle sweep
    /// or `trim()`). Zero with
    /// [`MemorySource::GlobalAllocator`](crate::MemorySource::GlobalAllocator).
    pub mapped_bytes: usize,
    /// Bytes of live regions that no live handle's view covers: what dropped handles of a
    /// split region (`split_to`/`split_off`, and the `Bytes` frozen from them) gave up while
    /// other handles of the region live on. Those bytes count in `live_bytes` (the region is
    /// live) but serve no buffer; they come back only when the region's last handle drops.
    /// A large figure means long-lived slices keep large regions alive (see
    /// [`PooledBuf::freeze_compact`](crate::PooledBuf::freeze_compact)). Not seen: a
    /// `Bytes::slice` narrowing a frozen view, and bytes skipped by `advance` on a handle
    /// (see `docs/TUNING.md`, "Spotting pinning"). Exact when threads are quiet; zero when
    /// no buffer is split.
    pub pinned_bytes: usize,
    /// Bytes the application freed that are kept resident for reuse beyond the cache, and go
    /// back to the system gradually as they age (see
    /// [`Builder::decay_time`](crate::Builder::decay_time)): the span slots of chunks given
    /// back (still committed), and the mappings of large buffers and large chunks given back.
    /// Not part of `allocated_bytes` (that memory is free from the pool's point of view, and
    /// an allocation may take it); part of the process's resident memory until it decays or
    /// `trim()` runs. Bounded by recent demand: with the chunks and large buffers the pool
    /// hands out, it stays within the peak of those over the last one to two decay times
    /// (when fresh memory is mapped past that, a step of what is kept goes back at once and
    /// the rest at the next decay tick), so it is what buffers held shortly before. Zero
    /// with `decay_time(0)` (but for the slots the eager policy keeps until the next sweep)
    /// and with [`MemorySource::GlobalAllocator`](crate::MemorySource::GlobalAllocator).
    pub retained_bytes: usize,
}

impl Stats {
    /// `true` when no buffer of this allocator is alive.
    pub fn is_quiet(&self) -> bool {
        self.live_buffers == 0 && self.live_bytes == 0
    }

    /// Bytes held from the system that back no live buffer: idle chunks (cached or current in
    /// a magazine) and free space inside chunks.
    pub fn overhead_bytes(&self) -> usize {
        self.allocated_bytes.saturating_sub(self.live_bytes)
    }
}

impl fmt::Display for Stats {
    /// A one-line summary naming what is still held, e.g. for a failing test's message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allocated {} B in {} chunks ({} B cached, {} parked), {} live buffers of {} B, \
             {} magazines; pinned {} B; chunks allocated/released {}/{}, unpooled {}, mapped {} B, \
             retained {} B",
            self.allocated_bytes,
            self.chunks,
            self.cached_bytes,
            self.parked_chunks,
            self.live_buffers,
            self.live_bytes,
            self.magazines,
            self.pinned_bytes,
            self.chunk_allocations,
            self.chunk_releases,
            self.unpooled_allocations,
            self.mapped_bytes,
            self.retained_bytes
        )
    }
}

/// Live-buffer counters of one magazine (or the shared shard), alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Shard {
    live_bytes: AtomicI64,
    live_buffers: AtomicI64,
    /// This shard's part of `Stats::pinned_bytes`: what handles of shared regions pinned
    /// and unpinned on its thread (a region pinned on one thread may be unpinned on another,
    /// so one shard may be negative; the sum is exact).
    pinned_bytes: AtomicI64,
}

impl Shard {
    /// Adds to the counters from the shard's single writer: a relaxed load and store each, so
    /// the owner's fast path carries no read-modify-write.
    ///
    /// Only the thread that owns this shard may call it (the shared shard uses
    /// [`Shard::add_shared`]).
    #[inline(always)]
    pub(crate) fn add_owned(&self, bytes: i64, buffers: i64) {
        let b = self.live_bytes.load(Relaxed);
        self.live_bytes.store(b.wrapping_add(bytes), Relaxed);
        let n = self.live_buffers.load(Relaxed);
        self.live_buffers.store(n.wrapping_add(buffers), Relaxed);
    }

    /// Adds to the counters from any thread.
    #[inline]
    pub(crate) fn add_shared(&self, bytes: i64, buffers: i64) {
        self.live_bytes.fetch_add(bytes, Relaxed);
        self.live_buffers.fetch_add(buffers, Relaxed);
    }

    /// Adds to the pinned bytes from the shard's single writer (as [`Shard::add_owned`]).
    #[inline(always)]
    pub(crate) fn add_pinned_owned(&self, bytes: i64) {
        let b = self.pinned_bytes.load(Relaxed);
        self.pinned_bytes.store(b.wrapping_add(bytes), Relaxed);
    }

    /// Adds to the pinned bytes from any thread.
    #[inline]
    pub(crate) fn add_pinned_shared(&self, bytes: i64) {
        self.pinned_bytes.fetch_add(bytes, Relaxed);
    }

    /// (live bytes, live buffers, pinned bytes).
    fn read(&self) -> (i64, i64, i64) {
        (
            self.live_bytes.load(Relaxed),
            self.live_buffers.load(Relaxed),
            self.pinned_bytes.load(Relaxed),
        )
    }
}

/// All counters of one allocator.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    allocated_bytes: AtomicUsize,
    pub(crate) cached_bytes: AtomicUsize,
    chunks: AtomicUsize,
    chunk_allocations: AtomicU64,
    chunk_releases: AtomicU64,
    unpooled_allocations: AtomicU64,
    /// Live counts changed by threads that are not a region's owner.
    pub(crate) shared: Shard,
    /// Shards of the living magazines, and of the threads that release this allocator's
    /// buffers without a magazine of it.
    shards: Mutex<Shards>,
    /// Tasks waiting for memory under the watermark (back-pressure), notified where held
    /// memory goes down: here in [`Counters::unreserve`], and when a chunk enters the
    /// central cache (`Shared::recycle`).
    pub(crate) waiters: Waiters,
}

#[derive(Debug, Default)]
struct Shards {
    magazines: Vec<Arc<Shard>>,
    releasers: Vec<Arc<Shard>>,
}

impl Counters {
    /// Reserves `bytes` under `limit` before asking the system for them.
    pub(crate) fn reserve(&self, bytes: usize, limit: usize) -> Result<(), AllocError> {
        let mut cur = self.allocated_bytes.load(Relaxed);
        loop {
            let next = match cur.checked_add(bytes) {
                Some(n) if n <= limit => n,
                _ => {
                    return Err(AllocError::MemoryLimit {
                        requested: bytes,
                        limit,
                    })
                }
            };
            match self
                .allocated_bytes
                .compare_exchange_weak(cur, next, Relaxed, Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives back a reservation made by [`Counters::reserve`].
    pub(crate) fn unreserve(&self, bytes: usize) {
        self.allocated_bytes.fetch_sub(bytes, Relaxed);
        self.waiters.notify();
    }

    /// Bytes held from the system and not idle in the central cache: what back-pressure
    /// compares with its watermark (a cached chunk is as good as free, since an allocation
    /// at the limit evicts the cache first). Two relaxed loads; callers that must not miss a
    /// release read it after the waiter registry's fence.
    pub(crate) fn held_beyond_cache(&self) -> usize {
        let held = self.allocated_bytes.load(Relaxed);
        held.saturating_sub(self.cached_bytes.load(Relaxed))
    }

    /// A chunk (`unpooled == false`) or unpooled buffer was taken from the system.
    pub(crate) fn on_system_alloc(&self, unpooled: bool) {
        if unpooled {
            self.unpooled_allocations.fetch_add(1, Relaxed);
        } else {
            self.chunks.fetch_add(1, Relaxed);
            self.chunk_allocations.fetch_add(1, Relaxed);
        }
    }

    /// A chunk or unpooled buffer of `bytes` went back to the system.
    pub(crate) fn on_system_free(&self, bytes: usize, unpooled: bool) {
        if !unpooled {
            self.chunks.fetch_sub(1, Relaxed);
            self.chunk_releases.fetch_add(1, Relaxed);
        }
        self.unreserve(bytes);
    }

    /// Registers a new magazine's shard.
    pub(crate) fn register(&self, shard: Arc<Shard>) {
        self.shards.with(|v| v.magazines.push(shard));
    }

    /// Registers the shard of a thread that releases this allocator's buffers without having
    /// a magazine of it (a consumer): its releases are counted there with plain loads and
    /// stores instead of two atomic adds on the shared shard's line. Not counted in
    /// `Stats::magazines`.
    pub(crate) fn register_releaser(&self, shard: Arc<Shard>) {
        self.shards.with(|v| v.releasers.push(shard));
    }

    /// Folds a dying magazine's (or releasing thread's) shard into the shared shard and
    /// forgets it.
    pub(crate) fn unregister(&self, shard: &Arc<Shard>) {
        self.shards.with(|v| {
            for list in [&mut v.magazines, &mut v.releasers] {
                if let Some(i) = list.iter().position(|s| Arc::ptr_eq(s, shard)) {
                    let s = list.swap_remove(i);
                    let (bytes, buffers, pinned) = s.read();
                    self.shared.add_shared(bytes, buffers);
                    self.shared.add_pinned_shared(pinned);
                    return;
                }
            }
        });
    }

    /// Takes a snapshot.
    pub(crate) fn snapshot(&self) -> Stats {
        // The shared shard is read under the same lock as the magazines' shards: a dying
        // magazine is folded into it under that lock, so the snapshot sees it exactly once.
        let (bytes, buffers, pinned, magazines) = self.shards.with(|v| {
            let (mut b, mut n, mut p) = self.shared.read();
            for s in v.magazines.iter().chain(&v.releasers) {
                let (sb, sn, sp) = s.read();
                b = b.wrapping_add(sb);
                n = n.wrapping_add(sn);
                p = p.wrapping_add(sp);
            }
            (b, n, p, v.magazines.len())
        });
        Stats {
            allocated_bytes: self.allocated_bytes.load(Relaxed),
            cached_bytes: self.cached_bytes.load(Relaxed),
            live_bytes: bytes.max(0) as usize,
            live_buffers: buffers.max(0) as usize,
            chunks: self.chunks.load(Relaxed),
            chunk_allocations: self.chunk_allocations.load(Relaxed),
            chunk_releases: self.chunk_releases.load(Relaxed),
            unpooled_allocations: self.unpooled_allocations.load(Relaxed),
            magazines,
            parked_chunks: 0,
            mapped_bytes: 0,
            pinned_bytes: pinned.max(0) as usize,
            retained_bytes: 0,
        }
    }
}
