//! The thread-local registry: how a thread finds its magazine of an allocator in O(1) (the
//! fast path's `LAST`: two plain thread-local loads), installs one on first use (with its
//! registration guard: a magazine the roster refuses is simply dropped), keeps one release
//! shard per allocator whose buffers it releases without a magazine ([`account_release`]),
//! and hands every magazine back at thread exit.
//!
//! Owns: `REGISTRY`, `LAST`, `LAST_RELEASE`, [`Registry`], [`Releaser`]. May import: `sync`,
//! `stats`, `chunk`, `size_class`, `waiters`, and the parent's `Magazine`, `ChunkSource` and
//! gate.

#[cfg(not(loom))]
use std::ptr;
use std::sync::Arc;

use crate::chunk::{ChunkPtr, Home};
use crate::size_class::SizeClass;
use crate::stats::Shard;
use crate::sync::{thread_local, Critical, ModelArc, UnsafeCell};
use crate::waiters::Deferral;

use super::{ChunkSource, FastCarved, Magazine, State};

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

/// Whether the calling thread's thread-locals are still live, not being destroyed at its
/// exit (a buffer dropped by another thread-local's destructor runs the release path then).
/// The allocator starts a decay helper thread only while they are: std's `spawn` reads
/// thread-locals of its own (the test harness's output capture), which may be gone by then.
/// The registry is made on the thread's first allocation, after std's own thread-locals,
/// and thread-locals are destroyed in the reverse order of their making, so while it lives
/// they do.
#[cfg(not(loom))]
pub(crate) fn thread_locals_live() -> bool {
    REGISTRY.try_with(|_| ()).is_ok()
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
    on_own_shard(chunk, |s| s.add_owned(-(size as i64), -1))
}

/// Adds `bytes` to the pinned bytes of `chunk`'s allocator in the calling thread's own stats
/// shard, as [`account_release`] does for a release: a handle of a split region that drops
/// while others live (a codec's frame) pays a plain load and store here instead of an atomic
/// add on a line every thread writes. `false` as for [`account_release`].
#[inline]
pub(crate) fn account_pinned(chunk: ChunkPtr, bytes: i64) -> bool {
    on_own_shard(chunk, |s| s.add_pinned_owned(bytes))
}

/// Runs `add` on the calling thread's own stats shard for `chunk`'s allocator (see
/// [`account_release`]).
#[inline(always)]
fn on_own_shard(chunk: ChunkPtr, add: impl Fn(&Shard) + Copy) -> bool {
    let id = chunk.home_id();
    let in_magazine = |s: &mut State| {
        if s.link.is_none() {
            return false;
        }
        add(&s.body.shard);
        true
    };
    #[cfg(not(loom))]
    {
        let (last_id, m) = LAST.with(|last| last.get());
        if last_id == id {
            // SAFETY: as in `alloc_fast`.
            if unsafe { &*m }.run(in_magazine) {
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
                add(unsafe { &*shard });
                return true;
            }
            return on_release_shard(chunk.home(), add);
        }
    }
    if with_existing(id, |m| m.run(in_magazine)) == Some(true) {
        return true;
    }
    on_release_shard(chunk.home(), add)
}

/// Runs `add` on the calling thread's release shard for `home` (see [`account_release`]).
fn on_release_shard(home: &Arc<dyn Home>, add: impl Fn(&Shard)) -> bool {
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
                add(shard);
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
