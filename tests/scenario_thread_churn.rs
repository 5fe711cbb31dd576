//! SPEC section 5, scenario 8: thread churn.
//!
//! 1,000 short-lived threads (8 at a time) allocate and drop a mix of sizes. After each batch
//! has joined, no magazine outlives its thread (`stats().magazines == 0`), and since nothing
//! is live and no thread holds a chunk, all that the allocator still holds is its central
//! cache: `allocated_bytes == cached_bytes <= max_cached_bytes`. Some buffers outlive their
//! thread (handed to the main thread and dropped after the join), so chunks abandoned with
//! live regions are recycled by the last release too.

use adaptive_pool::{AdaptiveAllocator, PooledBuf, Stats, DEFAULT_MAX_CACHED_BYTES};
use bytes::BufMut;
use std::sync::mpsc;
use std::thread;

mod common;
use common::{default_allocator, POISON};

/// Sizes the threads allocate: small, medium, large pooled, and unpooled (over 1 MiB).
const SIZES: [usize; 8] = [0, 48, 700, 4096, 30_000, 200_000, 700_000, 1_500_000];

fn threads() -> usize {
    if cfg!(miri) {
        4
    } else {
        1_000
    }
}

const BATCH: usize = 8;

/// What one short-lived thread does; `sink` receives buffers that outlive the thread.
fn work(pool: &AdaptiveAllocator, t: usize, sink: &mpsc::Sender<PooledBuf>) {
    let mut held = Vec::new();
    for (k, &size) in SIZES.iter().enumerate() {
        // Allocate and drop at once (the magazine's fast path) ...
        drop(pool.allocate(size));
        // ... and hold a few, written.
        for i in 0..2 {
            let mut b = pool.allocate(size);
            b.put_bytes((t + k + i) as u8, size.min(1000));
            held.push(b);
        }
    }
    // Some survive the thread: the main thread drops them after the join.
    if t % 3 == 0 {
        sink.send(held.swap_remove(t % held.len())).unwrap();
        let mut big = pool.allocate(5000);
        big.put_bytes(t as u8, 5000);
        sink.send(big).unwrap();
    }
    // The rest dropped in an order other than allocation order.
    while !held.is_empty() {
        let i = (t * 7 + held.len()) % held.len();
        drop(held.swap_remove(i));
    }
}

fn check_quiet_batch(pool: &AdaptiveAllocator, max_cached: usize, what: &str) -> Stats {
    let s = pool.stats();
    assert_eq!(
        s.magazines, 0,
        "{what}: a magazine outlived its thread: {s}"
    );
    assert!(s.is_quiet(), "{what}: {s}");
    assert!(
        s.allocated_bytes <= max_cached,
        "{what}: allocated_bytes {} > max_cached_bytes {max_cached} ({s})",
        s.allocated_bytes
    );
    assert_eq!(
        s.allocated_bytes, s.cached_bytes,
        "{what}: memory held outside the cache with no thread and no live buffer: {s}"
    );
    assert_eq!(
        s.chunk_allocations - s.chunk_releases,
        s.chunks as u64,
        "{what}: {s}"
    );
    s
}

fn churn(pool: &AdaptiveAllocator, max_cached: usize) {
    let n = threads();
    let mut peak = 0;
    let mut t = 0;
    while t < n {
        let (tx, rx) = mpsc::channel();
        let handles: Vec<_> = (t..(t + BATCH).min(n))
            .map(|id| {
                let pool = pool.clone();
                let tx = tx.clone();
                thread::spawn(move || work(&pool, id, &tx))
            })
            .collect();
        drop(tx);
        for h in handles {
            h.join().expect("worker thread panicked");
        }
        let survivors: Vec<PooledBuf> = rx.iter().collect();
        let s = pool.stats();
        assert_eq!(
            s.magazines, 0,
            "batch at {t}: a magazine outlived its thread: {s}"
        );
        assert_eq!(s.live_buffers, survivors.len(), "batch at {t}: {s}");
        let live: usize = survivors.iter().map(|b| b.capacity()).sum();
        assert_eq!(s.live_bytes, live, "batch at {t}: {s}");
        for b in &survivors {
            if let Some(&first) = b.first() {
                assert!(b.iter().all(|&x| x == first), "a survivor's bytes changed");
            }
        }
        drop(survivors);
        let s = check_quiet_batch(pool, max_cached, &format!("batch at {t}"));
        peak = peak.max(s.allocated_bytes);
        t += BATCH;
    }
    let s = pool.stats();
    println!("scenario 8: {n} threads in batches of {BATCH}: peak retained {peak} B; end: {s}");
    assert_eq!(s.live_buffers, 0, "{s}");
    assert!(
        s.unpooled_allocations > 0,
        "the mix included no unpooled buffer: {s}"
    );
    pool.trim();
    let s = pool.stats();
    assert_eq!(s.allocated_bytes, 0, "after trim: {s}");
    assert_eq!(s.chunks, 0, "after trim: {s}");
}

#[test]
fn thread_churn_default_allocator() {
    churn(&default_allocator(), DEFAULT_MAX_CACHED_BYTES);
}

#[test]
fn thread_churn_small_cache() {
    let max_cached = 1 << 20;
    let pool = AdaptiveAllocator::builder()
        .max_cached_bytes(max_cached)
        .poison(POISON)
        .build()
        .unwrap();
    churn(&pool, max_cached);
}
