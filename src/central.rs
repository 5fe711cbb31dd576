//! The central queue of idle chunks, bounded in bytes, with its idle decay and its half of
//! the allocator's close handshake.
//!
//! Owns: [`Central`]: one `ArrayQueue` per chunk size (sizes are powers of two between the
//! configured bounds) and the byte budget they share; the `closed` flag; the sweep lock.
//! May import: `chunk`, `sync`, `stats`, `retention` (whether the budget admits a chunk, and
//! when a cached chunk has been idle long enough: the policy is decided there).
//!
//! Invariants:
//! * Only fully free chunks with no owner enter (the magazine and the recycler guarantee it;
//!   a chunk here is held exclusively by the queue).
//! * `cached_bytes <= max_cached_bytes` at every instant: an offer first reserves its bytes
//!   with a CAS loop that refuses to pass the budget, and only then pushes. The queue's slot
//!   count is derived from the byte budget (`budget / size` per size, at most `MAX_SLOTS`),
//!   never from the number of cores or threads, and each size's slots are allocated on its
//!   first offer, so a large budget costs nothing until chunks of that size are cached.
//! * **Every push goes through [`Central::push_checked`]**, which is one side of the close
//!   handshake: it pushes, then (after a `SeqCst` fence) looks at `closed`, and if the
//!   allocator has closed it drains the queue itself. [`Central::close`] sets `closed`, fences,
//!   and drains. Either the closer sees the pushed chunk or the pusher sees `closed`, so no
//!   chunk stays in the queue of a closed allocator (whose chunks' `Arc` to it would
//!   otherwise keep it alive: a cycle, and a leak).
//! * The idle sweep pops and pushes back, so it holds the sweep lock; `drain` (trim) and
//!   `close` take it too. A trim therefore never misses a chunk a sweep holds for a moment,
//!   and a sweep that starts after the close finds `closed` set and drains instead.

use crate::chunk::ChunkPtr;
use crate::retention;
use crate::stats::Counters;
use crate::sync::{fence, ArrayQueue, AtomicBool, Mutex, Ordering::*};

/// The most chunks one size's queue holds (16,384: 64 MiB of the smallest chunks; the queue's
/// own memory is then at most a few hundred KiB per size).
pub(crate) const MAX_SLOTS: usize = 1 << 14;

/// One chunk size's queue, made on its first offer (eagerly under loom, whose models cannot
/// use std's `OnceLock`).
struct Bucket {
    #[cfg(not(loom))]
    slots: usize,
    #[cfg(not(loom))]
    queue: std::sync::OnceLock<ArrayQueue<ChunkPtr>>,
    #[cfg(loom)]
    queue: ArrayQueue<ChunkPtr>,
}

impl Bucket {
    fn new(slots: usize) -> Bucket {
        Bucket {
            #[cfg(not(loom))]
            slots,
            #[cfg(not(loom))]
            queue: std::sync::OnceLock::new(),
            #[cfg(loom)]
            queue: ArrayQueue::new(slots),
        }
    }

    /// The queue, if it has been made.
    fn get(&self) -> Option<&ArrayQueue<ChunkPtr>> {
        #[cfg(not(loom))]
        {
            self.queue.get()
        }
        #[cfg(loom)]
        {
            Some(&self.queue)
        }
    }

    /// The queue, made now if needed.
    fn get_or_make(&self) -> &ArrayQueue<ChunkPtr> {
        #[cfg(not(loom))]
        {
            self.queue.get_or_init(|| ArrayQueue::new(self.slots))
        }
        #[cfg(loom)]
        {
            &self.queue
        }
    }
}

/// The byte-bounded queue of idle chunks.
pub(crate) struct Central {
    /// `buckets[i]` holds chunks of `1 << (min_shift + i)` bytes; `None` where the budget
    /// cannot hold even one chunk of that size.
    buckets: Vec<Option<Bucket>>,
    min_shift: u32,
    budget: usize,
    /// Set once, when the allocator's last handle goes.
    closed: AtomicBool,
    /// Held by the idle sweep, `drain` and `close`.
    sweep: Mutex<()>,
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Central")
            .field("budget", &self.budget)
            .field("closed", &self.closed.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Central {
    /// A queue for chunk sizes `min_chunk..=max_chunk` (powers of two) under `budget` bytes.
    pub(crate) fn new(min_chunk: usize, max_chunk: usize, budget: usize) -> Self {
        let min_shift = min_chunk.trailing_zeros();
        let max_shift = max_chunk.trailing_zeros();
        let buckets = (min_shift..=max_shift)
            .map(|s| {
                // Capped: crossbeam's queue allocates every slot when it is made, so a budget
                // of `isize::MAX` bytes would otherwise ask for petabytes of slots.
                let slots = (budget >> s).min(MAX_SLOTS);
                (slots > 0).then(|| Bucket::new(slots))
            })
            .collect();
        Central {
            buckets,
            min_shift,
            budget,
            closed: AtomicBool::new(false),
            sweep: Mutex::new(()),
        }
    }

    fn bucket(&self, size: usize) -> Option<&Bucket> {
        if !size.is_power_of_two() || size.trailing_zeros() < self.min_shift {
            return None;
        }
        self.buckets
            .get((size.trailing_zeros() - self.min_shift) as usize)?
            .as_ref()
    }

    /// `true` once [`close`](Central::close) has run.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Offers an idle chunk, idle since `now` (`os::now_ns`). It is cached if the byte budget
    /// allows and the allocator is open; otherwise it is handed back (pushed to `out`) for the
    /// caller to give to the system, possibly with other chunks the close handshake drained.
    ///
    /// The caller must hold the chunk exclusively with no region live.
    pub(crate) fn offer(
        &self,
        chunk: ChunkPtr,
        counters: &Counters,
        now: u64,
        out: &mut Vec<ChunkPtr>,
    ) {
        let size = chunk.bytes();
        let Some(bucket) = self.bucket(size) else {
            out.push(chunk);
            return;
        };
        if self.is_closed() {
            out.push(chunk);
            return;
        }
        let cached = &counters.cached_bytes;
        let mut cur = cached.load(Relaxed);
        loop {
            match retention::cache_admits(cur, size, self.budget) {
                Some(next) => match cached.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                    Ok(_) => break,
                    Err(actual) => cur = actual,
                },
                _ => {
                    out.push(chunk);
                    return;
                }
            }
        }
        // SAFETY: the caller holds the chunk exclusively until the push publishes it.
        unsafe { chunk.set_idle_since(now) };
        self.push_checked(bucket.get_or_make(), chunk, counters, out);
    }

    /// Pushes a chunk whose bytes are already reserved in `cached_bytes`, with the close
    /// handshake (see the module documentation). The only way into the queue.
    fn push_checked(
        &self,
        queue: &ArrayQueue<ChunkPtr>,
        chunk: ChunkPtr,
        counters: &Counters,
        out: &mut Vec<ChunkPtr>,
    ) {
        if let Err(chunk) = queue.push(chunk) {
            // Only past `MAX_SLOTS` chunks of one size can the reserved bytes find no slot.
            counters.cached_bytes.fetch_sub(chunk.bytes(), Relaxed);
            out.push(chunk);
            return;
        }
        // Pairs with the fence in `close`.
        fence(SeqCst);
        if self.is_closed() {
            self.drain_unlocked(counters, out);
        }
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
            let popped = self.buckets.get(i)?.as_ref().and_then(Bucket::get);
            if let Some(chunk) = popped.and_then(ArrayQueue::pop) {
                counters.cached_bytes.fetch_sub(chunk.bytes(), Relaxed);
                return Some(chunk);
            }
        }
        None
    }

    fn drain_unlocked(&self, counters: &Counters, out: &mut Vec<ChunkPtr>) {
        for queue in self.buckets.iter().flatten().filter_map(Bucket::get) {
            while let Some(chunk) = queue.pop() {
                counters.cached_bytes.fetch_sub(chunk.bytes(), Relaxed);
                out.push(chunk);
            }
        }
    }

    /// Takes every idle chunk (trim, and the memory limit's eviction). Waits for a sweep in
    /// progress, so it misses none.
    pub(crate) fn drain(&self, counters: &Counters, out: &mut Vec<ChunkPtr>) {
        self.sweep.with(|_| self.drain_unlocked(counters, out));
    }

    /// Closes the queue for good: no chunk is cached from now on, and every cached chunk is
    /// handed to `out`.
    pub(crate) fn close(&self, counters: &Counters, out: &mut Vec<ChunkPtr>) {
        self.closed.store(true, Relaxed);
        // Pairs with the fence in `push_checked`.
        fence(SeqCst);
        self.drain(counters, out);
    }

    /// Takes the chunks that have been idle for at least `idle_ns` at `now` (nanoseconds of
    /// `os::now_ns`). Skips the sweep if another thread is sweeping or draining.
    pub(crate) fn take_expired(
        &self,
        now: u64,
        idle_ns: u64,
        counters: &Counters,
        out: &mut Vec<ChunkPtr>,
    ) {
        if self.budget == 0 {
            return;
        }
        self.sweep.try_with(|_| {
            if self.is_closed() {
                // `close` ran before we took the lock (it drained under it), or is about to
                // (and will drain after us): either way nothing may be pushed back.
                self.drain_unlocked(counters, out);
                return;
            }
            for queue in self.buckets.iter().flatten().filter_map(Bucket::get) {
                for _ in 0..queue.len() {
                    let Some(chunk) = queue.pop() else { break };
                    // SAFETY: popped, so this thread holds the chunk exclusively.
                    let since = unsafe { chunk.idle_since() };
                    if retention::expired(since, now, idle_ns) {
                        counters.cached_bytes.fetch_sub(chunk.bytes(), Relaxed);
                        out.push(chunk);
                    } else {
                        // Its bytes are still reserved: back it goes, with the handshake.
                        self.push_checked(queue, chunk, counters, out);
                    }
                }
            }
        });
    }
}
