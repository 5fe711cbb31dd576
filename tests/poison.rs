//! Poisoning through the public API (`Builder::poison`): a write into a released buffer is
//! caught when its region is handed out again, and a poisoning pool still reuses its chunks.
//!
//! The allocation fast path never carves from a poisoning chunk's free list (what it answers
//! must need no check); the slow path carves those segments and checks them. These tests pin
//! both halves of that split.

use std::panic::{self, AssertUnwindSafe};

use adaptive_pool::AdaptiveAllocator;
use bytes::BufMut;

/// One small chunk size, so every buffer below comes from one chunk.
fn poisoning_pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .min_chunk_size(64 << 10)
        .max_chunk_size(64 << 10)
        .poison(true)
        .build()
        .unwrap()
}

/// A buffer released and written through a stale pointer (a use after free in unsafe code)
/// is reported when the next allocation of its class takes its region again.
#[test]
// It writes through a pointer whose buffer is gone, on purpose: Miri rightly reports that.
#[cfg_attr(miri, ignore)]
fn a_write_after_release_is_caught_on_reuse() {
    let pool = poisoning_pool();
    // A live neighbour keeps the chunk in use, so the next allocation reuses its free list.
    let keep = pool.allocate(64);
    let mut buf = pool.allocate(64);
    buf.put_slice(&[7; 64]);
    let stale = buf.as_mut_ptr();
    drop(buf);
    // SAFETY (for the test's purposes): the region's memory is still the pool's (its chunk
    // lives), so the write lands in pool memory; the pool must notice it.
    unsafe { stale.add(40).write(1) };
    let caught = panic::catch_unwind(AssertUnwindSafe(|| pool.allocate(64)))
        .expect_err("the next allocation of the class must report the stray write");
    let msg = caught
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| caught.downcast_ref::<&str>().copied())
        .expect("a panic message");
    assert!(
        msg.contains("written after release") && msg.contains("byte 40"),
        "{msg}"
    );
    drop(keep);
}

/// A poisoning pool's allocate/release loop reuses its current chunk's free list (through the
/// slow path, which checks each reused region) instead of treating the chunk as full and
/// taking others.
#[test]
fn a_poisoning_pool_reuses_its_chunk() {
    let pool = poisoning_pool();
    let keep = pool.allocate(64);
    let turns = if cfg!(miri) { 50 } else { 5_000 };
    for i in 0..turns {
        let mut buf = pool.allocate(64);
        assert_eq!(buf.len(), 0);
        buf.put_slice(&[i as u8; 64]);
        assert!(buf.iter().all(|&b| b == i as u8));
    }
    let stats = pool.stats();
    assert_eq!(
        stats.chunk_allocations, 1,
        "one chunk serves every turn: {stats:?}"
    );
    drop(keep);
}
