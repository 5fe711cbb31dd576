//! Chunk life-cycle protocols through the public API, sized so Miri can run them:
//! remote frees into an owned chunk and their reuse, abandonment at thread exit with live
//! buffers, closing an allocator with live buffers, trim.

use adaptive_pool::AdaptiveAllocator;
use bytes::BufMut;
use std::thread;

fn small_pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .min_chunk_size(4096)
        .max_chunk_size(16384)
        .build()
        .unwrap()
}

#[test]
fn remote_frees_are_reused_by_the_owner() {
    let pool = small_pool();
    // 4 KiB chunks of 64-byte segments: 64 per chunk.
    let bufs: Vec<_> = (0..64).map(|_| pool.allocate(64)).collect();
    let chunks = pool.stats().chunks;
    thread::spawn(move || drop(bufs)).join().unwrap();
    assert_eq!(pool.stats().live_buffers, 0);
    // The owner drains the remote frees and reuses the space: no new chunk.
    let again: Vec<_> = (0..64).map(|_| pool.allocate(64)).collect();
    assert_eq!(pool.stats().chunks, chunks, "{}", pool.stats());
    drop(again);
    assert!(pool.stats().is_quiet());
}

#[test]
fn thread_exit_abandons_chunks_with_live_buffers() {
    let pool = small_pool();
    let p = pool.clone();
    let kept = thread::spawn(move || {
        let mut v: Vec<_> = (0..100)
            .map(|i| {
                let mut b = p.allocate(100);
                b.put_u8(i as u8);
                b
            })
            .collect();
        v.truncate(10);
        v
    })
    .join()
    .unwrap();
    let s = pool.stats();
    assert_eq!(s.magazines, 0, "the magazine died with its thread: {s}");
    assert_eq!(s.live_buffers, 10);
    for (i, b) in kept.iter().enumerate() {
        assert_eq!(b[..], [i as u8]);
    }
    // Dropped here, on a thread that never owned the chunks: the last drop recycles.
    drop(kept);
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    assert!(s.allocated_bytes <= s.cached_bytes + 16384, "{s}");
    pool.trim();
    assert_eq!(pool.stats().allocated_bytes, 0);
}

#[test]
fn frozen_clones_dropped_on_two_threads() {
    let pool = small_pool();
    for round in 0..3 {
        let mut b = pool.allocate(200);
        b.put_slice(&[round; 200]);
        let frozen = b.freeze();
        let (c1, c2) = (frozen.clone(), frozen.slice(10..20));
        let t1 = thread::spawn(move || assert_eq!(c1[0], round));
        let t2 = thread::spawn(move || assert_eq!(c2.len(), 10));
        drop(frozen);
        t1.join().unwrap();
        t2.join().unwrap();
        assert!(pool.stats().is_quiet());
    }
}

#[test]
fn closing_with_live_buffers_then_dropping_them_frees_everything() {
    let pool = small_pool();
    let mut a = pool.allocate(1000);
    let b = pool.allocate(100_000); // unpooled: above a quarter of the largest chunk
    let handle = a.allocator();
    drop(pool);
    a.put_slice(b"still usable");
    assert_eq!(&a[..], b"still usable");
    assert_eq!(handle.stats().live_buffers, 2);
    drop(handle);
    let t = thread::spawn(move || drop(b));
    t.join().unwrap();
    drop(a);
}

#[test]
fn trim_frees_idle_memory() {
    let pool = small_pool();
    let v: Vec<_> = (0..50).map(|i| pool.allocate(16 * (i + 1))).collect();
    drop(v);
    let before = pool.stats();
    assert!(before.allocated_bytes > 0);
    let freed = pool.trim();
    let after = pool.stats();
    assert_eq!(freed, before.allocated_bytes);
    assert_eq!(
        (after.allocated_bytes, after.chunks, after.cached_bytes),
        (0, 0, 0)
    );
    // Still works afterwards.
    assert_eq!(pool.allocate(10).capacity(), 32);
}

#[test]
fn zero_on_release_scrubs_the_region() {
    let pool = AdaptiveAllocator::builder()
        .min_chunk_size(4096)
        .max_chunk_size(16384)
        .zero_on_release(true)
        .poison(false)
        .build()
        .unwrap();
    let mut a = pool.allocate(64);
    a.put_bytes(0xAB, 64);
    let addr = a.as_ptr();
    drop(a);
    let mut b = pool.allocate(64);
    assert_eq!(b.as_ptr(), addr, "the freed region is reused first");
    let spare = b.spare_capacity_mut();
    // SAFETY: the allocator wrote every byte of the region when it was released (zeroing it,
    // then storing its free-list link in the first four bytes), so all 64 are initialised.
    let bytes: Vec<u8> = spare[..64]
        .iter()
        .map(|x| unsafe { x.assume_init() })
        .collect();
    assert!(!bytes.contains(&0xAB), "released data lingers: {bytes:?}");
    assert!(bytes[4..].iter().all(|&x| x == 0), "{bytes:?}");
}

#[test]
fn idle_chunks_are_released_after_idle_release() {
    // Under Miri the clock runs with the interpreted code (and a sleep only moves it on), so
    // the thread's start and exit alone can take longer than 500 ms of it: the chunk would be
    // swept before the first check. A longer idle time there, and a longer sleep to match
    // (kept short: other tests' threads run while this one sleeps, slowly, under Miri).
    let (idle_ms, sleep_ms) = if cfg!(miri) {
        (10_000, 24_000)
    } else {
        (500, 1200)
    };
    let pool = AdaptiveAllocator::builder()
        .min_chunk_size(4096)
        .max_chunk_size(16384)
        .idle_release(std::time::Duration::from_millis(idle_ms))
        .build()
        .unwrap();
    let p = pool.clone();
    thread::spawn(move || drop(p.allocate(64))).join().unwrap();
    let s = pool.stats();
    assert!(
        s.cached_bytes > 0,
        "the exited thread's chunk is cached: {s}"
    );
    thread::sleep(std::time::Duration::from_millis(sleep_ms));
    // Later activity that reaches the central queue sweeps the expired chunk out.
    let _b = pool.allocate(1000);
    let s = pool.stats();
    assert_eq!(s.cached_bytes, 0, "{s}");
    assert_eq!(s.chunks, 1, "only the chunk for the new buffer: {s}");
}

/// `trim_thread` hands back the calling thread's idle chunks only: into the cache while the
/// budget allows (allocated unchanged, cached up by the same bytes), to the system without a
/// cache; a live buffer keeps its chunk, and another thread's idle chunk stays with it until
/// that thread trims itself.
#[test]
fn trim_thread_hands_back_only_the_callers_idle_chunks() {
    use std::sync::mpsc;

    let pool = AdaptiveAllocator::builder()
        .max_cached_bytes(4 << 20)
        .build()
        .unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let other = {
        let pool = pool.clone();
        thread::spawn(move || {
            drop(pool.allocate(5000)); // an idle chunk of this thread
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            pool.trim_thread()
        })
    };
    ready_rx.recv().unwrap();

    drop(pool.allocate(2000)); // an idle chunk of this thread
    let mut live = pool.allocate(300);
    live.put_bytes(7, 300);
    let before = pool.stats();
    let handed = pool.trim_thread();
    let after = pool.stats();
    assert!(handed > 0, "{after}");
    assert_eq!(after.allocated_bytes, before.allocated_bytes, "{after}");
    assert_eq!(after.cached_bytes, before.cached_bytes + handed, "{after}");
    assert_eq!(after.live_buffers, 1, "{after}");
    assert!(live.iter().all(|&b| b == 7));
    assert_eq!(pool.trim_thread(), 0, "nothing idle is left on this thread");

    go_tx.send(()).unwrap();
    let handed_by_other = other.join().unwrap();
    assert!(
        handed_by_other > 0,
        "the other thread's idle chunk was taken by this thread's trim_thread"
    );
    drop(live);

    // Without a cache the chunks go to the system.
    let no_cache = AdaptiveAllocator::builder()
        .max_cached_bytes(0)
        .build()
        .unwrap();
    drop(no_cache.allocate(1000));
    let before = no_cache.stats();
    let handed = no_cache.trim_thread();
    let after = no_cache.stats();
    assert!(handed > 0);
    assert_eq!(
        after.allocated_bytes,
        before.allocated_bytes - handed,
        "{after}"
    );
    assert_eq!(after.allocated_bytes, 0, "{after}");
}

/// A thread that only releases (a consumer) counts its releases in a stats shard of its own:
/// the figures stay exact while it lives, with two allocators at once, and after it exits
/// (its shard is folded into the allocator's), and it is no magazine.
#[test]
fn a_consumer_thread_counts_in_its_own_shard() {
    let pools = [small_pool(), small_pool()];
    let bufs: Vec<Vec<_>> = pools
        .iter()
        .map(|p| (0..40).map(|_| p.allocate(64)).collect())
        .collect();
    let (to_consumer, from_producer) = std::sync::mpsc::channel::<Vec<_>>();
    let (step_done, wait_step) = std::sync::mpsc::channel::<()>();
    let consumer = thread::spawn(move || {
        for batch in from_producer {
            drop(batch);
            step_done.send(()).unwrap();
        }
    });
    let mut left = [40usize, 40];
    for (i, mut v) in bufs.into_iter().enumerate() {
        // Half, then the rest, each checked while the consumer lives.
        let rest = v.split_off(20);
        for part in [v, rest] {
            to_consumer.send(part).unwrap();
            wait_step.recv().unwrap();
            left[i] -= 20;
            for (p, &n) in pools.iter().zip(&left) {
                let s = p.stats();
                assert_eq!((s.live_buffers, s.live_bytes), (n, n * 64), "{s}");
                assert_eq!(s.magazines, 1, "a consumer has no magazine: {s}");
            }
        }
    }
    drop(to_consumer);
    consumer.join().unwrap();
    for p in &pools {
        let s = p.stats();
        assert!(s.is_quiet(), "after the consumer exited: {s}");
        // This thread allocates and releases again: its own magazine counts, and the
        // consumer's folded releases stay counted once.
        let b = p.allocate(64);
        assert_eq!(p.stats().live_buffers, 1);
        drop(b);
        assert!(p.stats().is_quiet());
    }
}
