//! SPEC section 5, scenario 3: the byte-bounded cache.
//!
//! 64 threads each allocate and drop buffers of 1 MiB and exit. Every thread hands its
//! magazine's chunks back when it exits; the central queue keeps only what fits its byte
//! budget and gives the rest to the system, so afterwards
//! `cached_bytes <= max_cached_bytes` and `allocated_bytes <= max_cached_bytes`, whatever the
//! number of threads or cores.

use adaptive_pool::{AdaptiveAllocator, Stats, DEFAULT_MAX_CACHED_BYTES};
use std::sync::{Arc, Barrier};

const BUF: usize = 1 << 20;

fn threads() -> usize {
    if cfg!(miri) {
        4
    } else {
        64
    }
}

/// Buffers each thread holds at once, and how many times it fills and drops that set.
fn per_thread() -> (usize, usize) {
    if cfg!(miri) {
        (1, 1)
    } else {
        (4, 2)
    }
}

/// Runs the scenario on `pool`: every thread allocates its buffers, waits until all threads
/// hold theirs (so the peak is `threads` working sets at once), drops them, repeats, exits.
fn run(pool: &AdaptiveAllocator) -> Stats {
    let n = threads();
    let (held, rounds) = per_thread();
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let pool = pool.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                for round in 0..rounds {
                    let mut bufs: Vec<_> = (0..held).map(|_| pool.allocate(BUF)).collect();
                    for (i, b) in bufs.iter_mut().enumerate() {
                        assert!(b.capacity() >= BUF);
                        // Touch the first and last byte of every buffer.
                        b.resize(BUF, (t + i + round) as u8);
                        assert_eq!(b[0], (t + i + round) as u8);
                        assert_eq!(b[BUF - 1], (t + i + round) as u8);
                    }
                    barrier.wait();
                    drop(bufs);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread panicked");
    }
    pool.stats()
}

fn check(name: &str, pool: &AdaptiveAllocator, max_cached: usize) {
    let s = run(pool);
    println!(
        "scenario 3 ({name}, {} threads x 1 MiB buffers): allocated_bytes = {} B, \
         cached_bytes = {} B, max_cached_bytes = {max_cached} B, chunks = {}, \
         chunk allocations/releases = {}/{}",
        threads(),
        s.allocated_bytes,
        s.cached_bytes,
        s.chunks,
        s.chunk_allocations,
        s.chunk_releases
    );
    assert!(
        s.cached_bytes <= max_cached,
        "cached_bytes {} > max_cached_bytes {max_cached} ({s})",
        s.cached_bytes
    );
    assert!(
        s.allocated_bytes <= max_cached,
        "allocated_bytes {} > max_cached_bytes {max_cached} ({s})",
        s.allocated_bytes
    );
    assert_eq!(s.magazines, 0, "a magazine outlived its thread: {s}");
    assert!(s.is_quiet(), "{s}");
    // Nothing is live and no magazine is left: all that is held is the cache.
    assert_eq!(s.allocated_bytes, s.cached_bytes, "{s}");
    assert_eq!(
        s.chunk_allocations - s.chunk_releases,
        s.chunks as u64,
        "chunk counters drifted: {s}"
    );
    // Cached memory goes back on request.
    pool.trim();
    let t = pool.stats();
    assert_eq!(t.allocated_bytes, 0, "after trim: {t}");
    assert_eq!(t.cached_bytes, 0, "after trim: {t}");
    assert_eq!(t.chunks, 0, "after trim: {t}");
}

#[test]
fn cache_bound_explicit_8_mib() {
    let max_cached = 8 << 20;
    let pool = AdaptiveAllocator::builder()
        .max_cached_bytes(max_cached)
        .build()
        .unwrap();
    check("max_cached_bytes(8 MiB)", &pool, max_cached);
}

#[test]
fn cache_bound_default_allocator() {
    let pool = AdaptiveAllocator::new();
    check("default allocator", &pool, DEFAULT_MAX_CACHED_BYTES);
}

/// A budget that is not a multiple of the chunk size must still never be exceeded.
#[test]
fn cache_bound_uneven_budget() {
    let max_cached = 5 << 20;
    let pool = AdaptiveAllocator::builder()
        .max_cached_bytes(max_cached)
        .build()
        .unwrap();
    check("max_cached_bytes(5 MiB)", &pool, max_cached);
}

/// With no cache at all, nothing is held once the threads have exited.
#[test]
fn cache_bound_zero() {
    let pool = AdaptiveAllocator::builder()
        .max_cached_bytes(0)
        .build()
        .unwrap();
    let s = run(&pool);
    println!("scenario 3 (max_cached_bytes(0)): {s}");
    assert_eq!(s.allocated_bytes, 0, "{s}");
    assert_eq!(s.cached_bytes, 0, "{s}");
    assert_eq!(s.chunks, 0, "{s}");
    assert_eq!(s.magazines, 0, "{s}");
}
