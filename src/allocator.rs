//! The allocator: [`AdaptiveAllocator`], [`global()`], routing between pooled and unpooled
//! buffers, the memory limit, `trim()`, and the rollback of `allocate_with`.
//!
//! Owns: the shared state of one allocator ([`Shared`]: settings, central queue, counters,
//! life-cycle flags) and the release routing of a region (owner thread or remote). May import:
//! `magazine`, `central`, `chunk`, `config`, `stats`, `error`, `size_class`, `sync`.
//!
//! The data path: `allocate` → the thread's magazine → chunk carve → `PooledBuf`;
//! `drop` → [`release_region`] → the chunk's local free list (owner thread) or its remote
//! stack (any other thread) → when the chunk is fully free and not in use → central queue or
//! system.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::central::Central;
use crate::chunk::{ChunkPtr, Home, RemoteFree};
use crate::config::{Builder, Settings};
use crate::error::AllocError;
use crate::magazine::{self, ChunkSource};
use crate::size_class::SizeClass;
use crate::stats::{Counters, Stats};
use crate::sync::{self, fence, AtomicBool, AtomicU64, AtomicUsize, Ordering::*};

/// An adaptive pooling allocator of byte buffers.
///
/// A cheap, cloneable handle (`Send + Sync`): clones share one pool. Each thread that
/// allocates gets its own magazine of chunks, found in O(1), so the allocation fast path takes
/// no lock and no atomic read-modify-write. Buffers may be dropped on any thread.
///
/// ```
/// use adaptive_pool::AdaptiveAllocator;
/// use bytes::BufMut;
///
/// let pool = AdaptiveAllocator::new();
/// let mut buf = pool.allocate(1024);
/// buf.put_slice(b"hello ");
/// buf.put_u32(42);
/// let frame = buf.freeze(); // zero-copy into `bytes::Bytes`
/// assert_eq!(&frame[..6], b"hello ");
/// assert_eq!(pool.stats().live_buffers, 1);
/// drop(frame);
/// assert_eq!(pool.stats().live_buffers, 0);
/// ```
pub struct AdaptiveAllocator {
    shared: Arc<Shared>,
}

/// A region carved for one buffer, handed over whole to the caller, who wraps it (module
/// `buf`) or gives it back with [`release_region`]. The allocator knows nothing of buffers:
/// this is the one thing it hands out.
#[derive(Debug)]
#[must_use = "a region that is neither wrapped nor released leaks"]
pub(crate) struct Region {
    pub(crate) chunk: ChunkPtr,
    pub(crate) idx: u32,
    pub(crate) cap: usize,
}

/// The state one allocator's handles, magazines and chunks share.
pub(crate) struct Shared {
    id: usize,
    settings: Settings,
    central: Central,
    counters: Counters,
    /// Number of `AdaptiveAllocator` handles alive.
    handles: AtomicUsize,
    /// Set when the last handle drops: chunks are no longer cached.
    closed: AtomicBool,
    trim_epoch: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Allocator ids index the per-thread registries. The lowest free id is reused, so
/// registries stay small; the set of ids in use is a fixed bitmap, so the crate keeps no
/// process-wide heap memory. A process-wide std lock, taken only when an allocator is created
/// or destroyed; it is not part of any protocol the loom models check.
static IDS: std::sync::Mutex<[u64; ID_WORDS]> = std::sync::Mutex::new([0; ID_WORDS]);
const ID_WORDS: usize = 16;
/// Ids past the bitmap (more than 1,024 allocators alive at once) are never reused.
static OVERFLOW_IDS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(ID_WORDS * 64);

fn take_id() -> usize {
    let mut used = IDS.lock().unwrap_or_else(|e| e.into_inner());
    for (w, word) in used.iter_mut().enumerate() {
        if *word != u64::MAX {
            let bit = (!*word).trailing_zeros() as usize;
            *word |= 1 << bit;
            return w * 64 + bit;
        }
    }
    OVERFLOW_IDS.fetch_add(1, Relaxed)
}

fn give_id(id: usize) {
    if id < ID_WORDS * 64 {
        IDS.lock().unwrap_or_else(|e| e.into_inner())[id / 64] &= !(1 << (id % 64));
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Nothing refers to this allocator any more: no handle, no magazine, no chunk in use.
        // Only cached chunks can remain (their headers refer to us only weakly in effect,
        // since the close path drains them); free any that are left.
        let mut idle = Vec::new();
        self.central.drain(&self.counters, &mut idle);
        for c in idle {
            // SAFETY: drained from the queue, so held exclusively, with nothing live.
            unsafe { c.free_to_system() };
        }
        give_id(self.id);
    }
}

impl Shared {
    fn free_all(chunks: Vec<ChunkPtr>) -> usize {
        let mut bytes = 0;
        for c in chunks {
            bytes += c.bytes();
            // SAFETY: callers pass chunks they hold exclusively with nothing live.
            unsafe { c.free_to_system() };
        }
        bytes
    }

    /// Frees every cached chunk; answers the bytes freed.
    fn evict_cached(&self) -> usize {
        let mut idle = Vec::new();
        self.central.drain(&self.counters, &mut idle);
        Self::free_all(idle)
    }

    fn sweep_idle(&self) {
        let mut idle = Vec::new();
        self.central.take_expired(&self.counters, &mut idle);
        Self::free_all(idle);
    }

    /// Creates a chunk, evicting cached chunks once if the memory limit is in the way.
    fn create(
        &self,
        home: &Arc<dyn Home>,
        bytes: usize,
        unpooled: bool,
    ) -> Result<ChunkPtr, AllocError> {
        let s = &self.settings;
        let make = || {
            if unpooled {
                ChunkPtr::create_unpooled(home, bytes, s.max_memory, s.poison, s.zero_on_release)
            } else {
                ChunkPtr::create(
                    home,
                    bytes,
                    s.max_memory,
                    false,
                    s.poison,
                    s.zero_on_release,
                )
            }
        };
        match make() {
            Err(AllocError::MemoryLimit { .. }) if self.counters.cached_bytes.load(Relaxed) > 0 => {
                self.evict_cached();
                make()
            }
            other => other,
        }
    }

    /// The allocation fast path: a region from the calling thread's magazine, or `None` for
    /// the slow path. A size above `max_pooled` maps to a class index past the pooled classes
    /// (`SizeClass::of` is monotonic and `max_pooled` is a class size), so the magazine's
    /// class lookup is also the routing test.
    #[inline(always)]
    fn alloc_fast(&self, capacity: usize) -> Option<Region> {
        let (chunk, idx, cap) = magazine::alloc_fast(self.id, SizeClass::of(capacity))?;
        Some(Region { chunk, idx, cap })
    }

    /// Allocates a region of at least `capacity` bytes.
    #[inline]
    fn try_allocate(self: &Arc<Self>, capacity: usize) -> Result<Region, AllocError> {
        match self.alloc_fast(capacity) {
            Some(buf) => Ok(buf),
            None => self.try_allocate_slow(capacity),
        }
    }

    /// Everything but the fast path: magazine creation, chunk acquisition, unpooled sizes,
    /// thread exit.
    #[cold]
    #[inline(never)]
    fn try_allocate_slow(self: &Arc<Self>, capacity: usize) -> Result<Region, AllocError> {
        if capacity > self.settings.max_pooled {
            return self.allocate_unpooled(capacity);
        }
        let class = SizeClass::of(capacity);
        let result = magazine::with_magazine(self.id, || self.clone(), |m| m.alloc(class));
        match result {
            Some(Ok((chunk, idx, cap))) => Ok(Region { chunk, idx, cap }),
            Some(Err(e)) => Err(e),
            // The thread is exiting and its registry is gone: serve the buffer unpooled.
            None => self.allocate_unpooled(capacity),
        }
    }

    #[cold]
    fn allocate_unpooled(self: &Arc<Self>, capacity: usize) -> Result<Region, AllocError> {
        let overflow = AllocError::CapacityOverflow {
            requested: capacity,
        };
        if capacity > isize::MAX as usize - 4096 {
            return Err(overflow);
        }
        // Unpooled buffers are at least one minimum segment, rounded to 16 bytes.
        let bytes = capacity.max(32).checked_add(15).ok_or(overflow)? & !15;
        let home: Arc<dyn Home> = self.clone();
        let chunk = match self.create(&home, bytes, true) {
            Err(AllocError::MemoryLimit { .. }) => {
                // Give back the calling thread's idle chunks, then try once more.
                let idle = magazine::with_existing(self.id, |m| m.take_idle()).unwrap_or_default();
                Shared::free_all(idle);
                self.create(&home, bytes, true)?
            }
            other => other?,
        };
        self.counters.shared.add_shared(bytes as i64, 1);
        Ok(Region {
            chunk,
            idx: 0,
            cap: bytes,
        })
    }
}

impl Home for Shared {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn id(&self) -> usize {
        self.id
    }

    fn recycle(&self, chunk: ChunkPtr) {
        if chunk.is_unpooled() || self.closed.load(Relaxed) {
            // SAFETY: recycling hands over a chunk held exclusively with nothing live.
            unsafe { chunk.free_to_system() };
            return;
        }
        if let Err(chunk) = self.central.offer(chunk, &self.counters) {
            // SAFETY: as above; the queue refused it.
            unsafe { chunk.free_to_system() };
        } else {
            // Pairs with the fence in `close`: either `close` sees this chunk in the queue and
            // frees it, or we see `closed` here and free it ourselves.
            fence(SeqCst);
            if self.closed.load(Relaxed) {
                self.evict_cached();
            }
        }
        self.sweep_idle();
    }
}

impl ChunkSource for Shared {
    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn acquire(
        &self,
        home: &Arc<dyn Home>,
        bytes: usize,
        min_bytes: usize,
    ) -> Result<(ChunkPtr, bool), AllocError> {
        self.sweep_idle();
        if let Some(c) = self.central.take(bytes, min_bytes, &self.counters) {
            return Ok((c, true));
        }
        let mut size = bytes;
        loop {
            match self.create(home, size, false) {
                Ok(c) => return Ok((c, false)),
                Err(AllocError::MemoryLimit { .. }) if size / 2 >= min_bytes => size /= 2,
                Err(e) => return Err(e),
            }
        }
    }

    fn take_cached(&self, bytes: usize, min_bytes: usize) -> Option<ChunkPtr> {
        self.central.take(bytes, min_bytes, &self.counters)
    }

    fn trim_epoch(&self) -> u64 {
        self.trim_epoch.load(Relaxed)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }
}

/// Releases the last handle to region `idx` of `chunk`, from any thread.
///
/// # Safety
/// The caller holds the last handle to that region and gives it up.
#[inline(always)]
pub(crate) unsafe fn release_region(chunk: ChunkPtr, idx: u32) {
    if chunk.is_owned_by(sync::thread_token()) {
        // SAFETY: this thread owns the chunk, and the caller gives up the region.
        unsafe { magazine::free_owned(chunk, idx) }
    } else {
        // SAFETY: as the caller guarantees; this thread does not own the chunk.
        unsafe { release_remote(chunk, idx) }
    }
}

#[cold]
#[inline(never)]
unsafe fn release_remote(chunk: ChunkPtr, idx: u32) {
    // Account first: once the region is handed back the chunk may be recycled at any moment.
    // A thread with a magazine of this allocator records the release in its own stats shard
    // (plain load and store; `Stats` sums the shards, so which shard records it does not
    // matter); others use the shared shard's atomics.
    // SAFETY: the caller holds the region, so the format is stable.
    let size = unsafe { chunk.seg_size() };
    if !magazine::account_release(chunk.home_id(), size) {
        chunk
            .home()
            .counters()
            .shared
            .add_shared(-(size as i64), -1);
    }
    // SAFETY: the caller holds the last handle and is not the owner.
    if unsafe { chunk.free_remote(idx) } == RemoteFree::Recycle {
        // Keep the home alive across `recycle`, which may free the chunk header holding it.
        let home = chunk.home().clone();
        home.recycle(chunk);
    }
}

/// Allocates a region from the allocator that owns `chunk` (a buffer's growth or clone).
pub(crate) fn region_like(chunk: ChunkPtr, capacity: usize) -> Result<Region, AllocError> {
    shared_of(chunk).try_allocate(capacity)
}

fn shared_of(chunk: ChunkPtr) -> Arc<Shared> {
    let any: Arc<dyn Any + Send + Sync> = chunk.home().clone();
    any.downcast::<Shared>()
        .expect("every chunk's home is an allocator")
}

/// The allocator that `chunk` belongs to, as a new handle.
pub(crate) fn handle_of(chunk: ChunkPtr) -> AdaptiveAllocator {
    AdaptiveAllocator::from_shared(shared_of(chunk))
}

/// Rolls back `allocate_with`: holds the value being initialised (the buffer) and, unless
/// [`commit`](InitGuard::commit)ted, on drop (an error, or a panic unwinding) drops it and
/// gives back every chunk the calling thread's magazine adopted since the guard was made and
/// that is now empty: to the central queue if it came from there, else to the system.
///
/// The magazine is asked for those chunks by age (its chunk sequence number at the mark), not
/// through a list of pointers kept meanwhile: a chunk that left the magazine while the
/// initialiser ran (a `trim()`, a retirement, a memory-limit fallback) is simply not found,
/// so nothing here can outlive the chunks it names.
pub(crate) struct InitGuard<'a, T> {
    shared: &'a Arc<Shared>,
    /// The magazine's chunk sequence number when the guard was made (0 if the thread had no
    /// magazine yet: every chunk of a magazine made meanwhile is newer).
    mark: u64,
    value: Option<T>,
    committed: bool,
}

impl<'a, T> InitGuard<'a, T> {
    /// Starts an initialisation on `alloc`.
    pub(crate) fn new(alloc: &'a AdaptiveAllocator) -> Self {
        let shared = &alloc.shared;
        let mark = magazine::with_existing(shared.id, |m| m.mark()).unwrap_or(0);
        InitGuard {
            shared,
            mark,
            value: None,
            committed: false,
        }
    }

    /// Holds the value while it is initialised.
    pub(crate) fn hold(&mut self, value: T) -> &mut T {
        self.value.insert(value)
    }

    /// The initialisation succeeded: hands the value out, rolls nothing back.
    pub(crate) fn commit(mut self) -> T {
        self.committed = true;
        self.value
            .take()
            .expect("a value is held before it is committed")
    }
}

impl<T> Drop for InitGuard<'_, T> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // The value first: dropping the buffer is what empties the chunk it came from.
        drop(self.value.take());
        let shared = self.shared;
        let chunks = magazine::with_existing(shared.id, |m| m.take_back_since(self.mark))
            .unwrap_or_default();
        for (chunk, from_cache) in chunks {
            if from_cache {
                shared.recycle(chunk);
            } else {
                // SAFETY: `take_back_since` hands chunks over exclusive with nothing live.
                unsafe { chunk.free_to_system() };
            }
        }
    }
}

impl AdaptiveAllocator {
    /// An allocator with the embedded defaults, which work well without tuning: chunks of
    /// 16 KiB to 4 MiB, an 8 MiB central cache, no memory limit, idle chunks freed after 10 s.
    pub fn new() -> Self {
        Self::from_settings(
            Builder::new()
                .validate()
                .expect("the default settings are valid"),
        )
    }

    /// A builder for an allocator with other settings.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_settings(settings: Settings) -> Self {
        let central = Central::new(
            settings.min_chunk,
            settings.max_chunk,
            settings.max_cached_bytes,
            settings.idle_release,
        );
        let shared = Arc::new(Shared {
            id: take_id(),
            settings,
            central,
            counters: Counters::default(),
            handles: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            trim_epoch: AtomicU64::new(0),
        });
        Self::from_shared(shared)
    }

    fn from_shared(shared: Arc<Shared>) -> Self {
        if shared.handles.fetch_add(1, Relaxed) == 0 {
            shared.closed.store(false, Relaxed);
        }
        AdaptiveAllocator { shared }
    }

    /// The allocation fast path: a region from the calling thread's magazine, or `None` for
    /// the slow path. Buffers wrap it (module `buf`).
    #[inline(always)]
    pub(crate) fn region_fast(&self, capacity: usize) -> Option<Region> {
        self.shared.alloc_fast(capacity)
    }

    /// Everything but the fast path.
    #[cold]
    #[inline(never)]
    pub(crate) fn region_slow(&self, capacity: usize) -> Result<Region, AllocError> {
        self.shared.try_allocate_slow(capacity)
    }

    /// A snapshot of this allocator's statistics: cheap, exact when no other thread is
    /// allocating or releasing at the same moment.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Gives idle memory back to the system now: every cached chunk, and every fully free
    /// chunk of the calling thread's magazine. Other threads' magazines release their idle
    /// chunks the next time they take a chunk. Returns the bytes freed now.
    pub fn trim(&self) -> usize {
        let shared = &self.shared;
        shared.trim_epoch.fetch_add(1, Relaxed);
        let local = magazine::with_existing(shared.id, |m| m.take_idle()).unwrap_or_default();
        Shared::free_all(local) + shared.evict_cached()
    }

    /// Hands the calling thread's idle chunks (fully free ones, its current chunks included)
    /// back to the allocator: to the central queue while its byte budget allows, otherwise to
    /// the system. Unlike [`trim`](Self::trim) it keeps the cache and touches no other thread.
    /// Returns the bytes handed back.
    ///
    /// For threads that go idle while their magazine still holds chunks, such as a runtime's
    /// worker threads after a burst: call it when such a thread has nothing to do (for
    /// example from a periodic task, or a park hook with a rate limit; every call gives up
    /// chunks the thread would otherwise reuse at once).
    ///
    /// ```
    /// let pool = adaptive_pool::AdaptiveAllocator::new();
    /// drop(pool.allocate(4096));
    /// assert!(pool.stats().allocated_bytes > 0);
    /// let handed_back = pool.trim_thread();
    /// assert!(handed_back > 0);
    /// let s = pool.stats();
    /// assert_eq!(s.allocated_bytes, s.cached_bytes); // all of it now waits in the cache
    /// ```
    pub fn trim_thread(&self) -> usize {
        let shared = &self.shared;
        let idle = magazine::with_existing(shared.id, |m| m.take_idle()).unwrap_or_default();
        let mut bytes = 0;
        for chunk in idle {
            bytes += chunk.bytes();
            // `take_idle` hands over chunks held exclusively with nothing live, which is what
            // `recycle` takes.
            shared.recycle(chunk);
        }
        bytes
    }

    /// The settings in force, after validation (for diagnostics).
    fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

impl Clone for AdaptiveAllocator {
    fn clone(&self) -> Self {
        Self::from_shared(self.shared.clone())
    }
}

impl Drop for AdaptiveAllocator {
    /// When the last handle goes, the allocator closes: the calling thread's magazine and the
    /// cached chunks are given back now, other threads' magazines when those threads exit
    /// (or first create a magazine for another allocator). Live buffers stay valid; their
    /// memory is given back when the last one drops.
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared.handles.fetch_sub(1, AcqRel) != 1 {
            return;
        }
        shared.closed.store(true, Relaxed);
        // Pairs with the fence in `recycle`.
        fence(SeqCst);
        magazine::remove(shared.id);
        shared.evict_cached();
    }
}

impl Default for AdaptiveAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AdaptiveAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.settings();
        f.debug_struct("AdaptiveAllocator")
            .field("id", &self.shared.id)
            .field("max_memory", &s.max_memory)
            .field("max_cached_bytes", &s.max_cached_bytes)
            .field("chunk_sizes", &(s.min_chunk..=s.max_chunk))
            .field("stats", &self.stats())
            .finish()
    }
}

/// The process-wide default allocator, used by [`PooledBuf::with_capacity`]. Created with
/// the default settings on first use, never dropped.
pub fn global() -> &'static AdaptiveAllocator {
    static GLOBAL: OnceLock<AdaptiveAllocator> = OnceLock::new();
    GLOBAL.get_or_init(AdaptiveAllocator::new)
}
