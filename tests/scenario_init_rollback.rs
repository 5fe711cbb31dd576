//! SPEC section 5, scenario 5: init rollback.
//!
//! `allocate_with` whose closure returns an error, or panics, leaves `stats()` as before:
//! the bytes held from the system, the cache, the live bytes and buffers and the chunk count
//! read exactly as they did, and the cumulative chunk counters moved together (a chunk created
//! for the failed buffer was released again: `chunk_allocations - chunk_releases` is
//! unchanged). The per-thread magazine created by a thread's first allocation is not part of
//! the comparison: it is the thread's registration, not memory of the buffer.
//!
//! Each failure is tried on a fresh allocator (the first allocation creates a chunk), on a
//! warmed one (the chunk is already there, with other buffers live), and on one whose central
//! cache holds an idle chunk (the first allocation takes it from the cache), for a pooled size
//! and an unpooled size (over 1 MiB).

use adaptive_pool::{AdaptiveAllocator, InitError, PooledBuf, Stats};
use bytes::BufMut;
use std::panic::{catch_unwind, AssertUnwindSafe};

const POOLED: usize = 1000;
const UNPOOLED: usize = (1 << 20) + 4096;
const SIZES: [usize; 2] = [POOLED, UNPOOLED];

/// What must read as before.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    allocated_bytes: usize,
    cached_bytes: usize,
    live_bytes: usize,
    live_buffers: usize,
    chunks: usize,
    chunks_outstanding: u64,
}

impl From<Stats> for Footprint {
    fn from(s: Stats) -> Self {
        Footprint {
            allocated_bytes: s.allocated_bytes,
            cached_bytes: s.cached_bytes,
            live_bytes: s.live_bytes,
            live_buffers: s.live_buffers,
            chunks: s.chunks,
            chunks_outstanding: s.chunk_allocations - s.chunk_releases,
        }
    }
}

/// Asserts that `f` leaves `pool`'s footprint as it found it.
fn unchanged<R>(pool: &AdaptiveAllocator, what: &str, f: impl FnOnce() -> R) -> R {
    let before = pool.stats();
    let r = f();
    let after = pool.stats();
    assert_eq!(
        Footprint::from(after),
        Footprint::from(before),
        "{what}: stats changed\n before: {before}\n after:  {after}"
    );
    r
}

/// The ways an init can fail.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// Writes a little, then returns an error.
    Err,
    /// Writes a little, then panics.
    Panic,
    /// Grows the buffer with `reserve` (moving it to a larger region), then returns an error.
    ReserveThenErr,
    /// Grows the buffer with `reserve`, then panics.
    ReserveThenPanic,
}

/// Inits that fail without growing the buffer.
const PLAIN: [Failure; 2] = [Failure::Err, Failure::Panic];
/// Inits that grow the buffer (which may take a chunk for the larger region) and then fail.
const AFTER_RESERVE: [Failure; 2] = [Failure::ReserveThenErr, Failure::ReserveThenPanic];

/// Runs one failing `allocate_with` of `size` and checks the outcome; answers how the stats
/// changed, if they did (the callers report every case before failing).
fn fail_once(
    pool: &AdaptiveAllocator,
    size: usize,
    failure: Failure,
    setting: &str,
) -> Option<String> {
    let what = format!("{setting}: {failure:?} at size {size}");
    let before = pool.stats();
    {
        let init = |buf: &mut PooledBuf| -> Result<(), &'static str> {
            assert!(buf.capacity() >= size);
            assert!(buf.is_empty());
            buf.put_slice(b"partial");
            if matches!(failure, Failure::ReserveThenErr | Failure::ReserveThenPanic) {
                // Several times the capacity: the buffer moves to a larger region (for the
                // pooled size, one of another size class, usually in a new chunk).
                let cap = buf.capacity();
                buf.reserve(cap * 3);
                assert!(buf.capacity() >= cap * 3);
                assert_eq!(&buf[..], b"partial");
            }
            match failure {
                Failure::Err | Failure::ReserveThenErr => Err("init failed"),
                Failure::Panic | Failure::ReserveThenPanic => panic!("init panicked on purpose"),
            }
        };
        match failure {
            Failure::Err | Failure::ReserveThenErr => {
                let r = pool.allocate_with(size, init);
                assert_eq!(r.unwrap_err(), InitError::Init("init failed"), "{what}");
            }
            Failure::Panic | Failure::ReserveThenPanic => {
                let r = catch_unwind(AssertUnwindSafe(|| pool.allocate_with(size, init)));
                let payload = r.expect_err("the init's panic must propagate");
                let msg = payload.downcast_ref::<&str>().copied().unwrap_or("");
                assert_eq!(msg, "init panicked on purpose", "{what}");
            }
        }
    }
    let after = pool.stats();
    (Footprint::from(after) != Footprint::from(before)).then(|| {
        format!(
            "{what}: stats changed\n  before: {before}\n  after:  {after}\n  {:?}\n  != {:?}",
            Footprint::from(after),
            Footprint::from(before)
        )
    })
}

/// Fails listing every problem found.
fn report(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} rollback(s) left the stats changed:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Live buffers that a warmed allocator holds while the failures run.
fn warm(pool: &AdaptiveAllocator) -> Vec<PooledBuf> {
    let mut live = Vec::new();
    for &size in &[POOLED, POOLED * 4, UNPOOLED] {
        for i in 0..3 {
            let mut b = pool.allocate(size);
            b.put_bytes(i as u8, 10);
            live.push(b);
        }
        // And some allocate/drop traffic, so chunks and free lists are in use.
        for _ in 0..5 {
            drop(pool.allocate(size));
        }
    }
    live
}

fn check_live(live: &[PooledBuf]) {
    for (j, b) in live.iter().enumerate() {
        assert_eq!(
            &b[..],
            &[(j % 3) as u8; 10][..],
            "a live buffer was disturbed"
        );
    }
}

/// A fresh allocator per failure: the failing allocation is the first, and creates the chunk
/// (or the unpooled region) it is rolled back from.
fn fresh(failures: &[Failure], max_cached: Option<usize>) {
    let mut problems: Vec<String> = Vec::new();
    for &size in &SIZES {
        for &failure in failures {
            let mut b = AdaptiveAllocator::builder();
            if let Some(c) = max_cached {
                b = b.max_cached_bytes(c);
            }
            let pool = b.build().unwrap();
            assert_eq!(pool.stats().allocated_bytes, 0);
            let setting = format!("fresh allocator (max_cached_bytes {max_cached:?})");
            problems.extend(fail_once(&pool, size, failure, &setting));
            assert!(pool.stats().is_quiet());
        }
    }
    report(problems);
}

/// A warmed allocator: chunks exist and other buffers are live; repeated failures leave
/// everything as it was, and the live buffers untouched.
fn warmed(failures: &[Failure]) {
    let pool = AdaptiveAllocator::new();
    let live = warm(&pool);
    let mut problems: Vec<String> = Vec::new();
    for round in 0..3 {
        for &size in &SIZES {
            for &failure in failures {
                let setting = format!("warmed allocator, round {round}");
                problems.extend(fail_once(&pool, size, failure, &setting));
            }
        }
    }
    check_live(&live);
    drop(live);
    assert!(pool.stats().is_quiet());
    report(problems);
}

/// The failing allocation takes its chunk from the central cache: the rollback puts it back.
fn from_cache(failures: &[Failure]) {
    let mut problems: Vec<String> = Vec::new();
    for &failure in failures {
        let pool = AdaptiveAllocator::new();
        // Another thread allocates and exits: its chunk goes to the central cache.
        let p = pool.clone();
        std::thread::spawn(move || drop(p.allocate(POOLED)))
            .join()
            .unwrap();
        let s = pool.stats();
        assert!(s.cached_bytes > 0, "the exiting thread cached nothing: {s}");
        problems.extend(fail_once(&pool, POOLED, failure, "chunk from the cache"));
        // The allocator is still usable.
        drop(pool.allocate(POOLED));
        assert!(pool.stats().is_quiet());
    }
    report(problems);
}

#[test]
fn rollback_on_a_fresh_allocator() {
    fresh(&PLAIN, None);
}

#[test]
fn rollback_on_a_fresh_allocator_without_cache() {
    fresh(&PLAIN, Some(0));
}

#[test]
fn rollback_on_a_warmed_allocator() {
    warmed(&PLAIN);
}

#[test]
fn rollback_returns_a_cached_chunk_to_the_cache() {
    from_cache(&PLAIN);
}

/// An init that grows the buffer and then fails: the growth is rolled back too, including
/// a chunk taken for the larger region.
#[test]
fn rollback_after_reserve_on_a_fresh_allocator() {
    fresh(&AFTER_RESERVE, None);
}

#[test]
fn rollback_after_reserve_on_a_fresh_allocator_without_cache() {
    fresh(&AFTER_RESERVE, Some(0));
}

#[test]
fn rollback_after_reserve_on_a_warmed_allocator() {
    warmed(&AFTER_RESERVE);
}

#[test]
fn rollback_after_reserve_with_a_cached_chunk() {
    from_cache(&AFTER_RESERVE);
}

/// The allocator stays usable after failures, and a successful init keeps its bytes.
#[test]
fn successful_init_keeps_the_buffer() {
    let pool = AdaptiveAllocator::new();
    for &size in &SIZES {
        assert_eq!(
            fail_once(&pool, size, Failure::Panic, "before success"),
            None
        );
        let before = pool.stats();
        let buf = pool
            .allocate_with(size, |b| {
                b.put_slice(b"header:");
                b.put_u32(0xDEAD_BEEF);
                Ok::<(), ()>(())
            })
            .expect("init succeeds");
        assert_eq!(&buf[..7], b"header:");
        assert_eq!(&buf[7..], &0xDEAD_BEEFu32.to_be_bytes()[..]);
        assert!(buf.capacity() >= size);
        let during = pool.stats();
        assert_eq!(during.live_buffers, before.live_buffers + 1, "{during}");
        assert_eq!(
            during.live_bytes,
            before.live_bytes + buf.capacity(),
            "{during}"
        );
        drop(buf);
        assert!(pool.stats().is_quiet());
    }
    // A successful init that grows the buffer keeps the grown buffer.
    let buf = pool
        .allocate_with(16, |b| {
            b.put_bytes(7, 5000);
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(buf.len(), 5000);
    assert!(buf.iter().all(|&x| x == 7));
    let s = pool.stats();
    assert_eq!(s.live_buffers, 1, "{s}");
    assert_eq!(s.live_bytes, buf.capacity(), "{s}");
}

/// An allocation error is reported as `InitError::Alloc`, and the init does not run.
#[test]
fn allocation_failure_is_reported_before_init() {
    let pool = AdaptiveAllocator::builder()
        .max_memory(1 << 20)
        .build()
        .unwrap();
    let mut ran = false;
    let r = unchanged(&pool, "memory limit", || {
        pool.allocate_with(2 << 20, |_| {
            ran = true;
            Ok::<(), ()>(())
        })
    });
    assert!(!ran, "the init ran although the allocation failed");
    assert!(
        matches!(
            r,
            Err(InitError::Alloc(
                adaptive_pool::AllocError::MemoryLimit { .. }
            ))
        ),
        "{r:?}"
    );
    let r = pool.allocate_with(usize::MAX, |_| Ok::<(), ()>(()));
    assert!(
        matches!(
            r,
            Err(InitError::Alloc(
                adaptive_pool::AllocError::CapacityOverflow { .. }
            ))
        ),
        "{r:?}"
    );
}

/// With no idle budget (`max_thread_idle_bytes(0)`), the chunk the failed buffer empties would
/// go to the cache at once, before the rollback could find it; the rollback suspends the
/// budget while the buffer drops, so that chunk goes back where it came from (the system) and
/// the stats read as before (found by the operation language of `tests/support/ops.rs`).
#[test]
fn rollback_without_an_idle_budget() {
    let pool = AdaptiveAllocator::builder()
        .max_thread_idle_bytes(0)
        .build()
        .unwrap();
    for i in 0..3 {
        let r = unchanged(&pool, &format!("round {i}"), || {
            pool.allocate_with(POOLED, |b| {
                b.put_bytes(7, 100);
                Err("no")
            })
        });
        assert_eq!(r.unwrap_err(), InitError::Init("no"));
    }
    let s = pool.stats();
    assert_eq!((s.allocated_bytes, s.cached_bytes), (0, 0), "{s}");
}
