//! The registry of tasks waiting for memory under `max_memory` (back-pressure; the future is
//! [`Ready`](crate::Ready), module `ready`).
//!
//! Owns: [`Waiters`], a slab of [`Waker`]s behind a lock plus an atomic count of registered
//! waiters, and the protocol between a waiter that registers and a thread that lowers the
//! memory held and wakes. May import: `sync` only. The counters (module `stats`) hold one
//! registry per allocator and call [`Waiters::notify`] where held memory goes down.
//!
//! The protocol (docs/DESIGN.md, "Back-pressure"), in two steps on each side:
//!
//! * a **waiter** registers its waker (under the lock, counting itself in `count`), then a
//!   `fence(SeqCst)`, then re-checks its condition on the memory counters, and waits only if
//!   it still does not hold;
//! * a **releaser** lowers the memory counters, then a `fence(SeqCst)`, then loads `count`
//!   (relaxed) and, only if it is not zero, takes the lock and wakes every registered waker.
//!
//! The two fences are ordered one way or the other in the single total order of `SeqCst`
//! operations: if the releaser's comes first, the waiter's re-check sees the lower figure;
//! if the waiter's comes first, the releaser's load sees the waiter counted and wakes it. No
//! wake-up is lost. When nobody waits, a releaser pays the fence and one relaxed load, and
//! only on the slow paths where a chunk or an unpooled region leaves a magazine (never on
//! the per-buffer release path). Checked by loom models 17 and 18 (`tests/loom.rs`).
//!
//! # Wakers run outside every critical section
//! A waker is user code: its `wake` may allocate, drop buffers, `trim()`, poll a `Ready`, or
//! drop the last reference to a task that owns buffers. It must never run while the pool
//! holds a magazine gate, a claim, an internal lock or a thread's registry (it would re-enter
//! the state the pool is changing: aliasing `&mut`, a chunk orphaned, a self-deadlock).
//! Memory goes down inside such sections, so the wakers are *deferred*:
//!
//! * every pool operation that can release memory while it holds such a section opens a
//!   [`Deferral`] around it first (a per-thread depth; cold paths only, never the per-buffer
//!   fast path);
//! * [`Waiters::notify`] takes the wakers out of the registry under its lock and, if the
//!   thread is inside a deferral, appends them to the thread's pending list; otherwise it
//!   wakes them at once (nothing is held then, since every section that can release memory
//!   is inside a deferral);
//! * when the outermost deferral ends, after every section it covered has been left, it
//!   wakes the pending wakers (and those their own operations defer, until none is left).
//!
//! In debug builds every critical section is counted (`sync::Critical`) and waking asserts
//! the count is zero, so a section that can release memory without a deferral around it
//! fails the tests (the back-pressure tests, the proptest and the `ops` fuzz target run
//! hostile wakers through every path).

use std::fmt;
use std::marker::PhantomData;
use std::task::Waker;

use crate::sync::{self, fence, thread_local, AtomicUsize, Mutex, Ordering::*};

/// Tasks waiting for memory, and the wake-up protocol (see the module doc).
#[derive(Default)]
pub(crate) struct Waiters {
    /// Registered waiters (slab keys in use), changed only under `slab`'s lock; loaded
    /// relaxed, outside the lock, by [`Waiters::notify`].
    count: AtomicUsize,
    slab: Mutex<Slab>,
}

/// The wakers, by key. A key stays taken from registration to deregistration; its waker is
/// taken out when it is woken and put back when its future is polled again.
#[derive(Default)]
struct Slab {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl fmt::Debug for Waiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiters")
            .field("count", &self.count.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Waiters {
    /// Registers (first call, `key` is `None`) or refreshes (later calls) the waker of one
    /// waiter, then fences: the caller must re-check its condition after this returns, and
    /// wait only if it still does not hold.
    pub(crate) fn register(&self, key: &mut Option<usize>, waker: &Waker) {
        // A waker replaced is dropped after the lock is released (dropping a waker may run
        // arbitrary code, a task's last reference, which may release memory and notify).
        let replaced = self.slab.with(|s| match *key {
            Some(k) => match &mut s.wakers[k] {
                Some(w) if w.will_wake(waker) => None,
                slot => slot.replace(waker.clone()),
            },
            None => {
                let k = match s.free.pop() {
                    Some(k) => {
                        s.wakers[k] = Some(waker.clone());
                        k
                    }
                    None => {
                        s.wakers.push(Some(waker.clone()));
                        s.wakers.len() - 1
                    }
                };
                *key = Some(k);
                self.count.fetch_add(1, Relaxed);
                None
            }
        });
        drop(replaced);
        // The waiter's half of the protocol: ordered against every releaser's fence.
        fence(SeqCst);
    }

    /// Forgets a waiter (its future completed or was dropped); nothing if `key` is `None`.
    pub(crate) fn deregister(&self, key: &mut Option<usize>) {
        if let Some(k) = key.take() {
            // The waker is dropped after the lock is released.
            let waker = self.slab.with(|s| {
                s.free.push(k);
                self.count.fetch_sub(1, Relaxed);
                s.wakers[k].take()
            });
            drop(waker);
        }
    }

    /// Waiters registered now.
    pub(crate) fn registered(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// The releaser's half of the protocol: called after the memory counters went down. When
    /// nobody waits it costs a `fence(SeqCst)` and one relaxed load.
    #[inline]
    pub(crate) fn notify(&self) {
        fence(SeqCst);
        if self.count.load(Relaxed) != 0 {
            self.wake_all();
        }
    }

    /// Wakes every registered waiter (each re-checks its own condition when polled). The
    /// wakers are taken out under the lock and woken after it is released.
    #[cold]
    #[inline(never)]
    fn wake_all(&self) {
        let wakers: Vec<Waker> = self
            .slab
            .with(|s| s.wakers.iter_mut().filter_map(Option::take).collect());
        wake_or_defer(wakers);
    }
}

/// A pool operation that may release memory inside a critical section: the wake-ups it
/// causes are deferred until the outermost deferral of the thread ends (see the module
/// doc). Not `Send`: it counts on its own thread.
#[must_use = "the wake-ups are deferred until the guard drops"]
pub(crate) struct Deferral(PhantomData<*const ()>);

impl fmt::Debug for Deferral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deferral")
    }
}

/// One thread's deferral depth and the wakers it collected meanwhile.
#[derive(Default)]
struct Pending {
    depth: std::cell::Cell<u32>,
    wakers: std::cell::RefCell<Vec<Waker>>,
}

// Without a destructor (`ManuallyDrop`), so it is there during other thread-locals'
// destructors (a thread's registry hands its chunks back at exit). The list never holds
// memory when the thread is outside every deferral (it is taken whole to be woken), so
// nothing leaks.
#[cfg(not(loom))]
thread_local! {
    static PENDING: std::mem::ManuallyDrop<Pending> = const {
        std::mem::ManuallyDrop::new(Pending {
            depth: std::cell::Cell::new(0),
            wakers: std::cell::RefCell::new(Vec::new()),
        })
    };
}

#[cfg(loom)]
thread_local! {
    static PENDING: Pending = Pending::default();
}

/// Runs `f` on the thread's pending wake-ups; `None` only under loom once the thread's
/// thread-locals are being destroyed.
#[inline]
fn with_pending<R>(f: impl FnOnce(&Pending) -> R) -> Option<R> {
    #[cfg(not(loom))]
    {
        Some(PENDING.with(|p| f(p)))
    }
    #[cfg(loom)]
    {
        PENDING.try_with(f).ok()
    }
}

impl Deferral {
    /// Opens a deferral on the calling thread.
    #[inline]
    pub(crate) fn begin() -> Deferral {
        with_pending(|p| p.depth.set(p.depth.get() + 1));
        Deferral(PhantomData)
    }
}

impl Drop for Deferral {
    #[inline]
    fn drop(&mut self) {
        let outermost = with_pending(|p| {
            let d = p.depth.get() - 1;
            p.depth.set(d);
            d == 0 && !p.wakers.borrow().is_empty()
        });
        if outermost == Some(true) {
            wake_pending();
        }
    }
}

/// The outermost deferral ended: wakes what it collected. A waker's own operations defer
/// and wake theirs themselves (a nested deferral), so the list is empty when this returns.
#[cold]
#[inline(never)]
fn wake_pending() {
    loop {
        let batch = with_pending(|p| std::mem::take(&mut *p.wakers.borrow_mut()));
        let batch = batch.unwrap_or_default();
        if batch.is_empty() {
            return;
        }
        wake(batch);
    }
}

/// Wakes `wakers` now if the thread is outside every deferral, else defers them.
fn wake_or_defer(wakers: Vec<Waker>) {
    if wakers.is_empty() {
        return;
    }
    let mut wakers = Some(wakers);
    with_pending(|p| {
        if p.depth.get() != 0 {
            p.wakers
                .borrow_mut()
                .extend(wakers.take().into_iter().flatten());
        }
    });
    // Outside every deferral (or, under loom, while the thread's thread-locals are being
    // destroyed, where the registry's destructor holds no section): now.
    if let Some(w) = wakers {
        wake(w);
    }
}

/// Calls user code: the wakers.
fn wake(wakers: Vec<Waker>) {
    debug_assert_eq!(
        sync::critical_depth(),
        0,
        "a waker (user code) would run inside a critical section of the pool"
    );
    for w in wakers {
        w.wake();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdCount;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(StdCount);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(StdCount::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn keys_are_reused_and_only_registered_wakers_are_woken() {
        let w = Waiters::default();
        let (counts, wakers): (Vec<_>, Vec<_>) = (0..3).map(|_| waker()).unzip();
        let mut keys = [None; 3];
        for (k, wk) in keys.iter_mut().zip(&wakers) {
            w.register(k, wk);
        }
        assert_eq!(w.registered(), 3);
        assert_eq!(keys, [Some(0), Some(1), Some(2)]);
        // Refreshing a registration does not count it twice.
        w.register(&mut keys[0], &wakers[0]);
        assert_eq!(w.registered(), 3);
        w.deregister(&mut keys[1]);
        assert_eq!((keys[1], w.registered()), (None, 2));
        w.notify();
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Relaxed)).collect();
        assert_eq!(woken, [1, 0, 1]);
        // Woken wakers were taken out: a second release wakes nobody until they re-register,
        // and the waiters stay counted until they deregister.
        w.notify();
        assert_eq!(counts[0].0.load(Relaxed), 1);
        assert_eq!(w.registered(), 2);
        // The freed key is reused.
        let (c3, w3) = waker();
        let mut k3 = None;
        w.register(&mut k3, &w3);
        assert_eq!(k3, Some(1));
        w.register(&mut keys[0], &wakers[0]);
        w.notify();
        assert_eq!(counts[0].0.load(Relaxed), 2);
        assert_eq!(c3.0.load(Relaxed), 1);
        assert_eq!(counts[2].0.load(Relaxed), 1);
        let [mut k0, _, mut k2] = keys;
        for k in [&mut k0, &mut k2, &mut k3] {
            w.deregister(k);
        }
        assert_eq!(w.registered(), 0);
    }
}
