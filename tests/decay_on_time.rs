//! The decay happens on time under any activity, the fast path included (issue 23, item 3):
//! after a burst on another thread, a thread that only allocates and drops small buffers
//! through the fast path (its chunk stays current, so it never refills) still brings the
//! burst's retained memory back within the decay time and a little more, because every
//! `TICK` (1,024) allocations of a class the fast path sends one to the slow path, which
//! runs the allocator's due decay tick.
//!
//! The only test of its binary: it reads the process-wide `adaptive_pool::mapped_bytes()`
//! (reading `stats()` would itself run the decay), which no other allocator may change
//! meanwhile. Mapped memory only (skipped under Miri, whose memory source keeps nothing).

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::{mapped_bytes, AdaptiveAllocator, MemorySource};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

#[test]
fn decay_happens_under_fast_path_only_activity() {
    if !MemorySource::Os.is_supported() || cfg!(miri) {
        return;
    }
    let decay = Duration::from_millis(100);
    let pool = AdaptiveAllocator::builder()
        .max_cached_bytes(0)
        .decay_time(decay)
        .idle_release(Duration::from_secs(5))
        .build()
        .unwrap();
    let before = mapped_bytes();
    // The burst, on a thread that then exits: 512 x 64 KiB written, then dropped.
    let p = pool.clone();
    thread::spawn(move || {
        let held: Vec<_> = (0..512)
            .map(|_| {
                let mut b = p.allocate(64 * KIB);
                b.resize(64 * KIB, 1);
                b
            })
            .collect();
        drop(held);
    })
    .join()
    .unwrap();
    let after_burst = mapped_bytes() - before;
    assert!(
        after_burst >= 32 * MIB,
        "the burst's memory is kept: {after_burst} B"
    );
    // Fast-path-only activity on this thread for 1 s (10 decay times): one small buffer
    // allocated and dropped in a loop, with no other call into the pool.
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        drop(black_box(pool.allocate(64)));
        n += 1;
    }
    let left = mapped_bytes() - before;
    assert!(
        left <= 8 * MIB,
        "{left} B still mapped after 1 s of fast-path activity ({n} allocations); the burst \
         left {after_burst} B"
    );
    drop(pool);
    assert_eq!(mapped_bytes(), before);
}
