//! Magazines: one thread's cache of chunks for one allocator, the thread-local registry that
//! finds it in O(1), the gate that lets another thread reclaim its idle chunks, and the
//! roster through which the allocator reaches every magazine.
//!
//! Owns: [`Magazine`] (the current chunk and the partly used chunks of every size class, the
//! per-thread budget of idle chunks, the drain of remote frees, the hand-back on thread
//! exit), its [`Gate`], the [`Roster`], the registry (with each thread's release shards: see
//! [`account_release`]), the registration guard. May import:
//! `chunk`, `size_class`, `config`, `sync`, `stats`, `error`, and `os` for the process-wide
//! barrier. It reaches the allocator only through the [`ChunkSource`] trait, which the
//! allocator implements.
//!
//! # Allocation order
//! Each class has a *cache* of free segments of its owned chunks (up to 64, tcache's idea;
//! the newest 8 in a stack in the magazine, the older in a list threaded through the segments):
//! the owner's frees into any chunk that is not current push there, and allocations pop
//! from there first, so a free anywhere in the class is reused by the next allocation in
//! O(1), whichever chunk it fell in. The chunks' `live` counts stay exact (a cached segment
//! is free); a chunk that becomes fully free is retired as below, its cached segments taken
//! out of the cache first, so the cache keeps no chunk alive by itself. A full cache gives
//! its older half back to the chunks' own lists. Poisoning and zeroing on release turn it off.
//!
//! Each class has one *current* chunk that allocations carve from, and two lists of the other
//! owned chunks: *full* ones (no free space when they stopped being current, though remote
//! frees may have arrived since) and *spacious* ones (a region was freed into them locally
//! since). A local free moves a chunk from the full list to the spacious list, in O(1), with
//! no work at all while it stays spacious; if that chunk is older than the current one it
//! becomes current instead (the younger one is listed, or retired if empty). When the current
//! chunk runs out, the oldest of the last few spacious chunks becomes current; if there is
//! none (and every 16th time anyway), the full chunks' remote frees are drained first, which
//! makes some spacious and retires the fully free. Only then is a new chunk taken.
//! Allocations therefore lean toward older chunks: long-lived survivors collect there,
//! younger chunks empty out and are retired, and one small survivor does not pin a chunk for
//! long. No step scans a list on every refill.
//!
//! # Retirement and the per-thread budget
//! A chunk that is not current and has no live region is retired at once: handed to the
//! allocator, which caches it in the central queue if the byte budget allows and otherwise
//! gives it to the system. A current chunk that empties stays, so an allocate/free loop
//! never touches the central queue, but only within the magazine's budget of idle bytes
//! (`max_thread_idle_bytes`, summed over every class): the first time it empties it is
//! tagged *idle* and counted; past the budget the oldest idle chunks are retired (the one
//! that just emptied last). The count is kept lazily: a tagged chunk that is in use again
//! keeps its tag (the fast path writes nothing for it) and is found and untagged the next
//! time the budget is checked. So a thread keeps at most `max_thread_idle_bytes` of empty
//! chunks whatever the number of classes it touched.
//!
//! # The gate: reclaiming another thread's chunks
//! Every operation of the owner on its magazine (allocate, free into an owned chunk, the slow
//! paths) runs inside the gate: it stores `active = 1`, passes the light barrier, and loads
//! `claim`; at the end it stores `active = 0` (`Release`). A reclaimer (`trim()`, the idle
//! sweep, the close) sets `claim`, runs the heavy barrier once for all the magazines it
//! claimed, and waits for `active == 0` (`Acquire`): from then until it clears `claim`
//! (`Release`) it has the magazine to itself and runs the owner's own code on it. An owner
//! that finds `claim` set steps out (`active = 0`) and waits for it to clear. This is the
//! store-buffering (Dekker) pattern with asymmetric barriers: the light side is a compiler
//! fence, the heavy side the kernel's `membarrier`, which makes every running thread pass a
//! full barrier; where that is not available both sides are `fence(SeqCst)` (the claim word
//! then carries a flag that sends the owner through the fence). Either the owner's load sees
//! the claim, or the reclaimer's load sees the owner active; the data itself passes by the
//! `Release`/`Acquire` pairs. The owner's fast path stays free of read-modify-writes: two
//! stores and a load. DESIGN.md has the full argument and the loom models.
//!
//! No reclaimer ever waits on a gate while holding anything an owner might wait for inside
//! its gate: it holds the roster's lock (and `trim()` and the sweep the allocator's
//! maintenance lock), which no gated code takes; gated code takes only the span, counter and
//! cache locks, which nobody holds while waiting on a gate. A reclaimer that unwinds releases
//! every claim it still holds (`Claims`), so no owner waits for a claim that nobody will clear.
//!
//! # Thread exit and close
//! The registry's destructor leaves the roster (waiting for a reclaim in progress), then
//! drops the magazine, which drains all its chunks: fully free ones are recycled at once;
//! the others are parked for another thread to adopt (through [`ChunkSource::park`], module
//! `parked`; the class caches' segments go back to their chunks first), or, if the parked
//! set is full, abandoned, to be recycled by whichever thread releases their last region (see
//! `chunk`). A refill adopts a parked chunk of its class before it takes any other. When the
//! allocator closes, the closer claims every magazine and abandons all its chunks, live or
//! not, and marks it dead: its thread keeps only the small husk until it next touches its
//! registry or exits, and every byte of chunk memory comes back when the last buffer goes.

use std::ptr;
use std::sync::Arc;

use std::ptr::NonNull;

use crate::chunk::{CachedSeg, ChunkPtr, Home, RemoteFree, CHECK, NO_CHUNK};
use crate::config::{Settings, MIN_CHUNK_SIZE_FLOOR};
use crate::error::AllocError;
use crate::os;
use crate::size_class::{next_pow2, SizeClass};
use crate::stats::Shard;
use crate::sync::{
    self, fence, thread_local, AtomicBool, AtomicU32, Critical, ModelArc, Mutex, Ordering::*,
    UnsafeCell,
};
use crate::waiters::Deferral;

/// A region carved for a buffer: its chunk, its segment, its capacity.
pub(crate) type Carved = (ChunkPtr, u32, usize);

/// A region the fast path carved: as [`Carved`], with the segment's address, which the fast
/// path computes anyway (a caller computing it again costs three instructions).
pub(crate) type FastCarved = (ChunkPtr, u32, usize, NonNull<u8>);

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

    /// Parks a chunk of size class `class` that holds live regions, for another thread to
    /// adopt (module `parked`); `false` if it was not (the caller still owns it).
    ///
    /// # Safety
    /// The calling thread owns the chunk and gives it up (its thread exits).
    unsafe fn park(&self, chunk: ChunkPtr, class: usize) -> bool;

    /// A parked chunk of size class `class`, held exclusively by the caller, who adopts it.
    fn adopt_parked(&self, class: usize) -> Option<ChunkPtr>;

    /// The roster of the allocator's magazines.
    fn roster(&self) -> &Roster;
}

/// Which of its class's lists holds an owned chunk: the low two bits of the chunk's slot
/// word (the rest is its index in that list). `FULL` and `SPACIOUS` index
/// [`ClassState::lists`]; `CURRENT` and `IDLE` mark the class's current chunk, `IDLE` when it
/// is counted against the idle budget.
const FULL: usize = 0;
const SPACIOUS: usize = 1;
const CURRENT: usize = 2;
const IDLE: usize = 3;
const TAG_BITS: u32 = 2;
const TAG_MASK: usize = (1 << TAG_BITS) - 1;

/// How many of the most recently listed spacious chunks the slow path compares to pick the
/// oldest (a bounded stand-in for "the oldest chunk with space").
const SPACIOUS_CANDIDATES: usize = 4;

/// The most free segments a class's cache holds (see [`ClassState::cache`]). When a free
/// finds it full, the older half goes back to the chunks' own lists.
const CACHE_CAP: u32 = 64;

/// The newest free segments of a class's cache held in the magazine itself (see
/// [`ClassState::hot`]); a power of two.
const HOT: usize = 8;

/// A class's hot stack: (chunk, segment index) pairs, the first `hot_len` in use.
type HotStack = [(ChunkPtr, u32); HOT];

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
    /// needed lately, so the size does not swing with each burst and the chunks it gives
    /// back to the central queue fit its next request. It decays one step per idle sweep in
    /// which the class took no new chunk.
    grade: u32,
    /// Chunks taken from the allocator since the last idle sweep.
    acquired: u32,
    /// Regions carved from this class, ever (one plain increment per allocation): the idle
    /// sweep compares it with what it saw last, so a class in use is never thought idle, even
    /// when its current chunk is empty at every sweep (an allocate/free loop).
    allocs: u64,
    /// `allocs` at the last idle sweep.
    allocs_seen: u64,
    /// Free segments of this class's listed chunks, newest first: the owner's frees into a
    /// chunk that is not current push here, and allocations pop from here before they carve
    /// from the current chunk. So a free anywhere in the class is reused by the next
    /// allocation in O(1) (tcache's idea), instead of making its chunk spacious and the
    /// allocation refill from it. Cached segments count as free in their chunk's `live`
    /// (which stays exact): a chunk whose regions are all free is retired as before, its
    /// cached segments taken out of the cache first ([`ClassState::purge`]). So the cache
    /// keeps no chunk alive on its own, and the per-thread idle budget, which counts empty
    /// chunks, covers it.
    ///
    /// The newest of them are not here but in `hot`; this list holds the older ones, each
    /// node written over its segment's first bytes ([`CachedSeg`]).
    cache: Option<NonNull<CachedSeg>>,
    /// Segments in `cache` (the list).
    cached: u32,
    /// The most the cache (`hot` and the list) may hold: [`CACHE_CAP`], or 0 when released
    /// regions are scrubbed (poison or zeroing: a node would stay in the released bytes).
    cache_cap: u32,
    /// The newest cached segments (chunk, index), the newest last: the first `hot_len`
    /// entries. A release pushes here and an allocation pops from here without touching the
    /// segment's memory (as jemalloc's thread cache keeps pointers in an array): a list node
    /// written into a freed segment makes the next allocation wait for that segment's cache
    /// line before it can pop, and under random replacement the line is cold. When full, its
    /// older half is spilled to the list. Made on the class's first cached release (boxed,
    /// so a magazine's classes that never cache cost 8 bytes each, not 128).
    hot: Option<Box<HotStack>>,
    hot_len: u32,
    /// [`HOT`], or 0 when the cache is off (`cache_cap == 0`): one test on the release path.
    hot_cap: u32,
}

impl ClassState {
    const fn new(class: SizeClass, cache_cap: u32) -> Self {
        ClassState {
            cache: None,
            cached: 0,
            cache_cap,
            hot: None,
            hot_len: 0,
            hot_cap: if cache_cap == 0 { 0 } else { HOT as u32 },
            seg_size: class.size(),
            current: None,
            lists: [Vec::new(), Vec::new()],
            refills: 0,
            grade: 0,
            acquired: 0,
            allocs: 0,
            allocs_seen: 0,
        }
    }

    fn push(&mut self, c: ChunkPtr, list: usize) {
        let l = &mut self.lists[list];
        // SAFETY: the magazine's thread (or its claimer) owns every chunk of its classes.
        unsafe { c.set_slot(l.len() << TAG_BITS | list) };
        l.push(c);
    }

    /// Takes `c` out of the list that holds it.
    fn remove(&mut self, c: ChunkPtr) -> ChunkPtr {
        // SAFETY: owned by this magazine.
        let slot = unsafe { c.slot() };
        let (list, i) = (slot & TAG_MASK, slot >> TAG_BITS);
        let l = &mut self.lists[list];
        debug_assert_eq!(l.get(i), Some(&c));
        let c = l.swap_remove(i);
        if let Some(&moved) = l.get(i) {
            // SAFETY: owned by this magazine.
            unsafe { moved.set_slot(i << TAG_BITS | list) };
        }
        c
    }

    fn set_current(&mut self, c: ChunkPtr) {
        self.current = Some(c);
        // SAFETY: owned by this magazine.
        unsafe { c.set_slot(CURRENT) };
    }

    /// Owned chunks besides the current one.
    fn listed(&self) -> usize {
        self.lists[FULL].len() + self.lists[SPACIOUS].len()
    }

    /// Takes every cached segment of chunk `c` out of the cache (it is about to leave the
    /// magazine). The segments need no other home: `c` has no live region, or is abandoned
    /// with its live regions only.
    fn purge(&mut self, c: ChunkPtr) {
        if let Some(hot) = self.hot.as_deref_mut() {
            let mut kept = 0;
            for i in 0..self.hot_len as usize {
                if hot[i].0 != c {
                    hot[kept] = hot[i];
                    kept += 1;
                }
            }
            self.hot_len = kept as u32;
        }
        let mut prev: Option<NonNull<CachedSeg>> = None;
        let mut node = self.cache;
        while let Some(n) = node {
            // SAFETY: a node of this magazine's cache.
            let (chunk, _, next) = unsafe { CachedSeg::read(n) };
            if chunk == c {
                match prev {
                    // SAFETY: as above.
                    Some(p) => unsafe { CachedSeg::set_next(p, next) },
                    None => self.cache = next,
                }
                self.cached -= 1;
            } else {
                prev = node;
            }
            node = next;
        }
    }

    /// The hot stack is empty and the list holds segments: up to half a stack of them (the
    /// newest) move back into it. The fast path looks only at the hot stack; the slow path
    /// ([`Body::refill`]) calls this before it looks for a chunk.
    fn refill_hot(&mut self) {
        debug_assert_eq!(self.hot_len, 0);
        let n = (self.cached as usize).min(HOT / 2);
        let hot = self.hot.get_or_insert_with(new_hot_stack);
        for i in (0..n).rev() {
            let node = self.cache.expect("the list holds `cached` nodes");
            // SAFETY: a node of this magazine's cache, unlinked here.
            let (c, idx, next) = unsafe { CachedSeg::read(node) };
            hot[i] = (c, idx);
            self.cache = next;
        }
        self.cached -= n as u32;
        self.hot_len = n as u32;
    }

    /// Puts every cached segment back on its chunk's own free list, as a local release would
    /// have, and empties the cache (its chunks are being parked, with their free space).
    fn uncache_all(&mut self) {
        if let Some(hot) = self.hot.as_deref() {
            for &(c, idx) in &hot[..self.hot_len as usize] {
                // SAFETY: owned by this magazine; the segment was cached, so it is free.
                unsafe { c.uncache(idx) };
            }
        }
        self.hot_len = 0;
        let mut node = self.cache.take();
        while let Some(n) = node {
            // SAFETY: a node of this magazine's cache, taken out of it here.
            let (c, idx, next) = unsafe { CachedSeg::read(n) };
            // SAFETY: owned by this magazine; the segment was cached, so it is free.
            unsafe { c.uncache(idx) };
            node = next;
        }
        self.cached = 0;
    }

    /// Forgets the whole cache (its chunks are all being given up).
    fn clear_cache(&mut self) {
        self.hot_len = 0;
        self.cache = None;
        self.cached = 0;
    }

    fn owned(&self) -> impl Iterator<Item = ChunkPtr> + '_ {
        self.current
            .into_iter()
            .chain(self.lists.iter().flatten().copied())
    }
}

/// An empty hot stack (see [`ClassState::hot`]).
fn new_hot_stack() -> Box<HotStack> {
    Box::new([(NO_CHUNK, 0); HOT])
}

/// The claim word's bits.
const CLAIMED: u32 = 1;
/// The owner must pass a `fence(SeqCst)` before trusting its load of the claim word (the
/// heavy barrier is not the kernel's membarrier). Set for the magazine's life.
const FENCE: u32 = 2;

/// The two words of the reclaim protocol (see the module documentation).
struct Gate {
    /// 1 while the owner runs an operation on the magazine. Written by the owner only.
    active: AtomicU32,
    /// `CLAIMED` while a reclaimer holds the magazine (set and cleared by reclaimers, one at a
    /// time under the roster's lock), plus the constant `FENCE` flag.
    claim: AtomicU32,
}

/// An operation of the owner in progress: leaving the gate on drop, also when a poison check
/// panics inside, so a reclaimer never waits for a thread that unwound. A critical section
/// (counted in debug builds: no user code may run until it drops).
struct Entered<'a>(&'a Magazine, Critical);

impl Entered<'_> {
    /// The guard of an entry made with [`Magazine::try_enter`] (and, if it found the claim
    /// word set, [`Magazine::enter_slow`]) by a caller that holds `mag` as a raw pointer.
    ///
    /// # Safety
    /// `mag` is a live magazine of the calling thread whose gate the caller has entered, and
    /// made no guard of that entry.
    #[inline(always)]
    unsafe fn entered<'a>(mag: *const Magazine) -> Entered<'a> {
        // SAFETY: as the caller guarantees.
        Entered(unsafe { &*mag }, Critical::enter())
    }

    /// Takes over the guard that [`Entered::hand_over`] gave up.
    ///
    /// # Safety
    /// `mag` is what `hand_over` returned, and nobody else took it over.
    #[inline(always)]
    unsafe fn handed_over<'a>(mag: *const Magazine) -> Entered<'a> {
        // SAFETY: as the caller guarantees; the section was counted by the guard handed over.
        Entered(unsafe { &*mag }, Critical::continued())
    }

    /// Gives the guard up without leaving the gate, for [`Entered::handed_over`]: the
    /// magazine is passed on as a raw pointer, so no reference to it is an argument of the
    /// callee (a deferred waker may drop the magazine once the callee has left the gate).
    #[inline(always)]
    fn hand_over(self) -> *const Magazine {
        let mag: *const Magazine = self.0;
        std::mem::forget(self);
        mag
    }
}

impl Drop for Entered<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.gate.active.store(0, Release);
    }
}


/// One thread's cache for one allocator.
pub(crate) struct Magazine {
    gate: Gate,
    /// Set by the closer (while it holds the claim) when it has emptied the magazine for good.
    dead: AtomicBool,
    /// Everything else: touched by the owner inside the gate, or by a reclaimer while it
    /// holds the claim and has seen the owner outside.
    state: UnsafeCell<State>,
}

// SAFETY: `state` is only ever accessed by one thread at a time, by the gate protocol (the
// owner inside `enter`/`Entered`, a reclaimer between its claim and release, or whoever holds
// the last `Arc` in `Drop`); its raw pointers (chunks, the magazine's own address) follow the
// same rule.
unsafe impl Send for Magazine {}
// SAFETY: as above.
unsafe impl Sync for Magazine {}

struct State {
    /// The magazine's allocator; `None` once the magazine is dead (its allocator closed) or
    /// being dropped.
    link: Option<Link>,
    body: Body,
}

/// A magazine's handles on its allocator (one object, seen through two traits).
struct Link {
    src: Arc<dyn ChunkSource>,
    home: Arc<dyn Home>,
}

/// The magazine's chunks and bookkeeping (apart from `Link`, so that an operation can use
/// both without cloning the handles).
struct Body {
    /// The owning thread's token.
    token: usize,
    /// This magazine's own address (the chunks' owner context).
    this: *const Magazine,
    shard: Arc<Shard>,
    /// Empty once the magazine is dead, so the fast path finds nothing.
    classes: Box<[ClassState]>,
    min_chunk: usize,
    max_chunk: usize,
    /// The sequence number the next adopted chunk gets (lower is older).
    next_seq: u64,
    /// Current chunks tagged `IDLE`, oldest first, and their bytes.
    idle: Vec<ChunkPtr>,
    idle_bytes: usize,
    idle_budget: usize,
    /// Set when a refill took a chunk from the allocator (cleared by `Magazine::alloc`): the
    /// activity after which the allocator looks whether an idle sweep is due.
    went_to_allocator: bool,
}

/// What is left to do after [`Body::free`].
enum Freed {
    Done,
    /// The chunk is not current, or scrubs released regions: the region is not released yet
    /// ([`Body::free_listed`] does it).
    Slow,
    /// The current chunk just emptied.
    EmptiedCurrent,
}

/// What a reclaim takes from a magazine.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reclaim {
    /// Every chunk with no live region (`trim()`).
    All,
    /// Chunks with no live region that were already idle at a sweep at least `idle_ns` before
    /// `now` (the idle sweep); the others are stamped. Chunks emptied by remote frees that are
    /// not current are taken at once.
    Expired { now: u64, idle_ns: u64 },
}

impl Magazine {
    /// Creates a magazine for the calling thread, its stats shard registered.
    fn create(src: Arc<dyn ChunkSource>) -> ModelArc<Magazine> {
        let settings = src.settings();
        let cache_cap = if settings.poison || settings.zero_on_release {
            0
        } else {
            CACHE_CAP
        };
        let classes = (0..settings.class_count)
            .map(|i| ClassState::new(SizeClass(i as u16), cache_cap))
            .collect();
        let shard = Arc::new(Shard::default());
        src.counters().register(shard.clone());
        let home: Arc<dyn Home> = src.clone();
        let (min_chunk, max_chunk, idle_budget) = (
            settings.min_chunk,
            settings.max_chunk,
            settings.max_thread_idle_bytes,
        );
        let m = ModelArc::new(Magazine {
            gate: Gate {
                active: AtomicU32::new(0),
                claim: AtomicU32::new(if os::asymmetric() { 0 } else { FENCE }),
            },
            dead: AtomicBool::new(false),
            state: UnsafeCell::new(State {
                link: Some(Link { src, home }),
                body: Body {
                    token: sync::thread_token(),
                    this: ptr::null(),
                    min_chunk,
                    max_chunk,
                    idle_budget,
                    shard,
                    classes,
                    next_seq: 0,
                    idle: Vec::new(),
                    idle_bytes: 0,
                    went_to_allocator: false,
                },
            }),
        });
        let this = ModelArc::as_ptr(&m);
        // SAFETY: nobody else can reach the new magazine yet.
        m.state.with_mut(|s| unsafe { (*s).body.this = this });
        m
    }

    /// Enters the gate: from here until the returned guard drops, no reclaimer touches the
    /// magazine. Only the owning thread may call it.
    #[inline(always)]
    fn enter(&self) -> Entered<'_> {
        match self.try_enter() {
            0 => Entered(self, Critical::enter()),
            c => self.enter_rest(c),
        }
    }

    /// The first step of [`Magazine::enter`]: stores `active`, passes the light barrier and
    /// loads the claim word, which it answers. Zero: the caller is inside and makes the
    /// guard. Otherwise the caller must finish with [`Magazine::enter_rest`], passing it the
    /// word (`active` stays 1 meanwhile, which a reclaimer only waits on).
    #[inline(always)]
    fn try_enter(&self) -> u32 {
        self.gate.active.store(1, Relaxed);
        sync::light_barrier();
        self.gate.claim.load(Acquire)
    }

    /// The rest of [`Magazine::enter`] after [`Magazine::try_enter`] found the claim word `c`
    /// set.
    #[cold]
    #[inline(never)]
    fn enter_rest(&self, c: u32) -> Entered<'_> {
        self.enter_slow(c);
        Entered(self, Critical::enter())
    }

    #[cold]
    #[inline(never)]
    fn enter_slow(&self, mut c: u32) {
        loop {
            if c & FENCE != 0 {
                fence(SeqCst);
                c = self.gate.claim.load(Acquire);
            }
            if c & CLAIMED == 0 {
                return;
            }
            // A reclaimer holds the magazine: step out, wait, and try again.
            self.gate.active.store(0, Release);
            let mut round = 0;
            while self.gate.claim.load(Acquire) & CLAIMED != 0 {
                sync::spin_wait(&mut round);
            }
            self.gate.active.store(1, Relaxed);
            sync::light_barrier();
            c = self.gate.claim.load(Acquire);
        }
    }

    /// Runs an operation of the owner inside the gate if no reclaimer claims the magazine;
    /// `None` (having stepped out again, as [`Magazine::enter`] does before it waits) if one
    /// does: the caller then takes its slow path, which waits at the gate. Calls nothing
    /// itself, so the fast path saves no registers for the wait.
    #[inline(always)]
    fn run_uncontended<R>(&self, f: impl FnOnce(&mut State) -> Option<R>) -> Option<R> {
        let mut c = self.try_enter();
        if c != 0 {
            // As `enter_slow` begins: without the kernel's barrier, the fence, then the claim
            // again; claimed, step out.
            if c & FENCE != 0 {
                fence(SeqCst);
                c = self.gate.claim.load(Acquire);
            }
            if c & CLAIMED != 0 {
                self.gate.active.store(0, Release);
                return None;
            }
        }
        let _entered = Entered(self, Critical::enter());
        // SAFETY: inside the gate, the owner is the only thread touching `state`.
        self.state.with_mut(
            #[inline(always)]
            |s| f(unsafe { &mut *s }),
        )
    }

    /// Runs an operation of the owner inside the gate.
    #[inline(always)]
    fn run<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let _entered = self.enter();
        // SAFETY: inside the gate, the owner is the only thread touching `state`.
        self.state.with_mut(
            #[inline(always)]
            |s| f(unsafe { &mut *s }),
        )
    }

    /// Allocates one region of `class` (a pooled class): the fast path, else the slow path,
    /// which may take or create a chunk. `MemoryLimit` means the allocator should make room
    /// (a reclaim everywhere) and try again. `None` if the magazine died (its allocator
    /// closed) since the caller found it: the request is then served unpooled. The flag says
    /// whether a chunk was taken from the allocator (the caller may then run a due sweep).
    ///
    /// A refill may give chunks back (the memory limit's fallback, the cache evicted, a chunk
    /// retired), which notifies waiters: only [`with_magazine`] calls it, inside a
    /// [`Deferral`] that wakes them once this has returned.
    pub(crate) fn alloc(&self, class: SizeClass) -> (Option<Result<Carved, AllocError>>, bool) {
        let (r, went) = self.run(|s| {
            let r = match s.body.alloc_fast(class) {
                Some((chunk, idx, cap, _)) => Some(Ok((chunk, idx, cap))),
                None => s.alloc_slow(class),
            };
            (r, std::mem::take(&mut s.body.went_to_allocator))
        });
        let r = match r {
            Some(Ok(region)) => Some(Ok(checked(region))),
            other => other,
        };
        (r, went)
    }

    /// The mark of an initialisation that may have to be rolled back: chunks adopted from
    /// now on have a sequence number at least this.
    pub(crate) fn mark(&self) -> u64 {
        self.run(|s| s.body.next_seq)
    }

    /// Suspends the idle budget (an `allocate_with` rolls back: the chunks its buffer empties
    /// must stay for [`Magazine::take_back_since`]); answers the budget to restore.
    pub(crate) fn suspend_idle_budget(&self) -> usize {
        self.run(|s| std::mem::replace(&mut s.body.idle_budget, usize::MAX))
    }

    /// Restores the idle budget after [`Magazine::suspend_idle_budget`].
    pub(crate) fn restore_idle_budget(&self, budget: usize) {
        self.run(|s| s.body.idle_budget = budget);
    }

    /// See [`Body::take_back_since`].
    pub(crate) fn take_back_since(&self, mark: u64) -> Vec<(ChunkPtr, bool)> {
        self.run(|s| s.body.take_back_since(mark))
    }

    /// The owner gives back every chunk of its magazine that holds no live region (its
    /// current chunks included), abandoned and held exclusively by the caller.
    pub(crate) fn take_idle(&self) -> Vec<ChunkPtr> {
        let mut out = Vec::new();
        self.run(|s| s.body.take_idle(Reclaim::All, &mut out));
        out
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Acquire)
    }

    /// Claims the magazine for a reclaimer (the caller then runs the heavy barrier and
    /// [`Magazine::with_claimed`]).
    fn claim(&self) {
        self.gate.claim.fetch_or(CLAIMED, Relaxed);
    }

    /// Waits for the owner to be outside the gate, runs `f` on the state, and releases the
    /// claim. The caller claimed the magazine and ran the heavy barrier since.
    fn with_claimed<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut round = 0;
        while self.gate.active.load(Acquire) != 0 {
            sync::spin_wait(&mut round);
        }
        // Released when `f` returns, and also if it unwinds (a failed internal assertion):
        // the owner must never wait for a claim nobody will release.
        let _release = Unclaim(self);
        let _section = Critical::enter();
        // SAFETY: claimed, and the owner is outside the gate (it will wait for the release).
        self.state.with_mut(|s| f(unsafe { &mut *s }))
    }

    /// Releases the claim; the `Release` hands the reclaimer's writes to the owner, whose
    /// gate reads the claim with `Acquire`.
    fn unclaim(&self) {
        self.gate.claim.fetch_and(!CLAIMED, Release);
    }
}

/// Releases a reclaimer's claim on one magazine when dropped.
struct Unclaim<'a>(&'a Magazine);

impl Drop for Unclaim<'_> {
    fn drop(&mut self) {
        self.0.unclaim();
    }
}

/// A reclaimer's claims on every magazine of a roster: made (with the heavy barrier) by
/// [`Claims::new`], then each magazine is worked on and released in turn by
/// [`Claims::each`]. Dropping it releases every claim not yet released, so a reclaimer that
/// unwinds part-way (the membarrier's assertion, an internal `expect`) leaves no owner
/// waiting for ever at its gate.
struct Claims<'a> {
    mags: &'a [ModelArc<Magazine>],
    /// Magazines from this index on are still claimed.
    next: usize,
}

impl<'a> Claims<'a> {
    fn new(mags: &'a [ModelArc<Magazine>]) -> Claims<'a> {
        for m in mags {
            m.claim();
        }
        let claims = Claims { mags, next: 0 };
        os::heavy_barrier();
        claims
    }

    /// Runs `f` on each claimed magazine in turn, once its owner is outside the gate, and
    /// releases each claim as soon as `f` is done with it.
    fn each(&mut self, mut f: impl FnMut(&Magazine, &mut State)) {
        while let Some(m) = self.mags.get(self.next) {
            // From here `with_claimed` releases this claim, even if `f` unwinds.
            self.next += 1;
            m.with_claimed(|s| f(m, s));
        }
    }
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        for m in &self.mags[self.next..] {
            m.unclaim();
        }
    }
}

impl Drop for Magazine {
    /// Thread exit (or a magazine that never got registered): hand every chunk back. The
    /// last `Arc` is going, so nothing else can reach the magazine.
    fn drop(&mut self) {
        // SAFETY: `&mut self`: exclusive.
        self.state.with_mut(|s| unsafe { &mut *s }.give_up(true));
    }
}

impl State {
    /// The slow path of an allocation; `None` if the magazine is dead.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&mut self, class: SizeClass) -> Option<Result<Carved, AllocError>> {
        let State { link, body } = self;
        let link = link.as_ref()?;
        Some(body.refill(class, link))
    }

    /// Gives up every chunk for good (thread exit, or the allocator's close): each is drained
    /// and abandoned, the fully free ones recycled now, the others by their last release. The
    /// stats shard is folded into the shared one. Afterwards the magazine holds nothing and
    /// no reference to its allocator; the returned handle is the last thing it held.
    ///
    /// With `park` (thread exit, the allocator open), a chunk that still holds live regions
    /// is parked for another thread to adopt, if the parked set takes it (module `parked`),
    /// with its free space: the class's cached segments go back to their chunks' lists first.
    fn give_up(&mut self, park: bool) -> Option<Arc<dyn ChunkSource>> {
        let Link { src, home } = self.link.take()?;
        let park = park && src.settings().max_parked_chunks != 0 && !home.is_closed();
        let body = &mut self.body;
        body.idle.clear();
        body.idle_bytes = 0;
        let mut classes = std::mem::take(&mut body.classes);
        for (class, cs) in classes.iter_mut().enumerate() {
            if park {
                cs.uncache_all();
            } else {
                // The cached segments are free space of chunks abandoned below: nothing to do.
                cs.clear_cache();
            }
            for c in cs.owned() {
                // SAFETY: owned by this magazine, which gives it up here.
                unsafe { c.drain_remote() };
                // SAFETY: as above; `park` leaves the chunk ours if it does not take it.
                if park && unsafe { c.live() } != 0 && unsafe { src.park(c, class) } {
                    continue;
                }
                Body::retire(&home, c);
            }
        }
        src.counters().unregister(&body.shard);
        Some(src)
    }
}

impl Body {
    /// The fast path: carves one region of `class` from the class's current chunk, with plain
    /// loads and stores only. `None` when the class is not pooled here (its index is past the
    /// pooled classes, or the magazine is dead), has no current chunk, or the current chunk
    /// is full.
    #[inline(always)]
    fn alloc_fast(&mut self, class: SizeClass) -> Option<FastCarved> {
        let cs = self.classes.get_mut(class.index())?;
        // The cache first: a chunk's free space that a release elsewhere in the class made is
        // reused before the current chunk is carved, and without looking at the current
        // chunk's remote stack (a line other threads write).
        if let (n @ 1.., Some(hot)) = (cs.hot_len, cs.hot.as_deref()) {
            cs.hot_len = n - 1;
            // The mask keeps the index in bounds without a check (`hot_len <= HOT`).
            let (c, idx) = hot[(n - 1) as usize & (HOT - 1)];
            // SAFETY: a segment of this magazine's cache, taken out of it here; its chunk is
            // owned by this magazine (the cache keeps only owned chunks' segments), so its
            // format is stable.
            let ptr = unsafe {
                c.take_cached();
                c.segment(idx)
            };
            cs.allocs = cs.allocs.wrapping_add(1);
            let seg = cs.seg_size;
            self.shard.add_owned(seg as i64, 1);
            return Some((c, idx, seg, ptr));
        }
        let c = cs.current?;
        // SAFETY: this magazine owns its current chunks, and we are inside its gate.
        let (idx, ptr) = unsafe { c.carve_local() }?;
        cs.allocs = cs.allocs.wrapping_add(1);
        let seg = cs.seg_size;
        self.shard.add_owned(seg as i64, 1);
        Some((c, idx, seg, ptr))
    }

    fn refill(&mut self, class: SizeClass, link: &Link) -> Result<Carved, AllocError> {
        let Link { src, home } = link;
        let idx = class.index();
        // 0. Segments the class's cache spilled to its list (the fast path takes only the hot
        //    stack, which is empty now).
        let cs = &mut self.classes[idx];
        if cs.hot_len == 0 && cs.cache.is_some() {
            cs.refill_hot();
            let (chunk, idx, cap, _) = self
                .alloc_fast(class)
                .expect("the hot stack was just refilled");
            return Ok((chunk, idx, cap));
        }
        // 1. The current chunk, once remote frees are drained, or if it has space the fast
        //    path left: a poisoning chunk's free list, whose segments are checked on this
        //    path ([`ChunkPtr::carve_local`]).
        if let Some(c) = self.classes[idx].current {
            // SAFETY: owned by this magazine.
            if unsafe { c.drain_remote() > 0 || c.has_local_space() } {
                return Ok(self.carve_from(c, class));
            }
            let c = self.take_current(idx).expect("checked above");
            self.classes[idx].push(c, FULL);
        }
        // 2. A chunk with space: first one a local free made spacious (the oldest of the
        //    last few, so allocations pack into older chunks and younger ones empty out);
        //    failing that, or now and then, full chunks that remote frees gave space to.
        let cs = &mut self.classes[idx];
        cs.refills += 1;
        if cs.lists[SPACIOUS].is_empty() || cs.refills >= RECLAIM_PERIOD.max(cs.listed() as u32) {
            cs.refills = 0;
            self.reclaim(idx, home);
        }
        let cs = &mut self.classes[idx];
        let oldest = cs.lists[SPACIOUS]
            .iter()
            .rev()
            .take(SPACIOUS_CANDIDATES)
            // SAFETY: owned by this magazine.
            .min_by_key(|c| unsafe { c.seq() })
            .copied();
        if let Some(c) = oldest {
            let c = cs.remove(c);
            cs.set_current(c);
            return Ok(self.carve_from(c, class));
        }
        // 3. A chunk from the allocator (central queue or system).
        let seg = class.size();
        let grade = grow(cs.listed()).max(cs.grade);
        cs.grade = grade;
        let want = self.chunk_size_for(seg, grade);
        // Under memory pressure the size halves down to one segment's power of two (below
        // `min_chunk_size` if need be, down to the 4 KiB floor).
        let least = next_pow2(seg)
            .unwrap_or(usize::MAX)
            .max(MIN_CHUNK_SIZE_FLOOR)
            .min(want);
        // Before a chunk is made, the full chunks of every class give up their remote frees:
        // the fully free ones go to the central queue, where this request may find one (and
        // this class may find one of its own with space). This keeps memory that other
        // threads freed from waiting in a class that has not refilled, while a new chunk is
        // made for another. It costs a load per full chunk, only on this path.
        // A chunk of this class that an exited thread parked with live regions: adopted
        // before any other chunk is taken, since its free space is otherwise unusable.
        if let Some(c) = self.adopt_parked(class, src, home) {
            return Ok(self.carve_from(c, class));
        }
        let cached = src.take_cached(want, least);
        if cached.is_none() {
            for i in 0..self.classes.len() {
                self.reclaim(i, home);
            }
            if let Some(c) = self.classes[idx].lists[SPACIOUS].last().copied() {
                let cs = &mut self.classes[idx];
                let c = cs.remove(c);
                cs.set_current(c);
                return Ok(self.carve_from(c, class));
            }
        }
        self.went_to_allocator = true;
        let acquired = match cached {
            Some(c) => Ok((c, true)),
            None => src.acquire(home, want, least),
        };
        let (c, from_cache) = match acquired {
            Err(e @ AllocError::MemoryLimit { .. }) => {
                // This thread's own idle chunks (empty current chunks of other classes) go
                // first; the allocator reclaims everywhere if that is not enough.
                let mut idle = Vec::new();
                self.take_idle(Reclaim::All, &mut idle);
                if idle.is_empty() {
                    return Err(e);
                }
                for c in idle {
                    // SAFETY: `take_idle` hands over fully free chunks held exclusively.
                    unsafe { c.free_to_system() };
                }
                src.acquire(home, want, least)?
            }
            other => other?,
        };
        // SAFETY: `acquire` hands over a chunk held exclusively with nothing live; this
        // magazine's thread becomes its owner.
        unsafe {
            c.format(class.0, seg);
            c.adopt(
                self.token,
                self.this.cast_mut().cast(),
                self.next_seq,
                from_cache,
            );
        }
        self.next_seq += 1;
        let cs = &mut self.classes[idx];
        cs.acquired = cs.acquired.saturating_add(1);
        cs.set_current(c);
        Ok(self.carve_from(c, class))
    }

    /// Adopts parked chunks of `class` (module `parked`) until one has free space, which
    /// becomes current. One without free space is abandoned again at once: listed as full,
    /// its releases would wait on its remote stack for this magazine's next reclaim, where
    /// abandoned its last release recycles it (so parking holds nothing abandoning would
    /// not; review finding of 2026-11-29). `None` when none with space waits.
    fn adopt_parked(
        &mut self,
        class: SizeClass,
        src: &Arc<dyn ChunkSource>,
        home: &Arc<dyn Home>,
    ) -> Option<ChunkPtr> {
        let idx = class.index();
        loop {
            let c = src.adopt_parked(idx)?;
            // SAFETY: `adopt_parked` hands over a chunk held exclusively, formatted for this
            // class, with its free lists intact; this magazine's thread becomes its owner.
            let space = unsafe {
                c.adopt(self.token, self.this.cast_mut().cast(), self.next_seq, true);
                c.has_local_space()
            };
            self.next_seq += 1;
            if space {
                self.classes[idx].set_current(c);
                return Some(c);
            }
            Self::retire(home, c);
        }
    }

    fn carve_from(&mut self, c: ChunkPtr, class: SizeClass) -> Carved {
        // SAFETY: owned by this magazine, and the callers checked that it has space.
        let idx = unsafe { c.carve() }.expect("chunk chosen for its free space has none");
        let cs = &mut self.classes[class.index()];
        cs.allocs = cs.allocs.wrapping_add(1);
        let seg = cs.seg_size;
        self.shard.add_owned(seg as i64, 1);
        (c, idx, seg)
    }

    /// The chunk size for a class with `seg`-byte segments at growth `grade`: about 16
    /// segments for classes up to 1 KiB, 4 up to 16 KiB, 2 up to 256 KiB and 1 above,
    /// doubled `grade` times, within the bounds. Starting small keeps a class that holds few
    /// buffers from holding a large chunk (and the largest classes' chunks within the
    /// per-thread idle budget); growing keeps a busy class from refilling often.
    fn chunk_size_for(&self, seg: usize, grade: u32) -> usize {
        let target = if seg <= 1 << 10 {
            16
        } else if seg <= 16 << 10 {
            4
        } else if seg <= 256 << 10 {
            2
        } else {
            1
        };
        let base = next_pow2(seg.saturating_mul(target)).unwrap_or(self.max_chunk);
        base.checked_shl(grade)
            .unwrap_or(self.max_chunk)
            .clamp(self.min_chunk, self.max_chunk)
    }

    /// Gives up a chunk with nothing live that is not current (any more).
    fn retire(home: &Arc<dyn Home>, c: ChunkPtr) {
        // SAFETY: owned by this magazine, which gives it up here and never touches it again.
        if unsafe { c.abandon() } == RemoteFree::Recycle {
            home.recycle(c);
        }
    }

    /// Takes the current chunk of class `class` out, removing its idle tag and count.
    fn take_current(&mut self, class: usize) -> Option<ChunkPtr> {
        let Body {
            classes,
            idle,
            idle_bytes,
            ..
        } = self;
        let c = classes[class].current.take()?;
        untag(idle, idle_bytes, c);
        Some(c)
    }

    /// Releases a region into an owned chunk when it is current: plain loads and stores onto
    /// the chunk's own list. Answers what is left to do: nothing; the release itself, for a
    /// chunk that is not current ([`Body::free_listed`]: the class's cache) or that scrubs
    /// released regions; or counting the current chunk against the idle budget, because it
    /// just emptied for the first time since it was counted.
    ///
    /// # Safety
    /// This magazine owns `chunk` and the caller gives up the last handle to region `idx`
    /// (and, on `Freed::Slow`, releases it with [`Body::free_listed`]).
    #[inline(always)]
    unsafe fn free(&mut self, chunk: ChunkPtr, idx: u32) -> Freed {
        // SAFETY (whole block): owned, inside the gate; the region is the caller's.
        unsafe {
            let tag = chunk.slot() & TAG_MASK;
            if tag <= SPACIOUS {
                return self.free_to_hot(chunk, idx);
            }
            if chunk.scrubs() {
                return Freed::Slow;
            }
            let seg = chunk.seg_size();
            let live = chunk.free_local_unscrubbed(idx);
            self.shard.add_owned(-(seg as i64), -1);
            // A current chunk tagged `IDLE` is counted already.
            if tag == CURRENT && live == 0 {
                return Freed::EmptiedCurrent;
            }
            Freed::Done
        }
    }

    /// A release into a listed chunk that keeps a live region: pushed on the class's hot
    /// stack, if it has room (and the cache is on). `Freed::Slow` otherwise (a full stack, the
    /// chunk's last region, no cache): [`Body::free_listed`] does it.
    ///
    /// # Safety
    /// As for [`Body::free`], and `chunk` is listed.
    #[inline(always)]
    unsafe fn free_to_hot(&mut self, chunk: ChunkPtr, idx: u32) -> Freed {
        // SAFETY (whole block): owned, inside the gate; the region is the caller's.
        unsafe {
            let Some(cs) = self.classes.get_mut(chunk.class() as usize) else {
                return Freed::Slow;
            };
            let Some(hot) = cs.hot.as_deref_mut() else {
                return Freed::Slow;
            };
            if cs.hot_len >= cs.hot_cap || chunk.live() <= 1 {
                return Freed::Slow;
            }
            chunk.release_cached();
            hot[cs.hot_len as usize & (HOT - 1)] = (chunk, idx);
            cs.hot_len += 1;
            self.shard.add_owned(-(cs.seg_size as i64), -1);
            Freed::Done
        }
    }

    /// Releases a region of a listed chunk (tagged `FULL` or `SPACIOUS`) into its class's
    /// cache, flushing the older half of the cache first if it is full. If every region of
    /// the chunk is now free, the chunk is retired instead. Without the cache (scrubbing is
    /// on: then it also takes the releases into the current chunk, with their scrub), or when
    /// a flush made the chunk current, the region goes on the chunk's own list.
    ///
    /// # Safety
    /// As for [`Body::free`], and `chunk` is listed or scrubs.
    // Out of line: inlined, its registers would cost the release into the current chunk
    // (the allocate/free loop) a tenth more instructions.
    #[inline(never)]
    unsafe fn free_listed(&mut self, chunk: ChunkPtr, idx: u32, link: Option<&Link>) {
        // SAFETY: owned by this magazine.
        let class = unsafe { chunk.class() } as usize;
        let Some(link) = link else {
            // No allocator any more (cannot happen for an owned chunk, which a dying
            // magazine abandons first): keep the accounting exact all the same.
            // SAFETY: as the caller guarantees.
            unsafe { self.free_local_counted(chunk, idx) };
            return;
        };
        let home = &link.home;
        let cs = &mut self.classes[class];
        if cs.cache_cap != 0 && cs.hot_len as usize == HOT {
            self.spill(class, home);
        }
        let cs = &mut self.classes[class];
        // SAFETY: owned by this magazine (read after the spill, which may move the chunk).
        let tag = unsafe { chunk.slot() } & TAG_MASK;
        if cs.cache_cap != 0 && tag <= SPACIOUS {
            // SAFETY: owned; the caller gives up the region, which the cache takes.
            let live = unsafe { chunk.release_cached() };
            self.shard.add_owned(-(cs.seg_size as i64), -1);
            if live != 0 {
                let hot = cs.hot.get_or_insert_with(new_hot_stack);
                hot[cs.hot_len as usize & (HOT - 1)] = (chunk, idx);
                cs.hot_len += 1;
            } else {
                // Every region of the listed chunk is free: it is retired (with the segment,
                // which the cache never took).
                self.after_free_slow(chunk, 0, tag, home);
            }
            return;
        }
        // SAFETY: as the caller guarantees.
        let live = unsafe { self.free_local_counted(chunk, idx) };
        if tag != IDLE && (live == 0 || tag == FULL) {
            self.after_free_slow(chunk, live, tag, home);
        }
    }

    /// Puts region `idx` on its chunk's own free list and counts the release; answers the
    /// live regions left.
    ///
    /// # Safety
    /// As for [`Body::free`].
    unsafe fn free_local_counted(&mut self, chunk: ChunkPtr, idx: u32) -> u32 {
        // SAFETY: as the caller guarantees.
        unsafe {
            let seg = chunk.seg_size();
            let live = chunk.free_local(idx);
            self.shard.add_owned(-(seg as i64), -1);
            live
        }
    }

    /// The class's hot stack is full: its older half becomes nodes of the cache's list (whose
    /// own older half goes back to the chunks first, if the cache would exceed its cap).
    #[cold]
    #[inline(never)]
    fn spill(&mut self, class: usize, home: &Arc<dyn Home>) {
        const HALF: usize = HOT / 2;
        let cs = &mut self.classes[class];
        if cs.cached as usize + HOT + HALF > cs.cache_cap as usize {
            self.flush_cache(class, home);
        }
        let cs = &mut self.classes[class];
        // The flush can retire the current chunk (`made_spacious`), whose `purge` would
        // compact the hot stack; that chunk holds no hot entry here (a chunk holds hot
        // entries while current only after a flush or a refill made it current, and those
        // entries leave the stack at the next spill, which comes before the list can fill up
        // to the next flush), so the stack is still full. Checked, not assumed:
        debug_assert_eq!(cs.hot_len as usize, HOT, "the flush changed the hot stack");
        if cs.hot_len as usize != HOT {
            return;
        }
        let hot = cs.hot.as_deref_mut().expect("a full hot stack exists");
        for &(c, idx) in &hot[..HALF] {
            // SAFETY: a cached segment of an owned chunk (which does not scrub: the cache is
            // off for scrubbing chunks); `cs.cache` is the list's head.
            cs.cache = Some(unsafe { CachedSeg::write(c, idx, cs.cache) });
        }
        cs.cached += HALF as u32;
        hot.copy_within(HALF.., 0);
        cs.hot_len = (HOT - HALF) as u32;
    }

    /// The class's cache is full: its older half goes back to the chunks' own lists, and
    /// chunks on the full list that got space become spacious (see
    /// [`Body::made_spacious`]).
    #[cold]
    #[inline(never)]
    fn flush_cache(&mut self, class: usize, home: &Arc<dyn Home>) {
        let cs = &mut self.classes[class];
        let keep = cs.cached / 2;
        let mut node = cs.cache;
        let mut last_kept = None;
        for _ in 0..keep {
            let n = node.expect("the cache holds `cached` nodes");
            last_kept = Some(n);
            // SAFETY: a node of this magazine's cache.
            node = unsafe { CachedSeg::read(n) }.2;
        }
        match last_kept {
            // SAFETY: as above.
            Some(n) => unsafe { CachedSeg::set_next(n, None) },
            None => cs.cache = None,
        }
        cs.cached = keep;
        // First every segment goes home (none of these chunks can leave the magazine
        // meanwhile), then the chunks that were full are moved, each once: moving one may
        // retire the current chunk, which is then no longer touched.
        let mut were_full: Vec<ChunkPtr> = Vec::new();
        while let Some(n) = node {
            // SAFETY: a node of the part just cut off the cache.
            let (c, idx, next) = unsafe { CachedSeg::read(n) };
            // SAFETY: owned by this magazine; the segment was cached, so it is free.
            unsafe { c.uncache(idx) };
            // SAFETY: owned by this magazine.
            if unsafe { c.slot() } & TAG_MASK == FULL && !were_full.contains(&c) {
                were_full.push(c);
            }
            node = next;
        }
        for c in were_full {
            // SAFETY: owned by this magazine (the moves below retire only a current chunk,
            // and these were listed).
            if unsafe { c.slot() } & TAG_MASK == FULL {
                self.made_spacious(c, home);
            }
        }
    }

    /// Called after the owner freed a region into `c` (see [`State::free`]). A current chunk
    /// that emptied is counted against the idle budget. A listed chunk that is now fully free
    /// is retired (its cached segments leave the cache with it). One that was on the full
    /// list is moved ([`Body::made_spacious`]). This happens once per chunk each time it
    /// fills, never per free.
    #[cold]
    #[inline(never)]
    fn after_free_slow(&mut self, c: ChunkPtr, live: u32, tag: usize, home: &Arc<dyn Home>) {
        if tag == CURRENT {
            self.note_idle(c, home);
            return;
        }
        if live == 0 {
            // SAFETY: owned by this magazine.
            let class = unsafe { c.class() as usize };
            let cs = &mut self.classes[class];
            let c = cs.remove(c);
            cs.purge(c);
            Self::retire(home, c);
            return;
        }
        self.made_spacious(c, home);
    }

    /// A chunk on the full list got free space: it becomes current if it is older than the
    /// current chunk (which is listed, or retired if empty), and spacious otherwise.
    fn made_spacious(&mut self, c: ChunkPtr, home: &Arc<dyn Home>) {
        // SAFETY: owned by this magazine.
        let class = unsafe { c.class() as usize };
        // One borrow of the class (and of the idle list beside it), not an index per step.
        let Body {
            classes,
            idle,
            idle_bytes,
            ..
        } = self;
        let cs = &mut classes[class];
        let c = cs.remove(c);
        match cs.current {
            // SAFETY: owned by this magazine.
            Some(cur) if unsafe { c.seq() < cur.seq() } => {
                // The older chunk takes over, so allocations fill its holes before the
                // younger one's (this is what packs survivors together).
                untag(idle, idle_bytes, cur);
                cs.set_current(c);
                // SAFETY: owned by this magazine.
                let (cur_live, cur_space) = unsafe { (cur.live(), cur.has_local_space()) };
                if cur_live == 0 {
                    cs.purge(cur);
                    Self::retire(home, cur);
                } else {
                    cs.push(cur, if cur_space { SPACIOUS } else { FULL });
                }
            }
            _ => cs.push(c, SPACIOUS),
        }
    }

    /// The current chunk `c` just emptied: tag it idle and count it; past the budget, give
    /// back idle chunks, oldest first and `c` last.
    fn note_idle(&mut self, c: ChunkPtr, home: &Arc<dyn Home>) {
        // SAFETY: owned by this magazine.
        unsafe { c.set_slot(IDLE) };
        self.idle.push(c);
        self.idle_bytes += c.bytes();
        if self.idle_bytes <= self.idle_budget {
            return;
        }
        // Untag the chunks that are in use again (the count is lazy).
        let mut i = 0;
        while i < self.idle.len() {
            let x = self.idle[i];
            // SAFETY: owned by this magazine.
            let live = unsafe {
                x.drain_remote();
                x.live()
            };
            if live > 0 {
                // SAFETY: owned by this magazine.
                unsafe { x.set_slot(CURRENT) };
                self.idle.remove(i);
                self.idle_bytes -= x.bytes();
            } else {
                i += 1;
            }
        }
        while self.idle_bytes > self.idle_budget && !self.idle.is_empty() {
            let victim = self.idle.iter().copied().find(|&x| x != c).unwrap_or(c);
            // SAFETY: owned by this magazine.
            let class = unsafe { victim.class() as usize };
            let taken = self.take_current(class);
            debug_assert_eq!(taken, Some(victim));
            let cs = &mut self.classes[class];
            cs.purge(victim);
            // The class's chunks were sized for a burst (its grade) that is over: a chunk of
            // that size cannot stay idle within the budget, so the next refill would take one
            // back from the central queue only for it to come straight back here when its
            // buffer does (after B4's burst, B6's allocate/grow/release loop sent eight chunks
            // through the queue per iteration and ran 1.5x slower). Its size falls back to
            // what the class holds now, as a full reclaim sets it.
            cs.grade = grow(cs.listed());
            Self::retire(home, victim);
        }
    }

    /// Drains the remote frees waiting in the class's listed chunks: those now fully free are
    /// retired (chunks emptied by other threads are given back), full ones with space become
    /// spacious.
    fn reclaim(&mut self, class: usize, home: &Arc<dyn Home>) {
        let cs = &mut self.classes[class];
        for list in [FULL, SPACIOUS] {
            let mut i = cs.lists[list].len();
            while i > 0 {
                i -= 1;
                let p = cs.lists[list][i];
                if !p.has_remote() {
                    continue;
                }
                // SAFETY: owned by this magazine.
                let live = unsafe {
                    p.drain_remote();
                    p.live()
                };
                if live == 0 {
                    let p = cs.remove(p);
                    cs.purge(p);
                    Self::retire(home, p);
                } else if list == FULL {
                    let p = cs.remove(p);
                    cs.push(p, SPACIOUS);
                }
            }
        }
    }

    /// Takes the chunks of this magazine that hold no live region, as `how` says, out of it,
    /// abandoned and held exclusively by the caller (into `out`), and lets chunk sizes decay.
    /// Run by the owner, or by a reclaimer holding the claim.
    fn take_idle(&mut self, how: Reclaim, out: &mut Vec<ChunkPtr>) {
        for class in 0..self.classes.len() {
            // Allocations of this class since the last sweep: if any, its current chunk is in
            // use even if it is empty now; its idle time starts again.
            let cs = &mut self.classes[class];
            let used = cs.allocs != cs.allocs_seen;
            if let Reclaim::Expired { .. } = how {
                cs.allocs_seen = cs.allocs;
            }
            if let Some(c) = cs.current {
                // SAFETY (whole block): owned by this magazine (we are its owner or claimer).
                let take = unsafe {
                    c.drain_remote();
                    if c.live() != 0 {
                        c.set_idle_since(0);
                        false
                    } else {
                        match how {
                            Reclaim::All => true,
                            Reclaim::Expired { now, idle_ns } => match c.idle_since() {
                                since if since == 0 || used => {
                                    c.set_idle_since(now);
                                    false
                                }
                                since => now.saturating_sub(since) >= idle_ns,
                            },
                        }
                    }
                };
                if take {
                    let c = self.take_current(class).expect("checked above");
                    self.classes[class].purge(c);
                    // SAFETY: owned, nothing live: abandoning hands it over at once.
                    if unsafe { c.abandon() } == RemoteFree::Recycle {
                        out.push(c);
                    }
                }
            }
            let cs = &mut self.classes[class];
            for list in [FULL, SPACIOUS] {
                let mut i = cs.lists[list].len();
                while i > 0 {
                    i -= 1;
                    let p = cs.lists[list][i];
                    // SAFETY: owned by this magazine.
                    if unsafe {
                        p.drain_remote();
                        p.live()
                    } == 0
                    {
                        cs.remove(p);
                        cs.purge(p);
                        // SAFETY: as above.
                        if unsafe { p.abandon() } == RemoteFree::Recycle {
                            out.push(p);
                        }
                    }
                }
            }
            match how {
                Reclaim::All => cs.grade = grow(cs.listed()),
                Reclaim::Expired { .. } => {
                    if cs.acquired == 0 {
                        cs.grade = cs.grade.saturating_sub(1).max(grow(cs.listed()));
                    }
                    cs.acquired = 0;
                }
            }
        }
    }

    /// Rolls back an initialisation: takes every chunk adopted since `mark` that now has
    /// nothing live out of the magazine, abandoned and held exclusively by the caller, with
    /// whether it came from the central queue.
    ///
    /// It looks only at the chunks the magazine holds now, so a chunk that left it meanwhile
    /// (trimmed, retired, freed under the memory limit) is not touched: no pointer to a chunk
    /// is kept across the initialisation.
    fn take_back_since(&mut self, mark: u64) -> Vec<(ChunkPtr, bool)> {
        let mut out = Vec::new();
        for class in 0..self.classes.len() {
            let young: Vec<ChunkPtr> = self.classes[class]
                .owned()
                // SAFETY: owned by this magazine.
                .filter(|c| unsafe { c.seq() } >= mark)
                .collect();
            for c in young {
                // SAFETY: owned by this magazine.
                let (live, from_cache) = unsafe {
                    c.drain_remote();
                    (c.live(), c.came_from_cache())
                };
                if live != 0 {
                    continue;
                }
                if self.classes[class].current == Some(c) {
                    self.take_current(class);
                } else {
                    self.classes[class].remove(c);
                }
                self.classes[class].purge(c);
                // SAFETY: owned, nothing live: abandoning hands it over at once.
                if unsafe { c.abandon() } == RemoteFree::Recycle {
                    out.push((c, from_cache));
                }
            }
        }
        out
    }
}

/// A current chunk `c` stops being current: if it was counted as idle, it no longer is.
#[inline]
fn untag(idle: &mut Vec<ChunkPtr>, idle_bytes: &mut usize, c: ChunkPtr) {
    // SAFETY: owned by this magazine (its owner or claimer calls).
    if unsafe { c.slot() } & TAG_MASK == IDLE {
        let i = idle
            .iter()
            .position(|&x| x == c)
            .expect("an idle-tagged chunk is in the idle list");
        idle.remove(i);
        *idle_bytes -= c.bytes();
    }
}

/// Checks the poison of a region carved from a free list of a poisoning chunk (flagged by
/// `carve`), outside the gate: a panic there leaves the magazine consistent.
#[inline(always)]
pub(crate) fn checked((chunk, idx, cap): (ChunkPtr, u32, usize)) -> Carved {
    if idx & CHECK == 0 {
        return (chunk, idx, cap);
    }
    // SAFETY: the region was just carved for the caller, who holds it and has not written it.
    (chunk, unsafe { chunk.check_carved(idx) }, cap)
}

/// Releases a region from the thread that owns its chunk: plain loads and stores inside the
/// magazine's gate. If, once inside, the chunk turns out not to be owned any more (the
/// allocator closed meanwhile and abandoned it), the region is released with `remote`
/// instead.
///
/// Every call it makes off the fast path is its last act (the gate's guard moves into the
/// callee, which leaves the gate), so the compiler can jump to it and the fast path saves no
/// registers.
///
/// # Safety
/// The calling thread is the one with `token`, saw `chunk.is_owned_by(token)`, and is
/// releasing the last handle to region `idx`; `remote` releases a region of a chunk the
/// calling thread does not own.
#[inline(always)]
pub(crate) unsafe fn free_owned(
    chunk: ChunkPtr,
    idx: u32,
    token: usize,
    remote: unsafe fn(ChunkPtr, u32),
) {
    // The magazine is passed on as a raw pointer, never as a reference argument, down to
    // where the wake-ups deferred by a slow path run (module `waiters`): a waker may drop the
    // last handle of the allocator and allocate from another, which drops this magazine's
    // husk, and no reference to it may be live then.
    // SAFETY: the owner context of an owned chunk is its magazine, which lives at least as
    // long as this thread's registry holds it; a chunk stays owned only while the magazine is
    // registered here (its drop and its death abandon every chunk first), and we are on the
    // owning thread.
    let mag = unsafe { chunk.ctx() }.cast::<Magazine>().cast_const();
    // SAFETY: as above: the magazine is alive.
    let c = unsafe { &*mag }.try_enter();
    if c != 0 {
        // SAFETY: as the caller guarantees.
        return unsafe { free_owned_contended(mag, c, chunk, idx, token, remote) };
    }
    // SAFETY: as the caller guarantees, inside the gate.
    unsafe { free_entered(mag, chunk, idx, token, remote) }
}

/// [`free_owned`] when the gate's claim word was not clear (`c`, as loaded): wait at the
/// gate, then the same.
///
/// # Safety
/// As for [`free_owned`]; `mag` is the chunk's magazine, and the owner has stored
/// `active = 1` and loaded `c` ([`Magazine::try_enter`]).
#[cold]
#[inline(never)]
unsafe fn free_owned_contended(
    mag: *const Magazine,
    c: u32,
    chunk: ChunkPtr,
    idx: u32,
    token: usize,
    remote: unsafe fn(ChunkPtr, u32),
) {
    // SAFETY: the chunk's magazine, alive as in `free_owned`.
    unsafe { &*mag }.enter_slow(c);
    // SAFETY: as the caller guarantees, inside the gate.
    unsafe { free_entered(mag, chunk, idx, token, remote) }
}

/// The part of [`free_owned`] inside the gate.
///
/// # Safety
/// As for [`free_owned`]; `mag` is `chunk`'s magazine, whose gate the caller has entered
/// without making a guard (this function leaves it).
#[inline(always)]
unsafe fn free_entered(
    mag: *const Magazine,
    chunk: ChunkPtr,
    idx: u32,
    token: usize,
    remote: unsafe fn(ChunkPtr, u32),
) {
    // SAFETY: as the caller guarantees.
    let entered = unsafe { Entered::entered(mag) };
    if !chunk.is_owned_by(token) {
        drop(entered);
        // SAFETY: no longer owned (checked inside the gate): a remote release, as the caller
        // provides.
        return unsafe { remote(chunk, idx) };
    }
    // SAFETY: inside the gate; owned (checked inside it, so no closer can take it now), and
    // the caller gives up the region.
    let next = entered.0.state.with_mut(
        #[inline(always)]
        |s| unsafe { (*s).body.free(chunk, idx) },
    );
    match next {
        Freed::Done => {}
        // SAFETY: the region is the caller's, not released yet; the guard is handed over.
        Freed::Slow => unsafe { free_listed_entered(entered.hand_over(), chunk, idx) },
        // SAFETY: the guard is handed over; the current chunk just emptied.
        Freed::EmptiedCurrent => unsafe { emptied_current_entered(entered.hand_over(), chunk) },
    }
}

/// A release into a chunk that is not current ([`Body::free_listed`]), then leaves the gate,
/// then wakes what the release deferred.
///
/// # Safety
/// As for [`Body::free_listed`]; `mag` is the chunk's magazine, whose guard the caller
/// handed over ([`Entered::hand_over`]).
#[inline(never)]
unsafe fn free_listed_entered(mag: *const Magazine, chunk: ChunkPtr, idx: u32) {
    // A retired chunk notifies waiters: woken once the gate is left (module `waiters`).
    let wakes = Deferral::begin();
    // SAFETY: as the caller guarantees.
    let entered = unsafe { Entered::handed_over(mag) };
    // SAFETY: inside the gate, by the caller's guarantee.
    entered.0.state.with_mut(|s| unsafe {
        let State { link, body } = &mut *s;
        body.free_listed(chunk, idx, link.as_ref())
    });
    drop(entered);
    drop(wakes);
}

/// The current chunk just emptied ([`Body::after_free_slow`]: the idle budget), then leaves
/// the gate, then wakes what it deferred.
///
/// # Safety
/// `mag` is the chunk's magazine, whose guard the caller handed over
/// ([`Entered::hand_over`]); it owns `chunk`, which is current and just emptied.
#[cold]
#[inline(never)]
unsafe fn emptied_current_entered(mag: *const Magazine, chunk: ChunkPtr) {
    // Past the idle budget a chunk is retired, which notifies waiters: woken once the gate
    // is left (module `waiters`).
    let wakes = Deferral::begin();
    // SAFETY: as the caller guarantees.
    let entered = unsafe { Entered::handed_over(mag) };
    // SAFETY: inside the gate (the caller's guard): the owner alone touches the state.
    entered.0.state.with_mut(|s| unsafe {
        let State { link, body } = &mut *s;
        if let Some(link) = link {
            body.after_free_slow(chunk, 0, CURRENT, &link.home);
        }
    });
    drop(entered);
    drop(wakes);
}

/// The magazines of one allocator: how a reclaimer reaches every thread's chunks.
///
/// Its lock is held by a reclaimer (trim, idle sweep, close) for its whole run, by a thread
/// registering a magazine, and by a thread leaving at exit. No code inside a magazine's gate
/// ever takes it, so a reclaimer holding it may wait on any gate.
pub(crate) struct Roster {
    inner: Mutex<RosterInner>,
}

#[derive(Default)]
struct RosterInner {
    mags: Vec<ModelArc<Magazine>>,
    /// Set by the close: no magazine may be registered afterwards.
    closed: bool,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roster").finish_non_exhaustive()
    }
}

impl Roster {
    pub(crate) fn new() -> Roster {
        Roster {
            inner: Mutex::new(RosterInner::default()),
        }
    }

    /// Adds a magazine; `false` if the allocator has closed.
    fn register(&self, m: &ModelArc<Magazine>) -> bool {
        self.inner.with(|r| {
            if r.closed {
                return false;
            }
            r.mags.push(m.clone());
            true
        })
    }

    /// Removes a magazine (thread exit); waits for a reclaim in progress.
    fn unregister(&self, m: &Magazine) {
        let gone = self.inner.with(|r| {
            let i = r.mags.iter().position(|x| ptr::eq(&**x, m))?;
            Some(r.mags.swap_remove(i))
        });
        drop(gone);
    }

    /// Claims every magazine, runs the heavy barrier once, and runs `f` on each in turn with
    /// the magazine to itself, releasing each claim as soon as it is done. With `wait`, waits
    /// for the roster's lock; otherwise gives up (answering `false`) if it is taken.
    fn for_each_claimed(&self, wait: bool, f: impl FnMut(&Magazine, &mut State)) -> bool {
        // Wake-ups caused under the lock and the claims run after both are released.
        let _wakes = Deferral::begin();
        let run = |r: &mut RosterInner| {
            if r.mags.is_empty() {
                return;
            }
            Claims::new(&r.mags).each(f);
        };
        if wait {
            self.inner.with(run);
            true
        } else {
            self.inner.try_with(run).is_some()
        }
    }

    /// Reclaims idle chunks from every magazine, as `how` says, into `out` (abandoned, held
    /// exclusively). `false` if `wait` is off and another reclaim (or a registration) holds
    /// the roster.
    pub(crate) fn reclaim(&self, how: Reclaim, wait: bool, out: &mut Vec<ChunkPtr>) -> bool {
        self.for_each_claimed(wait, |_, s| s.body.take_idle(how, out))
    }

    /// The allocator closes: no magazine is registered from now on, and every registered one
    /// gives up all its chunks (live or not) and dies. Their threads drop the husks later.
    pub(crate) fn close(&self) {
        // The chunks given up under the lock and the claims notify waiters: woken after the
        // lock is released and the husks and handles are dropped.
        let _wakes = Deferral::begin();
        let mut handles = Vec::new();
        let mags = self.inner.with(|r| {
            r.closed = true;
            Claims::new(&r.mags).each(|m, s| {
                handles.extend(s.give_up(false));
                m.dead.store(true, Release);
            });
            std::mem::take(&mut r.mags)
        });
        // Dropped outside the lock: the husks (their threads hold them too) and the
        // allocator handles they held.
        drop(mags);
        drop(handles);
    }

    /// Test hook: a reclaim whose work unwinds on the first magazine it reaches, as a failed
    /// internal assertion would.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn reclaim_unwinding(&self) {
        self.for_each_claimed(true, |_, _| panic!("a reclaimer unwinds"));
    }

    /// `true` once [`close`](Roster::close) has run.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.with(|r| r.closed)
    }
}

/// The magazines of one thread, indexed by allocator id, and its release shards.
struct Registry {
    magazines: Vec<Option<ModelArc<Magazine>>>,
    /// One stats shard per allocator whose buffers this thread released without having a
    /// magazine of it (see [`account_release`]).
    releasers: Vec<Releaser>,
}

/// A thread's stats shard for the releases of one allocator's buffers it makes without a
/// magazine of that allocator. The allocator is held weakly: a thread that only consumes
/// must not keep an allocator alive. While the `Weak` lives its allocation does too, so no
/// other allocator can sit at the same address: comparing addresses identifies it.
struct Releaser {
    home: std::sync::Weak<dyn Home>,
    shard: Arc<Shard>,
}

impl Releaser {
    /// Folds the shard into its allocator's shared counters, if the allocator still lives.
    fn fold(self) {
        if let Some(home) = self.home.upgrade() {
            home.counters().unregister(&self.shard);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The chunks handed back notify waiters: woken once every magazine is handed back.
        let _wakes = Deferral::begin();
        forget_last(usize::MAX);
        for m in self.magazines.drain(..).flatten() {
            leave(m);
        }
        forget_last_release();
        for r in self.releasers.drain(..) {
            r.fold();
        }
    }
}

/// A thread lets go of one of its magazines (exit, or its allocator closed): out of the
/// roster first, so no reclaimer can be working on it, then dropped (which gives its chunks
/// up, unless the close already did).
fn leave(m: ModelArc<Magazine>) {
    if !m.is_dead() {
        let src = m.run(|s| s.link.as_ref().map(|l| l.src.clone()));
        if let Some(src) = src {
            src.roster().unregister(&m);
        }
    }
    drop(m);
}

#[cfg(not(loom))]
thread_local! {
    static REGISTRY: UnsafeCell<Registry> = const {
        UnsafeCell::new(Registry { magazines: Vec::new(), releasers: Vec::new() })
    };
}

#[cfg(loom)]
thread_local! {
    static REGISTRY: UnsafeCell<Registry> =
        UnsafeCell::new(Registry { magazines: Vec::new(), releasers: Vec::new() });
}

#[cfg(not(loom))]
thread_local! {
    /// The magazine the fast path used last on this thread, as `(allocator id, magazine)`, so
    /// a thread working with one allocator finds its magazine with two plain thread-local
    /// loads (no lazy-initialisation check, no vector index). `(usize::MAX, null)` when empty.
    /// Every path that drops a registered magazine clears it first (`forget_last`). Not kept
    /// under loom, whose thread-locals cannot be const (the registry lookup is the whole path
    /// there).
    static LAST: std::cell::Cell<(usize, *const Magazine)> =
        const { std::cell::Cell::new((usize::MAX, ptr::null())) };
}

#[cfg(not(loom))]
thread_local! {
    /// The release shard [`account_release`] used last on this thread, as `(allocator's
    /// address, shard)`, so a thread that only releases one allocator's buffers finds its
    /// shard with two plain thread-local loads. Cleared before the registry drops any
    /// release shard.
    static LAST_RELEASE: std::cell::Cell<(*const (), *const Shard)> =
        const { std::cell::Cell::new((ptr::null(), ptr::null())) };
}

/// Forgets the cached release shard.
#[inline]
fn forget_last_release() {
    #[cfg(not(loom))]
    LAST_RELEASE.with(|l| l.set((ptr::null(), ptr::null())));
}

/// Forgets the fast path's cached magazine if it is allocator `id`'s (`usize::MAX`: any).
#[inline]
fn forget_last(id: usize) {
    #[cfg(not(loom))]
    LAST.with(|last| {
        if id == usize::MAX || last.get().0 == id {
            last.set((usize::MAX, ptr::null()));
        }
    });
    #[cfg(loom)]
    let _ = id;
}

/// Runs `f` with the calling thread's magazine for allocator `id`, creating and registering
/// it (from `src`) on first use. `None` when there is none and none may be made: the thread's
/// registry is already destroyed (thread exit), or the allocator has closed.
#[inline(always)]
pub(crate) fn with_magazine<R>(
    id: usize,
    src: impl FnOnce() -> Arc<dyn ChunkSource>,
    f: impl FnOnce(&Magazine) -> R,
) -> Option<R> {
    // Installing a magazine may drop the one it replaces, and `f` (an allocation) may give
    // chunks back, which notifies waiters: woken after the registry is released and `f` has
    // returned.
    let wakes = Deferral::begin();
    let m = REGISTRY
        .try_with(|reg| {
            reg.with_mut(|reg| {
                let _section = Critical::enter();
                // SAFETY: the registry is this thread's alone, and nothing called below
                // (magazine creation and registration) re-enters it.
                let reg = unsafe { &mut *reg };
                match reg.magazines.get(id) {
                    Some(Some(m)) if !m.is_dead() => Some(ModelArc::as_ptr(m)),
                    _ => install(reg, id, src()),
                }
            })
        })
        .ok()
        .flatten();
    // SAFETY: a registered magazine of this thread, held by its registry for at least as long
    // as this call (nothing here drops it).
    let r = m.map(|m| f(unsafe { &*m }));
    // The wake-ups deferred by `f` (a refill) run after it has returned: no reference to the
    // magazine is live then.
    drop(wakes);
    r
}

/// The allocation fast path for allocator `id`: the magazine the thread used last, if it is
/// this allocator's, hands out a region of `class` from the class's cache or carves one from
/// its current chunk. `None` sends the caller to the slow path (another allocator's magazine
/// in `LAST`, or none: [`alloc_fast_lookup`] first; then a class that is not pooled, a full
/// chunk, remote frees to drain, a claimed gate, thread exit, a dead magazine), which is
/// [`with_magazine`] and [`Magazine::alloc`]. It calls nothing (every way out is a return),
/// so it saves no registers. It never carves from a poisoning chunk's free list (those
/// segments must be checked: the slow path carves them, and [`Magazine::alloc`] checks
/// them), so what it answers is ready for use.
#[inline(always)]
pub(crate) fn alloc_fast(id: usize, class: SizeClass) -> Option<FastCarved> {
    #[cfg(not(loom))]
    {
        let (last_id, m) = LAST.with(|last| last.get());
        if last_id == id {
            // SAFETY: `LAST` holds a live, registered magazine of this thread (it is cleared
            // before any registered magazine is dropped).
            return unsafe { &*m }.run_uncontended(
                #[inline(always)]
                |s| s.body.alloc_fast(class),
            );
        }
    }
    #[cfg(loom)]
    let _ = (id, class);
    None
}

/// Records the release of a `size`-byte region of `chunk`'s allocator in the calling thread's
/// own stats shard: its live magazine's, if it has one of that allocator, else its release
/// shard for that allocator (made on first use). `false` only when the thread's registry is
/// gone (thread exit): the caller then uses the shared shard. Never creates a magazine.
///
/// Either way the update is a plain load and store on a line only this thread writes, so a
/// thread that only consumes (drops what others allocated) does not pay two atomic adds on
/// the shared shard's line per release.
#[inline]
pub(crate) fn account_release(chunk: ChunkPtr, size: usize) -> bool {
    let id = chunk.home_id();
    let add = |s: &mut State| {
        if s.link.is_none() {
            return false;
        }
        s.body.shard.add_owned(-(size as i64), -1);
        true
    };
    #[cfg(not(loom))]
    {
        let (last_id, m) = LAST.with(|last| last.get());
        if last_id == id {
            // SAFETY: as in `alloc_fast`.
            if unsafe { &*m }.run(add) {
                return true;
            }
        } else if last_id == usize::MAX {
            // The thread has not allocated since its last magazine change (a thread that only
            // releases, typically): skip the magazines.
            let at = Arc::as_ptr(chunk.home()).cast::<()>();
            let (home, shard) = LAST_RELEASE.with(|l| l.get());
            if home == at {
                // SAFETY: `LAST_RELEASE` names a shard the registry holds (it is cleared
                // before the registry lets go of one).
                unsafe { &*shard }.add_owned(-(size as i64), -1);
                return true;
            }
            return account_release_shard(chunk.home(), size);
        }
    }
    if with_existing(id, |m| m.run(add)) == Some(true) {
        return true;
    }
    account_release_shard(chunk.home(), size)
}

/// The releasing thread's own shard for `home`'s releases (see [`account_release`]).
fn account_release_shard(home: &Arc<dyn Home>, size: usize) -> bool {
    REGISTRY
        .try_with(|reg| -> bool {
            reg.with_mut(|reg| {
                // SAFETY: the registry is this thread's alone, and nothing called below
                // re-enters it (registering a shard takes only the counters' lock).
                let reg = unsafe { &mut *reg };
                let at = Arc::as_ptr(home).cast::<()>();
                let found = reg
                    .releasers
                    .iter()
                    .position(|r| r.home.as_ptr().cast::<()>() == at);
                let i = match found {
                    Some(i) => i,
                    // A closed allocator gets none: its remaining releases use the shared
                    // shard, and the thread keeps nothing of it.
                    None if home.is_closed() => return false,
                    None => add_releaser(reg, home),
                };
                let shard = &reg.releasers[i].shard;
                shard.add_owned(-(size as i64), -1);
                #[cfg(not(loom))]
                LAST_RELEASE.with(|l| l.set((at, Arc::as_ptr(shard))));
                true
            })
        })
        .unwrap_or(false)
}

/// Makes the calling thread's release shard for `home` (dropping those of allocators that
/// are gone); answers its index.
#[cold]
fn add_releaser(reg: &mut Registry, home: &Arc<dyn Home>) -> usize {
    forget_last_release();
    let mut i = 0;
    while i < reg.releasers.len() {
        if reg.releasers[i].home.strong_count() == 0 {
            reg.releasers.swap_remove(i).fold();
        } else {
            i += 1;
        }
    }
    let shard = Arc::new(Shard::default());
    home.counters().register_releaser(shard.clone());
    reg.releasers.push(Releaser {
        home: Arc::downgrade(home),
        shard,
    });
    reg.releasers.len() - 1
}

/// [`alloc_fast`] through the registry, remembering the magazine found in `LAST`: the first
/// step of the slow path. Like [`alloc_fast`], it never answers a region to check.
#[inline(never)]
pub(crate) fn alloc_fast_lookup(id: usize, class: SizeClass) -> Option<FastCarved> {
    let m = REGISTRY
        .try_with(|reg| {
            reg.with_mut(|reg| {
                // SAFETY: as in `with_magazine`.
                let reg = unsafe { &*reg };
                reg.magazines.get(id)?.as_ref().map(ModelArc::as_ptr)
            })
        })
        .ok()
        .flatten()?;
    // SAFETY: a registered magazine of this thread. Under a reclaimer's claim, the rest of
    // the slow path waits at the gate.
    let carved = unsafe { &*m }.run_uncontended(|s| {
        // An allocator that samples allocations never enters `LAST` and takes every
        // allocation to the slow path, where the sampling is: the others pay nothing for it.
        let sampling = s
            .link
            .as_ref()
            .is_some_and(|l| l.src.settings().sample_every != 0);
        (!sampling).then(|| s.body.alloc_fast(class))
    })?;
    #[cfg(not(loom))]
    LAST.with(|last| last.set((id, m)));
    carved
}

/// Runs `f` with the calling thread's magazine for allocator `id` if it has one.
pub(crate) fn with_existing<R>(id: usize, f: impl FnOnce(&Magazine) -> R) -> Option<R> {
    let m = REGISTRY
        .try_with(|reg| {
            reg.with_mut(|reg| {
                // SAFETY: as in `with_magazine`.
                let reg = unsafe { &*reg };
                reg.magazines.get(id)?.as_ref().map(ModelArc::as_ptr)
            })
        })
        .ok()
        .flatten()?;
    // SAFETY: a registered magazine of this thread, held by its registry during this call.
    Some(f(unsafe { &*m }))
}

#[cold]
fn install(reg: &mut Registry, id: usize, src: Arc<dyn ChunkSource>) -> Option<*const Magazine> {
    // Husks of closed allocators are dropped here, so a long-lived thread that moves on to a
    // new allocator keeps nothing of the old ones.
    for slot in reg.magazines.iter_mut() {
        if slot.as_ref().is_some_and(|m| m.is_dead()) {
            forget_last(usize::MAX);
            drop(slot.take());
        }
    }
    if src.roster().is_closed() {
        return None;
    }
    let m = Magazine::create(src.clone());
    // The registration guard: if the allocator closed (or anything below panics) the new
    // magazine is simply dropped, which unregisters its stats shard.
    if !src.roster().register(&m) {
        return None;
    }
    if reg.magazines.len() <= id {
        reg.magazines.resize_with(id + 1, || None);
    }
    let p = ModelArc::as_ptr(&m);
    if let Some(old) = reg.magazines[id].replace(m) {
        forget_last(id);
        leave(old);
    }
    Some(p)
}

/// Drops the calling thread's magazine for allocator `id`, if any (the allocator closed).
pub(crate) fn remove(id: usize) {
    let taken = REGISTRY
        .try_with(|reg| {
            reg.with_mut(|reg| {
                // SAFETY: as in `with_magazine`.
                let reg = unsafe { &mut *reg };
                reg.magazines.get_mut(id).and_then(Option::take)
            })
        })
        .ok()
        .flatten();
    if let Some(m) = taken {
        forget_last(id);
        leave(m);
    }
}
