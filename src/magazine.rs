//! Magazines: one thread's cache of chunks for one allocator, and the thread-local registry
//! that finds it in O(1).
//!
//! Owns: [`Magazine`] (the current chunk and the partly used chunks of every size class, the
//! drain of remote frees, the hand-back on thread exit), the registry, the registration
//! guard. May import: `chunk`, `size_class`, `config`, `sync`, `stats`, `error`. It reaches the
//! allocator only through the [`ChunkSource`] trait, which the allocator implements.
//!
//! # Allocation order
//! Each class has one *current* chunk that allocations carve from, and a list of *partial*
//! chunks (owned, not current, with live regions). When a region is freed into a partial
//! chunk that is older than the current one, that older chunk becomes current, and when the
//! current chunk runs out the oldest partial chunk with free space is chosen before a new
//! chunk is taken. Allocations therefore pack into the oldest chunks: long-lived survivors
//! collect there, younger chunks empty out and are retired, and one small survivor does not
//! pin a chunk for long.
//!
//! # Retirement
//! A chunk that is not current and has no live region is retired at once: handed to the
//! allocator, which caches it in the central queue if the byte budget allows and otherwise
//! gives it to the system. The current chunk stays even when empty, so an allocate/free loop
//! never touches the central queue.
//!
//! # Thread exit
//! The registry's destructor drops every magazine of the thread. Each chunk is drained and
//! abandoned: a fully free one is recycled at once; one with live regions is recycled by
//! whichever thread releases its last region (see `chunk`).

use std::ptr;

use crate::chunk::{ChunkPtr, Home, RemoteFree};
use crate::config::Settings;
use crate::error::AllocError;
use crate::size_class::{next_pow2, SizeClass};
use crate::stats::Shard;
use crate::sync::{self, thread_local, UnsafeCell};
use std::sync::Arc;

/// What a magazine needs from its allocator. Implemented by the allocator's shared state.
pub(crate) trait ChunkSource: Home {
    /// The allocator's validated settings.
    fn settings(&self) -> &Settings;

    /// A chunk of `bytes` (or, under memory pressure, no smaller than `min_bytes`), held
    /// exclusively by the caller; `true` if it came from the central queue.
    fn acquire(
        &self,
        home: &Arc<dyn Home>,
        bytes: usize,
        min_bytes: usize,
    ) -> Result<(ChunkPtr, bool), AllocError>;

    /// Bumped by every `trim()`; a magazine that sees it change releases its idle chunks.
    fn trim_epoch(&self) -> u64;

    /// `true` once the allocator's last handle is gone.
    fn is_closed(&self) -> bool;
}

/// One size class's chunks in one magazine.
struct ClassState {
    /// The class's segment size (kept here so the fast path does not recompute it).
    seg_size: usize,
    current: Option<ChunkPtr>,
    /// `seq` of `current`, or `u64::MAX` when there is none.
    current_seq: u64,
    /// Owned chunks that are not current; each chunk's slot word is its index here.
    partial: Vec<ChunkPtr>,
}

impl ClassState {
    const fn new(class: SizeClass) -> Self {
        ClassState {
            seg_size: class.size(),
            current: None,
            current_seq: u64::MAX,
            partial: Vec::new(),
        }
    }

    fn push_partial(&mut self, c: ChunkPtr) {
        // SAFETY: the magazine's thread owns every chunk of its classes.
        unsafe { c.set_slot(self.partial.len()) };
        self.partial.push(c);
    }

    fn remove_partial(&mut self, i: usize) -> ChunkPtr {
        let c = self.partial.swap_remove(i);
        if let Some(&moved) = self.partial.get(i) {
            // SAFETY: owned by this magazine's thread.
            unsafe { moved.set_slot(i) };
        }
        c
    }

    fn set_current(&mut self, c: Option<ChunkPtr>) {
        self.current = c;
        // SAFETY: owned by this magazine's thread.
        self.current_seq = c.map_or(u64::MAX, |c| unsafe { c.seq() });
    }

    fn owned(&self) -> impl Iterator<Item = ChunkPtr> + '_ {
        self.current.into_iter().chain(self.partial.iter().copied())
    }
}

/// The registration guard: owns a new, registered magazine until the registry holds it, and
/// on error or panic before that drops it, which unregisters its stats shard.
struct PendingMagazine(*mut Magazine);

impl PendingMagazine {
    fn into_registered(self) -> *mut Magazine {
        let m = self.0;
        std::mem::forget(self);
        m
    }
}

impl Drop for PendingMagazine {
    fn drop(&mut self) {
        // SAFETY: the guard owns the magazine made by `Magazine::create`, not yet registered.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// One thread's cache for one allocator.
pub(crate) struct Magazine {
    /// The owning thread's token.
    token: usize,
    /// This magazine's own address, as the registry holds it (the chunks' owner context).
    this: *mut Magazine,
    src: Arc<dyn ChunkSource>,
    home: Arc<dyn Home>,
    shard: Arc<Shard>,
    classes: Box<[ClassState]>,
    min_chunk: usize,
    max_chunk: usize,
    next_seq: u64,
    seen_trim: u64,
    /// While `allocate_with` runs (`tracking > 0`, nested calls count up), every chunk this
    /// magazine acquires is recorded here with whether it came from the central queue, so a
    /// failed initialisation can give back what it caused to be acquired.
    tracking: u32,
    tracked: Vec<(ChunkPtr, bool)>,
}

impl Magazine {
    /// Creates and registers a magazine for the calling thread; the returned pointer is owned
    /// by the caller (the registry) and freed with `Box::from_raw`.
    fn create(src: Arc<dyn ChunkSource>) -> *mut Magazine {
        let settings = src.settings();
        let classes = (0..settings.class_count)
            .map(|i| ClassState::new(SizeClass(i as u16)))
            .collect();
        let shard = Arc::new(Shard::default());
        let home: Arc<dyn Home> = src.clone();
        let mag = Box::new(Magazine {
            token: sync::thread_token(),
            this: ptr::null_mut(),
            min_chunk: settings.min_chunk,
            max_chunk: settings.max_chunk,
            seen_trim: src.trim_epoch(),
            src,
            home,
            shard,
            classes,
            next_seq: 0,
            tracking: 0,
            tracked: Vec::new(),
        });
        let raw = Box::into_raw(mag);
        // SAFETY: `raw` is the unique, valid pointer just made by `Box::into_raw`.
        unsafe {
            (*raw).this = raw;
            (*raw).src.counters().register((*raw).shard.clone());
        }
        raw
    }

    /// The fast path: carves one region of `class` from the class's current chunk, with plain
    /// loads and stores only. `None` when the class is not pooled here (its index is past the
    /// pooled classes), has no current chunk, or the current chunk is full.
    #[inline(always)]
    fn alloc_fast(&mut self, class: SizeClass) -> Option<(ChunkPtr, u32, usize)> {
        let cs = self.classes.get(class.index())?;
        let c = cs.current?;
        // SAFETY: this magazine's thread (the caller) owns its current chunks.
        let idx = unsafe { c.carve() }?;
        let seg = cs.seg_size;
        self.shard.add_owned(seg as i64, 1);
        Some((c, idx, seg))
    }

    /// Allocates one region of `class` (a pooled class): the fast path, else the slow path,
    /// which may take or create a chunk.
    pub(crate) fn alloc(&mut self, class: SizeClass) -> Result<(ChunkPtr, u32, usize), AllocError> {
        match self.alloc_fast(class) {
            Some(region) => Ok(region),
            None => self.alloc_slow(class),
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&mut self, class: SizeClass) -> Result<(ChunkPtr, u32, usize), AllocError> {
        let epoch = self.src.trim_epoch();
        if epoch != self.seen_trim {
            self.seen_trim = epoch;
            for c in self.take_idle() {
                // SAFETY: `take_idle` hands over fully free chunks held exclusively.
                unsafe { c.free_to_system() };
            }
        }
        let idx = class.index();
        // 1. The current chunk, once remote frees are drained.
        if let Some(c) = self.classes[idx].current {
            // SAFETY: owned by this thread.
            if unsafe { c.drain_remote() } > 0 {
                return Ok(self.carve_from(c, class));
            }
            let cs = &mut self.classes[idx];
            cs.set_current(None);
            cs.push_partial(c);
        }
        // 2. The oldest partial chunk with space; fully free ones besides it are retired.
        let cs = &mut self.classes[idx];
        let mut best: Option<(usize, u64)> = None;
        for (i, &p) in cs.partial.iter().enumerate() {
            // SAFETY: owned by this thread.
            unsafe {
                p.drain_remote();
                if p.has_local_space() && best.is_none_or(|(_, s)| p.seq() < s) {
                    best = Some((i, p.seq()));
                }
            }
        }
        let chosen = best.map(|(i, _)| cs.remove_partial(i));
        let mut i = cs.partial.len();
        while i > 0 {
            i -= 1;
            // SAFETY: owned by this thread.
            if unsafe { cs.partial[i].live() } == 0 {
                let c = cs.remove_partial(i);
                Self::retire(&self.home, c);
            }
        }
        let cs = &mut self.classes[idx];
        if let Some(c) = chosen {
            cs.set_current(Some(c));
            return Ok(self.carve_from(c, class));
        }
        // 3. A chunk from the allocator (central queue or system).
        let seg = class.size();
        let owned = cs.partial.len();
        let want = self.chunk_size_for(seg, owned);
        let least = next_pow2(seg)
            .unwrap_or(usize::MAX)
            .max(self.min_chunk)
            .min(want);
        let (c, from_cache) = match self.src.acquire(&self.home, want, least) {
            Err(e @ AllocError::MemoryLimit { .. }) => {
                // Under the limit, this thread's own idle chunks (empty current chunks of
                // other classes) are given back before the request is refused.
                let idle = self.take_idle();
                if idle.is_empty() {
                    return Err(e);
                }
                for c in idle {
                    // SAFETY: `take_idle` hands over fully free chunks held exclusively.
                    unsafe { c.free_to_system() };
                }
                self.src.acquire(&self.home, want, least)?
            }
            other => other?,
        };
        // SAFETY: `acquire` hands over a chunk held exclusively with nothing live; this thread
        // becomes its owner.
        unsafe {
            c.format(class.0, seg);
            c.adopt(self.token, self.this.cast(), self.next_seq);
        }
        self.next_seq += 1;
        if self.tracking > 0 {
            self.tracked.push((c, from_cache));
        }
        self.classes[idx].set_current(Some(c));
        Ok(self.carve_from(c, class))
    }

    fn carve_from(&mut self, c: ChunkPtr, class: SizeClass) -> (ChunkPtr, u32, usize) {
        // SAFETY: owned by this thread, and the callers checked that it has space.
        let idx = unsafe { c.carve() }.expect("chunk chosen for its free space has none");
        let seg = class.size();
        self.shard.add_owned(seg as i64, 1);
        (c, idx, seg)
    }

    /// The chunk size for a class with `seg`-byte segments of which this magazine already
    /// holds `owned` partial chunks: about 64 segments for small classes, 16 for medium and 4
    /// for large ones, doubled as the class's demand grows (up to 8x), within the bounds.
    fn chunk_size_for(&self, seg: usize, owned: usize) -> usize {
        let target = if seg <= 1 << 10 {
            64
        } else if seg <= 16 << 10 {
            16
        } else {
            4
        };
        let base = next_pow2(seg.saturating_mul(target)).unwrap_or(self.max_chunk);
        let growth = match owned {
            0..=3 => 0,
            4..=11 => 1,
            12..=27 => 2,
            _ => 3,
        };
        base.checked_shl(growth)
            .unwrap_or(self.max_chunk)
            .clamp(self.min_chunk, self.max_chunk)
    }

    /// Gives up a chunk with nothing live that is not current.
    fn retire(home: &Arc<dyn Home>, c: ChunkPtr) {
        // SAFETY: owned by this thread, which gives it up here and never touches it again.
        if unsafe { c.abandon() } == RemoteFree::Recycle {
            home.recycle(c);
        }
    }

    /// Called after the owner freed a region into `c`, which is not the current chunk and is
    /// either now fully free or older than the current one.
    #[cold]
    #[inline(never)]
    fn after_free_slow(&mut self, c: ChunkPtr, live: u32) {
        // SAFETY: owned by this thread.
        let (class, slot) = unsafe { (c.class() as usize, c.slot()) };
        let cs = &mut self.classes[class];
        debug_assert_eq!(cs.partial.get(slot), Some(&c));
        let c = cs.remove_partial(slot);
        if live == 0 {
            Self::retire(&self.home, c);
            return;
        }
        if let Some(old) = cs.current {
            // SAFETY: owned by this thread.
            if unsafe { old.live() } == 0 {
                Self::retire(&self.home, old);
            } else {
                cs.push_partial(old);
            }
        }
        cs.set_current(Some(c));
        self.reclaim_remote(class);
    }

    /// Drains the remote frees waiting in the class's partial chunks and retires those that
    /// are now fully free, so chunks emptied by other threads do not wait for the current
    /// chunk to run out before they are given back.
    fn reclaim_remote(&mut self, class: usize) {
        let cs = &mut self.classes[class];
        let mut i = cs.partial.len();
        while i > 0 {
            i -= 1;
            let p = cs.partial[i];
            if p.has_remote() {
                // SAFETY: owned by this thread.
                if unsafe {
                    p.drain_remote();
                    p.live()
                } == 0
                {
                    cs.remove_partial(i);
                    Self::retire(&self.home, p);
                }
            }
        }
    }

    /// Takes every chunk of this magazine that has nothing live (current ones included) out
    /// of it, abandoned and held exclusively by the caller.
    pub(crate) fn take_idle(&mut self) -> Vec<ChunkPtr> {
        let mut out = Vec::new();
        for cs in self.classes.iter_mut() {
            if let Some(c) = cs.current {
                // SAFETY: owned by this thread.
                if unsafe {
                    c.drain_remote();
                    c.live()
                } == 0
                {
                    cs.set_current(None);
                    // SAFETY: nothing live: abandoning hands it over at once.
                    if unsafe { c.abandon() } == RemoteFree::Recycle {
                        out.push(c);
                    }
                }
            }
            let mut i = cs.partial.len();
            while i > 0 {
                i -= 1;
                let p = cs.partial[i];
                // SAFETY: owned by this thread.
                if unsafe {
                    p.drain_remote();
                    p.live()
                } == 0
                {
                    cs.remove_partial(i);
                    // SAFETY: as above.
                    if unsafe { p.abandon() } == RemoteFree::Recycle {
                        out.push(p);
                    }
                }
            }
        }
        out
    }

    /// Starts recording acquired chunks; returns the mark to pass to [`Magazine::end_tracking`].
    pub(crate) fn begin_tracking(&mut self) -> usize {
        self.tracking += 1;
        self.tracked.len()
    }

    /// Stops recording for the `allocate_with` that got `mark`. On `rollback`, every chunk
    /// acquired since the mark that is still owned here with nothing live is taken back out
    /// and returned, held exclusively, with whether it came from the central queue.
    pub(crate) fn end_tracking(&mut self, mark: usize, rollback: bool) -> Vec<(ChunkPtr, bool)> {
        self.tracking = self.tracking.saturating_sub(1);
        let recent: Vec<_> = self.tracked.drain(mark.min(self.tracked.len())..).collect();
        if !rollback {
            if self.tracking > 0 {
                // An enclosing `allocate_with` may still roll these back.
                self.tracked.extend(recent);
            }
            return Vec::new();
        }
        recent
            .into_iter()
            .filter(|&(c, _)| self.take_back(c))
            .collect()
    }

    /// Takes `c` back out of this magazine if it is an owned chunk with nothing live; the
    /// caller then holds it exclusively (rollback of a chunk acquired for a failed init).
    pub(crate) fn take_back(&mut self, c: ChunkPtr) -> bool {
        if !c.is_owned_by(self.token) {
            return false;
        }
        // SAFETY: owned by this thread (checked above).
        let (class, live) = unsafe {
            c.drain_remote();
            (c.class() as usize, c.live())
        };
        if live != 0 {
            return false;
        }
        let cs = &mut self.classes[class];
        if cs.current == Some(c) {
            cs.set_current(None);
        } else {
            // SAFETY: owned by this thread.
            let slot = unsafe { c.slot() };
            if cs.partial.get(slot) != Some(&c) {
                return false;
            }
            cs.remove_partial(slot);
        }
        // SAFETY: owned, nothing live: abandoning hands it over at once.
        let outcome = unsafe { c.abandon() };
        outcome == RemoteFree::Recycle
    }
}

impl Drop for Magazine {
    /// Thread exit (or the allocator's close): hand every chunk back.
    fn drop(&mut self) {
        for cs in self.classes.iter_mut() {
            let chunks: Vec<ChunkPtr> = cs.owned().collect();
            cs.set_current(None);
            cs.partial.clear();
            for c in chunks {
                // SAFETY: owned by this thread, which gives it up here.
                unsafe { c.drain_remote() };
                Self::retire(&self.home, c);
            }
        }
        self.src.counters().unregister(&self.shard);
    }
}

/// Releases a region from the thread that owns its chunk: plain loads and stores, unless the
/// chunk is not current and just became fully free or is older than the current one.
///
/// # Safety
/// The calling thread owns `chunk` (`chunk.is_owned_by(thread_token())`) and is releasing the
/// last handle to region `idx`.
#[inline(always)]
pub(crate) unsafe fn free_owned(chunk: ChunkPtr, idx: u32) {
    // SAFETY (whole block): the owner context of an owned chunk is the owning magazine's
    // registry pointer; the magazine lives as long as it owns chunks (its drop abandons them
    // all first), and on its own thread nothing else borrows it while a buffer is dropped.
    unsafe {
        let mag = &mut *chunk.ctx().cast::<Magazine>();
        let live = chunk.free_local(idx);
        mag.shard.add_owned(-(chunk.seg_size() as i64), -1);
        let cs = mag.classes.get_unchecked(chunk.class() as usize);
        if cs.current != Some(chunk) && (live == 0 || chunk.seq() < cs.current_seq) {
            mag.after_free_slow(chunk, live);
        }
    }
}

/// The magazines of one thread, indexed by allocator id.
struct Registry {
    magazines: Vec<*mut Magazine>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        forget_last(usize::MAX);
        for m in self.magazines.drain(..) {
            if !m.is_null() {
                // SAFETY: the registry owns every non-null pointer it holds (from
                // `Magazine::create`), and takes each out before freeing it.
                drop(unsafe { Box::from_raw(m) });
            }
        }
    }
}

#[cfg(not(loom))]
thread_local! {
    static REGISTRY: UnsafeCell<Registry> = const { UnsafeCell::new(Registry { magazines: Vec::new() }) };
}

#[cfg(loom)]
thread_local! {
    static REGISTRY: UnsafeCell<Registry> = UnsafeCell::new(Registry { magazines: Vec::new() });
}

#[cfg(not(loom))]
thread_local! {
    /// The magazine the fast path used last on this thread, as `(allocator id, magazine)`, so
    /// a thread working with one allocator finds its magazine with two plain thread-local
    /// loads (no lazy-initialisation check, no vector index). `(usize::MAX, null)` when empty.
    /// Every path that drops a registered magazine clears it first (`forget_last`). Not kept
    /// under loom, whose thread-locals cannot be const (the registry lookup is the whole path
    /// there).
    static LAST: std::cell::Cell<(usize, *mut Magazine)> =
        const { std::cell::Cell::new((usize::MAX, ptr::null_mut())) };
}

/// Forgets the fast path's cached magazine if it is allocator `id`'s (`usize::MAX`: any).
#[inline]
fn forget_last(id: usize) {
    #[cfg(not(loom))]
    LAST.with(|last| {
        if id == usize::MAX || last.get().0 == id {
            last.set((usize::MAX, ptr::null_mut()));
        }
    });
    #[cfg(loom)]
    let _ = id;
}

/// Runs `f` with the calling thread's magazine for allocator `id`, creating it (from `src`)
/// on first use. `None` when the thread's registry is already destroyed (thread exit).
#[inline(always)]
pub(crate) fn with_magazine<R>(
    id: usize,
    src: impl FnOnce() -> Arc<dyn ChunkSource>,
    f: impl FnOnce(&mut Magazine) -> R,
) -> Option<R> {
    REGISTRY
        .try_with(|reg| {
            reg.with_mut(|reg| {
                // SAFETY: the registry is this thread's alone, and nothing called below
                // (magazine code, chunk acquisition and recycling) re-enters it.
                let reg = unsafe { &mut *reg };
                let mut m = reg.magazines.get(id).copied().unwrap_or(ptr::null_mut());
                if m.is_null() {
                    m = install(reg, id, src());
                }
                // SAFETY: a non-null registry entry is a live magazine of this thread.
                f(unsafe { &mut *m })
            })
        })
        .ok()
}

/// The allocation fast path for allocator `id`: the calling thread's magazine, if it has one,
/// carves a region of `class` from the class's current chunk. `None` sends the caller to the
/// slow path (no magazine yet, a class that is not pooled, a full chunk, thread exit), which
/// is [`with_magazine`] and [`Magazine::alloc`].
#[inline(always)]
pub(crate) fn alloc_fast(id: usize, class: SizeClass) -> Option<(ChunkPtr, u32, usize)> {
    #[cfg(not(loom))]
    {
        let (last_id, m) = LAST.with(|last| last.get());
        if last_id == id {
            // SAFETY: `LAST` holds a live, registered magazine of this thread (it is cleared
            // before any registered magazine is dropped), and nothing else on this thread
            // borrows a magazine while a buffer is being allocated.
            return unsafe { &mut *m }.alloc_fast(class);
        }
    }
    alloc_fast_lookup(id, class)
}

/// [`alloc_fast`] through the registry, remembering the magazine found in `LAST`.
#[inline(never)]
fn alloc_fast_lookup(id: usize, class: SizeClass) -> Option<(ChunkPtr, u32, usize)> {
    REGISTRY
        .try_with(|reg| {
            reg.with_mut(|reg| {
                // SAFETY: as in `with_magazine`.
                let reg = unsafe { &mut *reg };
                let m = *reg.magazines.get(id)?;
                if m.is_null() {
                    return None;
                }
                #[cfg(not(loom))]
                LAST.with(|last| last.set((id, m)));
                // SAFETY: a non-null registry entry is a live magazine of this thread.
                unsafe { &mut *m }.alloc_fast(class)
            })
        })
        .ok()
        .flatten()
}

/// Runs `f` with the calling thread's magazine for allocator `id` if it has one.
pub(crate) fn with_existing<R>(id: usize, f: impl FnOnce(&mut Magazine) -> R) -> Option<R> {
    REGISTRY
        .try_with(|reg| {
            reg.with_mut(|reg| {
                // SAFETY: as in `with_magazine`.
                let reg = unsafe { &mut *reg };
                let m = reg.magazines.get(id).copied().unwrap_or(ptr::null_mut());
                // SAFETY: a non-null registry entry is a live magazine of this thread.
                (!m.is_null()).then(|| f(unsafe { &mut *m }))
            })
        })
        .ok()
        .flatten()
}

#[cold]
fn install(reg: &mut Registry, id: usize, src: Arc<dyn ChunkSource>) -> *mut Magazine {
    // Magazines of allocators whose handles are all gone are dropped here, so a long-lived
    // thread that moves on to a new allocator does not keep the old one's chunks.
    for slot in reg.magazines.iter_mut() {
        // SAFETY: non-null entries are live magazines of this thread.
        if !slot.is_null() && unsafe { (**slot).src.is_closed() } {
            forget_last(usize::MAX);
            let m = std::mem::replace(slot, ptr::null_mut());
            // SAFETY: taken out of the registry, which owned it.
            drop(unsafe { Box::from_raw(m) });
        }
    }
    let pending = PendingMagazine(Magazine::create(src));
    if reg.magazines.len() <= id {
        reg.magazines.resize(id + 1, ptr::null_mut());
    }
    let m = pending.into_registered();
    reg.magazines[id] = m;
    m
}

/// Drops the calling thread's magazine for allocator `id`, if any (the allocator closed).
pub(crate) fn remove(id: usize) {
    let taken = REGISTRY
        .try_with(|reg| {
            reg.with_mut(|reg| {
                // SAFETY: as in `with_magazine`.
                let reg = unsafe { &mut *reg };
                reg.magazines
                    .get_mut(id)
                    .map(|slot| std::mem::replace(slot, ptr::null_mut()))
            })
        })
        .ok()
        .flatten();
    if let Some(m) = taken.filter(|m| !m.is_null()) {
        forget_last(id);
        // SAFETY: taken out of the registry, which owned it.
        drop(unsafe { Box::from_raw(m) });
    }
}
