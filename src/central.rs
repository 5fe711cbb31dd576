//! The central queue of idle chunks, bounded in bytes.
//!
//! Owns: [`Central`]: one `ArrayQueue` per chunk size (sizes are powers of two between the
//! configured bounds) and the byte budget they share, and idle decay. May import: `chunk`,
//! `sync`, `stats`.
//!
//! Invariants:
//! * Only fully free chunks with no owner enter (the magazine and the recycler guarantee it;
//!   a chunk here is held exclusively by the queue).
//! * `cached_bytes <= max_cached_bytes` at every instant: an offer first reserves its bytes
//!   with a CAS loop that refuses to pass the budget, and only then pushes. The queue's slot
//!   count is derived from the byte budget (`budget / size` per size, at most `MAX_SLOTS`),
//!   never from the number of cores or threads. Below that cap a push after a successful
//!   reservation cannot find the queue full; past it (a budget of more than 16,384 chunks of
//!   one size) a push that finds the queue full gives its reservation back and the chunk goes
//!   to the system.
//! * A chunk that does not fit is handed back to the caller, who gives it to the system.

use std::time::{Duration, Instant};

use crate::chunk::ChunkPtr;
use crate::stats::Counters;
use crate::sync::{ArrayQueue, AtomicU64, Ordering::*};

/// The most chunks one size's queue holds (16,384: 64 MiB of the smallest chunks; the queue's
/// own memory is then at most a few hundred KiB per size).
pub(crate) const MAX_SLOTS: usize = 1 << 14;

/// The byte-bounded queue of idle chunks.
pub(crate) struct Central {
    /// `buckets[i]` holds chunks of `1 << (min_shift + i)` bytes; `None` where the budget
    /// cannot hold even one chunk of that size.
    buckets: Vec<Option<ArrayQueue<ChunkPtr>>>,
    min_shift: u32,
    budget: usize,
    idle_release: Duration,
    /// When idle chunks were last swept, in nanoseconds since `epoch`.
    last_sweep: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Central")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Central {
    /// A queue for chunk sizes `min_chunk..=max_chunk` (powers of two) under `budget` bytes.
    pub(crate) fn new(
        min_chunk: usize,
        max_chunk: usize,
        budget: usize,
        idle_release: Duration,
    ) -> Self {
        let min_shift = min_chunk.trailing_zeros();
        let max_shift = max_chunk.trailing_zeros();
        let buckets = (min_shift..=max_shift)
            .map(|s| {
                // Capped: crossbeam's queue allocates every slot up front, so a budget of
                // `isize::MAX` bytes would otherwise ask for petabytes of slots.
                let slots = (budget >> s).min(MAX_SLOTS);
                (slots > 0).then(|| ArrayQueue::new(slots))
            })
            .collect();
        Central {
            buckets,
            min_shift,
            budget,
            idle_release,
            last_sweep: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn bucket(&self, size: usize) -> Option<&ArrayQueue<ChunkPtr>> {
        if !size.is_power_of_two() || size.trailing_zeros() < self.min_shift {
            return None;
        }
        self.buckets
            .get((size.trailing_zeros() - self.min_shift) as usize)?
            .as_ref()
    }

    /// Offers an idle chunk. `Err` gives it back when it does not fit the byte budget.
    ///
    /// The caller must hold the chunk exclusively with no region live; on `Ok` the queue
    /// holds it.
    pub(crate) fn offer(&self, chunk: ChunkPtr, counters: &Counters) -> Result<(), ChunkPtr> {
        let size = chunk.bytes();
        let Some(queue) = self.bucket(size) else {
            return Err(chunk);
        };
        let cached = &counters.cached_bytes;
        let mut cur = cached.load(Relaxed);
        loop {
            match cur.checked_add(size) {
                Some(next) if next <= self.budget => {
                    match cached.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                        Ok(_) => break,
                        Err(actual) => cur = actual,
                    }
                }
                _ => return Err(chunk),
            }
        }
        // SAFETY: the caller holds the chunk exclusively until the push below publishes it.
        unsafe { chunk.set_idle_since(Some(Instant::now())) };
        queue.push(chunk).inspect_err(|_| {
            cached.fetch_sub(size, Relaxed);
        })
    }

    /// Takes an idle chunk, if one waits: of `size` bytes if possible, else of a smaller size
    /// down to `least` (memory the pool already holds is better used than a new allocation
    /// made while it sits idle). Larger chunks are left for the classes that asked for them:
    /// taking them would make those classes allocate anew. The caller then holds it
    /// exclusively.
    pub(crate) fn take(&self, size: usize, least: usize, counters: &Counters) -> Option<ChunkPtr> {
        let index = |s: usize| {
            (s.is_power_of_two() && s.trailing_zeros() >= self.min_shift)
                .then(|| (s.trailing_zeros() - self.min_shift) as usize)
        };
        let want = index(size)?;
        let lowest = index(least.max(1 << self.min_shift))
            .unwrap_or(want)
            .min(want);
        for i in (lowest..=want).rev() {
            if let Some(chunk) = self.buckets[i].as_ref().and_then(|q| q.pop()) {
                counters.cached_bytes.fetch_sub(chunk.bytes(), Relaxed);
                return Some(chunk);
            }
        }
        None
    }

    /// Takes every idle chunk (for `trim` and for eviction under the memory limit).
    pub(crate) fn drain(&self, counters: &Counters, out: &mut Vec<ChunkPtr>) {
        for queue in self.buckets.iter().flatten() {
            while let Some(chunk) = queue.pop() {
                counters.cached_bytes.fetch_sub(chunk.bytes(), Relaxed);
                out.push(chunk);
            }
        }
    }

    /// Takes the chunks that have been idle for longer than `idle_release`. Runs at most once
    /// per quarter of `idle_release`, so callers may call it on every slow path.
    pub(crate) fn take_expired(&self, counters: &Counters, out: &mut Vec<ChunkPtr>) {
        if self.budget == 0 {
            return;
        }
        let now = Instant::now();
        let now_ns = now.duration_since(self.epoch).as_nanos() as u64;
        let period = (self.idle_release.as_nanos() / 4).max(1) as u64;
        let last = self.last_sweep.load(Relaxed);
        if now_ns.saturating_sub(last) < period
            || self
                .last_sweep
                .compare_exchange(last, now_ns, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        for queue in self.buckets.iter().flatten() {
            for _ in 0..queue.len() {
                let Some(chunk) = queue.pop() else { break };
                // SAFETY: popped, so this thread holds the chunk exclusively.
                let since = unsafe { chunk.idle_since() };
                let expired =
                    since.is_none_or(|t| now.saturating_duration_since(t) >= self.idle_release);
                if expired {
                    counters.cached_bytes.fetch_sub(chunk.bytes(), Relaxed);
                    out.push(chunk);
                } else if let Err(chunk) = queue.push(chunk) {
                    // Cannot happen (this chunk's bytes are still reserved), but never lose it.
                    counters.cached_bytes.fetch_sub(chunk.bytes(), Relaxed);
                    out.push(chunk);
                }
            }
        }
    }
}
