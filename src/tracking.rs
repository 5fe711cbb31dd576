//! Sampled live-buffer tracking: the record behind
//! [`AdaptiveAllocator::live_report`](crate::AdaptiveAllocator::live_report).
//!
//! Owns: the [`Tracker`] of an allocator that samples (`Builder::sample_allocations`): the
//! 1-in-N countdown, and one [`Record`] per sampled region still live (allocation site, time,
//! capacity, and where its region's uncovered bytes are counted); the public report types
//! [`LiveBuffer`] and [`ReportOrder`]. May import: `sync`. Reached only through `allocator`
//! (which holds the tracker) and `buf` (which starts and ends a sampled region's record);
//! nothing here knows a chunk, a magazine or a buffer.
//!
//! Invariants:
//! * An allocator that does not sample has no tracker, and nothing on its paths looks here.
//! * A record is inserted right after its region's share count is made and removed by the
//!   region's last handle before that count is freed, both under the tracker's lock; the
//!   report reads a record's uncovered-bytes counter only under that lock, so the counter is
//!   alive whenever it is read.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::panic::Location;
use std::time::{Duration, Instant};

use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering::*};

/// One live buffer (region) recorded by sampling, as
/// [`AdaptiveAllocator::live_report`](crate::AdaptiveAllocator::live_report) returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveBuffer {
    /// Where the buffer was allocated: the caller of `allocate`, `try_allocate` or
    /// `allocate_with` (the entry points pass it down with `#[track_caller]`). A buffer that
    /// grew into a new region, or a value copied out by `freeze_compact`, keeps its original
    /// site.
    pub site: &'static Location<'static>,
    /// Time since the allocation (for a region that growth moved to, since the original
    /// allocation).
    pub age: Duration,
    /// Capacity of the region.
    pub capacity: usize,
    /// Bytes of the region that no live handle covers (see
    /// [`Stats::pinned_bytes`](crate::Stats::pinned_bytes)): what its handles dropped while
    /// others, such as a long-lived frozen slice, keep it alive.
    pub pinned_bytes: usize,
}

/// The order of [`AdaptiveAllocator::live_report`](crate::AdaptiveAllocator::live_report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportOrder {
    /// Oldest allocation first: the likely leaks.
    Oldest,
    /// Largest capacity first (pinned bytes break ties): the costliest.
    Largest,
}

/// The identity of a sampled region's record.
pub(crate) type SampleId = NonZeroU64;

/// One sampled region still live.
struct Record {
    site: &'static Location<'static>,
    born: Instant,
    capacity: usize,
    /// The region's uncovered-bytes counter (in its share count, module `buf`); valid while
    /// the record is registered (see the module's invariants).
    uncovered: *const AtomicUsize,
}

// SAFETY: the pointer is only dereferenced under the tracker's lock while the record is
// registered, when the counter it points to (an atomic) is alive; it may be read from any
// thread.
unsafe impl Send for Record {}

/// The sampling state of one allocator.
pub(crate) struct Tracker {
    every: u64,
    /// Allocations seen (through the sampled entry points).
    seen: AtomicU64,
    /// The next record id.
    next_id: AtomicU64,
    live: Mutex<HashMap<SampleId, Record>>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker sampling 1 in `every` allocations; `None` when `every` is 0 (off).
    pub(crate) fn new(every: u32) -> Option<Tracker> {
        (every != 0).then(|| Tracker {
            every: u64::from(every),
            seen: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one allocation; answers a fresh id when it is one to record (the first, then
    /// every `every`-th).
    pub(crate) fn tick(&self) -> Option<SampleId> {
        let n = self.seen.fetch_add(1, Relaxed);
        (n % self.every == 0).then(|| self.new_id())
    }

    /// A fresh record id.
    pub(crate) fn new_id(&self) -> SampleId {
        let id = self.next_id.fetch_add(1, Relaxed);
        NonZeroU64::new(id).expect("ids start at 1 and a u64 does not wrap")
    }

    /// Records region `id`, allocated at `site` now with `capacity` bytes.
    ///
    /// # Safety
    /// `uncovered` stays valid until [`remove`](Tracker::remove)`(id)` returns.
    pub(crate) unsafe fn insert(
        &self,
        id: SampleId,
        site: &'static Location<'static>,
        capacity: usize,
        uncovered: *const AtomicUsize,
    ) {
        let record = Record {
            site,
            born: Instant::now(),
            capacity,
            uncovered,
        };
        self.live.with(|live| live.insert(id, record));
    }

    /// Records region `id`, which took over the contents of region `from` (growth, or a
    /// compacting freeze): same site and birth, its own capacity. Nothing if `from` is not
    /// recorded.
    ///
    /// # Safety
    /// As for [`insert`](Tracker::insert).
    pub(crate) unsafe fn insert_like(
        &self,
        from: SampleId,
        id: SampleId,
        capacity: usize,
        uncovered: *const AtomicUsize,
    ) {
        self.live.with(|live| {
            let Some(old) = live.get(&from) else { return };
            let record = Record {
                site: old.site,
                born: old.born,
                capacity,
                uncovered,
            };
            live.insert(id, record);
        });
    }

    /// Forgets region `id` (its last handle is dropping).
    pub(crate) fn remove(&self, id: SampleId) {
        self.live.with(|live| live.remove(&id));
    }

    /// Up to `limit` live recorded regions, in `order`.
    pub(crate) fn report(&self, order: ReportOrder, limit: usize) -> Vec<LiveBuffer> {
        let now = Instant::now();
        let mut entries: Vec<(Instant, LiveBuffer)> = self.live.with(|live| {
            live.values()
                .map(|r| {
                    // SAFETY: the record is registered and we hold the lock (module
                    // invariants), so its counter is alive.
                    let pinned = unsafe { &*r.uncovered }.load(Relaxed);
                    let entry = LiveBuffer {
                        site: r.site,
                        age: now.saturating_duration_since(r.born),
                        capacity: r.capacity,
                        pinned_bytes: pinned,
                    };
                    (r.born, entry)
                })
                .collect()
        });
        match order {
            ReportOrder::Oldest => entries.sort_by_key(|(born, _)| *born),
            ReportOrder::Largest => entries.sort_by(|(_, a), (_, b)| {
                (b.capacity, b.pinned_bytes).cmp(&(a.capacity, a.pinned_bytes))
            }),
        }
        entries.truncate(limit);
        entries.into_iter().map(|(_, e)| e).collect()
    }

    /// Number of live recorded regions.
    pub(crate) fn len(&self) -> usize {
        self.live.with(|live| live.len())
    }
}
