//! SPEC section 4: "A system allocation failure gives `System`, with everything rolled back."
//!
//! This test binary installs a global allocator that fails on demand: while armed, it refuses
//! the allocations of chunk memory (the only allocations with 64-byte alignment; headers,
//! magazines and the test's own data are left alone, so the process never aborts), either all
//! of them or every n-th. It also counts the bytes currently allocated, as
//! `tests/counting_alloc.rs` does, so each phase, run on its own thread, must give back every
//! byte it took, failures included.
//!
//! After every refused allocation the error must be `AllocError::System` naming the size
//! asked for, and `stats()` must read exactly as before the call: nothing reserved under the
//! limit, no chunk counted, no live buffer; a buffer whose growth failed is unchanged. Once
//! disarmed, the same requests succeed.
//!
//! The file holds a single `#[test]`, so nothing else in this process allocates while it
//! counts or fails.

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread;

use adaptive_pool::{AdaptiveAllocator, AllocError, InitError, MemorySource, PooledBuf, Stats};
use bytes::BufMut;

mod common;
use common::{Rng, POISON};

/// The alignment of chunk memory (`chunk::CHUNK_ALIGN`); nothing else the test or the crate
/// allocates asks for it.
const CHUNK_ALIGN: usize = 64;

#[path = "support/counting_global.rs"]
mod counting_global;
use counting_global::Counting;

#[global_allocator]
static GLOBAL: Counting = Counting::new(refuse);

static ARMED: AtomicBool = AtomicBool::new(false);
/// While armed, the n-th chunk allocation fails when `n % EVERY == 0` (1: all of them).
static EVERY: AtomicUsize = AtomicUsize::new(1);
static SEEN: AtomicUsize = AtomicUsize::new(0);
/// Chunk allocations refused so far.
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// Whether the global allocator refuses `layout` now: only chunk memory, only while armed.
fn refuse(layout: Layout) -> bool {
    if layout.align() != CHUNK_ALIGN || !ARMED.load(SeqCst) {
        return false;
    }
    let n = SEEN.fetch_add(1, SeqCst) + 1;
    let refuse = n % EVERY.load(SeqCst) == 0;
    if refuse {
        REFUSED.fetch_add(1, SeqCst);
    }
    refuse
}

/// Refuses every `every`-th chunk allocation until [`disarm`].
fn arm(every: usize) {
    SEEN.store(0, SeqCst);
    EVERY.store(every, SeqCst);
    ARMED.store(true, SeqCst);
}

fn disarm() {
    ARMED.store(false, SeqCst);
}

fn pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .memory_source(MemorySource::GlobalAllocator)
        .max_memory(64 << 20)
        .max_cached_bytes(1 << 20)
        .poison(POISON)
        .build()
        .expect("valid settings")
}

/// `stats()` minus the cumulative counters, which record a failed attempt's rollback too.
fn state(s: Stats) -> (usize, usize, usize, usize, usize) {
    (
        s.allocated_bytes,
        s.cached_bytes,
        s.live_bytes,
        s.live_buffers,
        s.chunks,
    )
}

fn expect_system(r: Result<PooledBuf, AllocError>, at_least: usize) -> usize {
    match r {
        Err(AllocError::System { size }) => {
            assert!(
                size >= at_least,
                "System error for {size} bytes, asked {at_least}"
            );
            size
        }
        Err(e) => panic!("expected a System error, got {e}"),
        Ok(b) => panic!("expected a System error, got a buffer of {}", b.capacity()),
    }
}

/// Runs `f`, catching a panic without printing it: the test harness would keep the message
/// in its captured output, which this test would count as bytes not given back.
fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    r
}

/// The first chunk of a fresh allocator cannot be had: pooled and unpooled requests fail with
/// `System`, nothing is left counted, and they work once the system allocator does.
fn first_allocation_fails() {
    let pool = pool();
    let before = pool.stats();
    arm(1);
    let refused = REFUSED.load(SeqCst);
    let pooled = expect_system(pool.try_allocate(1000), 1000);
    let unpooled = expect_system(pool.try_allocate(3 << 20), 3 << 20);
    let panicked = quietly(|| pool.allocate(5000)).unwrap_err();
    disarm();
    assert!(
        pooled >= adaptive_pool::DEFAULT_MIN_CHUNK_SIZE,
        "a pooled request asks for a whole chunk, not its own size: {pooled}"
    );
    assert_eq!(unpooled, 3 << 20);
    assert_eq!(REFUSED.load(SeqCst) - refused, 3);
    let msg = panicked
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(msg.contains("system allocator"), "{msg}");
    let after = pool.stats();
    assert_eq!(state(after), state(before), "{before} -> {after}");
    assert_eq!(
        (after.chunk_allocations, after.unpooled_allocations),
        (0, 0),
        "{after}"
    );

    let mut a = pool.allocate(1000);
    a.put_bytes(1, 1000);
    let mut b = pool.allocate(3 << 20);
    b.put_bytes(2, 3 << 20);
    let s = pool.stats();
    assert_eq!(s.live_buffers, 2, "{s}");
    assert_eq!(s.chunk_allocations, 1, "{s}");
    assert_eq!(s.unpooled_allocations, 1, "{s}");
}

/// Growth that needs memory the system refuses leaves the buffer exactly as it was, and so
/// does the failed initialisation of `allocate_with`.
fn growth_fails() {
    let pool = pool();
    let mut buf = pool.allocate(100);
    buf.put_bytes(7, 100);
    let (ptr, len, cap) = (buf.as_ptr(), buf.len(), buf.capacity());
    let before = pool.stats();
    arm(1);
    let r = buf.try_reserve(8 << 20);
    let r2 = buf.try_reserve(cap); // a larger pooled class: a new chunk
    disarm();
    assert!(
        matches!(r, Err(AllocError::System { size }) if size >= 8 << 20),
        "{r:?}"
    );
    assert!(matches!(r2, Err(AllocError::System { .. })), "{r2:?}");
    assert_eq!((buf.as_ptr(), buf.len(), buf.capacity()), (ptr, len, cap));
    assert!(buf.iter().all(|&x| x == 7));
    let after = pool.stats();
    assert_eq!(state(after), state(before), "{before} -> {after}");

    // `allocate_with`: the buffer comes from the existing chunk, the initialiser's growth is
    // refused; everything is rolled back.
    arm(1);
    let r = pool.allocate_with(100, |b| {
        b.put_bytes(1, 100);
        b.try_reserve(1 << 20)
    });
    disarm();
    assert!(
        matches!(r, Err(InitError::Init(AllocError::System { .. }))),
        "{r:?}"
    );
    let after = pool.stats();
    assert_eq!(state(after), state(before), "{before} -> {after}");
    // And the allocation itself refused.
    arm(1);
    let r = pool.allocate_with(300_000, |_| Ok::<(), ()>(()));
    disarm();
    assert!(
        matches!(r, Err(InitError::Alloc(AllocError::System { .. }))),
        "{r:?}"
    );
    let after = pool.stats();
    assert_eq!(state(after), state(before), "{before} -> {after}");

    buf.reserve(8 << 20);
    assert!(buf.capacity() >= (8 << 20) + 100);
    assert!(buf.iter().all(|&x| x == 7));
}

fn rounds() -> usize {
    if cfg!(miri) {
        60
    } else {
        3000
    }
}

/// Random allocations, growth and drops (some on another thread) while every third chunk
/// allocation is refused: each refusal is a `System` error that changes nothing, the live
/// counts always match the buffers held, and at the end everything comes back.
fn every_third_chunk_fails() {
    let pool = AdaptiveAllocator::builder()
        .memory_source(MemorySource::GlobalAllocator)
        .min_chunk_size(4 << 10)
        .max_chunk_size(256 << 10)
        .max_cached_bytes(64 << 10)
        .max_memory(16 << 20)
        .poison(POISON)
        .build()
        .unwrap();
    let mut rng = Rng(0x5EED_FA11);
    let mut held: Vec<(PooledBuf, u8)> = Vec::new();
    let mut failures = 0;
    let mut remote: Vec<PooledBuf> = Vec::new();
    arm(3);
    for i in 0..rounds() {
        let before = pool.stats();
        match rng.below(4) {
            0 | 1 if held.len() < 48 => {
                let bits = rng.upto(18);
                let size = rng.upto(1 << bits);
                match pool.try_allocate(size) {
                    Ok(mut b) => {
                        b.put_bytes(i as u8, size);
                        held.push((b, i as u8));
                    }
                    Err(AllocError::System { .. }) => {
                        failures += 1;
                        let after = pool.stats();
                        // Nothing was added: no buffer, no chunk. Memory may have gone back,
                        // though: before it asks the system, a refill retires the chunks that
                        // other threads' releases emptied (DESIGN.md, "Slow path").
                        assert_eq!(
                            (
                                after.live_bytes,
                                after.live_buffers,
                                after.chunk_allocations
                            ),
                            (
                                before.live_bytes,
                                before.live_buffers,
                                before.chunk_allocations
                            ),
                            "a refused allocation of {size} left something: {before} -> {after}"
                        );
                        assert!(
                            after.allocated_bytes <= before.allocated_bytes,
                            "a refused allocation of {size} left memory: {before} -> {after}"
                        );
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            2 if !held.is_empty() => {
                let k = rng.below(held.len());
                let (b, fill) = &mut held[k];
                let (ptr, len, cap) = (b.as_ptr(), b.len(), b.capacity());
                match b.try_reserve(rng.upto(100_000)) {
                    Ok(()) => {}
                    Err(AllocError::System { .. }) => {
                        failures += 1;
                        assert_eq!((b.as_ptr(), b.len(), b.capacity()), (ptr, len, cap));
                        let after = pool.stats();
                        assert_eq!(state(after), state(before), "{before} -> {after}");
                    }
                    Err(e) => panic!("{e}"),
                }
                assert!(b.iter().all(|x| *x == *fill), "growth lost bytes");
            }
            _ if !held.is_empty() => {
                let (b, fill) = held.swap_remove(rng.below(held.len()));
                assert!(b.iter().all(|&x| x == fill));
                if rng.below(3) == 0 {
                    remote.push(b);
                }
            }
            _ => {}
        }
        let s = pool.stats();
        assert_eq!(s.live_buffers, held.len() + remote.len(), "{s}");
        assert_eq!(
            s.live_bytes,
            held.iter().map(|(b, _)| b.capacity()).sum::<usize>()
                + remote.iter().map(|b| b.capacity()).sum::<usize>(),
            "{s}"
        );
        if remote.len() >= 8 {
            let batch = std::mem::take(&mut remote);
            thread::spawn(move || drop(batch)).join().unwrap();
        }
    }
    disarm();
    assert!(failures > 0, "no allocation was refused");
    drop(held);
    drop(remote);
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    pool.trim();
    let s = pool.stats();
    assert_eq!((s.allocated_bytes, s.chunks), (0, 0), "{s}");
    assert_eq!(s.chunk_allocations, s.chunk_releases, "{s}");
}

/// Runs `f` on a new thread (so its magazines are dropped at its exit) and answers the change
/// in allocated bytes across it.
fn net_bytes(f: fn()) -> isize {
    let before = GLOBAL.current();
    thread::spawn(f).join().expect("phase panicked");
    GLOBAL.current() - before
}

#[test]
fn system_failures_roll_back_exactly() {
    // Warm up what std allocates once per process (the unwinding machinery, thread-spawning
    // state), so that the phases measure only themselves.
    let _ = quietly(|| panic!("warm-up"));
    thread::spawn(|| ()).join().unwrap();

    let first = net_bytes(first_allocation_fails);
    let growth = net_bytes(growth_fails);
    let third = net_bytes(every_third_chunk_fails);
    assert!(
        REFUSED.load(SeqCst) > 10,
        "too few refusals to mean anything"
    );
    assert!(
        first == 0 && growth == 0 && third == 0,
        "bytes not given back: first allocation {first}, growth {growth}, every third {third}"
    );
}
