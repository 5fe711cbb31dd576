//! Magazines: one thread's cache of chunks for one allocator, and the thread-local registry
//! that finds it in O(1).
//!
//! Owns: [`Magazine`] (the current chunk and the partly used chunks of every size class, the
//! drain of remote frees, the hand-back on thread exit), the registry, the registration
//! guard. May import: `chunk`, `size_class`, `config`, `sync`, `stats`, `error`. It reaches the
//! allocator only through the [`ChunkSource`] trait, which the allocator implements.
//!
//! # Allocation order
//! Each class has one *current* chunk that allocations carve from, and two lists of the other
//! owned chunks: *full* ones (no free space when they stopped being current, though remote
//! frees may have arrived since) and *spacious* ones (a region was freed into them locally
//! since). A local free moves a chunk from the full list to the spacious list, in O(1), with
//! no work at all while it stays spacious; if that chunk is older than the current one it
//! becomes current instead (the younger one is listed, or retired if empty). When the current chunk runs out, the oldest of the
//! last few spacious chunks becomes current; if there is none (and every 16th time anyway),
//! the full chunks' remote frees are drained first, which makes some spacious and retires the
//! fully free. Only then is a new chunk taken. Allocations therefore lean toward older
//! chunks: long-lived survivors collect there, younger chunks empty out and are retired, and
//! one small survivor does not pin a chunk for long. No step scans a list on every refill,
//! so a class with thousands of live buffers costs the same per allocation as one with ten.
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

    /// An idle chunk from the central queue, if one of a usable size waits (see `acquire`).
    fn take_cached(&self, bytes: usize, min_bytes: usize) -> Option<ChunkPtr>;

    /// Bumped by every `trim()`; a magazine that sees it change releases its idle chunks.
    fn trim_epoch(&self) -> u64;

    /// `true` once the allocator's last handle is gone.
    fn is_closed(&self) -> bool;
}

/// Which of its class's lists holds an owned chunk: the low two bits of the chunk's slot
/// word (the rest is its index in that list). `FULL` and `SPACIOUS` index
/// [`ClassState::lists`].
const FULL: usize = 0;
const SPACIOUS: usize = 1;
const CURRENT: usize = 2;
const TAG_BITS: u32 = 2;
const TAG_MASK: usize = (1 << TAG_BITS) - 1;

/// How many of the most recently listed spacious chunks the slow path compares to pick the
/// oldest (a bounded stand-in for "the oldest chunk with space").
const SPACIOUS_CANDIDATES: usize = 4;

/// Every this many refills of a class (or as many as it lists chunks, if more, so the check
/// costs O(1) per refill), its listed chunks are checked for remote frees even when a
/// spacious chunk is at hand, so chunks emptied by other threads are retired.
const RECLAIM_PERIOD: u32 = 16;

/// The growth grade a class holding `owned` chunks besides its current one asks for: 2x
/// from 4 chunks, 4x from 12, 8x from 28.
fn grow(owned: usize) -> u32 {
    match owned {
        0..=3 => 0,
        4..=11 => 1,
        12..=27 => 2,
        _ => 3,
    }
}

/// One size class's chunks in one magazine.
struct ClassState {
    /// The class's segment size (kept here so the fast path does not recompute it).
    seg_size: usize,
    current: Option<ChunkPtr>,
    /// Owned chunks that are not current. `lists[FULL]`: no local free space when they
    /// stopped being current (remote frees may have arrived since). `lists[SPACIOUS]`: a
    /// region was freed into them locally since, so they have space. Each chunk's slot word
    /// says which list holds it and where.
    lists: [Vec<ChunkPtr>; 2],
    /// Refills since the last full reclaim.
    refills: u32,
    /// How far this class's chunk size has grown (a doubling each): the most the class has
    /// needed so far, so the size does not swing with each burst and the chunks it gives
    /// back to the central queue fit its next request.
    grade: u32,
}

impl ClassState {
    const fn new(class: SizeClass) -> Self {
        ClassState {
            seg_size: class.size(),
            current: None,
            lists: [Vec::new(), Vec::new()],
            refills: 0,
            grade: 0,
        }
    }

    fn push(&mut self, c: ChunkPtr, list: usize) {
        let l = &mut self.lists[list];
        // SAFETY: the magazine's thread owns every chunk of its classes.
        unsafe { c.set_slot(l.len() << TAG_BITS | list) };
        l.push(c);
    }

    /// Takes `c` out of the list that holds it.
    fn remove(&mut self, c: ChunkPtr) -> ChunkPtr {
        // SAFETY: owned by this magazine's thread.
        let slot = unsafe { c.slot() };
        let (list, i) = (slot & TAG_MASK, slot >> TAG_BITS);
        let l = &mut self.lists[list];
        debug_assert_eq!(l.get(i), Some(&c));
        let c = l.swap_remove(i);
        if let Some(&moved) = l.get(i) {
            // SAFETY: owned by this magazine's thread.
            unsafe { moved.set_slot(i << TAG_BITS | list) };
        }
        c
    }

    fn set_current(&mut self, c: Option<ChunkPtr>) {
        self.current = c;
        if let Some(c) = c {
            // SAFETY: owned by this magazine's thread.
            unsafe { c.set_slot(CURRENT) };
        }
    }

    /// Owned chunks besides the current one.
    fn listed(&self) -> usize {
        self.lists[FULL].len() + self.lists[SPACIOUS].len()
    }

    fn owned(&self) -> impl Iterator<Item = ChunkPtr> + '_ {
        self.current
            .into_iter()
            .chain(self.lists.iter().flatten().copied())
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
    /// The sequence number the next adopted chunk gets (lower is older).
    next_seq: u64,
    seen_trim: u64,
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
            cs.push(c, FULL);
        }
        // 2. A chunk with space: first one a local free made spacious (the oldest of the
        //    last few, so allocations pack into older chunks and younger ones empty out);
        //    failing that, or now and then, full chunks that remote frees gave space to.
        let cs = &mut self.classes[idx];
        cs.refills += 1;
        if cs.lists[SPACIOUS].is_empty() || cs.refills >= RECLAIM_PERIOD.max(cs.listed() as u32) {
            cs.refills = 0;
            self.reclaim(idx);
        }
        let cs = &mut self.classes[idx];
        let spacious = &cs.lists[SPACIOUS];
        let oldest = spacious
            .iter()
            .rev()
            .take(SPACIOUS_CANDIDATES)
            // SAFETY: owned by this thread.
            .min_by_key(|c| unsafe { c.seq() })
            .copied();
        if let Some(c) = oldest {
            let c = cs.remove(c);
            cs.set_current(Some(c));
            return Ok(self.carve_from(c, class));
        }
        // 3. A chunk from the allocator (central queue or system).
        let seg = class.size();
        let grade = grow(cs.listed()).max(cs.grade);
        cs.grade = grade;
        let want = self.chunk_size_for(seg, grade);
        let least = next_pow2(seg)
            .unwrap_or(usize::MAX)
            .max(self.min_chunk)
            .min(want);
        // Before a chunk is made, the full chunks of every class give up their remote frees:
        // the fully free ones go to the central queue, where this request may find one (and
        // this class may find one of its own with space). This keeps memory that other
        // threads freed from waiting in a class that has not refilled, while a new chunk is
        // made for another. It costs a load per full chunk, only on this path.
        let cached = self.src.take_cached(want, least);
        if cached.is_none() {
            for i in 0..self.classes.len() {
                self.reclaim(i);
            }
            if let Some(c) = self.classes[idx].lists[SPACIOUS].last().copied() {
                let cs = &mut self.classes[idx];
                let c = cs.remove(c);
                cs.set_current(Some(c));
                return Ok(self.carve_from(c, class));
            }
        }
        let acquired = match cached {
            Some(c) => Ok((c, true)),
            None => self.src.acquire(&self.home, want, least),
        };
        let (c, from_cache) = match acquired {
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
            c.adopt(self.token, self.this.cast(), self.next_seq, from_cache);
        }
        self.next_seq += 1;
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

    /// The chunk size for a class with `seg`-byte segments at growth `grade`: about 16
    /// segments for classes up to 1 KiB, 4 up to 16 KiB and 2 above, doubled `grade` times,
    /// within the bounds. Starting small keeps a class that holds few buffers from holding a
    /// large chunk; growing keeps a busy class from refilling often.
    fn chunk_size_for(&self, seg: usize, grade: u32) -> usize {
        let target = if seg <= 1 << 10 {
            16
        } else if seg <= 16 << 10 {
            4
        } else {
            2
        };
        let base = next_pow2(seg.saturating_mul(target)).unwrap_or(self.max_chunk);
        base.checked_shl(grade)
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
    /// either now fully free (it is retired) or was on the full list: then it becomes current
    /// if it is older than the current chunk (which is listed, or retired if empty), and
    /// spacious otherwise. This happens once per chunk each time it fills, never per free.
    #[cold]
    #[inline(never)]
    fn after_free_slow(&mut self, c: ChunkPtr, live: u32) {
        // SAFETY: owned by this thread.
        let class = unsafe { c.class() as usize };
        let cs = &mut self.classes[class];
        let c = cs.remove(c);
        if live == 0 {
            Self::retire(&self.home, c);
            return;
        }
        match cs.current {
            // SAFETY: owned by this thread.
            Some(cur) if unsafe { c.seq() < cur.seq() } => {
                // The older chunk takes over, so allocations fill its holes before the
                // younger one's (this is what packs survivors together).
                cs.set_current(Some(c));
                // SAFETY: owned by this thread.
                let (cur_live, cur_space) = unsafe { (cur.live(), cur.has_local_space()) };
                if cur_live == 0 {
                    Self::retire(&self.home, cur);
                } else {
                    cs.push(cur, if cur_space { SPACIOUS } else { FULL });
                }
            }
            _ => cs.push(c, SPACIOUS),
        }
    }

    /// Drains the remote frees waiting in the class's listed chunks: those now fully free are
    /// retired (chunks emptied by other threads are given back), full ones with space become
    /// spacious.
    fn reclaim(&mut self, class: usize) {
        let cs = &mut self.classes[class];
        for list in [FULL, SPACIOUS] {
            let mut i = cs.lists[list].len();
            while i > 0 {
                i -= 1;
                let p = cs.lists[list][i];
                if !p.has_remote() {
                    continue;
                }
                // SAFETY: owned by this thread.
                let live = unsafe {
                    p.drain_remote();
                    p.live()
                };
                if live == 0 {
                    Self::retire(&self.home, cs.remove(p));
                } else if list == FULL {
                    let p = cs.remove(p);
                    cs.push(p, SPACIOUS);
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
            for list in [FULL, SPACIOUS] {
                let mut i = cs.lists[list].len();
                while i > 0 {
                    i -= 1;
                    let p = cs.lists[list][i];
                    // SAFETY: owned by this thread.
                    if unsafe {
                        p.drain_remote();
                        p.live()
                    } == 0
                    {
                        cs.remove(p);
                        // SAFETY: as above.
                        if unsafe { p.abandon() } == RemoteFree::Recycle {
                            out.push(p);
                        }
                    }
                }
            }
        }
        out
    }

    /// The mark of an initialisation that may have to be rolled back: chunks adopted from
    /// now on have a sequence number at least this.
    pub(crate) fn mark(&self) -> u64 {
        self.next_seq
    }

    /// Rolls back an initialisation: takes every chunk adopted since `mark` that now has
    /// nothing live out of the magazine, abandoned and held exclusively by the caller, with
    /// whether it came from the central queue.
    ///
    /// It looks only at the chunks the magazine holds now, so a chunk that left it meanwhile
    /// (trimmed, retired, freed under the memory limit) is not touched: no pointer to a chunk
    /// is kept across the initialisation.
    pub(crate) fn take_back_since(&mut self, mark: u64) -> Vec<(ChunkPtr, bool)> {
        let mut out = Vec::new();
        for cs in self.classes.iter_mut() {
            let young: Vec<ChunkPtr> = cs
                .owned()
                // SAFETY: owned by this thread.
                .filter(|c| unsafe { c.seq() } >= mark)
                .collect();
            for c in young {
                // SAFETY: owned by this thread.
                let (live, from_cache) = unsafe {
                    c.drain_remote();
                    (c.live(), c.came_from_cache())
                };
                if live != 0 {
                    continue;
                }
                if cs.current == Some(c) {
                    cs.set_current(None);
                } else {
                    cs.remove(c);
                }
                // SAFETY: owned, nothing live: abandoning hands it over at once.
                if unsafe { c.abandon() } == RemoteFree::Recycle {
                    out.push((c, from_cache));
                }
            }
        }
        out
    }
}

impl Drop for Magazine {
    /// Thread exit (or the allocator's close): hand every chunk back.
    fn drop(&mut self) {
        for cs in self.classes.iter_mut() {
            let chunks: Vec<ChunkPtr> = cs.owned().collect();
            cs.set_current(None);
            cs.lists.iter_mut().for_each(Vec::clear);
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
/// chunk is not current and just became fully free or was on its class's full list.
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
        let list = chunk.slot() & TAG_MASK;
        if list != CURRENT && (live == 0 || list == FULL) {
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

/// Records the release of a `size`-byte region of allocator `id` in the calling thread's own
/// stats shard, if the thread has a magazine of that allocator; `false` if it has none (the
/// caller then uses the shared shard). Never creates a magazine.
#[inline]
pub(crate) fn account_release(id: usize, size: usize) -> bool {
    #[cfg(not(loom))]
    {
        let (last_id, m) = LAST.with(|last| last.get());
        if last_id == id {
            // SAFETY: as in `alloc_fast`: `LAST` holds a live, registered magazine of this
            // thread, and its shard is written only by this thread.
            unsafe { &*m }.shard.add_owned(-(size as i64), -1);
            return true;
        }
        if last_id == usize::MAX {
            // The thread has not allocated since its last magazine change (a thread that only
            // releases, typically): skip the registry; the shared shard is as exact.
            return false;
        }
    }
    with_existing(id, |m| m.shard.add_owned(-(size as i64), -1)).is_some()
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
