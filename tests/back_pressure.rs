//! Back-pressure at the memory limit (issue 13, part 4): `AdaptiveAllocator::ready(n)` waits
//! while an allocation of `n` would not fit under the watermark, is woken when held memory
//! goes down (an unpooled buffer or a chunk comes back), leaves nothing registered when
//! dropped, loses no wake-up between two threads, and is always ready without a limit.
//!
//! No runtime: the futures are polled by hand with a waker that counts its wake-ups, or driven
//! by a tiny executor (`std::task::Wake` + thread park) that re-polls only when woken and fails
//! after a deadline, so a lost wake-up shows as a failure, never as a hang.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use adaptive_pool::{AdaptiveAllocator, PooledBuf};

const KIB: usize = 1 << 10;
const LIMIT: usize = 1 << 20;
/// Larger than the pooled sizes of `pool()` (a quarter of its 16 KiB chunks): unpooled.
const BIG: usize = 600 * KIB;

/// 1 MiB limit, chunks of 4 to 16 KiB (buffers above 4 KiB are unpooled), a 64 KiB cache.
fn pool_with(watermark: Option<usize>) -> AdaptiveAllocator {
    let mut b = AdaptiveAllocator::builder()
        .max_memory(LIMIT)
        .min_chunk_size(4 * KIB)
        .max_chunk_size(16 * KIB)
        .max_cached_bytes(64 * KIB);
    if let Some(w) = watermark {
        b = b.ready_watermark(w);
    }
    b.build().unwrap()
}

fn pool() -> AdaptiveAllocator {
    pool_with(None)
}

/// A waker that counts its wake-ups and unparks the thread that made it.
struct Flag {
    woken: AtomicUsize,
    thread: Thread,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.fetch_add(1, SeqCst);
        self.thread.unpark();
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let f = Arc::new(Flag {
        woken: AtomicUsize::new(0),
        thread: thread::current(),
    });
    let w = Waker::from(f.clone());
    (f, w)
}

fn poll<F: Future>(f: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(waker))
}

/// Drives `fut` on this thread, polling again only when its waker was woken; `None` if it
/// has not resolved by `timeout` (a lost wake-up).
fn block_on_timeout<F: Future>(fut: F, timeout: Duration) -> Option<F::Output> {
    let (flag, waker) = flag();
    let mut fut = pin!(fut);
    let deadline = Instant::now() + timeout;
    loop {
        let seen = flag.woken.load(SeqCst);
        if let Poll::Ready(v) = poll(fut.as_mut(), &waker) {
            return Some(v);
        }
        while flag.woken.load(SeqCst) == seen {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            thread::park_timeout(deadline - now);
        }
    }
}

fn held(pool: &AdaptiveAllocator) -> usize {
    let s = pool.stats();
    s.allocated_bytes - s.cached_bytes
}

#[test]
fn without_a_limit_always_ready() {
    let pool = AdaptiveAllocator::new();
    let _big = pool.allocate(BIG);
    let (flag, waker) = flag();
    for n in [0, 1, BIG, usize::MAX / 2] {
        let mut r = pin!(pool.ready(n));
        assert!(poll(r.as_mut(), &waker).is_ready(), "ready({n})");
        assert_eq!(pool.waiting_for_memory(), 0);
    }
    assert_eq!(flag.woken.load(SeqCst), 0);
}

#[test]
fn a_request_larger_than_the_watermark_is_ready_at_once() {
    let pool = pool_with(Some(512 * KIB));
    let _big = pool.allocate(BIG);
    let (_flag, waker) = flag();
    let mut r = pin!(pool.ready(512 * KIB + 1));
    assert!(poll(r.as_mut(), &waker).is_ready());
    assert_eq!(pool.waiting_for_memory(), 0);
}

#[test]
fn waits_over_the_limit_and_wakes_when_an_unpooled_buffer_drops() {
    let pool = pool();
    let big = pool.allocate(BIG);
    assert!(held(&pool) + BIG > LIMIT);
    let (flag, waker) = flag();
    let mut r = pin!(pool.ready(BIG));
    assert!(poll(r.as_mut(), &waker).is_pending());
    // Polled again without a release: still pending, still one registration.
    assert!(poll(r.as_mut(), &waker).is_pending());
    assert_eq!(pool.waiting_for_memory(), 1);
    // A pooled allocation and release that gives nothing back wakes nobody.
    drop(pool.allocate(KIB));
    assert_eq!(flag.woken.load(SeqCst), 0);
    drop(big);
    assert!(flag.woken.load(SeqCst) >= 1, "the release woke the waiter");
    assert!(poll(r.as_mut(), &waker).is_ready());
    assert_eq!(pool.waiting_for_memory(), 0);
    // The room is there.
    assert!(pool.try_allocate(BIG).is_ok());
}

/// Buffers carved on a thread that then exits, so their chunks leave no magazine behind:
/// each chunk comes back (to the cache, or to the system) when its last buffer drops. The
/// waiter is woken exactly when a drop lowers the bytes held beyond the cache.
#[test]
fn a_chunk_coming_back_wakes_the_waiter() {
    let pool = pool();
    let p = pool.clone();
    let mut bufs: Vec<PooledBuf> = thread::spawn(move || {
        let mut v = Vec::new();
        while p.stats().allocated_bytes < 800 * KIB {
            v.push(p.allocate(4 * KIB));
        }
        v
    })
    .join()
    .unwrap();
    while pool.stats().magazines != 0 {
        thread::yield_now();
    }
    let want = 300 * KIB;
    assert!(held(&pool) + want > LIMIT, "{}", pool.stats());
    let (flag, waker) = flag();
    let mut r = pin!(pool.ready(want));
    assert!(poll(r.as_mut(), &waker).is_pending(), "{}", pool.stats());
    let mut wakes = 0;
    loop {
        let before = held(&pool);
        let woken = flag.woken.load(SeqCst);
        drop(
            bufs.pop()
                .expect("the waiter resolves before the buffers run out"),
        );
        let after = held(&pool);
        let now_woken = flag.woken.load(SeqCst);
        assert_eq!(
            after < before,
            now_woken > woken,
            "woken exactly when held memory went down ({before} -> {after})"
        );
        if now_woken > woken {
            wakes += 1;
            if poll(r.as_mut(), &waker).is_ready() {
                assert!(after + want <= LIMIT);
                break;
            }
            assert!(after + want > LIMIT);
        }
    }
    assert!(wakes >= 1);
    assert_eq!(pool.waiting_for_memory(), 0);
}

#[test]
fn waits_for_the_watermark_below_the_limit() {
    let pool = pool_with(Some(512 * KIB));
    let a = pool.allocate(300 * KIB);
    let b = pool.allocate(300 * KIB);
    let (flag, waker) = flag();
    // 600 + 100 KiB fits under the 1 MiB limit, not under the 512 KiB watermark.
    let mut r = pin!(pool.ready(100 * KIB));
    assert!(poll(r.as_mut(), &waker).is_pending());
    drop(a);
    assert_eq!(flag.woken.load(SeqCst), 1);
    assert!(poll(r.as_mut(), &waker).is_ready());
    drop(b);
}

#[test]
fn a_dropped_future_leaves_nothing_registered() {
    let pool = pool();
    let big = pool.allocate(BIG);
    let flags: Vec<(Arc<Flag>, Waker)> = (0..3).map(|_| flag()).collect();
    let mut futures: Vec<_> = (0..3).map(|_| Box::pin(pool.ready(BIG))).collect();
    for (f, (_, w)) in futures.iter_mut().zip(&flags) {
        assert!(poll(f.as_mut(), w).is_pending());
    }
    assert_eq!(pool.waiting_for_memory(), 3);
    // Cancel the middle one.
    drop(futures.remove(1));
    assert_eq!(pool.waiting_for_memory(), 2);
    drop(big);
    assert_eq!(
        flags[1].0.woken.load(SeqCst),
        0,
        "a cancelled waiter was woken"
    );
    assert_eq!(flags[0].0.woken.load(SeqCst), 1);
    assert_eq!(flags[2].0.woken.load(SeqCst), 1);
    // Woken but never polled again, then dropped: also deregistered.
    drop(futures);
    assert_eq!(pool.waiting_for_memory(), 0);
    // A later release finds nobody to wake.
    let big = pool.allocate(BIG);
    drop(big);
    for (f, _) in &flags {
        assert!(f.woken.load(SeqCst) <= 1);
    }
}

/// Before it waits, `ready` frees idle memory everywhere once, as an allocation at the limit
/// does: empty chunks kept by this thread's magazine do not keep it waiting.
#[test]
fn ready_reclaims_idle_chunks_before_it_waits() {
    let pool = AdaptiveAllocator::builder()
        .max_memory(LIMIT)
        .min_chunk_size(4 * KIB)
        .max_chunk_size(16 * KIB)
        .max_cached_bytes(0)
        .max_thread_idle_bytes(LIMIT)
        .build()
        .unwrap();
    // One buffer of every pooled size class: each class keeps its (now empty) current
    // chunk in this thread's magazine.
    let bufs: Vec<PooledBuf> = (1..=4 * KIB)
        .step_by(16)
        .map(|n| pool.allocate(n))
        .collect();
    drop(bufs);
    let s = pool.stats();
    assert!(
        s.is_quiet() && s.cached_bytes == 0 && s.allocated_bytes > 0,
        "{s}"
    );
    // Fits only once those chunks are given back.
    let want = LIMIT - s.allocated_bytes + 1;
    let (flag, waker) = flag();
    let mut r = pin!(pool.ready(want));
    assert!(poll(r.as_mut(), &waker).is_ready(), "{}", pool.stats());
    assert_eq!(pool.stats().allocated_bytes, 0);
    assert_eq!(flag.woken.load(SeqCst), 0);
}

/// One thread waits, another frees, many rounds, with the free at varying moments around
/// the waiter's registration: every round resolves (a lost wake-up would time out).
#[test]
fn no_lost_wake_up_between_two_threads() {
    let rounds = if cfg!(miri) { 8 } else { 400 };
    let pool = pool();
    let (tx, rx) = mpsc::channel::<(PooledBuf, usize)>();
    let dropper = thread::spawn(move || {
        for (buf, spin) in rx {
            for _ in 0..spin {
                std::hint::spin_loop();
            }
            drop(buf);
        }
    });
    for round in 0..rounds {
        let big = pool.allocate(BIG);
        tx.send((big, (round % 16) * 64)).unwrap();
        let r = block_on_timeout(pool.ready(BIG), Duration::from_secs(20));
        assert!(r.is_some(), "round {round}: the waiter was never woken");
        assert_eq!(pool.waiting_for_memory(), 0);
    }
    drop(tx);
    dropper.join().unwrap();
    assert!(pool.stats().is_quiet());
}

/// The same across threads the other way: several waiters on their own threads, one
/// release frees room for all of them.
#[test]
fn one_release_wakes_every_waiter() {
    let pool = pool();
    let big = pool.allocate(BIG);
    let (started_tx, started_rx) = mpsc::channel();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let p = pool.clone();
            let started = started_tx.clone();
            thread::spawn(move || {
                started.send(()).unwrap();
                block_on_timeout(p.ready(100 * KIB), Duration::from_secs(20)).is_some()
            })
        })
        .collect();
    for _ in 0..3 {
        started_rx.recv().unwrap();
    }
    // Whether they registered yet or not, each must resolve.
    drop(big);
    for w in waiters {
        assert!(w.join().unwrap(), "a waiter was never woken");
    }
    assert_eq!(pool.waiting_for_memory(), 0);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Under tokio: a `ready` future cancelled by a timeout (the pool stays over its limit)
/// leaves nothing registered.
#[test]
#[cfg_attr(miri, ignore = "tokio's runtime under Miri is slow")]
fn under_tokio_a_timed_out_wait_leaves_nothing_registered() {
    let pool = pool();
    let big = pool.allocate(BIG);
    let rt = runtime();
    let timed_out = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(20), pool.ready(BIG))
            .await
            .is_err()
    });
    assert!(timed_out, "the pool stayed over its limit");
    assert_eq!(pool.waiting_for_memory(), 0);
    drop(big);
    rt.block_on(pool.ready(BIG));
    assert_eq!(pool.waiting_for_memory(), 0);
}

/// Under tokio: tasks that each need more than half of the limit take turns through
/// `ready` (awaited before each allocation, and again when another task took the room
/// first), and all of them finish: nobody is left waiting for a release that came before
/// it registered.
#[test]
#[cfg_attr(miri, ignore = "tokio's runtime under Miri is slow")]
fn under_tokio_tasks_take_turns_at_the_limit() {
    let pool = pool();
    let rt = runtime();
    let served = rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut served = 0;
                    for _ in 0..25 {
                        let buf = loop {
                            pool.ready(BIG).await;
                            // Another task may have taken the room first: wait again.
                            if let Ok(b) = pool.try_allocate(BIG) {
                                break b;
                            }
                        };
                        // Only one such buffer fits at a time.
                        assert!(pool.stats().live_bytes < 2 * BIG);
                        tokio::task::yield_now().await;
                        drop(buf);
                        served += 1;
                    }
                    served
                })
            })
            .collect();
        let mut served = 0;
        for t in tasks {
            served += tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a task waited for ever: a lost wake-up")
                .unwrap();
        }
        served
    });
    drop(rt);
    assert_eq!(served, 8 * 25);
    assert_eq!(pool.waiting_for_memory(), 0);
    assert!(pool.stats().is_quiet());
}

/// At the very edge of the limit, `ready(n)` agrees with the allocation that follows: it
/// counts `n` as the allocation's last resort does (a region of its own, rounded up to 16
/// bytes and at least 32), so when it resolves that region fits, and while it waits the
/// allocation fails. (Counting `n` as it is would call 16 free bytes enough for `ready(1)`.)
#[test]
fn ready_agrees_with_the_allocation_at_the_edge() {
    let pool = pool();
    let (_flag, waker) = flag();
    let cases: [(usize, &[(usize, bool)]); 2] = [
        (KIB, &[(KIB - 4, true), (KIB, true), (KIB + 1, false)]),
        (16, &[(0, false), (1, false), (16, false)]),
    ];
    for (room, requests) in cases {
        let big = pool.allocate(LIMIT - room);
        assert_eq!(pool.stats().allocated_bytes, LIMIT - room);
        for &(n, fits) in requests {
            {
                let mut r = pin!(pool.ready(n));
                let ready = poll(r.as_mut(), &waker).is_ready();
                assert_eq!(ready, fits, "ready({n}) with {room} B free");
            }
            assert_eq!(pool.waiting_for_memory(), 0);
            let allocated = pool.try_allocate(n).is_ok();
            assert_eq!(allocated, fits, "allocate({n}) with {room} B free");
        }
        drop(big);
    }
}
