//! SPEC section 5, scenarios 1 and 2: the Netty #14553 loop.
//!
//! Netty 4.1.115's `AdaptivePoolingAllocator` grew past 7 GB on a loop that allocates one
//! buffer of 659,225 bytes and drops it, a million times. Here the memory held from the system
//! must stay constant (and small) on one thread, and on 8 threads at once it must not grow
//! with the thread count beyond one magazine's working set per thread plus the central cache.
//!
//! Loop counts: the full million in release builds. Debug builds poison freed memory and check
//! the poison on reuse (a memset plus a byte-wise scan of 768 KiB per iteration, about 3 ms
//! unoptimised), so they run fewer iterations, but assert the same bounds. Miri runs a handful.

use adaptive_pool::{AdaptiveAllocator, Stats, DEFAULT_MAX_CACHED_BYTES, DEFAULT_MAX_CHUNK_SIZE};
use std::sync::{Arc, Barrier};

mod common;
use common::{default_allocator, POISON};

/// The request size of Netty issue #14553.
const SIZE: usize = 659_225;

/// The single-thread bound of scenario 1.
const ONE_THREAD_LIMIT: usize = 8 << 20;

/// Iterations of the loop on one thread.
fn iterations() -> usize {
    if cfg!(miri) {
        12
    } else if cfg!(debug_assertions) {
        800
    } else {
        1_000_000
    }
}

/// Iterations per thread on 8 threads.
fn iterations_per_thread() -> usize {
    if cfg!(miri) {
        4
    } else if cfg!(debug_assertions) {
        200
    } else {
        1_000_000
    }
}

fn one_thread_loop(pool: &AdaptiveAllocator) -> (Stats, Stats) {
    let n = iterations();
    let mut after_ten = None;
    for i in 0..n {
        let buf = pool.allocate(SIZE);
        assert!(buf.capacity() >= SIZE);
        assert!(buf.is_empty());
        drop(buf);
        let s = pool.stats();
        assert!(
            s.allocated_bytes <= ONE_THREAD_LIMIT,
            "iteration {i}: allocated_bytes {} > 8 MiB ({s})",
            s.allocated_bytes
        );
        if i + 1 == 10 {
            after_ten = Some(s);
        } else if let Some(ten) = after_ten {
            assert_eq!(
                s.allocated_bytes, ten.allocated_bytes,
                "iteration {i}: allocated_bytes changed after the first 10 iterations \
                 (after 10: {ten}; now: {s})"
            );
            // The loop never touches the central queue or the system again: its chunk stays
            // the thread's current chunk, within the per-thread idle budget.
            assert_eq!(
                (s.cached_bytes, s.chunk_allocations, s.chunk_releases),
                (0, ten.chunk_allocations, ten.chunk_releases),
                "iteration {i}: the loop's chunk went through the cache or the system \
                 (after 10: {ten}; now: {s})"
            );
        }
    }
    let after_ten = after_ten.expect("at least 10 iterations");
    let end = pool.stats();
    assert!(end.is_quiet(), "buffers still live at the end: {end}");
    (after_ten, end)
}

/// Scenario 1: one thread, default allocator.
#[test]
fn netty_14553_loop_one_thread() {
    let pool = default_allocator();
    let (ten, end) = one_thread_loop(&pool);
    println!(
        "scenario 1 (default allocator, {} iterations): allocated_bytes after 10 = {} B, \
         at the end = {} B, chunks = {}, chunk allocations = {}",
        iterations(),
        ten.allocated_bytes,
        end.allocated_bytes,
        end.chunks,
        end.chunk_allocations
    );
    assert_eq!(end.allocated_bytes, ten.allocated_bytes);
    assert!(end.allocated_bytes <= ONE_THREAD_LIMIT);
    // Idle memory goes back on request.
    pool.trim();
    let trimmed = pool.stats();
    assert_eq!(trimmed.allocated_bytes, 0, "after trim: {trimmed}");
    assert_eq!(trimmed.chunks, 0, "after trim: {trimmed}");
}

/// Scenario 1 with the central cache disabled: the loop must not depend on the cache.
#[test]
fn netty_14553_loop_one_thread_without_cache() {
    let pool = AdaptiveAllocator::builder()
        .max_cached_bytes(0)
        .poison(POISON)
        .build()
        .unwrap();
    let (ten, end) = one_thread_loop(&pool);
    println!(
        "scenario 1 (max_cached_bytes(0), {} iterations): allocated_bytes after 10 = {} B, \
         at the end = {} B",
        iterations(),
        ten.allocated_bytes,
        end.allocated_bytes
    );
    assert_eq!(end.cached_bytes, 0);
}

/// Scenario 2: the same loop on 8 threads at once. `allocated_bytes` never exceeds
/// `threads * max_chunk_size + max_cached_bytes` (one magazine's working set per thread, a
/// chunk of at most `max_chunk_size`, plus the central cache), checked inside the loop by every
/// thread and at the end.
#[test]
fn netty_14553_loop_eight_threads() {
    const THREADS: usize = 8;
    let bound = THREADS * DEFAULT_MAX_CHUNK_SIZE + DEFAULT_MAX_CACHED_BYTES;
    let pool = default_allocator();
    let n = iterations_per_thread();
    let start = Arc::new(Barrier::new(THREADS));
    let peaks: Vec<usize> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut peak = 0;
                for i in 0..n {
                    let buf = pool.allocate(SIZE);
                    assert!(buf.capacity() >= SIZE);
                    drop(buf);
                    if i % 64 == 0 || i + 1 == n {
                        let s = pool.stats();
                        peak = peak.max(s.allocated_bytes);
                        assert!(
                            s.allocated_bytes <= bound,
                            "thread {t}, iteration {i}: allocated_bytes {} > {bound} ({s})",
                            s.allocated_bytes
                        );
                    }
                }
                peak
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("worker thread panicked"))
        .collect();
    let end = pool.stats();
    let peak = peaks.into_iter().max().unwrap_or(0);
    println!(
        "scenario 2 ({THREADS} threads x {n} iterations): peak allocated_bytes seen = {peak} B, \
         after join = {} B (bound {bound} B), cached = {} B",
        end.allocated_bytes, end.cached_bytes
    );
    assert!(
        end.allocated_bytes <= bound,
        "after join: allocated_bytes {} > {bound} ({end})",
        end.allocated_bytes
    );
    assert!(end.is_quiet(), "{end}");
    assert_eq!(end.magazines, 0, "magazines outlived their threads: {end}");
    // Every thread has exited, so whatever is still held is idle in the central cache.
    assert_eq!(end.allocated_bytes, end.cached_bytes, "{end}");
    assert!(end.cached_bytes <= DEFAULT_MAX_CACHED_BYTES, "{end}");
}
