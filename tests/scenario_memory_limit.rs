//! SPEC section 5, scenario 6: the memory limit.
//!
//! With `max_memory(8 MiB)`, allocations past the limit fail with `AllocError::MemoryLimit`
//! (and `allocate` panics with a message naming the memory limit), never abort; after drops
//! they succeed again; and 1,000,000 random operations later the counters are exact:
//! `allocated_bytes` never passes the limit, `live_bytes` always equals the capacity of the
//! buffers held, and everything reads zero once all is dropped and trimmed.
//!
//! The random walk uses a tiny fixed-seed xorshift generator written here (no dependencies).
//! Debug builds run 50,000 operations (they poison and check every reused region byte by
//! byte, unoptimised), Miri 200.

use adaptive_pool::{AdaptiveAllocator, AllocError, PooledBuf, Stats};
use std::panic::{catch_unwind, AssertUnwindSafe};

mod common;
use common::Rng;

const LIMIT: usize = 8 << 20;

/// Debug builds poison released regions and scan the poison when a region is reused. Miri
/// checks every access itself, and interpreting that scan over the large regions here would
/// take hours, so under Miri these allocators run without poisoning (elsewhere the setting is
/// the default: on in debug builds, off in release builds).
const POISON: bool = cfg!(debug_assertions) && !cfg!(miri);

fn limited() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .max_memory(LIMIT)
        .poison(POISON)
        .build()
        .expect("max_memory(8 MiB) is a valid setting")
}

fn assert_within_limit(s: &Stats, what: &str) {
    assert!(
        s.allocated_bytes <= LIMIT,
        "{what}: allocated_bytes {} > max_memory {LIMIT} ({s})",
        s.allocated_bytes
    );
}

fn expect_limit(r: Result<PooledBuf, AllocError>, what: &str) -> AllocError {
    match r {
        Err(e @ AllocError::MemoryLimit { requested, limit }) => {
            assert_eq!(limit, LIMIT, "{what}: {e}");
            assert!(requested > 0, "{what}: {e}");
            e
        }
        Err(e) => panic!("{what}: expected MemoryLimit, got {e:?}"),
        Ok(b) => panic!(
            "{what}: allocation past the limit succeeded (capacity {})",
            b.capacity()
        ),
    }
}

/// Fills the allocator with buffers of `size` until one fails; answers the buffers.
fn fill(pool: &AdaptiveAllocator, size: usize) -> Vec<PooledBuf> {
    let mut held = Vec::new();
    loop {
        match pool.try_allocate(size) {
            Ok(b) => held.push(b),
            Err(e) => {
                assert!(
                    matches!(e, AllocError::MemoryLimit { .. }),
                    "expected MemoryLimit, got {e:?}"
                );
                break;
            }
        }
        assert_within_limit(&pool.stats(), "filling");
        assert!(held.len() <= LIMIT / size, "more than the limit was served");
    }
    held
}

/// Unpooled buffers (2 MiB, too large to pool): exactly four fit, the fifth fails; after
/// dropping one, one fits again; after dropping all, all fit again.
#[test]
fn limit_with_unpooled_buffers() {
    let pool = limited();
    let size = 2 << 20;
    let mut held = fill(&pool, size);
    assert_eq!(held.len(), 4, "{}", pool.stats());
    let s = pool.stats();
    assert_eq!(s.allocated_bytes, LIMIT, "{s}");
    expect_limit(pool.try_allocate(size), "fifth 2 MiB buffer");
    expect_limit(pool.try_allocate(1), "a small buffer when full");

    // `allocate` panics with a clear message, and leaves the counters alone.
    let before = pool.stats();
    let err = catch_unwind(AssertUnwindSafe(|| pool.allocate(size))).expect_err("must panic");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("memory limit"), "panic message: {msg:?}");
    assert_eq!(pool.stats(), before, "a failed allocate changed the stats");

    drop(held.pop());
    let again = pool
        .try_allocate(size)
        .expect("one buffer fits after one drop");
    held.push(again);
    expect_limit(pool.try_allocate(size), "full again");

    drop(held);
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    assert_eq!(s.allocated_bytes, 0, "unpooled memory not returned: {s}");
    let held = fill(&pool, size);
    assert_eq!(held.len(), 4, "after dropping all, all fit again");
}

/// Pooled buffers (1 MiB, four to a 4 MiB chunk): the limit holds two chunks; the ninth buffer
/// fails; after drops, allocations succeed again, also of another size.
#[test]
fn limit_with_pooled_buffers() {
    let pool = limited();
    let size = 1 << 20;
    let held = fill(&pool, size);
    let s = pool.stats();
    assert!(!held.is_empty(), "{s}");
    assert_within_limit(&s, "full");
    expect_limit(pool.try_allocate(size), "one more 1 MiB buffer");
    drop(held);
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    // The same buffers fit again.
    let held = fill(&pool, size);
    assert!(!held.is_empty());
    drop(held);
    // And memory that is idle in the pool does not stand in the way of another size.
    let big = pool
        .try_allocate(3 << 20)
        .expect("3 MiB unpooled after dropping everything");
    drop(big);
    let mid = pool
        .try_allocate(500_000)
        .expect("another size class after dropping everything");
    drop(mid);
    assert_within_limit(&pool.stats(), "end");
}

/// After every buffer is dropped, an allocation as large as the limit allows must succeed:
/// memory the pool holds idle (cached chunks, or the current chunks of several size classes in
/// this thread's magazine) must not make it fail.
fn idle_memory_does_not_block(pool: AdaptiveAllocator) {
    // Leave idle chunks of two size classes behind.
    for &size in &[1 << 20, 600_000] {
        let held = fill(&pool, size);
        assert!(!held.is_empty());
        drop(held);
    }
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    println!("idle memory before the allocations: {s}");
    // Nothing is live: the limit is available to the caller again.
    for &size in &[6 << 20, 300_000] {
        let r = pool.try_allocate(size);
        println!("  after allocating {size} B: {}", pool.stats());
        assert!(
            r.is_ok(),
            "{size} B under an 8 MiB limit with nothing live failed: {:?}\n  idle before: \
             {s}\n  now: {}",
            r.err(),
            pool.stats()
        );
    }
}

#[test]
fn limit_idle_memory_does_not_block_allocation() {
    idle_memory_does_not_block(limited());
}

#[test]
fn limit_idle_memory_does_not_block_allocation_without_cache() {
    idle_memory_does_not_block(
        AdaptiveAllocator::builder()
            .max_memory(LIMIT)
            .max_cached_bytes(0)
            .poison(POISON)
            .build()
            .unwrap(),
    );
}

fn ops() -> usize {
    if cfg!(miri) {
        200
    } else if cfg!(debug_assertions) {
        50_000
    } else {
        1_000_000
    }
}

/// One random walk: allocate random sizes 0..=2 MiB, drop a random live buffer, occasionally
/// trim; after every operation `allocated_bytes <= 8 MiB`; every 1000th operation
/// `live_bytes` and `live_buffers` equal what the walk holds.
fn random_walk(seed: u64) {
    let pool = limited();
    let mut rng = Rng(seed);
    let mut held: Vec<PooledBuf> = Vec::new();
    let n = ops();
    let (mut allocs, mut failures, mut drops, mut trims) = (0u64, 0u64, 0u64, 0u64);
    for op in 0..n {
        let roll = rng.below(1000);
        if roll < 2 {
            pool.trim();
            trims += 1;
        } else if roll < 520 || held.is_empty() {
            // Mostly small and medium sizes, with the whole range 0..=2 MiB covered.
            let size = match rng.below(4) {
                0 => rng.below(4097),
                1 => rng.below(65_537),
                2 => rng.below(1 << 20) + 1,
                _ => rng.below((2 << 20) + 1),
            };
            match pool.try_allocate(size) {
                Ok(mut buf) => {
                    assert!(buf.capacity() >= size, "op {op}: capacity below request");
                    assert!(buf.is_empty());
                    // Touch the buffer's ends: write the first byte, and the last byte of
                    // the spare capacity (without claiming it initialised).
                    if size > 0 {
                        buf.extend_from_slice(&[op as u8]);
                        if let Some(last) = buf.spare_capacity_mut().last_mut() {
                            last.write(op as u8);
                        }
                    }
                    held.push(buf);
                    allocs += 1;
                }
                Err(AllocError::MemoryLimit { limit, .. }) => {
                    assert_eq!(limit, LIMIT);
                    failures += 1;
                }
                Err(e) => panic!("op {op}: unexpected error {e:?} for {size} bytes"),
            }
        } else {
            let i = rng.below(held.len());
            let buf = held.swap_remove(i);
            assert!(buf.len() <= 1, "op {op}: length changed");
            drop(buf);
            drops += 1;
        }
        let s = pool.stats();
        assert_within_limit(&s, &format!("op {op}"));
        if op % 1000 == 0 {
            let bytes: usize = held.iter().map(|b| b.capacity()).sum();
            assert_eq!(s.live_bytes, bytes, "op {op}: live_bytes drifted ({s})");
            assert_eq!(
                s.live_buffers,
                held.len(),
                "op {op}: live_buffers drifted ({s})"
            );
            assert_eq!(
                s.chunk_allocations - s.chunk_releases,
                s.chunks as u64,
                "op {op}: chunk counters drifted ({s})"
            );
            assert!(s.cached_bytes <= s.allocated_bytes, "op {op}: {s}");
        }
    }
    let s = pool.stats();
    println!(
        "scenario 6 (seed {seed:#x}, {n} ops): {allocs} allocations, {failures} refused \
         (MemoryLimit), {drops} drops, {trims} trims; at the end: {s}"
    );
    assert!(allocs > 0 && drops > 0);
    assert!(
        allocs >= failures,
        "most allocations were refused ({failures} of {})",
        allocs + failures
    );
    drop(held);
    let s = pool.stats();
    assert_eq!(s.live_buffers, 0, "{s}");
    assert_eq!(s.live_bytes, 0, "{s}");
    assert_within_limit(&s, "after dropping all");
    pool.trim();
    let s = pool.stats();
    assert_eq!(s.allocated_bytes, 0, "after trim: {s}");
    assert_eq!(s.cached_bytes, 0, "after trim: {s}");
    assert_eq!(s.chunks, 0, "after trim: {s}");
    assert_eq!(s.chunk_allocations, s.chunk_releases, "after trim: {s}");
    // And the whole limit is usable again.
    let all = pool.try_allocate(LIMIT).expect("the full limit after trim");
    assert!(all.capacity() >= LIMIT);
}

#[test]
fn limit_random_walk() {
    random_walk(0x5EED_0000_0000_0001);
}
