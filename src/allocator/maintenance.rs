//! The allocator's maintenance over time: what it gives back, and when, without any thread
//! being asked. The idle sweep (due every quarter of `idle_release`, run by whichever thread
//! takes a slow path, or by the opt-in background reclaimer), `trim()`'s reclaim of every idle
//! chunk everywhere, the eviction of the central cache at the memory limit, and the close
//! (the last handle dropped).
//!
//! Owns: the methods of [`Shared`] that run over time (`maybe_sweep`, `sweep`,
//! `reclaim_everything`, `evict_cached`, `close`), the maintenance lock's use, and the
//! background reclaimer; when the decay of what `os` keeps resident runs, and in steps of what
//! size on an application thread. What to keep and for how long is `retention`'s to decide.
//! May import: the parent's `Shared`, and `magazine` (the reclaim through the roster), `os`
//! (the clock), `retention` (the decay step), `waiters` (the deferral of wake-ups), `sync`. Every reclaim that frees memory under the maintenance lock does so inside a
//! [`Deferral`], so no waker runs under the lock.

use std::sync::Arc;

use crate::magazine::Reclaim;
use crate::os;
use crate::retention;
use crate::sync::Ordering::Relaxed;
use crate::waiters::Deferral;

use super::Shared;

impl Shared {
    /// Frees every cached chunk; answers the bytes freed.
    pub(super) fn evict_cached(&self) -> usize {
        let mut idle = Vec::new();
        self.central.drain(&self.counters, &mut idle);
        Self::free_all(idle)
    }

    /// Gives back every chunk that holds no live region, in every magazine and the cache,
    /// and unmaps the spans kept empty; answers the bytes of chunks freed. Must not run
    /// inside a magazine operation of this allocator on the calling thread (it claims every
    /// magazine, the caller's too).
    pub(super) fn reclaim_everything(&self) -> usize {
        // What it frees under the lock notifies waiters: woken once the lock is released.
        let _wakes = Deferral::begin();
        self.maintenance.with(|_| {
            let mut idle = Vec::new();
            self.roster.reclaim(Reclaim::All, true, &mut idle);
            let freed = Self::free_all(idle) + self.evict_cached();
            self.wait_for_decay_helper();
            self.memory.purge();
            self.memory.release_empty();
            freed
        })
    }

    /// Runs the decay tick if it is due, and the idle sweep if it is due and the tick gave
    /// nothing back: one step of maintenance that gives memory back a slow path, so the
    /// allocation or release that runs it waits for one bounded step. When both are due they
    /// take turns (a sweep left waiting by the decay goes first at the next slow path, so a
    /// decay with steps due for a while, its tick due again at once, does not keep the
    /// sweep waiting). Called on the slow paths of any thread, outside every magazine
    /// operation.
    pub(super) fn maybe_sweep(self: &Arc<Self>) {
        let now = os::now_ns();
        let due = self.next_sweep.load(Relaxed);
        if now >= due && self.sweep_waits.load(Relaxed) {
            // The sweep's turn (a lost race here only changes whose turn it is).
            self.sweep_waits.store(false, Relaxed);
        } else if self.maybe_decay(now) {
            if now >= due {
                self.sweep_waits.store(true, Relaxed);
            }
            return;
        }
        if now < due
            || self
                .next_sweep
                .compare_exchange(
                    due,
                    now.saturating_add(self.settings.sweep_period_ns()),
                    Relaxed,
                    Relaxed,
                )
                .is_err()
        {
            return;
        }
        self.sweep(now, retention::SWEEP_STEP_CHUNKS);
    }

    /// The decay of memory kept resident for reuse (module `retention`), if due: every
    /// quarter of `decay_time`, on the same slow paths as the sweep. Takes only the span
    /// table's lock, never a magazine's gate or the maintenance lock, so it is cheap enough to
    /// run far more often than the sweep. Answers whether it gave anything back or started a
    /// helper (a step with nothing due costs a few microseconds: the sweep may follow it).
    fn maybe_decay(self: &Arc<Self>, now: u64) -> bool {
        let period = self.settings.decay_period_ns();
        // Nothing to decay (the eager policy, or the global allocator's memory, as under
        // Miri and loom): not even the due time is read.
        if period == 0 || !self.memory.decays() {
            return false;
        }
        let due = self.next_decay.load(Relaxed);
        // A give-back on an allocation path that left something due (the cap of recent
        // demand) makes the tick due at once.
        if (now < due && !self.memory.decay_wanted())
            || self
                .next_decay
                .compare_exchange(due, now.saturating_add(period), Relaxed, Relaxed)
                .is_err()
        {
            return false;
        }
        self.decay_step(now)
    }

    /// One step of the decay on an application thread (at most
    /// [`retention::DECAY_STEP_BYTES`], no piece larger than that); if more was due, the tick
    /// is due again at once, so the next slow path of any thread takes the next step. When
    /// [`retention::DECAY_HANDOFF_BYTES`] or more is due (before the step, or left after it),
    /// or the oldest piece due is larger than a step, a helper thread gives back the rest at
    /// once, and the thread that finds it due before stepping takes no step itself (it pays
    /// the helper's start instead). Answers whether it did any of that work (gave back, or
    /// started a helper).
    fn decay_step(self: &Arc<Self>, now: u64) -> bool {
        self.memory.take_decay_wanted();
        if self.memory.due(now) >= retention::DECAY_HANDOFF_BYTES && self.hand_off_decay() {
            return true;
        }
        let mut st = self
            .memory
            .decay_step(now, retention::DECAY_STEP_BYTES, false);
        let mut handed_off = false;
        if (st.left >= retention::DECAY_HANDOFF_BYTES || st.too_big) && self.hand_off_decay() {
            handed_off = true;
        } else if st.too_big {
            // No helper to be had (thread exit, no thread to start, loom): the piece goes
            // here, alone.
            st = self
                .memory
                .decay_step(now, retention::DECAY_STEP_BYTES, true);
        }
        if st.left > 0 && !handed_off {
            self.next_decay.store(now, Relaxed);
        }
        if st.given > 0 {
            self.memory.release_empty();
        }
        st.given > 0 || handed_off
    }

    /// Starts a helper thread that runs the whole decay now, unless one is running
    /// (`decay_helper` claims it); answers whether one runs. The helper holds the allocator
    /// only for its one decay (a weak handle until it starts, so an allocator dropped
    /// meanwhile is not kept), takes only the span table's lock, as any decay does, and
    /// exits. Not under loom, whose models keep nothing to decay.
    #[cfg(not(loom))]
    fn hand_off_decay(self: &Arc<Self>) -> bool {
        // At thread exit (a thread-local's destructor dropping buffers) no thread is started:
        // the steps go on.
        if !crate::magazine::thread_locals_live() {
            return false;
        }
        if self.decay_helper.swap(true, crate::sync::Ordering::Acquire) {
            return true;
        }
        /// Releases the claim however the helper ends (a panic in it included), so that
        /// `trim()` and the close never wait for a helper that is gone.
        struct ReleaseClaim<'a>(&'a crate::sync::AtomicBool);
        impl Drop for ReleaseClaim<'_> {
            fn drop(&mut self) {
                self.0.store(false, crate::sync::Ordering::Release);
            }
        }
        let weak: std::sync::Weak<Shared> = Arc::downgrade(self);
        let start = std::panic::AssertUnwindSafe(|| {
            std::thread::Builder::new()
                .name(format!("adaptive-pool-decay-{}", self.id))
                .spawn(move || {
                    let Some(shared) = weak.upgrade() else { return };
                    let _release = ReleaseClaim(&shared.decay_helper);
                    if shared.memory.decay(os::now_ns()) > 0 {
                        shared.memory.release_empty();
                    }
                })
        });
        // A start that fails, or panics (std's own thread-locals gone), leaves the steps.
        let spawned = std::panic::catch_unwind(start).is_ok_and(|r| r.is_ok());
        if !spawned {
            // No thread to be had: the steps go on.
            self.decay_helper
                .store(false, crate::sync::Ordering::Release);
            return false;
        }
        true
    }

    #[cfg(loom)]
    fn hand_off_decay(self: &Arc<Self>) -> bool {
        false
    }

    /// Waits until no decay helper runs (`trim()` and the close, which give back everything
    /// and must find every piece back in the span table when they do: a helper has the
    /// pieces it gives back out of the table until it has decommitted them). A helper runs
    /// no user code and takes no lock but the span table's, for a few milliseconds at most.
    fn wait_for_decay_helper(&self) {
        #[cfg(not(loom))]
        while self.decay_helper.load(crate::sync::Ordering::Acquire) {
            std::thread::yield_now();
        }
    }

    /// The idle sweep: gives back what has been idle for `idle_release` (cached chunks, and
    /// empty chunks in any magazine: stamped at one sweep, taken at a later one) and the spans
    /// kept empty. Skipped if another thread is sweeping or trimming.
    ///
    /// On an application thread it looks at `budget` chunks at most
    /// ([`retention::SWEEP_STEP_CHUNKS`]) of the magazines; if it had more to look at, the
    /// sweep is due again at once and the next slow path goes on where it stopped.
    pub(super) fn sweep(self: &Arc<Self>, now: u64, budget: usize) {
        let idle_ns = self.settings.idle_release_ns();
        // What it frees under the lock notifies waiters: woken once the lock is released.
        let _wakes = Deferral::begin();
        let swept = self.maintenance.try_with(|_| {
            let mut idle = Vec::new();
            let more = self
                .roster
                .sweep_step(Reclaim::Expired { now, idle_ns }, budget, &mut idle);
            if more == Some(true) {
                self.next_sweep.store(now, Relaxed);
            }
            self.central
                .take_expired(now, idle_ns, &self.counters, &mut idle);
            Self::free_all(idle);
            self.memory.release_empty();
        });
        // What the chunks freed leave in the spans (and the mappings given back) decays at the
        // decay tick, a step at a time, on a slow path of its own: one piece of maintenance
        // a slow path. Under the eager policy there is no tick: the sweep purges, after the
        // maintenance lock is released (as any decay step, which may start a helper thread,
        // and a start may run std's spawn hooks). The background reclaimer, which sweeps with
        // no budget, runs the whole decay itself after the sweep.
        if swept.is_some() && budget != usize::MAX && !self.memory.decays() {
            self.decay_step(now);
        }
    }

    /// Closes the allocator (its last handle dropped): every magazine gives up its chunks and
    /// dies, the cache is emptied and refuses chunks from now on, the spans kept empty are
    /// unmapped. Idempotent.
    pub(super) fn close(&self) {
        self.roster.close();
        let mut idle = Vec::new();
        self.central.close(&self.counters, &mut idle);
        Self::free_all(idle);
        self.wait_for_decay_helper();
        self.memory.purge();
        self.memory.release_empty();
        #[cfg(not(loom))]
        if let Some(t) = self.reclaimer.with(Option::take) {
            t.unpark();
        }
    }
}

/// Starts the opt-in background reclaimer: a thread that runs the idle sweep every quarter
/// of `idle_release` and stops when the allocator closes. It holds the allocator only weakly
/// (between sweeps), so it never keeps it open.
#[cfg(not(loom))]
pub(super) fn spawn_reclaimer(shared: &Arc<Shared>) {
    let weak: std::sync::Weak<Shared> = Arc::downgrade(shared);
    let period = std::time::Duration::from_nanos(shared.settings.sweep_period_ns());
    let spawned = std::thread::Builder::new()
        .name(format!("adaptive-pool-reclaim-{}", shared.id))
        .spawn(move || loop {
            std::thread::park_timeout(period);
            let Some(shared) = weak.upgrade() else { return };
            if shared.is_closed() {
                return;
            }
            let now = os::now_ns();
            // Not an application thread: the whole sweep at once.
            shared.sweep(now, usize::MAX);
            // Not an application thread: whatever else is due goes now, not a step at a time.
            if shared.memory.decay(now) > 0 {
                shared.memory.release_empty();
            }
        });
    // A thread that cannot be spawned leaves the allocator without it (the slow paths still
    // sweep); the builder documents the setting as best effort.
    if let Ok(handle) = spawned {
        shared
            .reclaimer
            .with(|r| *r = Some(handle.thread().clone()));
    }
}
