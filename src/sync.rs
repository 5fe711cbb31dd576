//! The `sync` facade: every atomic, cell, lock, thread-local and raw allocation of the
//! concurrent core goes through here, so that `--cfg loom` can swap the whole core onto
//! [loom](https://docs.rs/loom)'s model-checked versions.
//!
//! Owns: nothing but re-exports and thin wrappers. May import: nothing of ours.
//!
//! * [`UnsafeCell`] exposes `with`/`with_mut` closures (loom's shape) in both builds, so
//!   loom can check every access of a cell for races.
//! * [`Mutex`] is `parking_lot`'s in normal builds, std's under Miri (parking_lot's
//!   contended path is not strict-provenance clean) and loom's under `cfg(loom)`; it never
//!   poisons in any. In debug builds each lock held counts as a [`Critical`] section.
//! * [`Critical`] counts, per thread and in debug builds only, the critical sections the
//!   thread is inside, so the places that call user code can assert there are none.
//! * [`ArrayQueue`] is `crossbeam_queue::ArrayQueue` in normal builds. loom cannot see inside
//!   crossbeam's queue, so under `cfg(loom)` it is a capacity-checked `Mutex<VecDeque>` with
//!   the same interface.
//! * `Arc` is std's in every build for allocator handles, chunk homes and stats shards: their
//!   reference counts are not part of a protocol the models check, and loom's `Arc` cannot
//!   hold the trait objects (`Arc<dyn Home>`) the crate uses. [`ModelArc`], the magazine's
//!   count, is loom's under loom: the owner's registry and a closer may each drop the last
//!   reference to a magazine, and the models must see the happens-before edge that drop
//!   relies on (with std's, loom reported the two threads' accesses to the magazine's state
//!   as concurrent, at a preemption bound of 3).
//! * [`alloc`]/[`dealloc`] are `std::alloc`'s in normal builds and `loom::alloc`'s under loom,
//!   so every loom execution checks chunk memory for leaks.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// `Arc` for the magazine (a concrete type): loom's under `cfg(loom)`, std's otherwise.
#[cfg(loom)]
pub(crate) use loom::sync::Arc as ModelArc;
#[cfg(not(loom))]
pub(crate) use std::sync::Arc as ModelArc;

/// The `Acquire` half of a count's last release, as in `Arc`'s drop: the thread whose
/// `Release` read-modify-write brought `count` to zero (and so will free what it counts) must
/// first acquire every earlier `Release` step of the count, so that the other holders'
/// accesses happen before it frees.
///
/// Normally a standalone `fence(Acquire)`. ThreadSanitizer does not model standalone fences,
/// so it would report those accesses as racing with the freeing thread's; under
/// `--cfg adaptive_pool_tsan` (set only by `.ci/sanitizers` for its ThreadSanitizer build) it is
/// a `load(Acquire)` of the count itself, which TSan understands and which orders the same
/// accesses: the load reads the last value in the count's modification order, and every step
/// of it is a `Release` read-modify-write, so it synchronises with all of them. std's `Arc`
/// does the same under TSan. Nothing else changes under that cfg.
#[inline(always)]
pub(crate) fn acquire_count<C: Count>(count: &C) {
    if cfg!(adaptive_pool_tsan) {
        count.load_acquire();
    } else {
        fence(Ordering::Acquire);
    }
}

/// The atomic counts [`acquire_count`] applies to.
pub(crate) trait Count {
    /// Loads the count with `Acquire` ordering (the value is not needed).
    fn load_acquire(&self);
}

impl Count for AtomicUsize {
    #[inline(always)]
    fn load_acquire(&self) {
        let _ = self.load(Ordering::Acquire);
    }
}

impl Count for AtomicI64 {
    #[inline(always)]
    fn load_acquire(&self) {
        let _ = self.load(Ordering::Acquire);
    }
}

/// The light side of the magazine gate's asymmetric barrier: keeps the compiler from moving
/// the gate's store past its load. The processor's reordering is undone by the other side
/// (`os::heavy_barrier`), or, where that is not the kernel's membarrier (and under loom),
/// by a `fence(SeqCst)` the gate adds itself.
#[inline(always)]
pub(crate) fn light_barrier() {
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// One step of a wait for another thread: a spin hint, then a yield (loom's under loom, so
/// the model lets the other thread run).
#[inline]
pub(crate) fn spin_wait(round: &mut u32) {
    #[cfg(not(loom))]
    {
        if *round < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        *round = round.saturating_add(1);
    }
    #[cfg(loom)]
    {
        let _ = round;
        loom::thread::yield_now();
    }
}

#[cfg(not(loom))]
pub(crate) use std::thread_local;

#[cfg(loom)]
pub(crate) use loom::thread_local;

/// Raw memory for chunks and unpooled buffers.
#[cfg(not(loom))]
pub(crate) use std::alloc::{alloc, dealloc};

#[cfg(loom)]
pub(crate) use loom::alloc::{alloc, dealloc};

/// An `UnsafeCell` with loom's closure interface in every build.
#[derive(Debug, Default)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(not(loom))] core::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    /// A new cell holding `value`.
    #[cfg(not(loom))]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// A new cell holding `value`.
    #[cfg(loom)]
    pub(crate) fn new(value: T) -> Self {
        Self(loom::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.0.get())
        }
        #[cfg(loom)]
        {
            self.0.with(f)
        }
    }

    /// Runs `f` with a mutable raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.0.get())
        }
        #[cfg(loom)]
        {
            self.0.with_mut(f)
        }
    }
}

impl<T: Copy> UnsafeCell<T> {
    /// Reads the value.
    ///
    /// # Safety
    /// No other thread may write the cell concurrently (the caller owns it, see the field's
    /// documentation for who that is).
    #[inline(always)]
    pub(crate) unsafe fn get(&self) -> T {
        // SAFETY: the caller guarantees there is no concurrent writer.
        self.with(|p| unsafe { *p })
    }

    /// Writes the value.
    ///
    /// # Safety
    /// No other thread may access the cell concurrently (the caller owns it).
    #[inline(always)]
    pub(crate) unsafe fn set(&self, value: T) {
        // SAFETY: the caller guarantees exclusive access.
        self.with_mut(|p| unsafe { *p = value })
    }
}

/// A critical section of the pool (a magazine gate entered or claimed, an internal lock
/// held, a thread's registry borrowed), counted per thread in debug builds so that the rule
/// "no user code inside a critical section" (docs/DESIGN.md, "No deadlock") is checked
/// where user code is called: [`critical_depth`] must be 0 there. A zero-sized no-op in
/// release builds and under loom (whose threads share the OS thread's std thread-locals).
#[derive(Debug)]
#[must_use = "the section ends when the guard drops"]
pub(crate) struct Critical(());

#[cfg(all(debug_assertions, not(loom)))]
std::thread_local! {
    static CRITICAL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Critical {
    /// Enters a critical section (counted in debug builds).
    #[inline(always)]
    pub(crate) fn enter() -> Critical {
        #[cfg(all(debug_assertions, not(loom)))]
        CRITICAL.with(|c| c.set(c.get() + 1));
        Critical(())
    }

    /// Continues a section whose guard was forgotten (`mem::forget`) by the code that handed
    /// it over: counts nothing more, and ends the section when dropped.
    #[inline(always)]
    pub(crate) fn continued() -> Critical {
        Critical(())
    }
}

impl Drop for Critical {
    #[inline(always)]
    fn drop(&mut self) {
        #[cfg(all(debug_assertions, not(loom)))]
        CRITICAL.with(|c| c.set(c.get() - 1));
    }
}

/// How many critical sections the calling thread is inside (debug builds; 0 otherwise).
#[inline]
pub(crate) fn critical_depth() -> usize {
    #[cfg(all(debug_assertions, not(loom)))]
    {
        CRITICAL.with(std::cell::Cell::get)
    }
    #[cfg(not(all(debug_assertions, not(loom))))]
    {
        0
    }
}

/// A mutual-exclusion lock that never poisons. `parking_lot`'s in normal builds; std's under
/// Miri (parking_lot's contended path casts integers to pointers, which
/// `-Zmiri-strict-provenance` rejects); loom's under loom.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(
    #[cfg(all(not(loom), not(miri)))] parking_lot::Mutex<T>,
    #[cfg(all(not(loom), miri))] std::sync::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub(crate) fn new(value: T) -> Self {
        #[cfg(all(not(loom), not(miri)))]
        {
            Self(parking_lot::Mutex::new(value))
        }
        #[cfg(all(not(loom), miri))]
        {
            Self(std::sync::Mutex::new(value))
        }
        #[cfg(loom)]
        {
            Self(loom::sync::Mutex::new(value))
        }
    }

    /// Locks if the lock is free, runs `f`, unlocks; `None` if another thread holds it.
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let _section = Critical::enter();
        #[cfg(all(not(loom), not(miri)))]
        {
            self.0.try_lock().map(|mut g| f(&mut g))
        }
        #[cfg(any(loom, miri))]
        {
            match self.0.try_lock() {
                Ok(mut g) => Some(f(&mut g)),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(f(&mut e.into_inner())),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        }
    }

    /// Locks, runs `f`, unlocks.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _section = Critical::enter();
        #[cfg(all(not(loom), not(miri)))]
        {
            f(&mut self.0.lock())
        }
        #[cfg(any(loom, miri))]
        {
            f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
        }
    }
}

#[cfg(not(loom))]
pub(crate) use crossbeam_queue::ArrayQueue;

/// Under loom: a capacity-checked `Mutex<VecDeque>` standing in for crossbeam's `ArrayQueue`.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct ArrayQueue<T> {
    items: Mutex<std::collections::VecDeque<T>>,
    cap: usize,
}

#[cfg(loom)]
impl<T> ArrayQueue<T> {
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap > 0, "capacity must be non-zero");
        Self {
            items: Mutex::new(std::collections::VecDeque::new()),
            cap,
        }
    }
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        self.items.with(|q| {
            if q.len() >= self.cap {
                Err(value)
            } else {
                q.push_back(value);
                Ok(())
            }
        })
    }
    pub(crate) fn pop(&self) -> Option<T> {
        self.items.with(|q| q.pop_front())
    }
    pub(crate) fn len(&self) -> usize {
        self.items.with(|q| q.len())
    }
}

/// A number naming the calling thread, never 0, distinct among the threads alive at once.
/// Used to recognise the owner of a chunk with one plain load and compare.
///
/// In normal builds it is the address of a thread-local, so a thread that starts after
/// another has exited may get the exited thread's token. That is sound because no chunk
/// carries the token of a thread that has exited: a thread's registry gives up (abandons or
/// parks, clearing the owner of) every chunk of its magazines in its thread-local destructor, before
/// the thread's thread-local block can be reused, and the close abandons the chunks of every
/// magazine. Under loom, a counter (loom's thread-locals are not at stable addresses).
#[inline(always)]
pub(crate) fn thread_token() -> usize {
    #[cfg(not(loom))]
    {
        std::thread_local! {
            static TOKEN: u8 = const { 0 };
        }
        // The address of a thread-local without a destructor: one `lea`, no lazy
        // initialisation, never null, and distinct among the threads alive at once.
        TOKEN.with(|t| t as *const u8 as usize)
    }
    #[cfg(loom)]
    {
        loom::thread_local! {
            static TOKEN: std::cell::Cell<usize> = std::cell::Cell::new(0);
        }
        TOKEN
            .try_with(|t| {
                let v = t.get();
                if v != 0 {
                    v
                } else {
                    let v = next_token();
                    t.set(v);
                    v
                }
            })
            .unwrap_or(usize::MAX)
    }
}

#[cfg(loom)]
#[cold]
fn next_token() -> usize {
    // A plain std atomic even under loom: token assignment is not part of any protocol we
    // model (each thread reads and writes only its own token).
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
