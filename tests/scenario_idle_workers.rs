//! SPEC section 5, scenario 10: idle workers.
//!
//! N long-lived threads (8, and 64) serve a burst of network-sized buffers (64 B to 400 KB,
//! log-uniform, each thread keeping a window of live buffers and replacing them at random),
//! then stay alive and idle, each still holding a few buffers. Then:
//! 1. retained memory is bounded without anyone calling anything: `allocated_bytes` is at most
//!    the cache budget plus N x the per-thread idle budget, plus the chunks that hold the
//!    buffers still live (never threads x size classes x chunk size, which is what a magazine
//!    that keeps a current chunk per class used to hold);
//! 2. `trim()` from another thread leaves no chunk without a live region: every chunk left
//!    holds at least one live buffer (`chunks <= live_buffers`), nothing is cached, and the
//!    threads did nothing for it;
//! 3. without `trim()`: after `idle_release`, light activity on another thread (a small buffer
//!    allocated and dropped now and then) gives the same back through the idle sweep.
//!
//! The windows are smaller than a server's (and smaller at 64 threads), so the test runs in a
//! few seconds on two cores; the bounds do not depend on them.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use adaptive_pool::{AdaptiveAllocator, PooledBuf, Stats};
use bytes::BufMut;

mod common;
use common::{Rng, POISON};

const CACHE: usize = 8 << 20;
const PER_THREAD: usize = 1 << 20;
/// Buffers each thread still holds while idle.
const KEPT: usize = 3;

fn pool(idle_release: Duration) -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .max_cached_bytes(CACHE)
        .max_thread_idle_bytes(PER_THREAD)
        .idle_release(idle_release)
        .poison(POISON)
        .build()
        .unwrap()
}

/// A network-sized request: 64 B to 400 KB, log-uniform.
fn size(rng: &mut Rng) -> usize {
    let lo = (64f64).ln();
    let hi = (400_000f64).ln();
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    (lo + u * (hi - lo)).exp() as usize
}

/// Starts `threads` workers that each run a burst (a window of `window` live buffers,
/// `ops` random replacements), keep `KEPT` buffers, and then wait, idle, until the returned
/// barrier is passed a second time. Returns when every burst is over.
fn burst(
    pool: &AdaptiveAllocator,
    threads: usize,
    window: usize,
    ops: usize,
) -> (Arc<Barrier>, Vec<thread::JoinHandle<()>>) {
    let done = Arc::new(Barrier::new(threads + 1));
    let release = Arc::new(Barrier::new(threads + 1));
    let handles = (0..threads)
        .map(|t| {
            let (pool, done, release) = (pool.clone(), done.clone(), release.clone());
            thread::spawn(move || {
                // A failed burst still passes the barriers (or the test would wait forever
                // for it); its panic is raised again when the thread is joined.
                let burst = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut rng = Rng(0x1D1E_0000 + t as u64);
                    let mut live: Vec<PooledBuf> = Vec::with_capacity(window);
                    for _ in 0..ops {
                        let n = size(&mut rng);
                        let mut b = pool.allocate(n);
                        b.put_bytes(t as u8, n.min(64));
                        if live.len() < window {
                            live.push(b);
                        } else {
                            let i = rng.below(window);
                            live[i] = b;
                        }
                    }
                    live.truncate(KEPT);
                    for b in &live {
                        assert!(b.iter().all(|&x| x == t as u8));
                    }
                    live
                }));
                done.wait();
                // Idle, alive, holding `KEPT` buffers, until the test is over.
                release.wait();
                match burst {
                    Ok(live) => drop(live),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            })
        })
        .collect();
    done.wait();
    (release, handles)
}

fn finish(release: Arc<Barrier>, handles: Vec<thread::JoinHandle<()>>) {
    release.wait();
    for h in handles {
        h.join().unwrap();
    }
}

/// Every chunk left holds a live buffer, and nothing else is kept: the state after a trim.
fn assert_only_live_chunks(s: &Stats, what: &str) {
    assert_eq!(s.cached_bytes, 0, "{what}: {s}");
    assert!(
        s.chunks <= s.live_buffers,
        "{what}: {} chunks for {} live buffers: a chunk without a live region is held: {s}",
        s.chunks,
        s.live_buffers
    );
}

fn idle_workers_retain_little_and_trim_takes_the_rest(threads: usize, window: usize, ops: usize) {
    let pool = pool(Duration::from_secs(3600));
    let (release, handles) = burst(&pool, threads, window, ops);
    let s = pool.stats();
    assert_eq!(s.live_buffers, threads * KEPT, "{s}");
    assert!(s.cached_bytes <= CACHE, "the cache is over its budget: {s}");

    // A trim from this thread, which never allocated: every idle thread's magazine gives up
    // its empty chunks, and the cache is emptied.
    let freed = pool.trim();
    let t = pool.stats();
    assert_only_live_chunks(&t, "after trim()");
    assert_eq!(t.live_buffers, threads * KEPT, "{t}");
    // What the kept buffers pin is what the trim left. Before it, the rest (chunks holding no
    // live buffer) was at most the cache plus each thread's idle budget.
    let bound = CACHE + threads * PER_THREAD + t.allocated_bytes;
    println!(
        "{threads} idle workers after a burst: allocated {} B in {} chunks ({} B cached), {} live \
         buffers; bound {bound} B (cache {CACHE} + {threads} x {PER_THREAD} + {} B pinned by \
         live buffers); trim() from another thread freed {freed} B, leaving {} chunks",
        s.allocated_bytes, s.chunks, s.cached_bytes, s.live_buffers, t.allocated_bytes, t.chunks
    );
    assert!(
        s.allocated_bytes <= bound,
        "{threads} idle workers keep {} B, over cache {CACHE} + {threads} x {PER_THREAD} + {} \
         pinned by live buffers: {s}",
        s.allocated_bytes,
        t.allocated_bytes
    );
    finish(release, handles);
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    pool.trim();
    assert_eq!(pool.stats().allocated_bytes, 0, "{}", pool.stats());
}

#[test]
fn eight_idle_workers() {
    let (window, ops) = if cfg!(miri) { (4, 12) } else { (256, 4000) };
    idle_workers_retain_little_and_trim_takes_the_rest(if cfg!(miri) { 2 } else { 8 }, window, ops);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "64 threads under Miri take too long; the 8-thread case runs"
)]
fn sixty_four_idle_workers() {
    idle_workers_retain_little_and_trim_takes_the_rest(64, 32, 600);
}

/// Without `trim()`: the idle sweep, run by light activity on another thread, gives back what
/// the idle workers hold once it has been idle for `idle_release`.
#[test]
fn idle_memory_decays_on_light_activity_elsewhere() {
    let idle = Duration::from_millis(if cfg!(miri) { 2000 } else { 200 });
    let pool = pool(idle);
    let threads = if cfg!(miri) { 2 } else { 8 };
    let (window, ops) = if cfg!(miri) { (4, 12) } else { (128, 2000) };
    let (release, handles) = burst(&pool, threads, window, ops);
    let before = pool.stats();
    assert!(
        before.chunks > before.live_buffers,
        "the burst left idle chunks: {before}"
    );
    // Light activity on one more thread: a small buffer now and then, for a while past
    // `idle_release`.
    let p = pool.clone();
    let activity = thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < idle * 4 {
            let mut b = p.allocate(100);
            b.put_bytes(1, 100);
            drop(b);
            let _ = p.stats();
            thread::sleep(idle / 10);
        }
    });
    activity.join().unwrap();
    let s = pool.stats();
    println!(
        "after {:?} idle with light activity elsewhere: allocated {} B in {} chunks ({} cached) \
         for {} live buffers; before: {before}",
        idle * 4,
        s.allocated_bytes,
        s.chunks,
        s.cached_bytes,
        s.live_buffers
    );
    // The activity thread's own chunk, in use until it exited a moment ago (its magazine
    // gave the chunk to the cache), may remain; nothing else without a live region.
    assert!(
        s.cached_bytes <= 16 << 10,
        "expired cached chunks were not freed: {s}"
    );
    assert!(
        s.chunks <= s.live_buffers + 1,
        "idle chunks were not given back: {s}"
    );
    finish(release, handles);
}
