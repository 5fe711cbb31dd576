//! Failing cases found by the verification suite (fuzzing, proptest, loom, Miri, the odd
//! global allocators), kept so they stay fixed. Each test names the tool and the fix.

use adaptive_pool::AdaptiveAllocator;
use bytes::BufMut;

mod common;
use common::POISON;

/// Found by the fuzz target `builder`: `max_cached_bytes` is accepted up to `isize::MAX`, and
/// the central queue sized its slot array as `budget / chunk size` and allocated it up front,
/// so `build()` asked the system for terabytes and aborted. The queue now holds at most
/// 16,384 chunks of each size; the byte budget still bounds what it keeps.
#[test]
fn a_huge_cache_budget_builds_and_caches() {
    // Under Miri one budget and fewer chunks: interpreting the 16,384-slot queue's creation
    // and the buffers' checks takes a while.
    let (budgets, chunks): (&[usize], usize) = if cfg!(miri) {
        (&[isize::MAX as usize], 4)
    } else {
        (&[isize::MAX as usize, 1 << 50, 1 << 40], 40)
    };
    for &budget in budgets {
        let pool = AdaptiveAllocator::builder()
            .min_chunk_size(4 << 10)
            .max_chunk_size(4 << 10)
            .max_cached_bytes(budget)
            .poison(POISON)
            .build()
            .expect("a large cache budget is valid");
        // `chunks` chunks' worth of 1 KiB buffers, made on another thread that then exits, so
        // all of those chunks are given back to the queue at once.
        let p = pool.clone();
        std::thread::spawn(move || {
            let bufs: Vec<_> = (0..4 * chunks)
                .map(|i| {
                    let mut b = p.allocate(1024);
                    b.put_bytes(i as u8, 1024);
                    b
                })
                .collect();
            for (i, b) in bufs.iter().enumerate() {
                assert!(b[..] == [i as u8; 1024]);
            }
        })
        .join()
        .unwrap();
        let s = pool.stats();
        assert!(s.is_quiet(), "{s}");
        assert_eq!(s.chunks, chunks, "{s}");
        assert_eq!(
            s.cached_bytes,
            chunks * (4 << 10),
            "every chunk fits the budget: {s}"
        );
        assert_eq!(pool.trim(), chunks * (4 << 10));
        assert_eq!(pool.stats().allocated_bytes, 0);
    }
}

/// Review of 2026-11-28, finding 1 (reproduced under Miri: "dangling reference
/// (use-after-free)" at `Magazine::take_back`). `allocate_with` kept the chunks its magazine
/// acquired while `init` ran as bare pointers, and read their headers on rollback; an `init`
/// that allocates and then trims (here, or from any other thread) had freed them by then.
/// The rollback now asks the magazine for the chunks it still holds that are younger than
/// the mark, so it never names a chunk that has left. Runs under Miri in CI.
#[test]
fn allocate_with_rollback_after_init_trimmed_what_it_allocated() {
    let pool = AdaptiveAllocator::builder().poison(POISON).build().unwrap();
    let p2 = pool.clone();
    let before = pool.stats();
    let r = pool.allocate_with(64, |_| {
        let b = p2.allocate(4096);
        drop(b);
        p2.trim();
        Err("init failed")
    });
    assert_eq!(
        r.unwrap_err(),
        adaptive_pool::InitError::Init("init failed")
    );
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    assert_eq!(
        (s.live_buffers, s.live_bytes),
        (before.live_buffers, before.live_bytes)
    );
    pool.trim();
    assert_eq!(pool.stats().allocated_bytes, 0, "{}", pool.stats());
}

/// The same finding without a trim: with no cache, the chunks `init` fills and empties are
/// retired to the system while it runs, before the rollback.
#[test]
fn allocate_with_rollback_after_init_retired_its_chunks() {
    let pool = AdaptiveAllocator::builder()
        .min_chunk_size(4 << 10)
        .max_chunk_size(4 << 10)
        .max_cached_bytes(0)
        .poison(POISON)
        .build()
        .unwrap();
    let p2 = pool.clone();
    let r = pool.allocate_with(64, |buf| {
        buf.put_slice(b"header");
        let held: Vec<_> = (0..5).map(|_| p2.allocate(4096 - 64)).collect();
        drop(held);
        Err(())
    });
    assert!(r.is_err());
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    assert_eq!(s.allocated_bytes, 0, "every chunk was given back: {s}");
}

/// Review of 2026-11-28, finding 3 (reproduced): with `zero_on_release`, a region released
/// into an abandoned chunk kept its first four bytes (the release scrubbed all but the
/// free-list link, and no link is written into an abandoned chunk). A buffer that outlived
/// its thread held "SECRET-PASSWORD!", and a fresh buffer's spare capacity began with
/// "SECR". Every release now scrubs the whole region.
///
/// The check reads the spare capacity of a fresh buffer, which safe code never does: it is
/// done here, for the test only, because `zero_on_release` promises zeros there.
///
/// Parking is off here, so the exiting thread abandons the chunk (with parking on it is
/// parked instead: see `zero_on_release_scrubs_regions_released_into_parked_chunks`).
#[test]
fn zero_on_release_scrubs_regions_released_into_abandoned_chunks() {
    let bytes = bytes_after_a_secret_outlives_its_thread(0);
    assert!(
        bytes.iter().all(|&x| x == 0),
        "released data survived zero_on_release: {:?}",
        String::from_utf8_lossy(&bytes)
    );
}

/// A buffer holding "SECRET-PASSWORD!" outlives its thread (whose chunk is then abandoned,
/// or parked if `parked` allows) and is released here, the chunk's last release; answers
/// the spare capacity of the fresh buffer that gets the same region again. Test-only read
/// of recycled memory, which safe code never does: `zero_on_release` promises what is there.
fn bytes_after_a_secret_outlives_its_thread(parked: usize) -> Vec<u8> {
    let pool = AdaptiveAllocator::builder()
        .min_chunk_size(4 << 10)
        .max_chunk_size(4 << 10)
        .zero_on_release(true)
        .poison(false)
        .max_parked_chunks(parked)
        .build()
        .unwrap();
    let p = pool.clone();
    let secret = std::thread::spawn(move || {
        let mut b = p.allocate(16);
        b.put_slice(b"SECRET-PASSWORD!");
        b
    })
    .join()
    .unwrap();
    let addr = secret.as_ptr() as usize;
    // The chunk's thread is gone; this is its last release, which recycles it.
    drop(secret);
    let s = pool.stats();
    assert_eq!(
        s.parked_chunks, 0,
        "the emptied chunk left the parked set: {s}"
    );
    // The chunk goes back to the cache and is reused from its start: one of these buffers
    // gets the very region that held the secret.
    let mut fresh: Vec<_> = (0..128).map(|_| pool.allocate(16)).collect();
    let reused = fresh
        .iter_mut()
        .find(|b| b.as_ptr() as usize == addr)
        .expect("the released region is reused");
    let spare = reused.spare_capacity_mut();
    // SAFETY: test-only read of a recycled region. Every byte of it was written: by the
    // first owner, then by the scrub (and the link) of its release.
    spare.iter().map(|m| unsafe { m.assume_init() }).collect()
}

/// Review of 2026-11-28, minor items: `try_reserve`'s overflow names the capacity that was
/// asked for (`len + additional`), not `usize::MAX`; `io::Write` reports a pool refusal as
/// `ErrorKind::OutOfMemory`, as the `io` module does; buffers and handles cross
/// `catch_unwind`, as `BytesMut` does.
#[test]
fn review_minor_items() {
    use adaptive_pool::AllocError;
    use std::io::Write;
    use std::panic::{catch_unwind, RefUnwindSafe, UnwindSafe};

    let pool = AdaptiveAllocator::builder()
        .max_memory(1 << 20)
        .poison(POISON)
        .build()
        .unwrap();
    let mut b = pool.allocate(16);
    b.put_slice(b"12345");
    let additional = isize::MAX as usize;
    assert_eq!(
        b.try_reserve(additional),
        Err(AllocError::CapacityOverflow {
            requested: 5 + additional
        })
    );
    assert_eq!(&b[..], b"12345");

    let err = b.write(&vec![0u8; 2 << 20]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory, "{err}");
    assert!(matches!(
        err.get_ref().and_then(|e| e.downcast_ref::<AllocError>()),
        Some(AllocError::MemoryLimit { .. })
    ));

    fn unwind_safe<T: UnwindSafe + RefUnwindSafe>(_: &T) {}
    unwind_safe(&pool);
    unwind_safe(&b);
    let r = catch_unwind(|| pool.allocate(64).capacity());
    assert!(r.unwrap() >= 64);
    let r = catch_unwind(|| {
        let _held = pool.allocate(64);
        panic!("while holding a buffer")
    });
    assert!(r.is_err());
    drop(b);
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
}

/// Review of 2026-11-28, finding 6 (reproduced): a `max_memory` that passed validation refused
/// tiny allocations while almost nothing was live (with `max_memory(8192)`, `allocate(40)`
/// failed with one 16-byte buffer live; with 64 KiB, the fifth small class failed with 224 B
/// live), since each size class needs a chunk of its own. Now `build()` refuses a limit that
/// cannot hold one minimum chunk per pooled class, naming it, and at the least limit it
/// accepts every small class is served with one buffer of each live; past that, a request
/// falls back to an exact region and fails only when live buffers leave no room.
#[test]
fn small_limits_serve_every_class_or_are_refused() {
    use adaptive_pool::{AllocError, ConfigError};
    for limit in [8192, 64 << 10] {
        let e: ConfigError = AdaptiveAllocator::builder()
            .max_memory(limit)
            .build()
            .unwrap_err();
        assert_eq!(e.setting(), "max_memory", "{e}");
        assert!(e.reason().contains("size classes"), "{e}");
    }
    // The least accepted with 4 KiB chunks: 19 classes (up to 1 KiB) x 4 KiB.
    let limit = 19 * 4096;
    assert!(AdaptiveAllocator::builder()
        .min_chunk_size(4096)
        .max_chunk_size(4096)
        .max_memory(limit - 1)
        .build()
        .is_err());
    let pool = AdaptiveAllocator::builder()
        .min_chunk_size(4096)
        .max_chunk_size(4096)
        .max_memory(limit)
        .poison(POISON)
        .build()
        .unwrap();
    // One buffer of every pooled class, all held: each class gets its chunk.
    let sizes: Vec<usize> = (1..=1024).filter(|n| n % 16 == 0).collect();
    let mut held = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for &n in &sizes {
        let b = pool.allocate(n);
        if seen.insert(b.capacity()) {
            held.push(b);
        }
    }
    assert_eq!(seen.len(), 19, "{seen:?}");
    let s = pool.stats();
    assert_eq!((s.live_buffers, s.chunks), (19, 19), "{s}");
    assert_eq!(s.allocated_bytes, limit, "{s}");
    // Tiny requests still fit: their classes' chunks have room.
    let tiny: Vec<_> = (0..20).map(|_| pool.allocate(40)).collect();
    // A class whose chunk is full: a new chunk does not fit, nor does an exact region, since
    // live buffers pin the whole limit. After a drop, the request fits again.
    let mut kilo: Vec<_> = (0..3).map(|_| pool.allocate(1024)).collect();
    assert!(matches!(
        pool.try_allocate(1024),
        Err(AllocError::MemoryLimit { .. })
    ));
    kilo.pop();
    kilo.push(pool.allocate(1024));
    drop((held, tiny, kilo));
    assert!(pool.stats().is_quiet(), "{}", pool.stats());
    pool.trim();
    assert_eq!(pool.stats().allocated_bytes, 0, "{}", pool.stats());
}

/// Finding 3 of 2026-11-28 (see above) with parking on (the default): the exiting thread
/// parks the chunk, and the
/// release of the secret pushes the region onto the parked chunk's stack, which writes a
/// 4-byte free-list link (a segment index) over the scrubbed region's first bytes, as any
/// release onto a free list does (`Builder::zero_on_release` documents it). Every other byte
/// is zero, and the link is not the secret.
#[test]
fn zero_on_release_scrubs_regions_released_into_parked_chunks() {
    let bytes = bytes_after_a_secret_outlives_its_thread(256);
    assert_ne!(
        &bytes[..4],
        b"SECR",
        "released data survived zero_on_release"
    );
    assert!(
        bytes[4..].iter().all(|&x| x == 0),
        "released data survived zero_on_release: {:?}",
        String::from_utf8_lossy(&bytes)
    );
}
