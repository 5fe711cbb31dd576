//! Magazines: one thread's cache of chunks for one allocator. This file ties the parts
//! together: [`Magazine`] itself, the allocation and release entry points the allocator calls
//! (the release fast path through the gate included), and the hand-back of every chunk at
//! thread exit or close.
//!
//! The parts, one concept a file (DESIGN.md, "Magazines", has the same sections):
//! * `registry`: the thread-local lookup (`LAST`, [`with_magazine`], the fast path's
//!   [`alloc_fast`]), installing a magazine with its registration guard, each thread's release
//!   shards ([`account_release`]), and the hand-back at thread exit;
//! * `gate`: the gate and the reclaim protocol ([`Gate`](gate::Gate), `Entered`, `Claims`,
//!   `Unclaim`, the [`Roster`], [`Reclaim`]), and nothing else;
//! * `classes`: the per-class cache of free segments ([`ClassState`](classes::ClassState), its
//!   hot stack, spill and flush);
//! * `body`: a class's chunk lists and their policy ([`Body`](body::Body): refill, retirement,
//!   the idle budget, adoption of parked chunks, `take_idle`).
//!
//! Owns: [`Magazine`] and its state (`State`: the link to the allocator and the `Body`). May
//! import: `chunk`, `size_class`, `config`, `sync`, `stats`, `error`, `waiters` (the deferral of
//! wake-ups) and `os` for the process-wide barrier. It reaches the allocator only through the
//! [`ChunkSource`] trait, which the allocator implements. The submodules import one another's
//! items as this file declares them, never the allocator.
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

mod body;
mod classes;
mod gate;
mod registry;

use std::ptr;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::chunk::{ChunkPtr, Home, CHECK};
use crate::config::Settings;
use crate::error::AllocError;
use crate::os;
use crate::size_class::SizeClass;
use crate::stats::Shard;
use crate::sync::{self, AtomicBool, AtomicU32, ModelArc, Ordering::*, UnsafeCell};
use crate::waiters::Deferral;

use body::{Body, Freed};
use classes::{ClassState, CACHE_CAP, CURRENT};
use gate::{Entered, Gate, FENCE};
pub(crate) use gate::{Reclaim, Roster};
#[cfg(not(loom))]
pub(crate) use registry::thread_locals_live;
pub(crate) use registry::{
    account_pinned, account_release, alloc_fast, alloc_fast_lookup, remove, with_existing,
    with_magazine,
};

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
                    sweep_from: 0,
                },
            }),
        });
        let this = ModelArc::as_ptr(&m);
        // SAFETY: nobody else can reach the new magazine yet.
        m.state.with_mut(|s| unsafe { (*s).body.this = this });
        m
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
            s.body.pass_tick(class);
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
    let entered = unsafe { Entered::from_entry(mag) };
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
