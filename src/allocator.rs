//! The allocator: [`AdaptiveAllocator`], [`global()`], routing between pooled and unpooled
//! regions, the memory limit, `trim()`, the idle sweep, the close, and the rollback of
//! `allocate_with`.
//!
//! Owns: the shared state of one allocator ([`Shared`]: settings, memory source, central
//! queue, roster of magazines, counters, life cycle) and the release routing of a region
//! (owner thread or remote). May import: `magazine`, `central`, `parked`, `chunk`, `os`,
//! `config`, `stats`, `error`, `size_class`, `sync`, `waiters` (back-pressure's registry, which the
//! counters hold; the future that waits on it, module `ready`, sits above this room). It
//! hands out [`Region`]s; buffers (module `buf`) wrap them, so nothing here knows a buffer.
//!
//! The data path: `allocate` → the thread's magazine → chunk carve → a region;
//! `drop` → [`release_region`] → the chunk's local free list (owner thread) or its remote
//! stack (any other thread) → when the chunk is fully free and not in use → central queue or
//! system.
//!
//! Idle memory goes back three ways, none of which needs the threads that hold it to act:
//! `trim()` (now, everything), the idle sweep (chunks idle for `idle_release`, run by any
//! thread's slow path at most every quarter of `idle_release`, or by the opt-in background
//! thread), and the per-thread budget (at once, in the magazine). The first two reach other
//! threads' magazines through the roster and the magazine gate. Those that run over time (the
//! sweep, `trim()`'s reclaim, the close, the background reclaimer) are in the room beside
//! this one, `allocator/maintenance.rs`.

use std::any::Any;
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use crate::central::Central;
use crate::chunk::{ChunkPtr, Home, RemoteFree, CHECK};
use crate::config::{Builder, Settings};
use crate::error::AllocError;
use crate::magazine::{self, Carved, ChunkSource, FastCarved, Roster};
use crate::os::{self, Memory};
use crate::parked::Parked;
use crate::size_class::SizeClass;
use crate::stats::{Counters, Stats};
use crate::sync::{self, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering::*};
use crate::tracking::{LiveBuffer, ReportOrder, Tracker};
use crate::waiters::Waiters;

mod maintenance;
#[cfg(not(loom))]
use maintenance::spawn_reclaimer;

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
///
/// # Closing
/// When the last handle drops, the allocator *closes* for good: every thread's magazine
/// gives up its chunks, the cache is emptied, and live buffers stay valid; their memory goes
/// back to the system as they drop, on whatever thread. A handle obtained afterwards from a
/// buffer ([`PooledBuf::allocator`](crate::PooledBuf::allocator)) still works, but every
/// allocation through it (and every growth or clone of the old buffers) is served unpooled,
/// so that memory, too, goes back when it is dropped.
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
    /// The segment's address (`chunk.segment(idx)`).
    pub(crate) ptr: NonNull<u8>,
}

impl Region {
    /// The region of segment `idx` of `chunk` (carved for the caller and checked if it had
    /// to be, or an unpooled chunk's one segment), `cap` bytes.
    #[inline]
    fn carved((chunk, idx, cap): Carved) -> Region {
        debug_assert_eq!(
            idx & CHECK,
            0,
            "a region is checked before it is handed out"
        );
        // SAFETY: the caller holds the region (carved for it, or an unpooled chunk it holds
        // exclusively), so the chunk's format is stable.
        let ptr = unsafe { chunk.segment(idx) };
        Region::fast((chunk, idx, cap, ptr))
    }

    /// The region the fast path carved (or any carve whose address is known).
    #[inline(always)]
    fn fast((chunk, idx, cap, ptr): FastCarved) -> Region {
        Region {
            chunk,
            idx,
            cap,
            ptr,
        }
    }

    /// `true` for a region carved from a free list of a poisoning chunk that still carries
    /// the [`CHECK`] flag. The fast path never answers one (it leaves such free lists to the
    /// slow path, which checks what it carves): its callers assert that it does not.
    #[inline(always)]
    pub(crate) fn needs_check(&self) -> bool {
        self.idx & CHECK != 0
    }
}

/// The state one allocator's handles, magazines and chunks share.
pub(crate) struct Shared {
    id: usize,
    settings: Settings,
    memory: Memory,
    central: Central,
    /// Chunks of exited threads that still hold live buffers, waiting for adoption.
    parked: Parked,
    roster: Roster,
    counters: Counters,
    /// Number of `AdaptiveAllocator` handles alive.
    handles: AtomicUsize,
    /// When the next idle sweep is due (nanoseconds of `os::now_ns`).
    next_sweep: AtomicU64,
    /// When the next decay of retained memory is due (`os::now_ns`; see `maintenance`).
    next_decay: AtomicU64,
    /// A slow path that found the sweep due ran a decay step instead: the next one runs the
    /// sweep (`maintenance::maybe_sweep`: one step a slow path, turn about, so that neither
    /// starves the other).
    sweep_waits: AtomicBool,
    /// A decay helper thread runs (`maintenance`: a large backlog handed off; none under
    /// loom).
    #[cfg_attr(loom, allow(dead_code))]
    decay_helper: AtomicBool,
    /// Held for a whole sweep (tried) and a whole `trim()` (waited for), so a trim returns
    /// only once a sweep in progress has given back what it took.
    maintenance: Mutex<()>,
    /// The background reclaimer, if one runs (woken at close).
    #[cfg(not(loom))]
    reclaimer: Mutex<Option<std::thread::Thread>>,
    /// The live-buffer record, when the allocator samples (`sample_allocations`).
    tracker: Option<Tracker>,
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
        // Nothing refers to this allocator any more: no handle, no magazine, no chunk (each
        // chunk's header holds an `Arc` to us, cached ones included, and the close empties
        // the cache), so there is nothing left to free but the spans kept empty, which
        // `Memory` unmaps as it drops.
        debug_assert_eq!(self.counters.cached_bytes.load(Relaxed), 0);
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

    /// `true` once the last handle has dropped.
    fn is_closed(&self) -> bool {
        self.central.is_closed()
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
        magazine::alloc_fast(self.id, SizeClass::of(capacity)).map(Region::fast)
    }

    /// Allocates a region of at least `capacity` bytes.
    #[inline]
    fn try_allocate(self: &Arc<Self>, capacity: usize) -> Result<Region, AllocError> {
        match self.alloc_fast(capacity) {
            Some(r) => {
                debug_assert!(!r.needs_check(), "the fast path answers checked regions");
                Ok(r)
            }
            None => self.try_allocate_slow(capacity),
        }
    }

    /// Everything but the fast path: magazine creation, chunk acquisition, unpooled sizes,
    /// thread exit, a closed allocator, the memory limit. When it went to the allocator for
    /// memory (a chunk, a magazine, an unpooled region), it then runs the idle sweep if due.
    #[cold]
    #[inline(never)]
    fn try_allocate_slow(self: &Arc<Self>, capacity: usize) -> Result<Region, AllocError> {
        // The thread's magazine of this allocator when another one is in `LAST` (or none).
        if let Some(carved) = magazine::alloc_fast_lookup(self.id, SizeClass::of(capacity)) {
            return Ok(Region::fast(carved));
        }
        let (r, went_to_allocator) = self.pooled_or_unpooled(capacity);
        if went_to_allocator {
            self.maybe_sweep();
        }
        r
    }

    fn pooled_or_unpooled(self: &Arc<Self>, capacity: usize) -> (Result<Region, AllocError>, bool) {
        if capacity > self.settings.max_pooled {
            return (self.allocate_unpooled(capacity), true);
        }
        let class = SizeClass::of(capacity);
        let installed = std::cell::Cell::new(false);
        let pooled = || {
            magazine::with_magazine(
                self.id,
                || {
                    installed.set(true);
                    self.clone()
                },
                |m| m.alloc(class),
            )
        };
        let first = pooled();
        let went = installed.get() || first.as_ref().is_some_and(|(_, went)| *went);
        let r = match first.map(|(r, _)| r) {
            Some(Some(Ok(carved))) => Ok(Region::carved(carved)),
            Some(Some(Err(AllocError::MemoryLimit { .. }))) => {
                // Make room everywhere, then try again: pooled, else a region of exactly
                // this size (which fits where a chunk no longer does).
                self.reclaim_everything();
                match pooled().map(|(r, _)| r) {
                    Some(Some(Ok(carved))) => Ok(Region::carved(carved)),
                    Some(Some(Err(AllocError::MemoryLimit { .. }))) | Some(None) | None => {
                        self.allocate_unpooled(capacity)
                    }
                    Some(Some(Err(e))) => Err(e),
                }
            }
            Some(Some(Err(e))) => Err(e),
            // The thread is exiting (its registry is gone), or the allocator has closed:
            // serve the buffer unpooled.
            Some(None) | None => self.allocate_unpooled(capacity),
        };
        (r, went)
    }

    #[cold]
    fn allocate_unpooled(self: &Arc<Self>, capacity: usize) -> Result<Region, AllocError> {
        let overflow = AllocError::CapacityOverflow {
            requested: capacity,
        };
        if capacity > isize::MAX as usize - (1 << 20) {
            return Err(overflow);
        }
        // Unpooled buffers are at least one minimum segment, rounded to 16 bytes (to the page
        // when mapped on their own, so the whole mapping is the buffer's and is counted).
        let bytes = self
            .memory
            .unpooled_size(capacity.max(32).checked_add(15).ok_or(overflow)? & !15);
        let home: Arc<dyn Home> = self.clone();
        let chunk = match self.create(&home, bytes, true) {
            Err(AllocError::MemoryLimit { .. }) => {
                // Give back idle memory everywhere, then try once more.
                self.reclaim_everything();
                self.create(&home, bytes, true)?
            }
            other => other?,
        };
        self.counters.shared.add_shared(bytes as i64, 1);
        Ok(Region::carved((chunk, 0, bytes)))
    }
}

impl Home for Shared {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn memory(&self) -> &Memory {
        &self.memory
    }

    fn id(&self) -> usize {
        self.id
    }

    fn is_closed(&self) -> bool {
        Shared::is_closed(self)
    }

    fn recycle(&self, chunk: ChunkPtr) {
        let mut free = Vec::new();
        if chunk.is_unpooled() {
            free.push(chunk);
        } else {
            // Refused (over budget, or closed): back to the system, with whatever the close
            // handshake drained.
            self.central
                .offer(chunk, &self.counters, os::now_ns(), &mut free);
            // A cached chunk counts as free for back-pressure (module `waiters`).
            self.counters.waiters.notify();
        }
        Self::free_all(free);
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

    unsafe fn park(&self, chunk: ChunkPtr, class: usize) -> bool {
        // SAFETY: as the caller guarantees.
        unsafe { self.parked.park(chunk, class) }
    }

    fn adopt_parked(&self, class: usize) -> Option<ChunkPtr> {
        self.parked.adopt(class)
    }

    fn roster(&self) -> &Roster {
        &self.roster
    }
}

/// Releases the last handle to region `idx` of `chunk`, from any thread.
///
/// # Safety
/// The caller holds the last handle to that region and gives it up.
#[inline(always)]
pub(crate) unsafe fn release_region(chunk: ChunkPtr, idx: u32) {
    let token = sync::thread_token();
    if chunk.is_owned_by(token) {
        // SAFETY: this thread saw itself as the owner, and the caller gives up the region;
        // `release_remote` releases a region of a chunk this thread does not own (any more:
        // the allocator may close meanwhile and abandon it).
        return unsafe { magazine::free_owned(chunk, idx, token, release_remote) };
    }
    // SAFETY: as the caller guarantees; this thread does not own the chunk.
    unsafe { release_remote(chunk, idx) }
}

#[cold]
#[inline(never)]
unsafe fn release_remote(chunk: ChunkPtr, idx: u32) {
    // Account first: once the region is handed back the chunk may be recycled at any moment.
    // The releasing thread records it in its own stats shard (its magazine's, or its release
    // shard for this allocator: a plain load and store; `Stats` sums the shards, so which
    // shard records it does not matter); at thread exit, the shared shard's atomics.
    // SAFETY: the caller holds the region, so the format is stable.
    let size = unsafe { chunk.seg_size() };
    if !magazine::account_release(chunk, size) {
        chunk
            .home()
            .counters()
            .shared
            .add_shared(-(size as i64), -1);
    }
    // SAFETY: the caller holds the last handle and is not the owner.
    match unsafe { chunk.free_remote(idx) } {
        RemoteFree::Queued => {}
        last => {
            // Keep the allocator alive across `recycle`, which may free the chunk header
            // holding it; a chunk recycled is activity that may run the idle sweep.
            let shared = shared_of(chunk);
            if last == RemoteFree::RecycleParked {
                // SAFETY: this release emptied the parked chunk, so it holds it exclusively
                // (its format included).
                unsafe { shared.parked.emptied(chunk, chunk.class() as usize) };
            }
            shared.recycle(chunk);
            shared.maybe_sweep();
        }
    }
}

/// `bytes` of a live region of `chunk` are no longer covered by a live handle (a handle of a
/// split region dropped while others live on): added to the allocator's `pinned_bytes`.
#[inline]
pub(crate) fn pin(chunk: ChunkPtr, bytes: usize) {
    account_pinned(chunk, bytes as i64);
}

/// `bytes` [`pin`]ned in a region of `chunk` are covered again or released with the region.
#[inline]
pub(crate) fn unpin(chunk: ChunkPtr, bytes: usize) {
    account_pinned(chunk, (bytes as i64).wrapping_neg());
}

/// Counts `bytes` (a change of `Stats::pinned_bytes`) in the calling thread's own stats
/// shard (`Stats` sums the shards, so which thread counts does not matter); at thread exit,
/// in the shared shard's atomics.
#[inline]
fn account_pinned(chunk: ChunkPtr, bytes: i64) {
    if !magazine::account_pinned(chunk, bytes) {
        chunk.home().counters().shared.add_pinned_shared(bytes);
    }
}

/// The allocator that owns `chunk`, borrowed from the chunk's header (no reference count
/// touched): valid while the caller holds a region of `chunk`.
fn shared_ref(chunk: &ChunkPtr) -> &Shared {
    let home: &(dyn Any + Send + Sync) = &**chunk.home();
    home.downcast_ref::<Shared>()
        .expect("every chunk's home is an allocator")
}

/// The live-buffer record of the allocator that owns `chunk`, if it samples.
pub(crate) fn tracker_of(chunk: &ChunkPtr) -> Option<&Tracker> {
    shared_ref(chunk).tracker.as_ref()
}

/// The `compact_frozen_below` setting of the allocator that owns `chunk` (0: off).
pub(crate) fn compact_percent(chunk: ChunkPtr) -> u32 {
    shared_ref(&chunk).settings.compact_below_percent
}

/// Grows the region of an unpooled buffer mapped on its own (`chunk`, the buffer its only
/// handle) to hold at least `capacity` bytes, without copying (`mremap`; see
/// `ChunkPtr::grow_unpooled`). Answers the region's new size, or `None` when it cannot grow
/// so (a pooled or heap region, a closed allocator, the kernel refused): the caller then
/// moves to a new region. The bytes added count in `allocated_bytes` (under `max_memory`)
/// and `live_bytes`, exactly as a new region of that size would.
///
/// # Safety
/// `chunk` is unpooled and the caller holds the only handle on its region.
pub(crate) unsafe fn grow_in_place(
    chunk: ChunkPtr,
    capacity: usize,
) -> Result<Option<usize>, AllocError> {
    let shared = shared_ref(&chunk);
    if shared.is_closed() || capacity > isize::MAX as usize - (1 << 20) {
        return Ok(None);
    }
    let bytes = shared
        .memory
        .unpooled_size(capacity.max(32).next_multiple_of(16));
    let old = chunk.bytes();
    if bytes <= old {
        return Ok(None);
    }
    // SAFETY: as the caller guarantees; `bytes` is larger than the chunk.
    if !unsafe { chunk.grow_unpooled(bytes, shared.settings.max_memory) }? {
        return Ok(None);
    }
    shared.counters.shared.add_shared((bytes - old) as i64, 0);
    Ok(Some(bytes))
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
        // The value first: dropping the buffer is what empties the chunk it came from. While
        // it drops, the magazine's idle budget is suspended, so the chunk it empties stays in
        // the magazine for the rollback to find (with a budget of 0 it would otherwise go to
        // the cache at once, and stay there).
        let shared = self.shared;
        let budget = magazine::with_existing(shared.id, |m| m.suspend_idle_budget());
        drop(self.value.take());
        let chunks = magazine::with_existing(shared.id, |m| {
            let chunks = m.take_back_since(self.mark);
            if let Some(budget) = budget {
                m.restore_idle_budget(budget);
            }
            chunks
        })
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
        );
        let first_sweep = os::now_ns().saturating_add(settings.sweep_period_ns());
        let settings_sample_every = settings.sample_every;
        let parked = Parked::new(settings.class_count, settings.max_parked_chunks);
        let shared = Arc::new(Shared {
            id: take_id(),
            memory: Memory::new(
                settings.memory_source,
                settings.max_cached_bytes,
                settings.decay_ns(),
            )
            .with_huge_pages(settings.huge_pages),
            settings,
            central,
            parked,
            roster: Roster::new(),
            counters: Counters::default(),
            handles: AtomicUsize::new(0),
            next_sweep: AtomicU64::new(first_sweep),
            next_decay: AtomicU64::new(0),
            sweep_waits: AtomicBool::new(false),
            decay_helper: AtomicBool::new(false),
            maintenance: Mutex::new(()),
            #[cfg(not(loom))]
            reclaimer: Mutex::new(None),
            tracker: Tracker::new(settings_sample_every),
        });
        #[cfg(not(loom))]
        if shared.settings.background_reclaim {
            spawn_reclaimer(&shared);
        }
        Self::from_shared(shared)
    }

    /// A new handle. Handles made after the allocator closed (from a buffer) do not reopen
    /// it: closing is for good.
    fn from_shared(shared: Arc<Shared>) -> Self {
        shared.handles.fetch_add(1, Relaxed);
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
    /// allocating or releasing at the same moment. Reading them counts as activity: if the
    /// idle sweep is due, it runs first.
    pub fn stats(&self) -> Stats {
        self.shared.maybe_sweep();
        self.snapshot()
    }

    fn snapshot(&self) -> Stats {
        let mut s = self.shared.counters.snapshot();
        s.mapped_bytes = self.shared.memory.mapped();
        s.retained_bytes = self.shared.memory.retained();
        s.parked_chunks = self.shared.parked.len();
        s
    }

    /// Gives idle memory back to the system now, from every thread: every chunk that holds
    /// no live region, in every thread's magazine (threads that are idle, or will never
    /// allocate again, included) and in the central cache, and the spans kept empty. Those
    /// threads do nothing for it: their magazines are reached through the allocator's roster
    /// (see the `magazine` module's gate). Afterwards `allocated_bytes` counts only chunks
    /// that hold live regions (and unpooled buffers). Returns the bytes of chunks freed.
    ///
    /// It costs a process-wide memory barrier and a short pause of any thread that allocates
    /// or releases into its own chunks while its magazine is being trimmed; it is meant for
    /// the moments after load, not for every request.
    pub fn trim(&self) -> usize {
        self.shared.reclaim_everything()
    }

    /// Hands the calling thread's idle chunks (fully free ones, its current chunks included)
    /// back to the allocator: to the central queue while its byte budget allows, otherwise to
    /// the system. Unlike [`trim`](Self::trim) it keeps the cache and touches no other thread.
    /// Returns the bytes handed back.
    ///
    /// Rarely needed: the per-thread budget (`max_thread_idle_bytes`), the idle sweep and
    /// `trim()` already bound and return what idle threads keep. It remains for a thread that
    /// wants to give up its chunks now.
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
        shared.maybe_sweep();
        bytes
    }

    /// The live buffers recorded by sampling ([`Builder::sample_allocations`]), up to
    /// `limit` of them, oldest or largest first: each with its allocation site (file and
    /// line of the caller of `allocate` and the other entry points), age, capacity, and the
    /// bytes of its region that no live handle covers. Empty when the allocator does not
    /// sample. A buffer's entry goes when its region is released (its last handle, split
    /// parts and frozen `Bytes` included, drops).
    ///
    /// With sampling 1 in N, about 1 in N live buffers appears; the sites that recur among the
    /// oldest entries are where buffers are kept, or leaked. Taking the report holds the
    /// record's lock for one pass over it.
    ///
    /// ```
    /// use adaptive_pool::{AdaptiveAllocator, ReportOrder};
    ///
    /// let pool = AdaptiveAllocator::builder().sample_allocations(1).build()?;
    /// let site = line!() + 1;
    /// let kept = pool.allocate(4096);
    /// let report = pool.live_report(ReportOrder::Oldest, 10);
    /// assert_eq!(report.len(), 1);
    /// assert_eq!(report[0].site.line(), site);
    /// assert!(report[0].capacity >= 4096);
    /// drop(kept);
    /// assert!(pool.live_report(ReportOrder::Oldest, 10).is_empty());
    /// # Ok::<(), adaptive_pool::ConfigError>(())
    /// ```
    pub fn live_report(&self, order: ReportOrder, limit: usize) -> Vec<LiveBuffer> {
        match &self.shared.tracker {
            Some(t) => t.report(order, limit),
            None => Vec::new(),
        }
    }

    /// Number of live buffers recorded by sampling (0 when the allocator does not sample).
    pub fn sampled_live_buffers(&self) -> usize {
        self.shared.tracker.as_ref().map_or(0, Tracker::len)
    }

    /// The allocator's live-buffer record, if it samples (module `buf` starts records).
    pub(crate) fn tracker(&self) -> Option<&Tracker> {
        self.shared.tracker.as_ref()
    }

    /// The settings in force, after validation (for diagnostics).
    fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

/// Back-pressure at the memory limit: what the `ready` module (the future, and the public
/// `ready` and `waiting_for_memory`, defined there next to it) needs from the allocator.
impl AdaptiveAllocator {
    /// Whether an allocation of `bytes` fits under the watermark now (see
    /// [`ready`](Self::ready)).
    pub(crate) fn fits_under_watermark(&self, bytes: usize) -> bool {
        let s = &self.shared.settings;
        if s.max_memory == usize::MAX {
            return true;
        }
        // The least an allocation of `bytes` takes at the limit: a region of its own, rounded
        // as `allocate_unpooled` rounds it.
        let need = self
            .shared
            .memory
            .unpooled_size(bytes.max(32).saturating_add(15) & !15);
        if need > s.ready_watermark {
            return true;
        }
        self.shared.counters.held_beyond_cache() <= s.ready_watermark - need
    }

    /// The registry of tasks waiting for memory.
    pub(crate) fn memory_waiters(&self) -> &Waiters {
        &self.shared.counters.waiters
    }

    /// Frees idle memory everywhere, as an allocation at the limit does.
    pub(crate) fn reclaim_for_waiter(&self) {
        self.shared.reclaim_everything();
    }
}

impl Clone for AdaptiveAllocator {
    fn clone(&self) -> Self {
        Self::from_shared(self.shared.clone())
    }
}

impl Drop for AdaptiveAllocator {
    /// When the last handle goes, the allocator closes for good: every thread's magazine
    /// gives up its chunks (the calling thread's husk is dropped now, other threads' when
    /// they next allocate or exit), and the cache is emptied. Live buffers stay valid; their
    /// memory is given back when the last one drops, on any thread.
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared.handles.fetch_sub(1, AcqRel) != 1 {
            return;
        }
        shared.close();
        magazine::remove(shared.id);
    }
}

impl Default for AdaptiveAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// A panic inside the allocator leaves it consistent (every multi-step change is guarded and
// the magazine gate is left on unwind), so a handle may cross `catch_unwind`, as
// `BytesMut`'s users expect of anything they allocate with.
impl std::panic::UnwindSafe for AdaptiveAllocator {}
impl std::panic::RefUnwindSafe for AdaptiveAllocator {}

impl fmt::Debug for AdaptiveAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.settings();
        f.debug_struct("AdaptiveAllocator")
            .field("id", &self.shared.id)
            .field("max_memory", &s.max_memory)
            .field("max_cached_bytes", &s.max_cached_bytes)
            .field("max_thread_idle_bytes", &s.max_thread_idle_bytes)
            .field("chunk_sizes", &(s.min_chunk..=s.max_chunk))
            .field("memory_source", &s.memory_source)
            .field("closed", &self.shared.is_closed())
            .field("stats", &self.snapshot())
            .finish()
    }
}

/// The process-wide default allocator, used by
/// [`PooledBuf::with_capacity`](crate::PooledBuf::with_capacity). Created with
/// the default settings on first use, never dropped.
pub fn global() -> &'static AdaptiveAllocator {
    static GLOBAL: OnceLock<AdaptiveAllocator> = OnceLock::new();
    GLOBAL.get_or_init(AdaptiveAllocator::new)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::mpsc;
    use std::time::Duration;

    /// One allocate + release through this thread's magazine (entering its gate twice).
    fn churn(a: &AdaptiveAllocator) {
        let r = a.shared.try_allocate(64).expect("a 64 B region");
        // SAFETY: the region was just carved for us, and nothing else refers to it.
        unsafe { release_region(r.chunk, r.idx) };
    }

    /// A reclaimer (trim, sweep, close) that unwinds part-way must release every claim it
    /// made, on the magazine it was working on (the first registered, here) and on those it
    /// had not reached: otherwise each owner waits at its gate for ever. Both owners use
    /// their magazines after the panic; a claim left behind shows as a timeout, not a hang.
    #[test]
    fn a_reclaimer_that_unwinds_releases_every_claim() {
        let a = Arc::new(AdaptiveAllocator::new());
        let (done_tx, done_rx) = mpsc::channel::<usize>();
        let mut go = Vec::new();
        let mut owners = Vec::new();
        for i in 0..2 {
            let (go_tx, go_rx) = mpsc::channel::<()>();
            go.push(go_tx);
            let a = a.clone();
            let done_tx = done_tx.clone();
            owners.push(std::thread::spawn(move || {
                churn(&a);
                done_tx.send(i).unwrap();
                go_rx.recv().unwrap();
                churn(&a);
                done_tx.send(i).unwrap();
                go_rx.recv().unwrap();
            }));
            // One at a time, so the roster's order is known.
            assert_eq!(done_rx.recv().unwrap(), i);
        }
        let r = catch_unwind(AssertUnwindSafe(|| a.shared.roster.reclaim_unwinding()));
        assert!(r.is_err(), "the reclaim's work panicked");
        for (i, go_tx) in go.iter().enumerate() {
            go_tx.send(()).unwrap();
            assert_eq!(
                done_rx.recv_timeout(Duration::from_secs(20)).ok(),
                Some(i),
                "owner {i} is stuck at its gate: a claim was left behind"
            );
        }
        for (go_tx, t) in go.iter().zip(owners) {
            go_tx.send(()).unwrap();
            t.join().unwrap();
        }
        assert_eq!(a.stats().live_buffers, 0);
    }
}
