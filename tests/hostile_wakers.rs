//! Wakers are user code: a waker of a `ready()` future may allocate, drop buffers, `trim()`,
//! poll another `Ready`, or drop the last handle of the allocator. None of that may run while
//! the pool holds a magazine gate, a claim, or an internal lock (SPEC section 4; DESIGN.md,
//! "No deadlock"). Each test here reproduces one defect of the review of 2026-12-07, where
//! the waker ran inside such a section:
//!
//! * a waker that drops a buffer while the owner is inside its gate (undefined behaviour:
//!   Miri reported a second `&mut` to the magazine's state);
//! * a waker that allocates the same class while a refill at the limit evicts the cache (a
//!   chunk orphaned: owned but in no list, and the allocator never freed);
//! * the same with `max_thread_idle_bytes(0)` (the orphan's last release retired the wrong
//!   chunk: a failed debug assertion, a double free in release);
//! * a waker that calls `trim()` from inside a gate (it claimed its own magazine and spun for
//!   ever), one that polls a `Ready` from inside `trim()` (the maintenance lock taken twice),
//!   and one that trims while the allocator closes (the roster's lock taken twice).
//!
//! The deadlocks run on a thread of their own with a deadline, so a regression fails the test
//! instead of hanging the suite.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::Duration;

use adaptive_pool::{AdaptiveAllocator, PooledBuf, Ready};

const KIB: usize = 1 << 10;
const LIMIT: usize = 1 << 20;

/// A waker that runs `action` on its first wake-up (on whatever thread wakes it) and counts
/// its wake-ups.
struct Hostile {
    action: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    woken: AtomicUsize,
}

impl Wake for Hostile {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.fetch_add(1, SeqCst);
        let action = self.action.lock().unwrap().take();
        if let Some(action) = action {
            action();
        }
    }
}

fn hostile(action: impl FnOnce() + Send + 'static) -> (Arc<Hostile>, Waker) {
    let h = Arc::new(Hostile {
        action: Mutex::new(Some(Box::new(action))),
        woken: AtomicUsize::new(0),
    });
    (h.clone(), Waker::from(h))
}

/// Polls `fut` once with `waker`, expecting it to wait.
fn register(fut: &mut Pin<Box<Ready<'_>>>, waker: &Waker) {
    let mut cx = Context::from_waker(waker);
    assert!(
        fut.as_mut().poll(&mut cx).is_pending(),
        "the future must wait for this test to mean anything"
    );
}

/// Runs `f` on a thread of its own and fails if it does not finish within the deadline (a
/// self-deadlock hangs that thread; the test fails instead of hanging the suite).
fn within_deadline(name: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    let deadline = if cfg!(miri) { 600 } else { 20 };
    match rx.recv_timeout(Duration::from_secs(deadline)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The thread panicked: report its panic.
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: no progress after {deadline} s (a waker deadlocked inside the pool)")
        }
    }
}

/// A pool whose chunks all come in one size: 4 KiB chunks (max_pooled 1 KiB), a 1 MiB
/// limit, a cache of one chunk, no idle chunks kept per thread.
fn small_pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .max_memory(LIMIT)
        .min_chunk_size(4 * KIB)
        .max_chunk_size(4 * KIB)
        .max_cached_bytes(4 * KIB)
        .max_thread_idle_bytes(0)
        .build()
        .unwrap()
}

/// Everything dropped and trimmed: nothing is held.
fn assert_nothing_held(pool: &AdaptiveAllocator) {
    pool.trim();
    let s = pool.stats();
    assert_eq!(s.live_buffers, 0, "{s:?}");
    assert_eq!(s.live_bytes, 0, "{s:?}");
    assert_eq!(s.chunks, 0, "a chunk is held with nothing live: {s:?}");
    assert_eq!(s.allocated_bytes, 0, "{s:?}");
}

/// The review's first finding: the current chunk empties, the idle budget (0) retires it, the
/// retirement offers it to the cache and notifies, and the waker drops a buffer of the same
/// allocator on the same thread. Before the fix the waker's release entered the magazine while
/// the outer release was still inside it (Miri: a second `&mut` to the magazine's state).
#[test]
fn a_waker_that_drops_a_buffer_waits_for_the_gate_to_be_left() {
    let pool = small_pool();
    // Hold the memory up to the limit less 4 KiB with one unpooled buffer, so a 64 KiB
    // request waits.
    let big = pool.allocate(LIMIT - 12 * KIB);
    let mut fut = Box::pin(pool.ready(64 * KIB));
    // The victim: a buffer of another class, in a chunk of its own.
    let victim = Arc::new(Mutex::new(Some(pool.allocate(512))));
    let v = victim.clone();
    let (h, waker) = hostile(move || drop(v.lock().unwrap().take()));
    register(&mut fut, &waker);
    // The trigger: a buffer whose release empties its current chunk, which the budget of 0
    // retires to the cache, which notifies.
    let trigger = pool.allocate(100);
    drop(trigger);
    assert_eq!(h.woken.load(SeqCst), 1, "the retirement wakes the waiter");
    assert!(victim.lock().unwrap().is_none(), "the waker ran its action");
    drop(fut);
    drop(big);
    assert_nothing_held(&pool);
}

/// Sets up a refill at the limit that evicts the cache: a 16 KiB chunk waits in the cache,
/// the memory is held up to the limit, and a request of a class with 4 KiB chunks finds no
/// chunk of its size cached, so making one fails on the limit, evicts the cache (which frees
/// memory and notifies), and tries again. The waker allocates the same class (and keeps the
/// buffer). Before the fix it ran inside the refill, installed its own current chunk, and the
/// outer refill overwrote it: a chunk owned by no list, never freed, holding the allocator.
fn refill_at_the_limit(idle_budget: usize) {
    let pool = AdaptiveAllocator::builder()
        .max_memory(LIMIT)
        .min_chunk_size(4 * KIB)
        .max_chunk_size(16 * KIB)
        .max_cached_bytes(64 * KIB)
        .max_thread_idle_bytes(idle_budget)
        .build()
        .unwrap();
    // Everything but 16 KiB held by one unpooled buffer (below 1 MiB: not page-rounded).
    let big = pool.allocate(LIMIT - 16 * KIB);
    let mut fut = Box::pin(pool.ready(32 * KIB));
    // First poll with a waker that does nothing: it reclaims once, then registers.
    register(&mut fut, Waker::noop());
    // A 16 KiB chunk (the 1 KiB class: 16 segments) into the cache. It notifies the waiter,
    // whose waker is then taken out: polling again registers the hostile one.
    drop(pool.allocate(KIB));
    pool.trim_thread();
    assert_eq!(pool.stats().cached_bytes, 16 * KIB);
    let kept: Arc<Mutex<Vec<PooledBuf>>> = Arc::default();
    let (k, p) = (kept.clone(), pool.clone());
    let (h, waker) = hostile(move || k.lock().unwrap().push(p.allocate(200)));
    register(&mut fut, &waker);
    // The 256 B class wants a 4 KiB chunk: none is cached, none fits, the cache is evicted.
    let outer = pool.allocate(200);
    assert_eq!(h.woken.load(SeqCst), 1, "the eviction wakes the waiter");
    assert_eq!(kept.lock().unwrap().len(), 1, "the waker allocated");
    assert_eq!(pool.stats().cached_bytes, 0);
    drop(outer);
    drop(kept.lock().unwrap().drain(..).collect::<Vec<_>>());
    drop(fut);
    drop(big);
    assert_nothing_held(&pool);
}

#[test]
fn a_waker_that_allocates_at_the_limit_orphans_no_chunk() {
    refill_at_the_limit(1 << 20);
}

/// The same with an idle budget of 0: the orphaned chunk's last release made the budget retire
/// the class's real current chunk (a failed debug assertion; in release, a double free).
#[test]
fn a_waker_that_allocates_at_the_limit_with_no_idle_budget() {
    refill_at_the_limit(0);
}

/// A waker that calls `trim()`, woken by a retirement inside the owner's gate: before the fix
/// the trim claimed the waking thread's own magazine and waited for its gate for ever.
#[test]
fn a_waker_that_trims_from_inside_a_release() {
    within_deadline("trim from a release", || {
        let pool = small_pool();
        let big = pool.allocate(LIMIT - 12 * KIB);
        let mut fut = Box::pin(pool.ready(64 * KIB));
        let p = pool.clone();
        let (h, waker) = hostile(move || {
            p.trim();
        });
        register(&mut fut, &waker);
        drop(pool.allocate(100));
        assert_eq!(h.woken.load(SeqCst), 1);
        drop(fut);
        drop(big);
        assert_nothing_held(&pool);
    });
}

/// A waker that polls a `Ready` (whose first poll reclaims everywhere), woken by `trim()`
/// freeing an idle chunk under the maintenance lock: before the fix the inner reclaim took
/// that lock again.
#[test]
fn a_waker_that_polls_a_ready_from_inside_trim() {
    within_deadline("ready from trim", || {
        let pool = AdaptiveAllocator::builder()
            .max_memory(LIMIT)
            .min_chunk_size(4 * KIB)
            .max_chunk_size(4 * KIB)
            .max_cached_bytes(0)
            .build()
            .unwrap();
        let big = pool.allocate(LIMIT - 12 * KIB);
        let mut fut = Box::pin(pool.ready(64 * KIB));
        let polled = Arc::new(AtomicUsize::new(0));
        let (p, n) = (pool.clone(), polled.clone());
        let (h, waker) = hostile(move || {
            // Does not fit either: its first poll reclaims everywhere, then it registers.
            let mut inner = Box::pin(p.ready(64 * KIB));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(inner.as_mut().poll(&mut cx).is_pending());
            n.fetch_add(1, SeqCst);
        });
        register(&mut fut, &waker);
        // An empty chunk kept by the magazine (within its idle budget): `trim()` frees it
        // under the maintenance lock, which notifies.
        drop(pool.allocate(100));
        assert_eq!(pool.stats().chunks, 1);
        assert!(pool.trim() > 0);
        assert_eq!(h.woken.load(SeqCst), 1);
        assert_eq!(polled.load(SeqCst), 1, "the waker's poll completed");
        assert_eq!(
            pool.waiting_for_memory(),
            1,
            "the outer future, woken, still registered"
        );
        drop(fut);
        assert_eq!(pool.waiting_for_memory(), 0);
        drop(big);
        assert_nothing_held(&pool);
    });
}

/// A waker that trims while the allocator closes: the close gives up the magazines' chunks
/// under the roster's lock, with every magazine claimed, and an idle chunk entering the cache
/// notifies. Before the fix the trim took the roster's lock again. The future is forgotten so
/// that its registration outlives the last handle; the waker reaches the allocator through a
/// buffer, as code holding only buffers does after the close.
#[test]
fn a_waker_that_trims_while_the_allocator_closes() {
    within_deadline("trim from the close", || {
        let pool = AdaptiveAllocator::builder()
            .max_memory(LIMIT)
            .min_chunk_size(4 * KIB)
            .max_chunk_size(4 * KIB)
            .max_cached_bytes(64 * KIB)
            .build()
            .unwrap();
        let big = pool.allocate(LIMIT - 12 * KIB);
        let keeper = Arc::new(Mutex::new(Some(pool.allocate(64))));
        let trimmed = Arc::new(AtomicUsize::new(0));
        let (k, t) = (keeper.clone(), trimmed.clone());
        let (h, waker) = hostile(move || {
            let alloc = k.lock().unwrap().as_ref().map(PooledBuf::allocator);
            if let Some(alloc) = alloc {
                alloc.trim();
                t.fetch_add(1, SeqCst);
            }
        });
        // On the stack, never dropped (no leak for Miri to report): its registration stays.
        let mut fut = std::mem::ManuallyDrop::new(pool.ready(64 * KIB));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut *fut).poll(&mut cx).is_pending());
        // An empty chunk kept by the magazine, which the close gives up (no notification
        // before: it stays within the idle budget).
        drop(pool.allocate(300));
        assert_eq!(h.woken.load(SeqCst), 0);
        // The last handle: the allocator closes.
        drop(pool);
        assert_eq!(
            h.woken.load(SeqCst),
            1,
            "the chunk given up at the close wakes the waiter"
        );
        assert_eq!(trimmed.load(SeqCst), 1, "the waker's trim completed");
        let alloc = keeper.lock().unwrap().as_ref().unwrap().allocator();
        drop(big);
        drop(keeper.lock().unwrap().take());
        let s = alloc.stats();
        assert_eq!(
            (s.live_buffers, s.chunks, s.allocated_bytes),
            (0, 0, 0),
            "{s:?}"
        );
    });
}
