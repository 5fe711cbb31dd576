//! Configuration: the [`Builder`], its validation, and the validated [`Settings`] the rest of
//! the crate reads.
//!
//! Owns: defaults, every rule a setting must satisfy, [`ConfigError`]. May import:
//! `size_class`, `retention` (the periods derived from `idle_release` and `decay_time`). Nothing here is concurrent: a `Settings` is immutable once built.

use std::fmt;
use std::time::Duration;

use crate::os::MemorySource;
use crate::size_class::SizeClass;

/// Default for [`Builder::min_chunk_size`]: 16 KiB.
pub const DEFAULT_MIN_CHUNK_SIZE: usize = 16 << 10;
/// Default for [`Builder::max_chunk_size`]: 4 MiB.
pub const DEFAULT_MAX_CHUNK_SIZE: usize = 4 << 20;
/// Default for [`Builder::max_cached_bytes`]: 8 MiB, whatever the number of cores.
pub const DEFAULT_MAX_CACHED_BYTES: usize = 8 << 20;
/// Default for [`Builder::max_thread_idle_bytes`]: 1 MiB per thread.
pub const DEFAULT_MAX_THREAD_IDLE_BYTES: usize = 1 << 20;
/// Default for [`Builder::max_parked_chunks`]: 256, whatever the number of threads or cores.
pub const DEFAULT_MAX_PARKED_CHUNKS: usize = 256;
/// The most [`Builder::max_parked_chunks`] accepts.
pub const MAX_PARKED_CHUNKS_CEILING: usize = 1 << 16;
/// Default for [`Builder::decay_time`]: 1 second (at most `idle_release`).
pub const DEFAULT_DECAY_TIME: Duration = Duration::from_secs(1);

/// Default for [`Builder::idle_release`]: 10 seconds.
pub const DEFAULT_IDLE_RELEASE: Duration = Duration::from_secs(10);
/// The threshold [`PooledBuf::freeze_compact`](crate::PooledBuf::freeze_compact) uses when
/// [`Builder::compact_frozen_below`] is not set: a view under 50 % of its region is copied.
pub const DEFAULT_COMPACT_PERCENT: u32 = 50;
/// The smallest chunk size accepted: 4 KiB.
pub const MIN_CHUNK_SIZE_FLOOR: usize = 4 << 10;
/// The largest chunk size accepted: 1 GiB.
pub const MAX_CHUNK_SIZE_CEILING: usize = 1 << 30;

/// A setting that [`Builder::build`] refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            setting,
            reason: reason.into(),
        }
    }

    /// The name of the refused setting, as spelled by its [`Builder`] method (or, for a
    /// [`RecvPredictor`](crate::RecvPredictor), by the parameter of `with_bounds`).
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting `{}`: {}", self.setting, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Builds an [`AdaptiveAllocator`](crate::AdaptiveAllocator) with validated settings.
///
/// Every setting has a default that works without tuning; [`build`](Builder::build) checks
/// each setting and their combination and names the first one it refuses.
///
/// ```
/// use adaptive_pool::AdaptiveAllocator;
/// use std::time::Duration;
///
/// let pool = AdaptiveAllocator::builder()
///     .max_memory(256 << 20)
///     .max_cached_bytes(16 << 20)
///     .idle_release(Duration::from_secs(5))
///     .build()?;
/// let buf = pool.allocate(1500);
/// assert!(buf.capacity() >= 1500);
/// # Ok::<(), adaptive_pool::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    max_memory: Option<usize>,
    max_cached_bytes: Option<usize>,
    min_chunk_size: Option<usize>,
    max_chunk_size: Option<usize>,
    idle_release: Option<Duration>,
    decay_time: Option<Duration>,
    zero_on_release: bool,
    poison: Option<bool>,
    max_thread_idle_bytes: Option<usize>,
    memory_source: Option<MemorySource>,
    huge_pages: Option<bool>,
    background_reclaim: bool,
    compact_frozen_below: Option<u32>,
    sample_every: Option<u32>,
    ready_watermark: Option<usize>,
    max_parked_chunks: Option<usize>,
}

impl Builder {
    /// A builder with every setting at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hard limit on the bytes the allocator holds from the system: chunks (in use or cached)
    /// plus unpooled buffers. Past it, allocation fails with
    /// [`AllocError::MemoryLimit`](crate::AllocError::MemoryLimit). Default: no limit.
    ///
    /// A request that meets the limit first frees idle memory everywhere (the central cache
    /// and every thread's empty chunks), then tries smaller chunks down to one segment, then a
    /// region of its own exact size; it fails only when the memory held for live buffers
    /// leaves no room for that. Since each size class carves from chunks of its own, the
    /// limit must hold one minimum-size chunk for every pooled class (`class count x
    /// min_chunk_size`, for example 944 KiB with the default chunk sizes): when the chunk
    /// sizes or the cache budget are left at their defaults they shrink to fit under the
    /// limit, and when set explicitly they must fit, or `build` refuses them, naming
    /// `max_memory` and the least it would accept.
    pub fn max_memory(mut self, bytes: usize) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// Byte capacity of the central queue of idle chunks. A fully free chunk offered to the
    /// queue when it would exceed this budget is given back to the system instead. Never
    /// derived from the number of cores. `0` disables caching. Default: 8 MiB.
    pub fn max_cached_bytes(mut self, bytes: usize) -> Self {
        self.max_cached_bytes = Some(bytes);
        self
    }

    /// The smallest chunk the allocator carves buffers from. A power of two from 4 KiB to
    /// 1 GiB. Default: 16 KiB.
    pub fn min_chunk_size(mut self, bytes: usize) -> Self {
        self.min_chunk_size = Some(bytes);
        self
    }

    /// The largest chunk the allocator carves buffers from; chunks grow towards it for size
    /// classes in heavy use. Requests above a quarter of it are served unpooled. A power of
    /// two from `min_chunk_size` to 1 GiB. Default: 4 MiB.
    pub fn max_chunk_size(mut self, bytes: usize) -> Self {
        self.max_chunk_size = Some(bytes);
        self
    }

    /// How long a chunk may sit idle in the central queue before the next activity gives it
    /// back to the system. Must be non-zero (use `max_cached_bytes(0)` to disable caching).
    /// Default: 10 seconds.
    pub fn idle_release(mut self, after: Duration) -> Self {
        self.idle_release = Some(after);
        self
    }

    /// How long memory the application freed stays resident for reuse before it goes back to
    /// the system, gradually, by age: the span slots of chunks given back past the central
    /// cache, and the mappings of large buffers (above the pooled sizes) and of chunks of 4
    /// MiB and more. Of what was freed at one moment, the share kept falls along a smoothstep
    /// from all at once to none after `decay_time` (jemalloc's `dirty_decay_ms`, mimalloc's
    /// purge delay), so a burst that comes back within a fraction of it finds its memory
    /// resident, with no page fault, and a 4 MiB buffer allocated in a loop reuses one
    /// mapping. What is kept shows in [`Stats::retained_bytes`](crate::Stats::retained_bytes)
    /// (not in `allocated_bytes`). It is given back as allocations, releases to the system and
    /// `stats()` look at it (a quarter of `decay_time` apart at most), or by the background
    /// reclaimer in a process that does nothing; `trim()` gives it all back at once.
    ///
    /// Zero keeps the eager policy: freed slots within the cache budget stay until the next
    /// idle sweep, the rest and every mapping go back at once. At most `idle_release` (the
    /// bound on idle memory holds once idle for `idle_release`). Default: 1 second, or
    /// `idle_release` if that is shorter; see `docs/TUNING.md`.
    pub fn decay_time(mut self, decay: Duration) -> Self {
        self.decay_time = Some(decay);
        self
    }

    /// Zero every buffer's memory when it is released, so freed data does not linger in the
    /// pool. Costs a memset of the buffer's capacity per release. Default: off.
    ///
    /// Precisely: every byte of a released region is overwritten, with zeros, or with the
    /// poison byte when [`poison`](Self::poison) is on (the default in debug builds); the
    /// pool then keeps a 4-byte free-list link (a segment index, not your data) in the first
    /// bytes of a free region, which a later buffer's spare capacity may show. Safe code never
    /// sees spare capacity anyway; this is defence in depth for secrets. It turns off the
    /// magazines' per-class cache of free segments (whose 24-byte links would sit in the
    /// released bytes): releases into chunks that are not current go to the chunks' own lists.
    pub fn zero_on_release(mut self, yes: bool) -> Self {
        self.zero_on_release = yes;
        self
    }

    /// Per-thread budget of idle chunks: the bytes of chunks holding no live buffer that one
    /// thread's magazine may keep, summed over all its size classes (its current chunks
    /// included). A chunk whose last buffer is released beyond the budget goes back at once
    /// (to the central cache, or to the system), oldest idle chunk first, so memory kept
    /// after a burst is at most `max_cached_bytes + threads x max_thread_idle_bytes`, never
    /// threads x size classes x chunk size. `0` keeps no idle chunk at all (every buffer that
    /// empties its chunk sends the chunk through the central cache). Default: 1 MiB.
    pub fn max_thread_idle_bytes(mut self, bytes: usize) -> Self {
        self.max_thread_idle_bytes = Some(bytes);
        self
    }

    /// How many chunks of exited threads the allocator keeps *parked* for other threads to
    /// adopt. A thread that exits gives its empty chunks back at once, as always. A chunk that
    /// still holds live buffers (which a consumer, or the thread's successor, will release)
    /// is parked instead of abandoned: it keeps its free space, and the next thread that
    /// needs a chunk of that size class adopts it, warm, before it takes one from the cache
    /// or the system. Its remaining buffers' releases are then that thread's own releases,
    /// and the space they free is reused at once. This is what a thread pool that replaces
    /// its threads, or a server with a thread per connection, gains from (the `larson`
    /// benchmark row).
    ///
    /// Parking holds no more memory than abandoning: a parked chunk that nobody adopts goes
    /// back when its last buffer does, by the same release that would have recycled the
    /// abandoned chunk. The setting bounds the bookkeeping (a chunk that would exceed it is
    /// abandoned as before), never the memory. `0` parks nothing. At most 65,536. Default:
    /// 256.
    pub fn max_parked_chunks(mut self, n: usize) -> Self {
        self.max_parked_chunks = Some(n);
        self
    }

    /// Where chunk memory comes from. [`MemorySource::Os`] (the default where supported:
    /// Linux and Android) maps it from the kernel, so memory the pool gives back leaves the
    /// process at once; [`MemorySource::GlobalAllocator`] takes it from the global
    /// allocator. `build` refuses a source the platform does not support.
    pub fn memory_source(mut self, source: MemorySource) -> Self {
        self.memory_source = Some(source);
        self
    }

    /// Ask the kernel to back the pool's mappings with transparent huge pages (2 MiB on
    /// x86-64): `madvise(MADV_HUGEPAGE)` on every 4 MiB span that chunks are carved from and
    /// on every mapping of its own of 2 MiB or more (large chunks and unpooled buffers), as
    /// mimalloc does for its segments. A workload that streams through tens of MiB (bursts
    /// of large buffers, a large live set that turns over) then misses the TLB once per 2
    /// MiB instead of once per 4 KiB page, and a mapping is faulted in once per 2 MiB: on
    /// the development machine, a burst of 1,000 zeroed 64 KiB buffers ran about 1.2x
    /// slower than `Vec` on mimalloc, whose memory is in huge pages, with the 4 KiB pages.
    ///
    /// The cost is resident memory in steps of 2 MiB: the first touch of a huge page
    /// commits all of it, so a process that uses a few small chunks of a span holds more
    /// RSS than `allocated_bytes` says. Memory given back is returned as before (the kernel
    /// splits a huge page when part of it is decommitted). Only `MemorySource::Os` on
    /// Linux and Android; elsewhere, and when the kernel's THP setting is `never`, it does
    /// nothing. Default: on.
    pub fn huge_pages(mut self, yes: bool) -> Self {
        self.huge_pages = Some(yes);
        self
    }

    /// Run a background thread that gives idle memory back every quarter of
    /// [`idle_release`](Self::idle_release) even when the allocator sees no activity at all.
    /// Without it (the default), idle memory is swept by the allocator's own slow paths on
    /// any thread (a chunk refill, a chunk recycled, a magazine made, `stats()`), which a
    /// server under any load reaches often; a process that goes completely quiet keeps its
    /// idle memory until then, or until `trim()`. The thread holds no handle: it stops when
    /// the allocator closes. Default: off (the crate spawns no thread unless asked).
    pub fn background_reclaim(mut self, yes: bool) -> Self {
        self.background_reclaim = yes;
        self
    }

    /// Make [`PooledBuf::freeze`](crate::PooledBuf::freeze) copy a small view of a split
    /// region out into a region of its own: when a handle of a region that other handles
    /// share (or shared: `split_to`, `split_off`) is frozen and its bytes are less than
    /// `percent` % of that region, the bytes are copied into a new buffer of their size and
    /// the handle is dropped, so a long-lived frozen slice no longer keeps the whole region
    /// alive. Otherwise `freeze` stays zero-copy; a buffer never split is never copied. The
    /// same threshold is what [`PooledBuf::freeze_compact`](crate::PooledBuf::freeze_compact)
    /// uses on this allocator's buffers. `percent` from 1 to 100. Default: off (`freeze` never
    /// copies; `freeze_compact` uses
    /// [`DEFAULT_COMPACT_PERCENT`](crate::DEFAULT_COMPACT_PERCENT)).
    ///
    /// The cost: a copy of the view and an allocation, when it applies (measured in
    /// `docs/BENCHMARKS.md`); nothing on the freeze of a buffer that was never split, and one
    /// settings lookup on the freeze of a split one.
    pub fn compact_frozen_below(mut self, percent: u32) -> Self {
        self.compact_frozen_below = Some(percent);
        self
    }

    /// Record 1 in `every` allocations (made through `allocate`, `try_allocate` and
    /// `allocate_with`; growth and compaction keep a record's site) with the caller's source
    /// location,
    /// the time and the capacity, until the buffer's region is released, for
    /// [`AdaptiveAllocator::live_report`](crate::AdaptiveAllocator::live_report): the pool's
    /// counterpart of Netty's leak detector. `1` records every allocation. Default: off, and
    /// then it costs nothing (an allocator that samples takes its allocations out of line;
    /// those that do not are unaffected). On, every allocation of this allocator pays a call
    /// and an atomic increment, and a sampled one a lock, a boxed record and a share count
    /// (see `docs/TUNING.md`). [`global()`](crate::global) has the default settings and does
    /// not sample.
    pub fn sample_allocations(mut self, every: u32) -> Self {
        self.sample_every = Some(every);
        self
    }

    /// The watermark of back-pressure: [`AdaptiveAllocator::ready(n)`] resolves when the
    /// bytes held from the system, less those idle in the central cache, plus `n`, are at
    /// most `bytes`. Needs [`max_memory`](Self::max_memory), and may not exceed it; below it,
    /// it leaves headroom (waiting tasks resume only once that much is free, so they do not
    /// wake one by one into the limit). Default: `max_memory`.
    ///
    /// [`AdaptiveAllocator::ready(n)`]: crate::AdaptiveAllocator::ready
    pub fn ready_watermark(mut self, bytes: usize) -> Self {
        self.ready_watermark = Some(bytes);
        self
    }

    /// Fill released regions with a poison byte and check it when a region is reused, so a
    /// write through a dangling pointer is caught (the allocator panics naming it). Default:
    /// on under `debug_assertions`, off otherwise. Like [`zero_on_release`](Self::zero_on_release),
    /// it turns off the magazines' per-class cache of free segments, whose links would sit in
    /// the released bytes.
    pub fn poison(mut self, yes: bool) -> Self {
        self.poison = Some(yes);
        self
    }

    /// Validates the settings and builds the allocator.
    pub fn build(self) -> Result<crate::AdaptiveAllocator, ConfigError> {
        let settings = self.validate()?;
        Ok(crate::AdaptiveAllocator::from_settings(settings))
    }

    /// Checks every setting and derives the effective configuration.
    pub(crate) fn validate(self) -> Result<Settings, ConfigError> {
        let max_memory = match self.max_memory {
            Some(0) => return Err(ConfigError::new("max_memory", "must be greater than zero")),
            Some(m) if m > isize::MAX as usize => {
                return Err(ConfigError::new("max_memory", "must not exceed isize::MAX"))
            }
            Some(m) => m,
            None => usize::MAX,
        };
        let check_chunk = |name: &'static str, v: usize| -> Result<usize, ConfigError> {
            if v == 0 {
                Err(ConfigError::new(name, "must be greater than zero"))
            } else if !v.is_power_of_two() {
                Err(ConfigError::new(
                    name,
                    format!("must be a power of two, got {v}"),
                ))
            } else if v < MIN_CHUNK_SIZE_FLOOR {
                Err(ConfigError::new(
                    name,
                    format!("must be at least {MIN_CHUNK_SIZE_FLOOR} bytes, got {v}"),
                ))
            } else if v > MAX_CHUNK_SIZE_CEILING {
                Err(ConfigError::new(
                    name,
                    format!("must be at most {MAX_CHUNK_SIZE_CEILING} bytes, got {v}"),
                ))
            } else {
                Ok(v)
            }
        };
        let explicit_min = self
            .min_chunk_size
            .map(|v| check_chunk("min_chunk_size", v))
            .transpose()?;
        let explicit_max = self
            .max_chunk_size
            .map(|v| check_chunk("max_chunk_size", v))
            .transpose()?;
        if let (Some(lo), Some(hi)) = (explicit_min, explicit_max) {
            if lo > hi {
                return Err(ConfigError::new(
                    "min_chunk_size",
                    format!("{lo} is larger than max_chunk_size {hi}"),
                ));
            }
        }
        // The largest power of two that fits under the memory limit.
        let fit = if max_memory >= MAX_CHUNK_SIZE_CEILING {
            MAX_CHUNK_SIZE_CEILING
        } else {
            1usize << (usize::BITS - 1 - max_memory.leading_zeros())
        };
        let max_chunk = match explicit_max {
            Some(hi) if hi > max_memory => {
                return Err(ConfigError::new(
                    "max_chunk_size",
                    format!("{hi} is larger than max_memory {max_memory}"),
                ))
            }
            Some(hi) => hi,
            None => DEFAULT_MAX_CHUNK_SIZE
                .min(fit)
                .max(explicit_min.unwrap_or(0)),
        };
        let min_chunk = match explicit_min {
            Some(lo) if lo > max_memory => {
                return Err(ConfigError::new(
                    "min_chunk_size",
                    format!("{lo} is larger than max_memory {max_memory}"),
                ))
            }
            Some(lo) => lo,
            None => DEFAULT_MIN_CHUNK_SIZE.min(max_chunk),
        };
        if max_chunk > max_memory || min_chunk < MIN_CHUNK_SIZE_FLOOR {
            return Err(ConfigError::new(
                "max_memory",
                format!(
                    "{max_memory} bytes cannot hold even one chunk of {MIN_CHUNK_SIZE_FLOOR} bytes"
                ),
            ));
        }
        // Room for one minimum chunk per pooled class: shrink what was left at its default
        // (the minimum chunk first, then the largest), else refuse.
        let (mut min_chunk, mut max_chunk) = (min_chunk, max_chunk);
        loop {
            let need = floor_for(min_chunk, max_chunk);
            if need <= max_memory {
                break;
            }
            if explicit_min.is_none() && min_chunk > MIN_CHUNK_SIZE_FLOOR {
                min_chunk /= 2;
            } else if explicit_max.is_none() && max_chunk / 2 >= min_chunk.max(MIN_CHUNK_SIZE_FLOOR)
            {
                max_chunk /= 2;
            } else {
                return Err(ConfigError::new(
                    "max_memory",
                    format!(
                        "{max_memory} bytes cannot give each of the {} size classes up to {} \
                         bytes a chunk of {min_chunk} bytes: at least {need} bytes are needed \
                         with these chunk sizes",
                        SizeClass::count_up_to(max_chunk / 4),
                        max_chunk / 4
                    ),
                ));
            }
        }
        let max_cached_bytes = match self.max_cached_bytes {
            Some(c) if self.max_memory.is_some() && c > max_memory => {
                return Err(ConfigError::new(
                    "max_cached_bytes",
                    format!("{c} is larger than max_memory {max_memory}"),
                ))
            }
            Some(c) if c > isize::MAX as usize => {
                return Err(ConfigError::new(
                    "max_cached_bytes",
                    "must not exceed isize::MAX",
                ))
            }
            Some(c) => c,
            None => DEFAULT_MAX_CACHED_BYTES.min(max_memory / 2),
        };
        let idle_release = match self.idle_release {
            Some(d) if d.is_zero() => {
                return Err(ConfigError::new(
                    "idle_release",
                    "must be greater than zero (use max_cached_bytes(0) to disable caching)",
                ))
            }
            Some(d) => d,
            None => DEFAULT_IDLE_RELEASE,
        };
        let decay_time = match self.decay_time {
            Some(d) if d > idle_release => {
                return Err(ConfigError::new(
                    "decay_time",
                    format!(
                        "{d:?} is longer than idle_release ({idle_release:?}): idle memory must \
                         be back by then"
                    ),
                ))
            }
            Some(d) => d,
            None => DEFAULT_DECAY_TIME.min(idle_release),
        };
        let max_thread_idle_bytes = match self.max_thread_idle_bytes {
            Some(b) if b > isize::MAX as usize => {
                return Err(ConfigError::new(
                    "max_thread_idle_bytes",
                    "must not exceed isize::MAX",
                ))
            }
            Some(b) => b,
            None => DEFAULT_MAX_THREAD_IDLE_BYTES.min(max_memory / 4),
        };
        let memory_source = match self.memory_source {
            Some(s) if !s.is_supported() => {
                return Err(ConfigError::new(
                    "memory_source",
                    format!("{s:?} is not supported on this platform"),
                ))
            }
            Some(s) => s,
            None => MemorySource::default_for_platform(),
        };
        if self.background_reclaim && cfg!(loom) {
            return Err(ConfigError::new(
                "background_reclaim",
                "is not available under loom",
            ));
        }
        let compact_below_percent = match self.compact_frozen_below {
            Some(p) if p == 0 || p > 100 => {
                return Err(ConfigError::new(
                    "compact_frozen_below",
                    format!(
                        "must be a percentage from 1 to 100, got {p} (leave it unset to keep \
                         `freeze` zero-copy)"
                    ),
                ))
            }
            Some(p) => p,
            None => 0,
        };
        let sample_every = match self.sample_every {
            Some(0) => {
                return Err(ConfigError::new(
                    "sample_allocations",
                    "must be at least 1 (1 records every allocation; leave it unset to record \
                     none)",
                ))
            }
            Some(n) => n,
            None => 0,
        };
        let ready_watermark = match self.ready_watermark {
            Some(_) if self.max_memory.is_none() => {
                return Err(ConfigError::new(
                    "ready_watermark",
                    "needs max_memory (without a limit the allocator is always ready)",
                ))
            }
            Some(0) => {
                return Err(ConfigError::new(
                    "ready_watermark",
                    "must be greater than zero",
                ))
            }
            Some(w) if w > max_memory => {
                return Err(ConfigError::new(
                    "ready_watermark",
                    format!("{w} is larger than max_memory {max_memory}"),
                ))
            }
            Some(w) => w,
            None => max_memory,
        };
        let max_parked_chunks = match self.max_parked_chunks {
            Some(n) if n > MAX_PARKED_CHUNKS_CEILING => {
                return Err(ConfigError::new(
                    "max_parked_chunks",
                    format!("{n} is more than {MAX_PARKED_CHUNKS_CEILING} (0 parks none)"),
                ))
            }
            Some(n) => n,
            None => DEFAULT_MAX_PARKED_CHUNKS,
        };
        let max_pooled = max_chunk / 4;
        Ok(Settings {
            max_memory,
            max_cached_bytes,
            min_chunk,
            max_chunk,
            max_pooled,
            class_count: SizeClass::count_up_to(max_pooled),
            idle_release,
            decay_time,
            zero_on_release: self.zero_on_release,
            poison: self.poison.unwrap_or(cfg!(debug_assertions)),
            max_thread_idle_bytes,
            memory_source,
            huge_pages: self.huge_pages.unwrap_or(true),
            background_reclaim: self.background_reclaim,
            compact_below_percent,
            sample_every,
            ready_watermark,
            max_parked_chunks,
        })
    }
}

/// Validated, effective settings. Immutable after [`Builder::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Bytes that may be held from the system; `usize::MAX` for no limit.
    pub(crate) max_memory: usize,
    /// Byte budget of the central queue.
    pub(crate) max_cached_bytes: usize,
    /// Smallest chunk, a power of two.
    pub(crate) min_chunk: usize,
    /// Largest chunk, a power of two.
    pub(crate) max_chunk: usize,
    /// Largest request served from a chunk; larger ones are unpooled.
    pub(crate) max_pooled: usize,
    /// Number of size classes up to `max_pooled`.
    pub(crate) class_count: usize,
    /// Idle time after which a cached chunk is freed.
    pub(crate) idle_release: Duration,
    /// Decay time of freed memory kept resident for reuse (at most `idle_release`); zero:
    /// eager.
    pub(crate) decay_time: Duration,
    /// Zero released regions.
    pub(crate) zero_on_release: bool,
    /// Poison released regions and check on reuse.
    pub(crate) poison: bool,
    /// Bytes of empty chunks one magazine may keep, over all its classes.
    pub(crate) max_thread_idle_bytes: usize,
    /// Where chunk memory comes from.
    pub(crate) memory_source: MemorySource,
    /// Advise transparent huge pages on spans and large mappings.
    pub(crate) huge_pages: bool,
    /// Sweep idle memory from a thread of its own.
    pub(crate) background_reclaim: bool,
    /// `freeze` copies a split view smaller than this percentage of its region; 0: never.
    pub(crate) compact_below_percent: u32,
    /// Record 1 in this many allocations for the live report; 0: none.
    pub(crate) sample_every: u32,
    /// Back-pressure's watermark (`max_memory` by default; `usize::MAX` without a limit).
    pub(crate) ready_watermark: usize,
    /// Chunks of exited threads kept for other threads to adopt; 0: none.
    pub(crate) max_parked_chunks: usize,
}

impl Settings {
    /// How often idle memory is swept: a quarter of `idle_release`, in nanoseconds (at least
    /// one; saturating for durations past `u64::MAX` nanoseconds).
    pub(crate) fn sweep_period_ns(&self) -> u64 {
        crate::retention::sweep_period(self.idle_release_ns())
    }

    /// `decay_time` in nanoseconds, saturating (0: the eager policy).
    pub(crate) fn decay_ns(&self) -> u64 {
        self.decay_time.as_nanos().min(u64::MAX as u128) as u64
    }

    /// How often the decay of retained memory is looked at: a quarter of `decay_time`, at
    /// least a millisecond (0 with the eager policy, where the idle sweep purges).
    pub(crate) fn decay_period_ns(&self) -> u64 {
        crate::retention::decay_period(self.decay_ns())
    }

    /// `idle_release` in nanoseconds, saturating.
    pub(crate) fn idle_release_ns(&self) -> u64 {
        self.idle_release.as_nanos().clamp(1, u64::MAX as u128) as u64
    }
}

/// The least `max_memory` that gives one chunk of `min_chunk` to every class pooled with
/// chunks up to `max_chunk` (requests up to a quarter of it are pooled).
fn floor_for(min_chunk: usize, max_chunk: usize) -> usize {
    SizeClass::count_up_to(max_chunk / 4).saturating_mul(min_chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: Builder) -> ConfigError {
        b.validate().unwrap_err()
    }

    #[test]
    fn defaults() {
        let s = Builder::new().validate().unwrap();
        assert_eq!(s.max_memory, usize::MAX);
        assert_eq!(s.max_cached_bytes, DEFAULT_MAX_CACHED_BYTES);
        assert_eq!(
            (s.min_chunk, s.max_chunk),
            (DEFAULT_MIN_CHUNK_SIZE, DEFAULT_MAX_CHUNK_SIZE)
        );
        assert_eq!(s.max_pooled, 1 << 20);
        assert_eq!(SizeClass((s.class_count - 1) as u16).size(), 1 << 20);
    }

    #[test]
    fn refusals_name_the_setting() {
        assert_eq!(err(Builder::new().max_memory(0)).setting(), "max_memory");
        assert_eq!(
            err(Builder::new().min_chunk_size(0)).setting(),
            "min_chunk_size"
        );
        assert_eq!(
            err(Builder::new().max_chunk_size(0)).setting(),
            "max_chunk_size"
        );
        assert_eq!(
            err(Builder::new().min_chunk_size(100_000)).setting(),
            "min_chunk_size"
        );
        assert_eq!(
            err(Builder::new().max_chunk_size(1024)).setting(),
            "max_chunk_size"
        );
        assert_eq!(
            err(Builder::new().max_chunk_size(1 << 31)).setting(),
            "max_chunk_size"
        );
        assert_eq!(
            err(Builder::new()
                .min_chunk_size(1 << 20)
                .max_chunk_size(1 << 16))
            .setting(),
            "min_chunk_size"
        );
        assert_eq!(
            err(Builder::new().max_memory(1 << 20).max_cached_bytes(2 << 20)).setting(),
            "max_cached_bytes"
        );
        assert_eq!(
            err(Builder::new().max_memory(1 << 20).max_chunk_size(4 << 20)).setting(),
            "max_chunk_size"
        );
        assert_eq!(
            err(Builder::new().max_memory(1 << 20).min_chunk_size(2 << 20)).setting(),
            "min_chunk_size"
        );
        assert_eq!(err(Builder::new().max_memory(100)).setting(), "max_memory");
        assert_eq!(
            err(Builder::new().max_memory(usize::MAX)).setting(),
            "max_memory"
        );
        assert_eq!(
            err(Builder::new().max_cached_bytes(usize::MAX)).setting(),
            "max_cached_bytes"
        );
        assert_eq!(
            err(Builder::new().idle_release(Duration::ZERO)).setting(),
            "idle_release"
        );
        for p in [0, 101, u32::MAX] {
            let e = err(Builder::new().compact_frozen_below(p));
            assert_eq!(e.setting(), "compact_frozen_below");
            assert!(e.reason().contains(&p.to_string()), "{e}");
        }
        for p in [1, 50, 100] {
            let s = Builder::new().compact_frozen_below(p).validate().unwrap();
            assert_eq!(s.compact_below_percent, p);
        }
        assert_eq!(
            err(Builder::new().sample_allocations(0)).setting(),
            "sample_allocations"
        );
        assert_eq!(
            Builder::new()
                .sample_allocations(7)
                .validate()
                .unwrap()
                .sample_every,
            7
        );
        let d = Builder::new().validate().unwrap();
        assert_eq!(
            (d.compact_below_percent, d.sample_every),
            (0, 0),
            "both off"
        );
        let e = err(Builder::new().min_chunk_size(3 << 12));
        assert!(
            e.to_string().contains("min_chunk_size") && e.to_string().contains("power of two"),
            "{e}"
        );
    }

    #[test]
    fn defaults_shrink_under_a_small_limit() {
        let s = Builder::new().max_memory(3 << 20).validate().unwrap();
        assert_eq!(s.max_chunk, 2 << 20);
        assert_eq!(s.max_cached_bytes, (3 << 20) / 2);
        // 128 KiB holds one 4 KiB chunk for each of the 31 classes up to 8 KiB: the minimum
        // chunk shrinks to the floor, then the largest until the classes fit.
        let s = Builder::new().max_memory(128 << 10).validate().unwrap();
        assert_eq!((s.min_chunk, s.max_chunk), (4 << 10, 32 << 10));
        assert!(floor_for(s.min_chunk, s.max_chunk) <= 128 << 10);
        // Below the least that one 4 KiB chunk per class needs (19 classes up to 1 KiB), the
        // limit is refused, naming what it would take.
        let e = Builder::new().max_memory(64 << 10).validate().unwrap_err();
        assert_eq!(e.setting(), "max_memory");
        assert!(e.reason().contains("77824"), "{e}");
        assert!(Builder::new().max_memory(76 << 10).validate().is_ok());
        // Explicit chunk sizes are not shrunk.
        let e = Builder::new()
            .max_memory(1 << 20)
            .min_chunk_size(64 << 10)
            .max_chunk_size(64 << 10)
            .validate()
            .unwrap_err();
        assert_eq!(e.setting(), "max_memory");
        let s = Builder::new().max_cached_bytes(0).validate().unwrap();
        assert_eq!(s.max_cached_bytes, 0);
        let s = Builder::new().min_chunk_size(8 << 20).validate().unwrap();
        assert_eq!((s.min_chunk, s.max_chunk), (8 << 20, 8 << 20));
    }

    #[test]
    fn max_parked_chunks_is_validated() {
        assert_eq!(
            Builder::new().validate().unwrap().max_parked_chunks,
            DEFAULT_MAX_PARKED_CHUNKS
        );
        for n in [0, 1, MAX_PARKED_CHUNKS_CEILING] {
            let s = Builder::new().max_parked_chunks(n).validate().unwrap();
            assert_eq!(s.max_parked_chunks, n);
        }
        let e = err(Builder::new().max_parked_chunks(MAX_PARKED_CHUNKS_CEILING + 1));
        assert_eq!(e.setting(), "max_parked_chunks");
        assert!(e.to_string().contains("65537"), "{e}");
    }

    #[test]
    fn ready_watermark_is_validated() {
        let s = Builder::new().max_memory(4 << 20).validate().unwrap();
        assert_eq!(s.ready_watermark, 4 << 20);
        let s = Builder::new()
            .max_memory(4 << 20)
            .ready_watermark(3 << 20)
            .validate()
            .unwrap();
        assert_eq!(s.ready_watermark, 3 << 20);
        assert_eq!(
            Builder::new().validate().unwrap().ready_watermark,
            usize::MAX
        );
        for b in [
            Builder::new().ready_watermark(1 << 20),
            Builder::new().max_memory(4 << 20).ready_watermark(0),
            Builder::new()
                .max_memory(4 << 20)
                .ready_watermark((4 << 20) + 1),
        ] {
            assert_eq!(err(b).setting(), "ready_watermark");
        }
    }
}
