//! Fuzz target `builder`: random `Builder` settings and request sizes. Every combination must
//! either be refused with a `ConfigError` that names a setting the input actually set, or
//! build an allocator that serves each request or refuses it with the right error, with exact
//! statistics, within its limits, and gives every byte back at the end.
//!
//! `build()` refuses a `max_memory` that cannot hold one chunk of the smallest size for every
//! pooled size class (chunk sizes left at their defaults shrink to fit first). The oracle
//! computes that least limit on its own, from the size classes (32, 48, 64 bytes, then four per
//! doubling, so `3 + 4 (log2(p) - 6)` classes up to a power of two `p >= 64`, pooled up to a
//! quarter of the largest chunk): a limit below it must be refused naming `max_memory`, one
//! at or above it must not be. And an accepted limit must serve, with nothing live, every
//! request whose exact-size region (at least 32 bytes, rounded to 16, to the page from 1 MiB
//! when mapped) fits under it: the allocator gives back idle memory and falls back to smaller
//! chunks and exact regions before it answers `MemoryLimit`.
//!
//! ```text
//! cargo +nightly fuzz run builder -- -max_total_time=60
//! ```

#![no_main]

use std::time::Duration;

use adaptive_pool::{AdaptiveAllocator, AllocError, MemorySource, PooledBuf};
use arbitrary::Arbitrary;
use bytes::BufMut;
use libfuzzer_sys::fuzz_target;

/// A byte count, shaped to hit the edges of the validation: powers of two (valid chunk
/// sizes), their neighbours, and any value at all.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Amount {
    /// `1 << (s % 64)`.
    Pow2(u8),
    /// `(1 << (s % 64)) + d` (wrapping).
    Near(u8, i16),
    /// Any value.
    Raw(u64),
}

impl Amount {
    fn get(self) -> usize {
        match self {
            Amount::Pow2(s) => 1usize << (s % 64),
            Amount::Near(s, d) => (1usize << (s % 64)).wrapping_add(d as isize as usize),
            Amount::Raw(v) => v as usize,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Request {
    size: Amount,
    /// Keep the buffer until the end (otherwise it is dropped at once).
    keep: bool,
    /// Then grow it by this much with `try_reserve`.
    grow: u16,
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_memory: Option<Amount>,
    max_cached_bytes: Option<Amount>,
    min_chunk_size: Option<Amount>,
    max_chunk_size: Option<Amount>,
    idle_release_ms: Option<u16>,
    zero_on_release: bool,
    poison: Option<bool>,
    max_thread_idle_bytes: Option<Amount>,
    /// `memory_source`: `true` for the global allocator, `false` for the OS.
    heap: Option<bool>,
    background_reclaim: bool,
    /// `huge_pages`: any value is valid.
    huge_pages: Option<bool>,
    /// `compact_frozen_below`: valid from 1 to 100.
    compact_frozen_below: Option<u32>,
    /// `sample_allocations`: valid from 1.
    sample_allocations: Option<u32>,
    requests: Vec<Request>,
}

/// The smallest chunk `build()` allows, and its default bounds.
const MIN_CHUNK: usize = 4 << 10;
const MAX_CHUNK: usize = 1 << 30;

/// Size classes up to `pooled` (a power of two of at least 64): 32, 48, 64, then four per
/// doubling.
fn classes_up_to(pooled: usize) -> usize {
    3 + 4 * (pooled.trailing_zeros() as usize - 6)
}

/// The least `max_memory` that `build()` accepts with these explicit chunk sizes (valid ones:
/// powers of two from 4 KiB to 1 GiB, min <= max): one chunk of the smallest size for every
/// pooled class, where chunk sizes left at their defaults shrink as far as they can (the
/// smallest to 4 KiB, the largest down to the smallest).
fn least_limit(min: Option<usize>, max: Option<usize>) -> usize {
    let (lo, hi) = match (min, max) {
        (Some(lo), Some(hi)) => (lo, hi),
        (Some(lo), None) => (lo, lo),
        (None, Some(hi)) => (MIN_CHUNK, hi),
        (None, None) => (MIN_CHUNK, MIN_CHUNK),
    };
    classes_up_to(hi / 4).saturating_mul(lo)
}

/// A valid chunk size setting.
fn valid_chunk(v: usize) -> bool {
    v.is_power_of_two() && (MIN_CHUNK..=MAX_CHUNK).contains(&v)
}

/// Requests past this are made only where they cannot reach the system allocator (over the
/// memory limit, or past `isize::MAX`): libFuzzer treats a huge `malloc` as a crash, and
/// filling such a buffer would take the run past its memory limit.
const MAX_REAL: usize = 16 << 20;
/// Requests served at most per input.
const MAX_REQUESTS: usize = 16;

/// Fills the buffer's whole capacity with `b` and checks its first and last bytes.
fn touch(buf: &mut PooledBuf, b: u8) {
    let cap = buf.capacity();
    buf.put_bytes(b, cap);
    assert_eq!(buf.len(), cap, "writing within capacity moved the buffer");
    let n = cap.min(4 << 10);
    assert!(buf[..n].iter().all(|&x| x == b));
    assert!(buf[cap - n..].iter().all(|&x| x == b));
}

fuzz_target!(|input: Input| {
    let mut builder = AdaptiveAllocator::builder().zero_on_release(input.zero_on_release);
    let max_memory = input.max_memory.map(Amount::get);
    let max_cached = input.max_cached_bytes.map(Amount::get);
    if let Some(v) = max_memory {
        builder = builder.max_memory(v);
    }
    if let Some(v) = max_cached {
        builder = builder.max_cached_bytes(v);
    }
    if let Some(v) = input.min_chunk_size {
        builder = builder.min_chunk_size(v.get());
    }
    if let Some(v) = input.max_chunk_size {
        builder = builder.max_chunk_size(v.get());
    }
    if let Some(ms) = input.idle_release_ms {
        builder = builder.idle_release(Duration::from_millis(ms as u64));
    }
    if let Some(p) = input.poison {
        builder = builder.poison(p);
    }
    if let Some(v) = input.max_thread_idle_bytes {
        builder = builder.max_thread_idle_bytes(v.get());
    }
    if let Some(heap) = input.heap {
        builder = builder.memory_source(if heap {
            MemorySource::GlobalAllocator
        } else {
            MemorySource::Os
        });
    }
    builder = builder.background_reclaim(input.background_reclaim);
    if let Some(huge) = input.huge_pages {
        builder = builder.huge_pages(huge);
    }
    if let Some(p) = input.compact_frozen_below {
        builder = builder.compact_frozen_below(p);
    }
    if let Some(n) = input.sample_allocations {
        builder = builder.sample_allocations(n);
    }
    let min_chunk = input.min_chunk_size.map(Amount::get);
    let max_chunk = input.max_chunk_size.map(Amount::get);
    let chunks_valid = min_chunk.is_none_or(valid_chunk)
        && max_chunk.is_none_or(valid_chunk)
        && !matches!((min_chunk, max_chunk), (Some(lo), Some(hi)) if lo > hi);
    let mapped = input.heap != Some(true) && MemorySource::Os.is_supported();

    let pool = match builder.build() {
        Ok(pool) => pool,
        Err(e) => {
            let set = match e.setting() {
                "max_memory" => input.max_memory.is_some(),
                "max_cached_bytes" => input.max_cached_bytes.is_some(),
                "min_chunk_size" => input.min_chunk_size.is_some(),
                "max_chunk_size" => input.max_chunk_size.is_some(),
                "idle_release" => input.idle_release_ms.is_some(),
                "max_thread_idle_bytes" => input.max_thread_idle_bytes.is_some(),
                "memory_source" => input.heap.is_some(),
                "background_reclaim" => input.background_reclaim,
                "compact_frozen_below" => {
                    let p = input.compact_frozen_below.expect("refused, so set");
                    assert!(p == 0 || p > 100, "compact_frozen_below({p}) refused: {e}");
                    true
                }
                "sample_allocations" => {
                    assert_eq!(input.sample_allocations, Some(0), "refused: {e}");
                    true
                }
                other => panic!("the error names an unknown setting {other:?}: {e}"),
            };
            assert!(set, "refused a setting the input left at its default: {e}");
            if e.setting() == "max_memory" {
                let m = max_memory.expect("set");
                // Zero and past `isize::MAX` are refused as such; otherwise only below the
                // least limit (with valid chunk sizes, which are checked first).
                if m != 0 && m <= isize::MAX as usize && chunks_valid {
                    let least = least_limit(min_chunk, max_chunk);
                    assert!(
                        m < least,
                        "max_memory {m} refused, but {least} suffices for chunk sizes \
                         {min_chunk:?}..{max_chunk:?}: {e}"
                    );
                }
            }
            assert!(!e.reason().is_empty(), "no reason given: {e}");
            assert!(e.to_string().contains(e.setting()), "{e}");
            return;
        }
    };
    if input.idle_release_ms == Some(0) {
        panic!("idle_release(0) was accepted");
    }
    if let Some(p) = input.compact_frozen_below {
        assert!(
            (1..=100).contains(&p),
            "compact_frozen_below({p}) was accepted"
        );
    }
    assert_ne!(
        input.sample_allocations,
        Some(0),
        "sample_allocations(0) was accepted"
    );
    // With sampling 1 in `every`, the successful allocations numbered 0, every, 2 every, …
    // are recorded, and stay in the report while kept.
    let every = input.sample_allocations.unwrap_or(0) as usize;
    let mut served = 0usize;
    let mut sampled_kept = 0usize;
    let limit = max_memory.unwrap_or(usize::MAX);
    if let Some(m) = max_memory {
        let least = least_limit(min_chunk, max_chunk);
        assert!(
            m >= least,
            "max_memory {m} accepted, below the least {least} for chunk sizes \
             {min_chunk:?}..{max_chunk:?}"
        );
    }
    // The region an unpooled request of `size` bytes takes.
    let exact = |size: usize| {
        let n = (size.max(32) + 15) & !15;
        if mapped && n >= 1 << 20 {
            n.next_multiple_of(4096)
        } else {
            n
        }
    };
    if let Some(c) = max_cached {
        assert!(
            max_memory.is_none() || c <= limit,
            "a cache above the limit was accepted"
        );
    }

    let mut kept: Vec<PooledBuf> = Vec::new();
    let mut live_bytes = 0usize;
    for (n, r) in input.requests.iter().take(MAX_REQUESTS).enumerate() {
        let size = r.size.get();
        // Within 1 MiB of `isize::MAX` a request may overflow (rounding to the page).
        let overflowing = size > isize::MAX as usize - (1 << 20);
        if size > MAX_REAL && !overflowing && size <= limit {
            continue;
        }
        match pool.try_allocate(size) {
            Ok(mut buf) => {
                let sampled = every != 0 && served % every == 0;
                served += 1;
                assert!(size <= MAX_REAL, "{size} bytes allocated");
                assert!(buf.capacity() >= size && buf.is_empty());
                touch(&mut buf, n as u8);
                match buf.try_reserve(r.grow as usize) {
                    Ok(()) => assert!(buf.capacity() - buf.len() >= r.grow as usize),
                    Err(AllocError::MemoryLimit { limit: l, .. }) => assert_eq!(l, limit),
                    Err(e) => panic!("growing by {} failed: {e}", r.grow),
                }
                assert!(
                    buf.iter().take(8 << 10).all(|&x| x == n as u8),
                    "growth lost bytes"
                );
                if r.keep {
                    live_bytes += buf.capacity();
                    kept.push(buf);
                    sampled_kept += sampled as usize;
                }
            }
            Err(AllocError::CapacityOverflow { requested }) => {
                assert_eq!(requested, size);
                assert!(overflowing, "CapacityOverflow for {size} bytes");
            }
            Err(AllocError::MemoryLimit { limit: l, .. }) => {
                assert_eq!(l, limit, "MemoryLimit names another limit");
                assert!(!overflowing, "{size} bytes: expected CapacityOverflow");
                assert!(max_memory.is_some(), "MemoryLimit without a limit");
                assert!(
                    !kept.is_empty() || exact(size) > limit,
                    "MemoryLimit for {size} bytes (a region of {}) with nothing live under a \
                     limit of {limit}: {}",
                    exact(size),
                    pool.stats()
                );
            }
            Err(e) => panic!("unexpected error for {size} bytes: {e}"),
        }
        let s = pool.stats();
        assert!(s.allocated_bytes <= limit, "over the memory limit: {s}");
        if let Some(c) = max_cached {
            assert!(s.cached_bytes <= c, "over the cache bound: {s}");
        }
        assert_eq!(s.live_buffers, kept.len(), "{s}");
        assert_eq!(s.live_bytes, live_bytes, "{s}");
        assert_eq!(s.pinned_bytes, 0, "nothing is split: {s}");
        assert_eq!(
            pool.sampled_live_buffers(),
            sampled_kept,
            "sampled and kept"
        );
        assert_eq!(
            s.chunk_allocations - s.chunk_releases,
            s.chunks as u64,
            "{s}"
        );
    }

    drop(kept);
    let s = pool.stats();
    assert!(s.is_quiet(), "everything dropped but not quiet: {s}");
    pool.trim();
    let mut s = pool.stats();
    if input.background_reclaim {
        // The background reclaimer may be freeing chunks it took from the magazine just
        // before `trim()` ran (they are in neither the magazine nor the cache then, but still
        // counted until it frees them): give it a moment, never forever.
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while s.allocated_bytes != 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_micros(100));
            s = pool.stats();
        }
    }
    assert_eq!(
        s.allocated_bytes, 0,
        "trim() after dropping everything left memory: {s}"
    );
});
