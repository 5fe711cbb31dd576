//! The gate and the reclaim protocol: how another thread (a `trim()`, the idle sweep, the
//! close) reaches a live thread's magazine without slowing its fast path. [`Gate`],
//! [`Entered`] (the owner's guard), the claim and its guards ([`Unclaim`], [`Claims`]), the
//! [`Roster`] of an allocator's magazines, and [`Reclaim`] (what a reclaim takes).
//!
//! Owns: the gate's two words and every step of the protocol; nothing of what the owner or
//! the reclaimer then does with the magazine (that is `body`). May import: `sync`, `os` (the
//! heavy barrier), `chunk`, `waiters` (the deferral of wake-ups), and the parent's
//! `Magazine` and `State`.
//!
//! # The protocol
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

use std::ptr;

use crate::chunk::ChunkPtr;
use crate::os;
use crate::sync::{self, fence, AtomicU32, Critical, ModelArc, Mutex, Ordering::*};
use crate::waiters::Deferral;

use super::{Magazine, State};

/// The claim word's bits.
const CLAIMED: u32 = 1;

/// The owner must pass a `fence(SeqCst)` before trusting its load of the claim word (the
/// heavy barrier is not the kernel's membarrier). Set for the magazine's life.
pub(super) const FENCE: u32 = 2;

/// The two words of the reclaim protocol (see the module documentation).
pub(super) struct Gate {
    /// 1 while the owner runs an operation on the magazine. Written by the owner only.
    pub(super) active: AtomicU32,
    /// `CLAIMED` while a reclaimer holds the magazine (set and cleared by reclaimers, one at a
    /// time under the roster's lock), plus the constant `FENCE` flag.
    pub(super) claim: AtomicU32,
}

/// An operation of the owner in progress: leaving the gate on drop, also when a poison check
/// panics inside, so a reclaimer never waits for a thread that unwound. A critical section
/// (counted in debug builds: no user code may run until it drops).
pub(super) struct Entered<'a>(pub(super) &'a Magazine, Critical);

impl Entered<'_> {
    /// The guard of an entry made with [`Magazine::try_enter`] (and, if it found the claim
    /// word set, [`Magazine::enter_slow`]) by a caller that holds `mag` as a raw pointer.
    ///
    /// # Safety
    /// `mag` is a live magazine of the calling thread whose gate the caller has entered, and
    /// made no guard of that entry.
    #[inline(always)]
    pub(super) unsafe fn from_entry<'a>(mag: *const Magazine) -> Entered<'a> {
        // SAFETY: as the caller guarantees.
        Entered(unsafe { &*mag }, Critical::enter())
    }

    /// Takes over the guard that [`Entered::hand_over`] gave up.
    ///
    /// # Safety
    /// `mag` is what `hand_over` returned, and nobody else took it over.
    #[inline(always)]
    pub(super) unsafe fn handed_over<'a>(mag: *const Magazine) -> Entered<'a> {
        // SAFETY: as the caller guarantees; the section was counted by the guard handed over.
        Entered(unsafe { &*mag }, Critical::continued())
    }

    /// Gives the guard up without leaving the gate, for [`Entered::handed_over`]: the
    /// magazine is passed on as a raw pointer, so no reference to it is an argument of the
    /// callee (a deferred waker may drop the magazine once the callee has left the gate).
    #[inline(always)]
    pub(super) fn hand_over(self) -> *const Magazine {
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
    pub(super) fn try_enter(&self) -> u32 {
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
    pub(super) fn enter_slow(&self, mut c: u32) {
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
    pub(super) fn run_uncontended<R>(&self, f: impl FnOnce(&mut State) -> Option<R>) -> Option<R> {
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
    pub(super) fn run<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let _entered = self.enter();
        // SAFETY: inside the gate, the owner is the only thread touching `state`.
        self.state.with_mut(
            #[inline(always)]
            |s| f(unsafe { &mut *s }),
        )
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
        self.each_while(|m, s| {
            f(m, s);
            true
        });
    }

    /// [`Claims::each`] until `f` answers `false`: answers the index of that magazine, or
    /// `None` if `f` went through all. The claims not reached are released when the `Claims`
    /// drops (as when `f` unwinds).
    fn each_while(&mut self, mut f: impl FnMut(&Magazine, &mut State) -> bool) -> Option<usize> {
        while let Some(m) = self.mags.get(self.next) {
            // From here `with_claimed` releases this claim, even if `f` unwinds.
            let at = self.next;
            self.next += 1;
            if !m.with_claimed(|s| f(m, s)) {
                return Some(at);
            }
        }
        None
    }
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        for m in &self.mags[self.next..] {
            m.unclaim();
        }
    }
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
    /// Where the next step of a stepped sweep starts: the magazine the last step stopped in
    /// ([`Roster::sweep_step`]).
    sweep_next: usize,
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
    pub(super) fn register(&self, m: &ModelArc<Magazine>) -> bool {
        self.inner.with(|r| {
            if r.closed {
                return false;
            }
            r.mags.push(m.clone());
            true
        })
    }

    /// Removes a magazine (thread exit); waits for a reclaim in progress.
    pub(super) fn unregister(&self, m: &Magazine) {
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

    /// One step of the idle sweep (`how` is `Reclaim::Expired`): looks at the magazines from
    /// the one the last step stopped in, each from its own place
    /// ([`Body::take_idle_within`](super::body::Body::take_idle_within)), until `budget` is
    /// spent. Answers `Some(true)` if the sweep has more to look at (the next step goes on
    /// from there), `Some(false)` once it has been through every magazine, `None` if another
    /// reclaim (or a registration) holds the roster.
    pub(crate) fn sweep_step(
        &self,
        how: Reclaim,
        mut budget: usize,
        out: &mut Vec<ChunkPtr>,
    ) -> Option<bool> {
        // Wake-ups caused under the lock and the claims run after both are released.
        let _wakes = Deferral::begin();
        self.inner.try_with(|r| {
            if r.mags.is_empty() {
                return false;
            }
            // The magazine the last step stopped in comes first; the order of the roster
            // means nothing else.
            let start = r.sweep_next % r.mags.len();
            r.mags.rotate_left(start);
            let stopped = Claims::new(&r.mags)
                .each_while(|_, s| s.body.take_idle_within(how, &mut budget, out));
            r.sweep_next = stopped.unwrap_or(0);
            stopped.is_some()
        })
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
