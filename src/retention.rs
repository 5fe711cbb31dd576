//! The retention policy: what freed memory is kept resident for reuse, and for how long.
//!
//! Owns: what is kept and for how long, as pure functions of ages and sizes on a clock the
//! caller passes in (nanoseconds of `os::now_ns` in the crate, any numbers in the tests): the
//! decay curve and what to give back of what is kept resident beyond the cache ([`excess`],
//! [`expired`]) and the cap of recent demand ([`Demand`]); the eager policy's rule for freed
//! span slots ([`eager_keeps_dirty`]); the idle rules (a chunk idle past `idle_release` goes
//! back: [`expired`]; a magazine's budget of empty chunks: [`within_idle_budget`]; the
//! central cache's byte budget: [`cache_admits`]); and how often the sweep and the decay look
//! ([`sweep_period`], [`decay_period`]). No state of its own (a [`Demand`] is a plain value
//! its holder keeps), no lock, no `unsafe`: the rooms that hold memory (`os`'s span table,
//! the central cache, the magazines) keep the stamps and the counts and ask here. May import:
//! nothing of ours.
//!
//! # Decay, not purge
//! Memory the application frees and the pool does not cache (a span slot of a chunk given
//! back, a mapping of a large unpooled buffer) used to go back to the system at the next
//! sweep (slots) or at once (mappings), so demand that came back soon after faulted every
//! page in again: 4 MiB buffers 43-50x slower than `Vec`, a 64 MiB burst 6.7x. Now each such
//! piece is kept, stamped with the time it was freed, and goes back gradually as it ages, the
//! way jemalloc's `dirty_decay_ms` works: of the bytes freed at time `t`, the fraction still
//! allowed to stay resident at `now` is `h((now - t) / decay_time)`, where `h` falls from 1 to 0
//! along a smoothstep (slow at first, so a burst that recurs within a fraction of the decay
//! time finds almost all of its memory; slow at the end, so the tail goes out gently), and is
//! 0 from `decay_time` on. The allowance is summed over what was freed over the last decay
//! time (less what was reused since), by the epoch it was freed in ([`Ages`]), and the holder
//! gives back its oldest pieces until it keeps no more than that sum ([`GiveBack`]). So after
//! a burst the memory comes back over `decay_time`, never all at one sweep, and all of it is
//! gone `decay_time` after the last free (plus the time until the next look: see the holders).
//!
//! `decay_time == 0` is the eager policy: nothing is kept past the moment it is freed.
//!
//! Under load, what is kept is also capped by recent demand ([`Demand`]): kept and handed
//! out together never pass the peak of what was handed out over the last one to two decay
//! times, so the decay does not raise the footprint above what the load itself needed (a
//! burst that ends keeps its memory for the next; memory kept of chunk sizes no longer in
//! demand goes back as soon as fresh memory is mapped for others).
//!
//! The idle bound of the memory work still holds: the decay time is at most `idle_release`
//! (the builder refuses more), so once idle for `idle_release` nothing decaying is kept.

/// The fraction of freed bytes still allowed to stay resident at `age` nanoseconds after they
/// were freed, with a decay time of `decay` nanoseconds, in parts of [`ONE`]: [`ONE`] at age
/// 0, falling along a smoothstep to 0 at `decay` and after. With `decay == 0`, 0 at every age.
pub(crate) fn allowance(age: u64, decay: u64) -> u64 {
    if decay == 0 || age >= decay {
        return 0;
    }
    // x = age / decay in parts of ONE; smoothstep s(x) = 3x^2 - 2x^3; h = 1 - s(x).
    let x = ((age as u128 * ONE as u128) / decay as u128) as u64;
    let x2 = x * x / ONE;
    let x3 = x2 * x / ONE;
    let s = (3 * x2).saturating_sub(2 * x3).min(ONE);
    ONE - s
}

/// The unit of [`allowance`]: 1.0.
pub(crate) const ONE: u64 = 1 << 16;

/// How many bytes to give back now, of pieces kept resident for reuse: `pieces` yields each
/// piece's `(bytes, freed_at)`; the answer is what the holder keeps beyond the sum of the
/// pieces' allowances at `now` (see the module doc). The exact reference the tests hold
/// [`Ages::excess`] to (which sums by epoch, and over what was freed rather than what is
/// still kept).
#[cfg(test)]
pub(crate) fn excess(
    pieces: impl IntoIterator<Item = (usize, u64)>,
    now: u64,
    decay: u64,
) -> usize {
    let mut kept: u128 = 0;
    let mut allowed: u128 = 0;
    for (bytes, freed_at) in pieces {
        kept += bytes as u128;
        let age = now.saturating_sub(freed_at);
        allowed += bytes as u128 * allowance(age, decay) as u128 / ONE as u128;
    }
    kept.saturating_sub(allowed).min(usize::MAX as u128) as usize
}

/// The choice of what to give back, made one piece at a time, oldest first, so that the holder
/// walks only the pieces it gives back (and one more), never everything it keeps: every piece
/// at least `decay` old ([`expired`]) goes, and then pieces go while the bytes still due (the
/// excess over the curve's allowance, or what is kept beyond recent demand, whichever is more:
/// [`Demand::beyond`]) are more than half of the next piece, so many small pieces follow the
/// curve closely and one large piece (a 4 MiB mapping) stays until half of it is due, instead
/// of going at the first byte of excess. A step gives back at most `step` bytes: at least one
/// piece, if any is due, where a piece larger than the step may go alone (`alone`); where it
/// may not (an application thread, whose wait is bounded), the step stops there and says so
/// ([`GiveBack::too_big`]), for a thread of its own to take it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GiveBack {
    /// Bytes still due.
    due: usize,
    now: u64,
    decay: u64,
    /// The most bytes of one step, and what the step has given so far.
    step: usize,
    given: usize,
    /// Pieces given so far.
    taken: usize,
    /// Set when the step was full while the next piece was due: what is still due then.
    left: usize,
    /// Whether a first piece larger than the step may go alone.
    alone: bool,
    /// Set when the first piece due was larger than the step and could not go alone.
    too_big: bool,
}

impl GiveBack {
    /// The choice at `now` over pieces kept with decay time `decay`, `excess` bytes over the
    /// curve's allowance ([`excess`], [`Ages::excess`]) and `beyond_demand` bytes beyond
    /// recent demand, in a step of at most `step` bytes, a first piece larger than that going
    /// alone if `alone`.
    pub(crate) fn new(
        excess: usize,
        beyond_demand: usize,
        now: u64,
        decay: u64,
        step: usize,
        alone: bool,
    ) -> GiveBack {
        GiveBack {
            due: excess.max(beyond_demand),
            now,
            decay,
            step,
            given: 0,
            taken: 0,
            left: 0,
            alone,
            too_big: false,
        }
    }

    /// Whether the next oldest piece, `bytes` freed at `freed_at`, goes back in this step.
    /// Once it answers `false` the walk stops.
    pub(crate) fn takes(&mut self, bytes: usize, freed_at: u64) -> bool {
        let goes = expired(freed_at, self.now, self.decay) || self.due > bytes / 2;
        if !goes {
            return false;
        }
        if self.given.saturating_add(bytes) > self.step && (self.taken > 0 || !self.alone) {
            // Due, but the step is full (or the piece alone is more than a step, and may not
            // go alone): the next step, or a thread of its own, takes it.
            self.too_big = self.taken == 0;
            self.left = self.due.max(bytes);
            return false;
        }
        self.due = self.due.saturating_sub(bytes);
        self.given = self.given.saturating_add(bytes);
        self.taken += 1;
        true
    }

    /// Bytes still due after the step (0 if the walk stopped at a piece not due): the caller
    /// takes another step later, or hands the rest to a thread of its own.
    pub(crate) fn left(&self) -> usize {
        self.left
    }

    /// Whether the step stopped at its first piece, due but larger than the step, which may
    /// not go alone: a thread of its own must take it (or a step that lets it go alone).
    pub(crate) fn too_big(&self) -> bool {
        self.too_big
    }
}

/// How many of `pieces` (each `(bytes, freed_at)`, oldest first) go back at `now` in one
/// whole step, by the exact [`excess`]: [`GiveBack`] over a list.
#[cfg(test)]
pub(crate) fn oldest_to_give_back(
    pieces: &[(usize, u64)],
    now: u64,
    decay: u64,
    beyond_demand: usize,
) -> usize {
    let excess = excess(pieces.iter().copied(), now, decay);
    let mut g = GiveBack::new(excess, beyond_demand, now, decay, usize::MAX, true);
    pieces.iter().take_while(|&&(b, t)| g.takes(b, t)).count()
}

/// Epochs of the decay time that [`Ages`] tells apart.
const EPOCHS: usize = 128;

/// The bytes a holder freed for reuse over the last decay time, by when (to within an epoch,
/// a 127th of the decay time), less what was reused since: what the curve's allowance is
/// summed over ([`Ages::excess`]), kept as the pieces come and go, so that it costs a look at
/// [`EPOCHS`] counters however many pieces are kept (looking at every piece, with many
/// thousands kept under load, held the holder's lock for 0.1-1 ms at every tick).
///
/// The allowance is over what was *freed*, not over what is still kept: a piece the decay
/// gives back stays counted here, so giving back lowers what is kept and not the allowance,
/// and the excess after a step is what the step left of it (as jemalloc's decay counts the
/// pages dirtied in each epoch, whatever was purged since). Summed over what is still kept,
/// every piece given back would lower the allowance with it, and steps taken one after the
/// other at the same moment would give back everything. A piece reused (taken again for a
/// chunk or a buffer) is no longer freed memory: the holder removes it, with the stamp it was
/// added with.
///
/// Each piece counts as freed at the end of its epoch, so the allowance is never less than
/// the exact one ([`excess`] over the same pieces: nothing goes back before the curve says, a
/// piece at most an epoch late), and nothing freed a decay time and an epoch ago is allowed.
/// (Pieces past the decay time go back whatever the excess: the holder checks each piece's
/// own stamp, [`GiveBack`].) A plain value its holder keeps under its own lock.
#[derive(Clone, Debug)]
pub(crate) struct Ages {
    /// Bytes freed in epoch `e`, in `ring[e % EPOCHS]`, for the [`EPOCHS`] epochs up to
    /// `newest`; older ones are past the decay time and allowed nothing.
    ring: [usize; EPOCHS],
    /// The newest epoch the ring holds.
    newest: u64,
    /// The length of an epoch in nanoseconds: the decay time over `EPOCHS - 1`, rounded up,
    /// so `EPOCHS - 1` epochs are at least a decay time.
    epoch_ns: u64,
    decay: u64,
}

impl Ages {
    /// Empty, for pieces that decay over `decay` nanoseconds.
    pub(crate) fn new(decay: u64) -> Ages {
        Ages {
            ring: [0; EPOCHS],
            newest: 0,
            epoch_ns: decay.div_ceil(EPOCHS as u64 - 1).max(1),
            decay,
        }
    }

    fn epoch(&self, at: u64) -> u64 {
        at / self.epoch_ns
    }

    /// Moves the ring on to `epoch`: the epochs that fall out of it are forgotten.
    fn advance(&mut self, epoch: u64) {
        if epoch <= self.newest {
            return;
        }
        let gone = (epoch - self.newest).min(EPOCHS as u64);
        for e in (self.newest + 1)..=(self.newest + gone) {
            self.ring[(e % EPOCHS as u64) as usize] = 0;
        }
        self.newest = epoch;
    }

    /// Where a piece freed at `at` is counted (the ring moved on to it first), if it is
    /// recent enough to be.
    fn slot(&mut self, at: u64) -> Option<&mut usize> {
        let e = self.epoch(at);
        self.advance(e);
        if e + (EPOCHS as u64) <= self.newest {
            None
        } else {
            Some(&mut self.ring[(e % EPOCHS as u64) as usize])
        }
    }

    /// A piece of `bytes` freed at `at` is kept.
    pub(crate) fn add(&mut self, bytes: usize, at: u64) {
        if let Some(s) = self.slot(at) {
            *s += bytes;
        }
    }

    /// A piece of `bytes` freed at `at` (as added) is reused: no longer freed memory.
    pub(crate) fn reuse(&mut self, bytes: usize, at: u64) {
        if let Some(s) = self.slot(at) {
            debug_assert!(*s >= bytes, "a piece reused that was not added");
            *s = s.saturating_sub(bytes);
        }
    }

    /// Everything was given back (`trim()`, the close): the history goes too, so what is
    /// freed next is not allowed more for what was freed before.
    pub(crate) fn clear(&mut self) {
        self.ring = [0; EPOCHS];
    }

    /// What of `kept` bytes is beyond the curve's allowance at `now` (the allowance summed
    /// over what was freed, each piece as if freed at the end of its epoch).
    pub(crate) fn excess(&mut self, kept: usize, now: u64) -> usize {
        self.advance(self.epoch(now));
        let freed = (0..(EPOCHS as u64).min(self.newest + 1)).filter_map(|k| {
            let e = self.newest - k;
            let bytes = self.ring[(e % EPOCHS as u64) as usize];
            (bytes != 0).then_some((bytes, (e + 1) * self.epoch_ns))
        });
        let mut allowed: u128 = 0;
        for (bytes, freed_at) in freed {
            let age = now.saturating_sub(freed_at);
            allowed += bytes as u128 * allowance(age, self.decay) as u128 / ONE as u128;
        }
        (kept as u128)
            .saturating_sub(allowed)
            .min(usize::MAX as u128) as usize
    }
}

/// The recent demand of a holder of memory: the peak of the bytes it handed out (chunks and
/// large buffers in use, the caches' chunks included) over the last one to two windows of
/// the decay time. What it keeps resident for reuse is capped by it: kept and handed out
/// together stay within the recent peak ([`Demand::beyond`]), so keeping freed memory never
/// raises the footprint above what the load itself needed lately. Memory kept of one chunk
/// size serves only that size: when demand moves to other sizes and fresh memory is mapped
/// for them, what is kept of the old sizes goes back then, not a decay time later. A plain
/// value the holder keeps under its own lock and notes every change of the bytes in use to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Demand {
    /// The peak of the current window.
    current: usize,
    /// The peak of the window before.
    previous: usize,
    /// Bytes in use at the last note (the level carried into a new window).
    last: usize,
    /// When the current window began.
    since: u64,
}

impl Demand {
    /// Notes that `in_use` bytes are handed out from `now` on; a window is `window`
    /// nanoseconds (the decay time).
    pub(crate) fn note(&mut self, in_use: usize, now: u64, window: u64) {
        let age = now.saturating_sub(self.since);
        if age >= window {
            // The level since the last note held through the windows between.
            self.previous = if age >= 2 * window {
                self.last
            } else {
                self.current
            };
            self.current = self.last;
            self.since = now;
        }
        self.current = self.current.max(in_use);
        self.last = in_use;
    }

    /// The peak of the bytes in use over the current and the previous window.
    pub(crate) fn recent_peak(&self) -> usize {
        self.current.max(self.previous)
    }

    /// How many bytes of the `kept` resident for reuse go beyond recent demand at `now` with
    /// `in_use` handed out: kept and in use together above the recent peak (windows that ended
    /// by `now` without a note are rolled over first, without changing `self`).
    pub(crate) fn beyond(&self, in_use: usize, kept: usize, now: u64, window: u64) -> usize {
        let mut d = *self;
        d.note(in_use, now, window);
        in_use.saturating_add(kept).saturating_sub(d.recent_peak())
    }
}

/// The most bytes one step of the decay gives back on an application thread (the allocator's
/// decay tick, and the cap of recent demand when fresh memory is mapped, which run inside an
/// allocation or a release): giving memory back costs the system call's time, about 25-100 us
/// a MiB of resident 4 KiB pages on the development machine (`madvise(MADV_DONTNEED)` and
/// `munmap` free every page), so a step of 256 KiB keeps the wait of the allocation that
/// runs it within SPEC's 100 us (measured in CPU time under the latency example's load: a
/// median of 21 us, p99 96-100 us; with 1 MiB steps a median of 68-71 us and p99 331-355
/// us). A piece larger than the step (a 2 MiB mapping, a 1 MiB slot) does not go on an
/// application thread: the helper takes it (on such a thread only where no helper can be
/// started). What is due beyond a step is given back by the next slow paths, one step each
/// (the tick is due again at once), or past [`DECAY_HANDOFF_BYTES`] by a helper thread; the
/// background reclaimer and `trim()` take it all.
pub(crate) const DECAY_STEP_BYTES: usize = 256 << 10;

/// What may be due at once, beyond a decay step, before an application thread hands the
/// decay to a thread of its own: a step gives back a quarter of a megabyte a slow path, and
/// under light activity slow paths are few (the soak's quiet phase, four threads at a
/// trickle: about 14 a second, one allocation in 1,024 and the releases of chunks), so steps
/// alone fall behind the curve (3.5 MiB a second there) and a large retained set that
/// expires (a gigabyte after a burst) would take 4,000 slow paths, against SPEC's "on time
/// under any activity". A helper thread gives it all back at once (25-100 ms a gigabyte of
/// 4 KiB pages here) without any allocation waiting on it; the allocation that starts it pays
/// the thread's start (tens of microseconds), at most once a tick. Below this, the next slow
/// paths take steps. At 16 MiB the soak's quiet phase kept 28-46 MiB resident where 1 MiB
/// steps had kept 15-25.
pub(crate) const DECAY_HANDOFF_BYTES: usize = 2 << 20;

/// What a thread of its own (the decay helper, the background reclaimer) gives back per hold
/// of the span table's lock, when it gives back a large retained set whole: the walk under
/// the lock costs about 100 ns a piece (16,384 pieces, 1 GiB of 64 KiB slots, held it 1.6
/// ms in one hold), and every chunk creation or release on every other thread waits for the
/// lock meanwhile; in batches of 4 MiB it is released every few microseconds (the system
/// calls run outside it anyway).
pub(crate) const DECAY_BATCH_BYTES: usize = 4 << 20;

/// The work one step of the idle sweep does on an application thread, in chunks looked at
/// (a class is looked at whole, so a step may pass this by one class's chunks): draining a
/// chunk's remote frees and taking it out of its magazine cost 1-2.5 us a chunk on the
/// development machine (cold chunk headers), so 12 chunks are about 15-30 us, and the step
/// takes no decay step besides (one step of maintenance a slow path). Measured in CPU time
/// under the latency example's load: a median of 7-9 us a sweep step, p99 93-95 us (with 24
/// chunks and the decay step inside: p99 215-260 us). A sweep that has more to look at is
/// due again at once and goes on, at the next slow path, where this step stopped (every
/// magazine keeps its place, and the roster the magazine it stopped at); the background
/// reclaimer does a whole sweep at once.
pub(crate) const SWEEP_STEP_CHUNKS: usize = 12;

/// Whether a piece freed at `freed_at` must be given back at `now` whatever the curve says:
/// it is at least `decay` old (the curve is 0 there; also what keeps the idle bound). The
/// same rule, with `idle_release` for `decay`, is the idle sweep's: a chunk idle since
/// `freed_at` (in the central cache, or empty in a magazine) goes back once that old.
pub(crate) fn expired(freed_at: u64, now: u64, decay: u64) -> bool {
    now.saturating_sub(freed_at) >= decay
}

/// Whether a magazine keeps `idle_bytes` of empty chunks under its per-thread budget
/// (`max_thread_idle_bytes`); past it, its oldest idle chunks go back at once.
pub(crate) fn within_idle_budget(idle_bytes: usize, budget: usize) -> bool {
    idle_bytes <= budget
}

/// What the central cache holds after taking a chunk of `bytes` on top of `cached`, if its
/// byte budget admits it; `None` if the chunk must go back to the system instead.
pub(crate) fn cache_admits(cached: usize, bytes: usize, budget: usize) -> Option<usize> {
    cached.checked_add(bytes).filter(|&next| next <= budget)
}

/// The eager policy's rule for a freed span slot (`decay_time(0)`): kept committed while the
/// dirty bytes, with it, stay within the budget plus `1 / share` of the slot bytes in use;
/// decommitted at once past that.
pub(crate) fn eager_keeps_dirty(
    dirty: usize,
    bytes: usize,
    budget: usize,
    in_use: usize,
    share: usize,
) -> bool {
    dirty + bytes <= budget + in_use / share
}

/// How often the idle sweep may run: a quarter of `idle_release` (nanoseconds, at least 1).
pub(crate) fn sweep_period(idle_ns: u64) -> u64 {
    (idle_ns / 4).max(1)
}

/// How often the decay of retained memory is looked at: a quarter of the decay time, at least
/// a millisecond; 0 under the eager policy (the sweep purges instead).
pub(crate) fn decay_period(decay_ns: u64) -> u64 {
    match decay_ns {
        0 => 0,
        d => (d / 4).max(1_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const MIB: usize = 1 << 20;

    #[test]
    fn the_curve_falls_from_one_to_zero_over_the_decay_time() {
        let d = 1000 * MS;
        assert_eq!(allowance(0, d), ONE);
        assert_eq!(allowance(d, d), 0);
        assert_eq!(allowance(5 * d, d), 0);
        // Half-way, a smoothstep is at one half.
        let half = allowance(d / 2, d);
        assert!(half.abs_diff(ONE / 2) <= 2, "{half}");
        // Monotonic, and flat at both ends (a burst that recurs soon finds nearly all).
        let mut last = ONE;
        for i in 0..=100 {
            let a = allowance(i * d / 100, d);
            assert!(a <= last, "not monotonic at {i}%");
            last = a;
        }
        assert!(allowance(d / 20, d) > ONE * 99 / 100);
        assert!(allowance(d * 19 / 20, d) < ONE / 100);
    }

    #[test]
    fn zero_decay_keeps_nothing() {
        assert_eq!(allowance(0, 0), 0);
        assert_eq!(excess([(4096, 10)], 10, 0), 4096);
        assert!(expired(10, 10, 0));
    }

    /// A fake clock: a burst of pieces freed at once keeps all of them at first, gives back
    /// about half at half the decay time, and all of them at the decay time.
    #[test]
    fn a_burst_decays_gradually_on_a_fake_clock() {
        let d = 1000 * MS;
        let burst: Vec<(usize, u64)> = (0..64).map(|_| (1 << 20, 5 * MS)).collect();
        let at = |t: u64| excess(burst.iter().copied(), 5 * MS + t, d);
        assert_eq!(at(0), 0, "nothing goes back at once");
        assert!(
            at(d / 10) < 4 << 20,
            "within a tenth, almost all is kept: {}",
            at(d / 10)
        );
        let mid = at(d / 2);
        assert!(
            mid.abs_diff(32 << 20) < 1 << 20,
            "about half at half-time: {mid}"
        );
        assert_eq!(at(d), 64 << 20, "everything at the decay time");
        for i in 0..20 {
            assert!(at(i * d / 20) <= at((i + 1) * d / 20), "monotonic");
        }
    }

    /// Pieces freed at different times: the old ones are the excess, the fresh ones stay.
    #[test]
    fn older_pieces_go_first() {
        let d = 100 * MS;
        let pieces = [(1000, 0), (1000, 90 * MS), (1000, 200 * MS)];
        // At 200 ms: the first is past the decay time (allowance 0), the second is 110 ms
        // old (0), the third fresh (1).
        assert_eq!(excess(pieces, 200 * MS, d), 2000);
        assert!(expired(0, 200 * MS, d));
        assert!(!expired(200 * MS, 250 * MS, d));
    }

    /// Rounding to the nearest piece: one large piece stays until about half of it is due
    /// (a smoothstep is at one half at half the decay time), many small ones follow the curve.
    #[test]
    fn pieces_go_to_the_nearest() {
        let d = 1000 * MS;
        let one = [(4 << 20, 0u64)];
        assert_eq!(oldest_to_give_back(&one, 0, d, 0), 0);
        assert_eq!(
            oldest_to_give_back(&one, d / 4, d, 0),
            0,
            "a sixth is due: kept"
        );
        assert_eq!(oldest_to_give_back(&one, d * 45 / 100, d, 0), 0);
        assert_eq!(
            oldest_to_give_back(&one, d * 55 / 100, d, 0),
            1,
            "over half due: given back"
        );
        assert_eq!(oldest_to_give_back(&one, d, d, 0), 1);
        let many: Vec<(usize, u64)> = (0..100).map(|i| (4096, i * MS)).collect();
        let n = oldest_to_give_back(&many, 99 * MS + d / 2, d, 0);
        assert!(
            (40..=60).contains(&n),
            "about half of a hundred small pieces: {n}"
        );
        // Expired pieces go whatever the excess.
        let mixed = [(4096, 0), (1 << 30, 2 * d)];
        assert_eq!(oldest_to_give_back(&mixed, 2 * d, d, 0), 1);
    }

    /// Recent demand on a fake clock: the peak of the last one to two windows, and what is
    /// kept beyond it.
    #[test]
    fn demand_is_the_recent_peak() {
        let w = 1000 * MS;
        let mut d = Demand::default();
        d.note(10 * MIB, 0, w);
        d.note(64 * MIB, 100 * MS, w);
        d.note(8 * MIB, 200 * MS, w);
        assert_eq!(d.recent_peak(), 64 * MIB);
        // 56 MiB kept after the burst: with the 8 in use, within the peak.
        assert_eq!(d.beyond(8 * MIB, 56 * MIB, 300 * MS, w), 0);
        // Fresh memory for other sizes while it is kept: the footprint would pass the peak.
        assert_eq!(d.beyond(12 * MIB, 56 * MIB, 300 * MS, w), 4 * MIB);
        // A new peak in use: everything kept is beyond it.
        assert_eq!(d.beyond(80 * MIB, 3 * MIB, 300 * MS, w), 3 * MIB);
        // The next window still remembers the burst.
        d.note(8 * MIB, 1100 * MS, w);
        assert_eq!(d.recent_peak(), 64 * MIB);
        // Two windows later it is forgotten: the level held since the last note is the peak.
        assert_eq!(d.beyond(8 * MIB, 56 * MIB, 2100 * MS, w), 56 * MIB);
        d.note(9 * MIB, 2100 * MS, w);
        assert_eq!(d.recent_peak(), 9 * MIB);
        // A level held through several windows without a note counts in each.
        d.note(9 * MIB, 9000 * MS, w);
        assert_eq!(d.recent_peak(), 9 * MIB);
        // The demand cap reaches oldest_to_give_back: two of four 1 MiB pieces go.
        let pieces = [(MIB, 0), (MIB, 1), (MIB, 2), (MIB, 3)];
        assert_eq!(oldest_to_give_back(&pieces, 10, w, 2 * MIB), 2);
        assert_eq!(oldest_to_give_back(&pieces, 10, w, 0), 0);
    }

    /// The idle rules and budgets, at their edges.
    #[test]
    fn budgets_and_periods() {
        assert!(within_idle_budget(1 << 20, 1 << 20));
        assert!(!within_idle_budget((1 << 20) + 1, 1 << 20));
        assert!(within_idle_budget(0, 0));
        // A step: as many due pieces as fit (all expired here, and all of them the excess),
        // at least one, and what is still due after it.
        let pieces = [(MIB, 0), (MIB, 1), (3 * MIB, 2), (MIB, 3)];
        let step = |from: usize, bound: usize, alone: bool| {
            let excess = pieces[from..].iter().map(|p| p.0).sum();
            let mut g = GiveBack::new(excess, 0, 100, 10, bound, alone);
            let n = pieces[from..]
                .iter()
                .take_while(|p| g.takes(p.0, p.1))
                .count();
            (n, g.left(), g.too_big())
        };
        assert_eq!(
            step(0, 2 * MIB, false),
            (2, 4 * MIB, false),
            "as many as fit the step"
        );
        assert_eq!(
            step(2, 2 * MIB, true),
            (1, MIB, false),
            "a larger piece goes alone where it may"
        );
        assert_eq!(
            step(2, 2 * MIB, false),
            (0, 4 * MIB, true),
            "and stops the step where it may not"
        );
        assert_eq!(
            step(0, usize::MAX, false),
            (4, 0, false),
            "all, nothing left"
        );
        // A walk that stops at a piece not due leaves nothing due.
        let mut g = GiveBack::new(MIB, 0, 5, 1000, usize::MAX, false);
        assert!(g.takes(MIB, 0));
        assert!(!g.takes(MIB, 1));
        assert_eq!((g.left(), g.too_big()), (0, false));
        assert_eq!(cache_admits(4096, 4096, 8192), Some(8192));
        assert_eq!(cache_admits(4097, 4096, 8192), None);
        assert_eq!(cache_admits(usize::MAX, 1, usize::MAX), None, "no overflow");
        // The eager slot rule: budget plus half the bytes in use (share 2).
        assert!(eager_keeps_dirty(0, 4096, 4096, 0, 2));
        assert!(!eager_keeps_dirty(1, 4096, 4096, 0, 2));
        assert!(eager_keeps_dirty(4096, 4096, 0, 16384, 2));
        assert!(expired(10, 10 + 100, 100));
        assert!(!expired(10, 10 + 99, 100));
        assert!(!expired(50, 10, 1), "a stamp in the future is not old");
        assert_eq!(sweep_period(10_000_000_000), 2_500_000_000);
        assert_eq!(sweep_period(3), 1, "at least a nanosecond");
        assert_eq!(decay_period(0), 0, "eager: no decay tick");
        assert_eq!(decay_period(1_000_000_000), 250_000_000);
        assert_eq!(decay_period(2_000_000), 1_000_000, "at least a millisecond");
    }

    /// The idle bound: whatever was freed, nothing is allowed past the decay time.
    #[test]
    fn nothing_is_kept_past_the_decay_time() {
        let d = 300 * MS;
        let pieces: Vec<(usize, u64)> =
            (0..1000).map(|i| (4096 * (i + 1), i as u64 * MS)).collect();
        let last = 999 * MS;
        let total: usize = pieces.iter().map(|p| p.0).sum();
        assert_eq!(excess(pieces.iter().copied(), last + d, d), total);
    }

    /// The ages kept by epoch, against the exact sum over every piece freed (kept, or given
    /// back by the decay since; less the pieces reused): the excess is never over the exact
    /// one, at most an epoch's worth of the curve under it; giving back lowers what is kept,
    /// not the allowance, so the excess falls by what was given back; everything kept is due
    /// once nothing freed is recent.
    #[test]
    fn ages_by_epoch_follow_the_exact_excess() {
        let d = 1000 * MS;
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ages = Ages::new(d);
        // (bytes, freed at, still kept): freed and not reused.
        let mut pieces: Vec<(usize, u64, bool)> = Vec::new();
        let mut now = 3 * d;
        // Fewer rounds under Miri: plain arithmetic, a minute and more interpreted.
        let rounds = if cfg!(miri) { 40 } else { 400 };
        for round in 0..rounds {
            now += rand() % (20 * MS);
            // Pieces freed now or a little before (stamps taken before a lock).
            for _ in 0..(rand() % 4) {
                let at = now - rand() % (5 * MS);
                let bytes = 4096 << (rand() % 6);
                ages.add(bytes, at);
                pieces.push((bytes, at, true));
            }
            // Some reused (any kept piece), some given back (the oldest kept).
            if rand() % 3 == 0 {
                let kept: Vec<usize> = (0..pieces.len()).filter(|&i| pieces[i].2).collect();
                if !kept.is_empty() {
                    let (bytes, at, _) = pieces.swap_remove(kept[rand() as usize % kept.len()]);
                    ages.reuse(bytes, at);
                }
            }
            if rand() % 4 == 0 {
                if let Some(p) = pieces.iter_mut().filter(|p| p.2).min_by_key(|p| p.1) {
                    p.2 = false;
                }
            }
            let kept: usize = pieces.iter().filter(|p| p.2).map(|p| p.0).sum();
            let allowed: usize = pieces
                .iter()
                .map(|p| {
                    (p.0 as u128 * allowance(now.saturating_sub(p.1), d) as u128 / ONE as u128)
                        as usize
                })
                .sum();
            let exact = kept.saturating_sub(allowed);
            let approx = ages.excess(kept, now);
            assert!(approx <= exact, "round {round}: {approx} over {exact}");
            // At most every piece an epoch younger: the curve's steepest slope is 1.5 per
            // decay time, an epoch is d / 127.
            let freed: usize = pieces.iter().map(|p| p.0).sum();
            let slack = freed * 3 / 2 / 127 + 4096;
            assert!(
                approx + slack >= exact,
                "round {round}: {approx} + {slack} under {exact}"
            );
        }
        // Long after, everything kept is due; and nothing is left once all are reused.
        let kept: usize = pieces.iter().filter(|p| p.2).map(|p| p.0).sum();
        assert_eq!(ages.excess(kept, now + 10 * d), kept);
        for (bytes, at, _) in pieces {
            ages.reuse(bytes, at);
        }
        assert_eq!(ages.excess(0, now + 20 * d), 0);
        // Freed just now, or within the epoch: nothing due.
        let mut fresh = Ages::new(d);
        fresh.add(64 << 20, 7 * d + 1);
        assert_eq!(fresh.excess(64 << 20, 7 * d + 1), 0);
        assert_eq!(fresh.excess(64 << 20, 7 * d + 2 * MS), 0);
        // Steps at one moment: what the first gives back comes off the excess, no more (the
        // allowance stays), so steps one after the other give back what one whole would.
        let mid = 7 * d + d / 2;
        let due = fresh.excess(64 << 20, mid);
        assert!(
            due.abs_diff(32 << 20) < 1 << 20,
            "about half at half: {due}"
        );
        assert_eq!(fresh.excess((64 << 20) - (8 << 20), mid), due - (8 << 20));
        fresh.clear();
        assert_eq!(fresh.excess(1 << 20, mid), 1 << 20, "no history: all of it");
    }
}
