//! The operation language of the randomised state-machine tests, and the model they are
//! checked against. Shared, word for word, by the proptest state machine
//! (`tests/prop_state_machine.rs`) and the fuzz target `ops` (`fuzz/fuzz_targets/ops.rs`),
//! which include this file with `#[path]`; each brings its own generator of [`Op`]s.
//!
//! # What runs
//! Two allocators (each on one of the corner [`Setup`]s), this thread, and two helper threads:
//! a *remote* thread that never allocates (it drops handles and calls `trim()`, so every
//! release there is a remote free into another thread's chunk), and a *worker* thread that
//! allocates and hands its buffers back, drops handles (into its own chunks: local frees on a
//! thread other than this one), trims, and exits when told (its magazine hands its chunks back,
//! abandoning those that still hold a live region); a new worker starts on the next operation
//! that needs one. Every operation waits until the helper thread is done, so the allocators are
//! quiet whenever the model looks at them.
//!
//! The operations: allocate, write, reserve, split, freeze, clone, drop (here, on the remote
//! thread, on the worker), `trim()` (here, remote, worker), `trim_thread()` (here, worker),
//! `allocate_with` whose initialiser writes, grows, splits, freezes, allocates (and keeps or
//! drops), trims or drops other handles, and then succeeds, fails or panics, hand-offs from the
//! worker, the worker's exit, and dropping an allocator's last handle while its buffers live,
//! after which every allocation, growth and clone through it is served unpooled.
//!
//! And waiters with hostile wakers ([`Op::Wait`]): a `ready(need)` future, for a size that
//! seldom fits, polled once with a waker that runs an action on the first wake-up, on whatever
//! thread releases memory and from wherever in the pool that happens: it allocates and drops
//! (on this thread only: the model follows the magazines of this thread and of the worker, and
//! the remote thread must never allocate), drops a live handle that was moved into it (a
//! *victim*), trims, `trim_thread()`s, or polls another `ready()`. Wakers are user code, which
//! the pool must never run inside its own critical sections (`src/waiters.rs`, "Wakers run
//! outside every critical section"); a debug build asserts it where a waker runs, so a path
//! that the operations reach and that releases memory without deferring its wake-ups fails
//! here, as a failed assertion, a model mismatch or a deadlock. The future is forgotten once polled (kept on the stack in
//! `ManuallyDrop`: nothing leaks), so its registration outlives it. An action reaches its
//! allocator through an *anchor*, a buffer of its own (a live region of the model) rather than
//! a handle, so an armed waiter keeps no allocator open: wakers also run while an allocator
//! closes, and after. What an action did (a handle dropped, a request made) is recorded in a
//! shared queue that the model applies before it compares anything; at the end, and on a
//! waiter that is ready at once, the harness disarms the waiters (takes the action out and
//! drops it, victim and anchor included), so no reference cycle through the waiter registry
//! is left.
//!
//! # The model
//! A list of live handles, each with the region it keeps alive and the pattern its bytes must
//! hold, and the set of live regions with their capacities and allocators. After every
//! operation (and inside `allocate_with`'s initialiser, after every step):
//! * every live handle holds exactly its pattern (a byte that depends on the handle's seed and
//!   on the byte's position in the original buffer, so an overlap, a stale region or a move
//!   that copies from the wrong place is caught); a new region overlaps no live region;
//! * each allocator's `stats()` match the model exactly: `live_buffers` is the number of its
//!   live regions, `live_bytes` the sum of their capacities; `allocated_bytes <= max_memory`,
//!   `cached_bytes <= max_cached_bytes`, the chunk counters agree with each other; the number of
//!   magazines is between the threads that must have one and those that may (a pooled-size
//!   request made on a thread while the allocator is open makes one; a thread's exit or the
//!   close removes it);
//! * after `trim()` from any thread: nothing cached, and every chunk left holds a live region
//!   (`chunks <= live regions`; nothing at all held when nothing lives); `trim()`'s and
//!   `trim_thread()`'s answers agree with the change in `allocated_bytes` and `cached_bytes`
//!   (unless a waker's action ran meanwhile: it may allocate, trim or reclaim too; then only
//!   the other checks hold, as after every operation);
//! * a closed allocator (its last handle dropped) caches nothing, has no magazine, creates no
//!   chunk (every allocation, growth and clone through it is unpooled, one unpooled allocation
//!   each), and holds no chunk without a live region;
//! * `allocate_with` that fails or panics leaves the live regions as the model says (the
//!   buffer returned, whatever `init` kept alive still live); one whose `init` only wrote,
//!   grew, split (dropping the pieces) and allocated-and-dropped through the same allocator
//!   leaves no more memory held outside the cache than before (unless a waker's action ran
//!   meanwhile);
//! * what a waker's action did is in the model before anything is compared: its victim's
//!   bytes held their pattern when it dropped it, and `live_buffers`, `live_bytes`, the
//!   magazines and the unpooled allocations through a closed allocator stay exact;
//! * with `zero_on_release`: the spare capacity of every fresh region that lies where a
//!   released buffer held data reads as zeros (or the poison byte when poisoning is on, which
//!   takes precedence), except for free-list links: the first 4 bytes of a free segment hold
//!   the index of the next one (below 2^16) or `u32::MAX`, also where an earlier format of a
//!   reused chunk had a segment, so such a word at a 16-byte aligned address (where segments
//!   start) is allowed; four bytes of data never read as one (pattern bytes are never 0xff, and
//!   never two zeros in four). This reads spare capacity, which safe code
//!   never does: a test-only read, made only of bytes that this harness wrote earlier into the
//!   same memory (the ranges are forgotten whenever either allocator takes new memory from the
//!   system, since new memory may lie where old written ranges were), so no byte read is
//!   uninitialised.
//!
//! At the end the waiters are disarmed and every handle is dropped (here and on the remote
//! thread): the first allocator, if open, must be quiet and `trim()` must give every byte
//! back; the second, if open, is closed instead (its last handle dropped while one buffer
//! lives), and a closed allocator must hold
//! nothing at all once its last buffer drops, without any trim or thread exit (seen through a
//! handle taken from that buffer). With [`Harness::alone`] (the process runs no other
//! allocator meanwhile), `adaptive_pool::mapped_bytes()` must then be back where it started:
//! no allocator's state is left alive.

#![allow(dead_code)]

use std::any::Any;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Once, PoisonError};
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::Duration;

use adaptive_pool::{AdaptiveAllocator, AllocError, InitError, MemorySource, PooledBuf, Stats};
use bytes::{BufMut, Bytes};

/// Which thread runs a `trim()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// This thread (which allocates).
    Here,
    /// The remote thread, which never allocates.
    Remote,
    /// The worker thread, which allocates when told to.
    Worker,
}

/// How an `allocate_with` initialiser ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitEnd {
    Ok,
    Err,
    Panic,
}

/// One step of an `allocate_with` initialiser. Pool operands pick an allocator modulo 2;
/// handle operands pick a live handle as in [`Op`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitStep {
    /// Fill the buffer's whole capacity with a fresh pattern.
    Fill,
    /// `try_reserve(additional)` on the buffer.
    Grow(u16),
    /// Split the buffer (`split_to` when `to`, else `split_off`, as [`Op::SplitTo`] and
    /// [`Op::SplitOff`]); the piece is frozen if `freeze`, and kept alive past the initialiser
    /// if `keep` (else dropped at once).
    Split {
        to: bool,
        at: u32,
        keep: bool,
        freeze: bool,
    },
    /// Allocate a buffer of `decode_size(raw)` from an allocator; keep it, or drop it at once.
    Alloc { pool: u8, raw: u32, keep: bool },
    /// `trim()` on an allocator, from a thread.
    Trim { pool: u8, who: Who },
    /// `trim_thread()` on an allocator, here or on the worker.
    TrimThread { pool: u8, worker: bool },
    /// Drop one of the other live handles here.
    Drop(u8),
}

/// What a hostile waker ([`Op::Wait`]) does when it is first woken, on the thread that woke it
/// (from inside whatever pool operation released memory). Handle operands pick a live handle
/// as in [`Op`]; sizes are decoded by [`decode_size`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeAction {
    /// Allocate `decode_size(raw)` bytes from the waiter's allocator, write them and drop the
    /// buffer at once; only when woken on this thread (elsewhere: nothing).
    AllocDrop(u32),
    /// Drop a handle, moved out of the live handles into the waker when it is armed (of either
    /// allocator), after checking its bytes.
    DropVictim(u8),
    /// `trim()` on the waiter's allocator.
    Trim,
    /// `trim_thread()` on the waiter's allocator.
    TrimThread,
    /// Poll a fresh `ready(decode_size(raw))` of the waiter's allocator once (with a waker that
    /// does nothing; its first poll reclaims idle memory everywhere) and drop it.
    PollReady(u32),
}

/// One operation. Handle operands (`u8`) pick a live handle modulo their number, pool
/// operands an allocator modulo 2; an operation on no handle, or on an allocator that is gone,
/// does nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Allocate a buffer from an allocator (through a handle taken from one of its buffers if
    /// it is closed); the size is decoded by [`decode_size`] (log-uniform up to 4 MiB, and a
    /// few sizes past `isize::MAX`), and filled with a fresh pattern.
    Allocate(u8, u32),
    /// Rewrite a buffer's contents and fill its spare capacity, with a fresh pattern.
    Write(u8),
    /// `try_reserve(additional)`; the contents must survive, a failure changes nothing.
    Reserve(u8, u16),
    /// `split_to(at % (len + 1))` (a frozen handle: only strictly inside it, see below).
    SplitTo(u8, u32),
    /// `split_off(at % (capacity + 1))` (a frozen handle: `at % len`, strictly inside).
    SplitOff(u8, u32),
    /// Freeze a buffer into `Bytes` (no-op on a frozen handle).
    Freeze(u8),
    /// Clone: a frozen handle shares its region; a buffer is deep-copied into a new region
    /// (only when the copy cannot hit the memory limit, since `Clone` panics on failure).
    Clone(u8),
    /// Drop a handle here.
    Drop(u8),
    /// Drop a handle on the remote thread (a remote free), and wait until it is done.
    DropRemote(u8),
    /// Drop a handle on the worker thread (a local free if the worker's magazine owns the
    /// chunk, else a remote one).
    DropOnWorker(u8),
    /// `trim()` on an allocator, from a thread.
    Trim(u8, Who),
    /// `trim_thread()` on an allocator, here (`false`) or on the worker (`true`).
    TrimThread(u8, bool),
    /// `allocate_with(decode_size(raw), init)`, where `init` runs `steps` and then ends as
    /// `end` says (a panic is caught with `catch_unwind`).
    AllocateWith {
        pool: u8,
        raw: u32,
        steps: Vec<InitStep>,
        end: InitEnd,
    },
    /// Drop an allocator's last handle (here, or on the remote thread when `remote`) while
    /// its buffers live. The allocator closes for good; one more buffer is allocated just
    /// before, and kept out of reach of the other operations until the end, so that the
    /// closed allocator stays observable through it.
    DropAllocator(u8, bool),
    /// The worker allocates buffers of `decode_size(raw)` for each `raw`, hands them back to
    /// this thread, and then exits if `exit` (else stays, keeping its magazine).
    HandOff {
        pool: u8,
        raws: Vec<u32>,
        exit: bool,
    },
    /// The worker exits (its magazines hand their chunks back).
    WorkerExit,
    /// A waiter with a hostile waker: `ready(decode_need(need, ..))` on an allocator (through
    /// a handle taken from the watch buffer if it is closed), polled once with a waker that
    /// runs `action` when first woken; the future is then forgotten, its registration kept.
    /// The action reaches the allocator through an anchor (a 0-byte buffer allocated for it,
    /// dropped with the action; without room for it the operation does nothing); a victim is
    /// moved out of the live handles (nothing to move: nothing done). A waiter that is ready
    /// at once is disarmed at once.
    Wait {
        pool: u8,
        need: u32,
        action: WakeAction,
    },
}

/// The largest pooled-or-not request made, apart from the overflowing ones.
pub const MAX_ALLOC: usize = 4 << 20;
/// At most this many live handles: an allocation past it drops the oldest handle first, and
/// a split or clone past it does nothing.
pub const MAX_LIVE: usize = 48;
/// At most this many buffers per hand-off, and steps per initialiser (generators keep to it;
/// longer lists are cut).
pub const MAX_BATCH: usize = 4;
pub const MAX_STEPS: usize = 6;

/// Requests within this much of `isize::MAX` may fail with `CapacityOverflow` (room for
/// rounding an unpooled region up to the page).
pub const OVERFLOW_MARGIN: usize = 1 << 20;

/// Decodes a request size: the low 5 bits pick a bit width from 0 to 22, the rest the value,
/// so sizes of every magnitude up to 4 MiB are equally likely. A few top values ask for the
/// limits: exactly 4 MiB, and sizes that must fail with `CapacityOverflow`.
pub fn decode_size(raw: u32) -> usize {
    match raw {
        u32::MAX => MAX_ALLOC,
        0xFFFF_FFFE => usize::MAX,
        0xFFFF_FFFD => isize::MAX as usize + 1,
        0xFFFF_FFFC => isize::MAX as usize - 10,
        _ => {
            let bits = (raw & 31) % 23;
            ((raw >> 5) & ((1u32 << bits) - 1)) as usize
        }
    }
}

/// Decodes the size a waiter ([`Op::Wait`]) waits for, under `max_memory` with `live_bytes`
/// live: exactly `max_memory` (waits while anything is held), a fraction of it (1/2 to 63/64),
/// or just past the room that the live bytes leave (waits while anything beyond them is held,
/// as chunks with free space are). Never more than `max_memory`: a larger request is always
/// ready (it can never fit).
pub fn decode_need(raw: u32, max_memory: usize, live_bytes: usize) -> usize {
    let v = (raw >> 2) as usize;
    let need = match raw & 3 {
        0 => max_memory,
        1 => max_memory - (max_memory >> (1 + v % 6)),
        _ => max_memory.saturating_sub(live_bytes) + 1 + v % 4096,
    };
    need.min(max_memory)
}

/// An allocator configuration, including the corners.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub min_chunk: usize,
    pub max_chunk: usize,
    pub max_cached: usize,
    pub max_memory: usize,
    pub zero_on_release: bool,
    pub poison: bool,
    /// `max_thread_idle_bytes`, if not the default.
    pub max_thread_idle: Option<usize>,
    /// `idle_release`, if not the default (10 s, which no case lasts).
    pub idle_release: Option<Duration>,
    /// Chunk memory from the global allocator instead of the platform's default source.
    pub heap: bool,
}

impl Setup {
    /// The corner configurations, picked by `i % SETUPS`.
    pub fn corner(i: u8, poison: bool) -> Setup {
        let mut s = Setup {
            min_chunk: 4 << 10,
            max_chunk: 4 << 10,
            max_cached: 0,
            max_memory: 0,
            zero_on_release: false,
            poison,
            max_thread_idle: None,
            idle_release: None,
            heap: false,
        };
        let (min_chunk, max_chunk, max_cached, max_memory, zero_on_release) = match i % SETUPS {
            // Tiny chunks: 4 KiB only; requests above 1 KiB are unpooled. No idle chunk kept
            // per thread: every chunk that empties goes through the cache.
            0 => {
                s.max_thread_idle = Some(0);
                (4 << 10, 4 << 10, 8 << 10, 256 << 10, false)
            }
            // No cache at all; idle memory is swept every half millisecond (chunks idle for
            // 2 ms are given back), so the sweep runs during the operations.
            1 => {
                s.idle_release = Some(Duration::from_millis(2));
                (4 << 10, 64 << 10, 0, 1 << 20, false)
            }
            // Roomy: chunks up to 1 MiB, a cache of 1 MiB, 8 MiB in all, chunk memory from the
            // global allocator.
            2 => {
                s.heap = true;
                (64 << 10, 1 << 20, 1 << 20, 8 << 20, false)
            }
            // A memory limit just above the least `build()` accepts for 4 KiB chunks (one
            // chunk for each of the 19 classes up to 1 KiB): most requests meet the limit.
            3 => (4 << 10, 4 << 10, 4 << 10, 80 << 10, false),
            // Zero on release, mid-sized chunks, a small per-thread idle budget.
            4 => {
                s.max_thread_idle = Some(32 << 10);
                (16 << 10, 256 << 10, 256 << 10, 4 << 20, true)
            }
            // Zero on release with small chunks and a cache: released memory is soon reused,
            // by this thread or another.
            _ => (4 << 10, 16 << 10, 32 << 10, 1 << 20, true),
        };
        s.min_chunk = min_chunk;
        s.max_chunk = max_chunk;
        s.max_cached = max_cached;
        s.max_memory = max_memory;
        s.zero_on_release = zero_on_release;
        s
    }

    /// Requests up to this size are pooled (larger ones unpooled).
    pub fn max_pooled(&self) -> usize {
        self.max_chunk / 4
    }

    pub fn build(&self) -> AdaptiveAllocator {
        let mut b = AdaptiveAllocator::builder()
            .min_chunk_size(self.min_chunk)
            .max_chunk_size(self.max_chunk)
            .max_cached_bytes(self.max_cached)
            .max_memory(self.max_memory)
            .zero_on_release(self.zero_on_release)
            .poison(self.poison);
        if let Some(n) = self.max_thread_idle {
            b = b.max_thread_idle_bytes(n);
        }
        if let Some(d) = self.idle_release {
            b = b.idle_release(d);
        }
        if self.heap {
            b = b.memory_source(MemorySource::GlobalAllocator);
        }
        b.build().expect("the corner setups are valid")
    }
}

/// The number of corner setups.
pub const SETUPS: u8 = 6;

/// The byte at position `k` of a buffer written with `seed`: period 251, so two handles that
/// overlap at any offset disagree unless their seeds and offsets happen to line up (1 in 251).
#[inline]
pub fn pattern(seed: u8, k: usize) -> u8 {
    ((seed as usize + k) % 251) as u8
}

/// Appends `n` bytes of `seed`'s pattern to an empty buffer.
fn put_pattern(buf: &mut PooledBuf, seed: u8, n: usize) {
    debug_assert!(buf.is_empty());
    let period: Vec<u8> = (0..251).map(|k| pattern(seed, k)).collect();
    let mut left = n;
    while left > 0 {
        let take = left.min(251);
        buf.put_slice(&period[..take]);
        left -= take;
    }
}

/// How thoroughly live handles are checked after each operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every byte of every live handle.
    Full,
    /// Every byte of the handles the operation touched; a sample (every 97th byte and the
    /// last) of the others. Every handle is still checked in full when it is dropped.
    Touched,
}

/// The panic payload of an initialiser told to panic; quietened by the panic hook.
struct InitPanic;

/// The error of an initialiser told to fail.
#[derive(Debug, PartialEq, Eq)]
struct InitFailed;

/// Installs (once) a panic hook that stays silent for [`InitPanic`] and hands every other
/// panic to the hook in place before (the default one, or libFuzzer's, which aborts).
fn quiet_init_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<InitPanic>() {
                previous(info);
            }
        }));
    });
}

enum Handle {
    Buf(PooledBuf),
    Frozen(Bytes),
}

impl Handle {
    fn bytes(&self) -> &[u8] {
        match self {
            Handle::Buf(b) => b,
            Handle::Frozen(b) => b,
        }
    }
}

/// What the model knows of a handle: its pattern and its region.
#[derive(Clone, Copy, Debug)]
struct Meta {
    /// Byte `i` of the handle is `pattern(seed, start + i)`.
    seed: u8,
    start: usize,
    /// The region this handle keeps alive (an index into `Harness::regions`).
    region: usize,
}

struct Live {
    handle: Handle,
    meta: Meta,
}

/// A live region: where it is, how large, which allocator, and how many handles keep it.
#[derive(Clone, Copy, Debug)]
struct Region {
    base: usize,
    cap: usize,
    pool: usize,
    handles: usize,
}

/// Whether a thread has a magazine of an allocator, as far as the model can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mag {
    /// None: the thread made no request since the allocator's close or its own start.
    No,
    /// Perhaps: the thread grew or cloned a buffer (whose request size the model does not
    /// follow) while the allocator was open.
    Maybe,
    /// Certainly: the thread asked for a pooled size while the allocator was open.
    Yes,
}

impl Mag {
    fn raise(&mut self, to: Mag) {
        *self = (*self).max(to);
    }
}

/// One allocator and what the model knows of it.
struct Pool {
    setup: Setup,
    /// Our handle, `None` once dropped (the allocator is then closed).
    handle: Option<AdaptiveAllocator>,
    /// After the close: the buffer kept to observe the allocator, and its region.
    watch: Option<(PooledBuf, usize)>,
    live_regions: usize,
    live_bytes: usize,
    /// Magazines of this thread and of the worker.
    here: Mag,
    worker: Mag,
    /// `chunk_allocations` when the allocator closed.
    chunks_at_close: u64,
}

impl Pool {
    fn closed(&self) -> bool {
        self.handle.is_none()
    }

    /// A handle on the allocator: a clone of ours, or (closed) one taken from the watch
    /// buffer; `None` once nothing of the allocator is left.
    fn handle(&self) -> Option<AdaptiveAllocator> {
        match (&self.handle, &self.watch) {
            (Some(h), _) => Some(h.clone()),
            (None, Some((w, _))) => Some(w.allocator()),
            (None, None) => None,
        }
    }

    fn stats(&self) -> Option<Stats> {
        self.handle().map(|h| h.stats())
    }
}

/// A job for a helper thread: a closure whose result goes back boxed.
type Job = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// A helper thread that runs closures one at a time and hands their results back.
struct Helper {
    to: Option<mpsc::Sender<Job>>,
    back: mpsc::Receiver<Box<dyn Any + Send>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Helper {
    fn spawn() -> Helper {
        let (to, rx) = mpsc::channel::<Job>();
        let (tx, back) = mpsc::channel();
        let thread = thread::spawn(move || {
            for f in rx {
                // The closure, with everything it captured (handles, allocator handles), is
                // consumed and dropped here, before the answer goes back.
                if tx.send(f()).is_err() {
                    break;
                }
            }
        });
        Helper {
            to: Some(to),
            back,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the helper thread and waits for its result.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.to
            .as_ref()
            .expect("the helper thread lives")
            .send(Box::new(move || Box::new(f()) as Box<dyn Any + Send>))
            .expect("the helper thread lives");
        *self
            .back
            .recv()
            .expect("the helper thread ran it (did it panic?)")
            .downcast::<R>()
            .expect("the answer's type")
    }

    /// Ends the thread and waits until it has exited (its thread-locals, magazines included,
    /// destroyed).
    fn exit(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.to = None;
        if let Some(t) = self.thread.take() {
            // A panic there has already been reported; do not panic twice.
            let _ = t.join();
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.stop();
    }
}

// --- hostile wakers ------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// Whether this thread runs a harness (the only kind where [`WakeAction::AllocDrop`]
    /// allocates). Without a destructor, so a waker that runs while a helper thread's
    /// thread-locals are destroyed (its magazines hand their chunks back) can read it.
    static HARNESS_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What the harness and its wakers share: what the actions did, for the model.
struct Wakes {
    /// Actions run so far (counted before each runs): an operation during which none ran is
    /// checked exactly as if no waiter existed.
    runs: AtomicUsize,
    /// Allocations that succeeded in actions, per allocator (each one unpooled if the
    /// allocator is closed).
    allocs: [AtomicU64; 2],
    /// What the actions did that the model has not applied yet.
    fired: Mutex<Vec<Fired>>,
}

impl Wakes {
    fn record(&self, f: Fired) {
        lock(&self.fired).push(f);
    }
}

/// One thing an action did, for the model.
enum Fired {
    /// A handle of `region` dropped (a victim, `bad` if its bytes had changed; or an anchor).
    Released { region: usize, bad: Option<String> },
    /// A request for `size` bytes from allocator `pool` on the harness's thread.
    Asked { pool: usize, size: usize },
}

/// What an armed waker holds.
enum Action {
    Victim(Handle, Meta),
    /// The anchor (a buffer of the waiter's allocator, region `region`) and what to do with
    /// the allocator, reached through it.
    Reach {
        anchor: PooledBuf,
        region: usize,
        what: WakeAction,
    },
}

impl Action {
    /// Runs on the thread that woke the waker, from inside the pool operation that released
    /// memory (after it left every critical section, if the pool is right).
    fn run(self, pool: usize, wakes: &Wakes) {
        match self {
            Action::Victim(h, meta) => {
                let bad = Harness::mismatch(h.bytes(), meta, true);
                drop(h);
                wakes.record(Fired::Released {
                    region: meta.region,
                    bad,
                });
            }
            Action::Reach {
                anchor,
                region,
                what,
            } => {
                // As code holding only buffers reaches it (also while it closes, and after).
                let alloc = anchor.allocator();
                match what {
                    WakeAction::AllocDrop(raw) => {
                        if HARNESS_THREAD.with(std::cell::Cell::get) {
                            let size = decode_size(raw);
                            wakes.record(Fired::Asked { pool, size });
                            if let Ok(mut b) = alloc.try_allocate(size) {
                                wakes.allocs[pool].fetch_add(1, SeqCst);
                                // Written: a region that overlaps a live one shows in its
                                // pattern; released data must be zeroed as any other.
                                b.put_bytes(0xEE, size);
                            }
                        }
                    }
                    WakeAction::DropVictim(_) => unreachable!("a victim is held as one"),
                    WakeAction::Trim => {
                        alloc.trim();
                    }
                    WakeAction::TrimThread => {
                        alloc.trim_thread();
                    }
                    WakeAction::PollReady(raw) => {
                        let mut ready = alloc.ready(decode_size(raw));
                        let _ = Pin::new(&mut ready).poll(&mut Context::from_waker(Waker::noop()));
                    }
                }
                drop(alloc);
                drop(anchor);
                wakes.record(Fired::Released { region, bad: None });
            }
        }
    }
}

/// A hostile waker: runs its action on the first wake-up (a woken waker is taken out of the
/// registry; its key stays registered, since its future is never polled or dropped again).
/// The registry holds it until its allocator's state goes, the harness until the end.
struct Waiter {
    pool: usize,
    action: Mutex<Option<Action>>,
    wakes: Arc<Wakes>,
}

impl Wake for Waiter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let action = lock(&self.action).take();
        if let Some(action) = action {
            self.wakes.runs.fetch_add(1, SeqCst);
            action.run(self.pool, &self.wakes);
        }
    }
}

/// Where the actions stood at the start of a step: see [`Harness::quiet_since`].
#[derive(Clone, Copy, Debug)]
struct Mark {
    runs: usize,
    allocs: [u64; 2],
}

/// The allocators under test, the handles, and the model.
pub struct Harness {
    depth: Depth,
    live: Vec<Live>,
    /// Live regions, by index; `None` once freed (indices are not reused).
    regions: Vec<Option<Region>>,
    next_seed: u8,
    /// Handles touched by the current operation (checked in full under `Depth::Touched`).
    touched: Vec<usize>,
    /// The buffer being initialised by `allocate_with`, while its initialiser runs.
    init: Option<Meta>,
    /// Ranges this harness wrote into regions (base, length), for the `zero_on_release`
    /// check, and the allocators' counts of system allocations when they were recorded.
    written: Vec<(usize, usize)>,
    written_epoch: [u64; 2],
    /// `adaptive_pool::mapped_bytes()` at the start, when the process runs nothing else.
    mapped_at_start: Option<usize>,
    remote: Helper,
    worker: Option<Helper>,
    /// What the wakers share with the harness, and the waiters armed (those whose action
    /// has not run or been taken back yet; the others are pruned now and then).
    wakes: Arc<Wakes>,
    armed: Vec<Arc<Waiter>>,
    // Dropped last: the handles and the helper threads go first.
    pools: [Pool; 2],
}

/// At most this many written ranges are remembered (the oldest are forgotten: fewer checks,
/// never a wrong one).
const MAX_WRITTEN: usize = 256;

impl Harness {
    /// Two allocators on `setups`.
    pub fn new(setups: [Setup; 2], depth: Depth) -> Harness {
        quiet_init_panics();
        HARNESS_THREAD.with(|t| t.set(true));
        let pool = |setup: Setup| Pool {
            handle: Some(setup.build()),
            setup,
            watch: None,
            live_regions: 0,
            live_bytes: 0,
            here: Mag::No,
            worker: Mag::No,
            chunks_at_close: 0,
        };
        Harness {
            depth,
            live: Vec::new(),
            regions: Vec::new(),
            next_seed: 0,
            touched: Vec::new(),
            init: None,
            written: Vec::new(),
            written_epoch: [0; 2],
            mapped_at_start: None,
            remote: Helper::spawn(),
            worker: None,
            wakes: Arc::new(Wakes {
                runs: AtomicUsize::new(0),
                allocs: [AtomicU64::new(0), AtomicU64::new(0)],
                fired: Mutex::new(Vec::new()),
            }),
            armed: Vec::new(),
            pools: [pool(setups[0]), pool(setups[1])],
        }
    }

    /// Declares that no other allocator of the process is alive or used while this harness
    /// runs (it must have been made before any of its allocators allocated): then the memory
    /// mapped by the whole process must be back at its start value at the end.
    pub fn alone(mut self) -> Harness {
        // The allocators exist but have mapped nothing yet.
        self.mapped_at_start = Some(adaptive_pool::mapped_bytes());
        self
    }

    /// The first allocator's statistics (`None` once it is gone).
    pub fn stats(&self) -> Option<Stats> {
        self.pools[0].stats()
    }

    /// How many wakers' actions have run so far.
    pub fn actions_run(&self) -> usize {
        self.wakes.runs.load(SeqCst)
    }

    fn fresh_seed(&mut self) -> u8 {
        let s = self.next_seed;
        self.next_seed = ((s as usize + 37) % 251) as u8;
        s
    }

    fn pick(&self, i: u8) -> Option<usize> {
        (!self.live.is_empty()).then(|| i as usize % self.live.len())
    }

    fn worker(&mut self) -> &Helper {
        self.worker.get_or_insert_with(Helper::spawn)
    }

    /// Ends the worker thread (if any) and forgets its magazines.
    fn worker_exit(&mut self) {
        if let Some(w) = self.worker.take() {
            w.exit();
        }
        for p in &mut self.pools {
            p.worker = Mag::No;
        }
    }

    /// Records a new region at `base`, checking that it overlaps no live region (once what
    /// the wakers dropped meanwhile is out of the model: the new region may be where a victim
    /// was).
    fn new_region_at(&mut self, pool: usize, base: usize, cap: usize) -> usize {
        self.apply_fired();
        for r in self.regions.iter().flatten() {
            assert!(
                base + cap <= r.base || r.base + r.cap <= base || cap == 0 || r.cap == 0,
                "a new region [{base:#x}, +{cap}) overlaps a live one [{:#x}, +{})",
                r.base,
                r.cap
            );
        }
        self.regions.push(Some(Region {
            base,
            cap,
            pool,
            handles: 1,
        }));
        self.pools[pool].live_regions += 1;
        self.pools[pool].live_bytes += cap;
        self.regions.len() - 1
    }

    fn add_handle(&mut self, region: usize) {
        self.regions[region].as_mut().expect("live region").handles += 1;
    }

    fn release_handle(&mut self, region: usize) {
        let r = self.regions[region].as_mut().expect("live region");
        r.handles -= 1;
        if r.handles == 0 {
            let (pool, cap) = (r.pool, r.cap);
            self.pools[pool].live_bytes -= cap;
            self.pools[pool].live_regions -= 1;
            self.regions[region] = None;
        }
    }

    fn check_bytes(bytes: &[u8], meta: Meta, full: bool, what: &str) {
        if let Some(m) = Self::mismatch(bytes, meta, full) {
            panic!("{what}: {m}");
        }
    }

    /// Where a handle's bytes differ from its pattern (every byte if `full`, else a sample).
    fn mismatch(bytes: &[u8], meta: Meta, full: bool) -> Option<String> {
        let bad = if full {
            // Compare runs against the pattern's period (a `memcmp` per 251 bytes).
            let period: Vec<u8> = (0..251)
                .map(|k| pattern(meta.seed, meta.start + k))
                .collect();
            let mut bad = None;
            for (n, run) in bytes.chunks(251).enumerate() {
                // Run `n` starts at offset `251 n`, whose pattern repeats every 251 bytes.
                if run != &period[..run.len()] {
                    let j = run
                        .iter()
                        .zip(&period)
                        .position(|(a, b)| a != b)
                        .expect("a run differs");
                    bad = Some(n * 251 + j);
                    break;
                }
            }
            bad
        } else {
            let last = bytes.len().checked_sub(1);
            (0..bytes.len())
                .step_by(97)
                .chain(last)
                .find(|&k| bytes[k] != pattern(meta.seed, meta.start + k))
        };
        bad.map(|k| {
            format!(
                "byte {k} of a {}-byte handle is {:#04x}, expected {:#04x} (seed {}, start {})",
                bytes.len(),
                bytes[k],
                pattern(meta.seed, meta.start + k),
                meta.seed,
                meta.start
            )
        })
    }

    fn check_handle(&self, i: usize, full: bool, what: &str) {
        let l = &self.live[i];
        Self::check_bytes(l.handle.bytes(), l.meta, full, what);
    }

    /// Takes handle `i` out of the model, checked in full.
    fn take(&mut self, i: usize) -> Handle {
        self.check_handle(i, true, "when dropped");
        let l = self.live.swap_remove(i);
        self.release_handle(l.meta.region);
        l.handle
    }

    /// Adds a handle; `false` (and the handle is given back) when `MAX_LIVE` are live.
    fn push(&mut self, handle: Handle, meta: Meta) -> Result<(), Handle> {
        if self.live.len() >= MAX_LIVE {
            return Err(handle);
        }
        self.live.push(Live { handle, meta });
        self.touched.push(self.live.len() - 1);
        Ok(())
    }

    /// Adds a handle, dropping the oldest live one first if `MAX_LIVE` are live.
    fn push_evicting(&mut self, handle: Handle, meta: Meta) {
        if self.live.len() >= MAX_LIVE {
            drop(self.take(0));
        }
        if self.push(handle, meta).is_err() {
            unreachable!("room was made");
        }
    }

    /// Drops a handle that is not (or no longer) in `live`, and its share of the region.
    fn discard(&mut self, handle: Handle, meta: Meta) {
        Self::check_bytes(handle.bytes(), meta, true, "when dropped");
        drop(handle);
        self.release_handle(meta.region);
    }

    // --- waiters with hostile wakers -------------------------------------------------------

    /// Applies to the model what the wakers' actions did since the last time.
    fn apply_fired(&mut self) {
        let fired = std::mem::take(&mut *lock(&self.wakes.fired));
        for f in fired {
            match f {
                Fired::Released { region, bad } => {
                    if let Some(m) = bad {
                        panic!("a victim dropped by a waker: {m}");
                    }
                    self.release_handle(region);
                }
                Fired::Asked { pool, size } => {
                    let pool = &mut self.pools[pool];
                    if !pool.closed() && size <= pool.setup.max_pooled() {
                        pool.here.raise(Mag::Yes);
                    }
                }
            }
        }
    }

    /// Allocator `p`'s stats, and the model brought up to date with what the wakers did up to
    /// then (reading the stats may run the idle sweep, which may wake them).
    fn observe(&mut self, p: usize) -> Option<Stats> {
        let s = self.pools[p].stats();
        self.apply_fired();
        s
    }

    fn mark(&self) -> Mark {
        Mark {
            runs: self.wakes.runs.load(SeqCst),
            allocs: [
                self.wakes.allocs[0].load(SeqCst),
                self.wakes.allocs[1].load(SeqCst),
            ],
        }
    }

    /// Whether no waker's action ran since `mark`: then nothing but the harness acted on the
    /// allocators, and what they answered is checked exactly.
    fn quiet_since(&self, mark: Mark) -> bool {
        self.wakes.runs.load(SeqCst) == mark.runs
    }

    /// Armed waiters of allocator `p` whose action allocates.
    fn armed_allocs(&self, p: usize) -> usize {
        self.armed
            .iter()
            .filter(|w| {
                w.pool == p
                    && matches!(
                        *lock(&w.action),
                        Some(Action::Reach {
                            what: WakeAction::AllocDrop(_),
                            ..
                        })
                    )
            })
            .count()
    }

    /// [`Op::Wait`].
    fn wait(&mut self, p: usize, need: u32, what: WakeAction) {
        if self.pools[p].handle().is_none() {
            return;
        }
        self.armed.retain(|w| lock(&w.action).is_some());
        let action = match what {
            WakeAction::DropVictim(i) => {
                let Some(i) = self.pick(i) else {
                    return;
                };
                self.check_handle(i, true, "when moved into a waker");
                // Its region stays live in the model until the action or the harness drops it.
                let l = self.live.swap_remove(i);
                Action::Victim(l.handle, l.meta)
            }
            _ => {
                let Some((anchor, meta)) = self.alloc_region(p, 0) else {
                    return;
                };
                Action::Reach {
                    anchor,
                    region: meta.region,
                    what,
                }
            }
        };
        let waiter = Arc::new(Waiter {
            pool: p,
            action: Mutex::new(Some(action)),
            wakes: self.wakes.clone(),
        });
        let waker = Waker::from(waiter.clone());
        let h = self.pools[p].handle().expect("observable");
        let need = decode_need(
            need,
            self.pools[p].setup.max_memory,
            self.pools[p].live_bytes,
        );
        // Never dropped (its `Drop` would deregister it), and on the stack: it holds only a
        // reference and two fields, so forgetting it leaks nothing.
        let mut ready = ManuallyDrop::new(h.ready(need));
        let waits = Pin::new(&mut *ready)
            .poll(&mut Context::from_waker(&waker))
            .is_pending();
        drop(waker);
        if waits {
            self.armed.push(waiter);
        } else {
            // Ready at once: it deregistered itself; nothing will wake it.
            self.disarm(&waiter);
        }
    }

    /// Takes a waiter's action back (if it has not run) and drops it here, victim and anchor
    /// with it.
    fn disarm(&mut self, w: &Waiter) {
        let action = lock(&w.action).take();
        match action {
            None => {}
            Some(Action::Victim(h, meta)) => self.discard(h, meta),
            Some(Action::Reach { anchor, region, .. }) => {
                drop(anchor);
                self.release_handle(region);
            }
        }
    }

    /// Disarms every waiter: no action runs from now on, and none holds a buffer (which would
    /// keep its allocator's state, and with it the registry that holds the waker, alive).
    fn disarm_all(&mut self) {
        for w in std::mem::take(&mut self.armed) {
            self.disarm(&w);
        }
        self.apply_fired();
    }

    // --- the zero_on_release check ---------------------------------------------------------

    /// Each allocator's count of memory taken from the system (chunks and unpooled buffers).
    fn epoch(&self) -> [u64; 2] {
        let e = |p: &Pool| {
            p.stats()
                .map_or(u64::MAX, |s| s.chunk_allocations + s.unpooled_allocations)
        };
        [e(&self.pools[0]), e(&self.pools[1])]
    }

    /// Forgets the written ranges if either allocator took memory from the system since they
    /// were recorded (new memory may lie where they were, and is not the pool's to zero).
    fn sync_written(&mut self) {
        let e = self.epoch();
        if e != self.written_epoch {
            self.written.clear();
            self.written_epoch = e;
        }
    }

    fn note_written(&mut self, base: usize, len: usize) {
        if len == 0 {
            return;
        }
        self.sync_written();
        if self.written.len() >= MAX_WRITTEN {
            self.written.remove(0);
        }
        self.written.push((base, len));
    }

    /// `zero_on_release`: checks the spare capacity `[len, capacity)` of a buffer whose region
    /// is fresh from the allocator (the buffer its only handle), where it lies in memory this
    /// harness wrote before. See the module documentation.
    fn check_fresh(&mut self, pool: usize, buf: &mut PooledBuf, what: &str) {
        let setup = self.pools[pool].setup;
        if !setup.zero_on_release {
            return;
        }
        self.sync_written();
        let start = buf.as_ptr() as usize;
        let (from, to) = (start + buf.len(), start + buf.capacity());
        // The parts of the spare capacity that were written before, merged.
        let mut parts: Vec<(usize, usize)> = self
            .written
            .iter()
            .map(|&(w, n)| (from.max(w), to.min(w + n)))
            .filter(|&(a, b)| a < b)
            .collect();
        parts.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (a, b) in parts {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let ok = |v: u8| v == 0 || (setup.poison && v == 0xA5);
        let spare = buf.spare_capacity_mut();
        for (a, b) in merged {
            // SAFETY (test only): `[a, b)` lies in the buffer's spare capacity and in ranges
            // this harness wrote earlier into the same memory (no system allocation since,
            // see `sync_written`), so every byte of it is initialised; the buffer owns it.
            let bytes: &[u8] = unsafe {
                std::slice::from_raw_parts(spare.as_ptr().add(a - from).cast::<u8>(), b - a)
            };
            // Whole blocks of zeros (or of poison) first, compared as slices; byte by byte
            // only where a block holds anything else.
            const BLOCK: usize = 4096;
            let zeros = [0u8; BLOCK];
            let poison = [0xA5u8; BLOCK];
            for (k, block) in bytes.chunks(BLOCK).enumerate() {
                let n = block.len();
                if block == &zeros[..n] || (setup.poison && block == &poison[..n]) {
                    continue;
                }
                let base = a + k * BLOCK;
                let byte = |addr: usize| block[addr - base];
                let mut addr = base;
                while addr < base + n {
                    // Segments start at 16-byte aligned addresses (every class size is a
                    // multiple of 16, chunks are at least 64-byte aligned), and a free
                    // segment's first 4 bytes may hold a free-list link (an index below 2^16,
                    // or `u32::MAX`), also where an earlier format of the chunk had a
                    // segment. Four bytes of data never read as such a word (they would have
                    // to hold two zeros, or 0xff, which no pattern has).
                    let word = addr & !15;
                    if word + 4 > addr {
                        if word >= base && word + 4 <= base + n {
                            let w = [byte(word), byte(word + 1), byte(word + 2), byte(word + 3)];
                            let v = u32::from_le_bytes(w);
                            assert!(
                                w.iter().all(|&x| ok(x)) || v < 1 << 16 || v == u32::MAX,
                                "{what}: zero_on_release, but bytes {}..{} of a fresh {}-byte \
                                 region at {start:#x} hold {w:02x?}, released data",
                                word - start,
                                word - start + 4,
                                to - start
                            );
                        }
                        // A word only partly read here is skipped (its other bytes may be a
                        // link's, or not written before).
                        addr = word + 4;
                        continue;
                    }
                    let v = byte(addr);
                    assert!(
                        ok(v),
                        "{what}: zero_on_release, but byte {} of a fresh {}-byte region at \
                         {start:#x} is {v:#04x}, released data",
                        addr - start,
                        to - start
                    );
                    addr += 1;
                }
            }
        }
    }

    // --- operations ------------------------------------------------------------------------

    /// Applies one operation, then checks the model.
    pub fn apply(&mut self, op: &Op) {
        self.touched.clear();
        self.apply_fired();
        match op {
            &Op::Allocate(p, raw) => {
                self.allocate_here(p as usize % 2, decode_size(raw));
            }
            &Op::Write(i) => {
                if let Some(i) = self.pick(i) {
                    let seed = self.fresh_seed();
                    if let Handle::Buf(buf) = &mut self.live[i].handle {
                        let written = Self::write(buf, seed);
                        self.live[i].meta.seed = seed;
                        self.live[i].meta.start = 0;
                        self.touched.push(i);
                        self.note_written(written.0, written.1);
                    }
                }
            }
            &Op::Reserve(i, add) => {
                if let Some(i) = self.pick(i) {
                    // The handle is moved out for the call (an empty `Bytes`, which
                    // allocates nothing, stands in) and put back.
                    let mut meta = self.live[i].meta;
                    let mut h =
                        std::mem::replace(&mut self.live[i].handle, Handle::Frozen(Bytes::new()));
                    if let Handle::Buf(buf) = &mut h {
                        self.reserve(buf, &mut meta, add as usize);
                        self.touched.push(i);
                    }
                    self.live[i].handle = h;
                    self.live[i].meta = meta;
                }
            }
            &Op::SplitTo(i, at) => {
                if let Some(i) = self.pick(i) {
                    self.split(i, at as usize, true);
                }
            }
            &Op::SplitOff(i, at) => {
                if let Some(i) = self.pick(i) {
                    self.split(i, at as usize, false);
                }
            }
            &Op::Freeze(i) => {
                if let Some(i) = self.pick(i) {
                    let l = &mut self.live[i];
                    let h = std::mem::replace(&mut l.handle, Handle::Frozen(Bytes::new()));
                    l.handle = Handle::Frozen(Self::freeze(h));
                    self.touched.push(i);
                }
            }
            &Op::Clone(i) => {
                if let Some(i) = self.pick(i) {
                    self.clone_handle(i);
                }
            }
            &Op::Drop(i) => {
                if let Some(i) = self.pick(i) {
                    drop(self.take(i));
                }
            }
            &Op::DropRemote(i) => {
                if let Some(i) = self.pick(i) {
                    let h = self.take(i);
                    self.remote.run(move || drop(h));
                }
            }
            &Op::DropOnWorker(i) => {
                if let Some(i) = self.pick(i) {
                    let h = self.take(i);
                    self.worker().run(move || drop(h));
                }
            }
            &Op::Trim(p, who) => self.trim(p as usize % 2, who),
            &Op::TrimThread(p, on_worker) => self.trim_thread(p as usize % 2, on_worker),
            Op::AllocateWith {
                pool,
                raw,
                steps,
                end,
            } => self.allocate_with(*pool as usize % 2, decode_size(*raw), steps, *end),
            &Op::DropAllocator(p, remote) => self.drop_allocator(p as usize % 2, remote),
            Op::HandOff { pool, raws, exit } => self.hand_off(*pool as usize % 2, raws, *exit),
            Op::WorkerExit => self.worker_exit(),
            &Op::Wait { pool, need, action } => self.wait(pool as usize % 2, need, action),
        }
        self.check(&format!("after {op:?}"));
    }

    /// Writes a fresh pattern over a buffer's whole capacity; answers the range written.
    fn write(buf: &mut PooledBuf, seed: u8) -> (usize, usize) {
        buf.clear();
        let cap = buf.capacity();
        put_pattern(buf, seed, cap);
        assert_eq!(buf.capacity(), cap, "writing within capacity moved");
        assert_eq!(buf.len(), cap);
        (buf.as_ptr() as usize, cap)
    }

    fn freeze(h: Handle) -> Bytes {
        match h {
            Handle::Buf(buf) => {
                let (ptr, len) = (buf.as_ptr(), buf.len());
                let frozen = buf.freeze();
                assert_eq!(
                    (frozen.as_ptr(), frozen.len()),
                    (ptr, len),
                    "freeze copied or changed the length"
                );
                frozen
            }
            Handle::Frozen(b) => b,
        }
    }

    /// Allocates `size` bytes from allocator `p` on this thread; `true` if a new handle is
    /// now the last in `live`.
    fn allocate_here(&mut self, p: usize, size: usize) -> bool {
        match self.alloc_region(p, size) {
            Some((buf, meta)) => {
                self.push_evicting(Handle::Buf(buf), meta);
                true
            }
            None => false,
        }
    }

    /// Allocates `size` bytes from allocator `p` on this thread: the new buffer, in the model
    /// but not among the live handles.
    fn alloc_region(&mut self, p: usize, size: usize) -> Option<(PooledBuf, Meta)> {
        let h = self.pools[p].handle()?;
        let closed = self.pools[p].closed();
        let before = self.observe(p).expect("observable");
        let mark = self.mark();
        let r = h.try_allocate(size);
        drop(h);
        if !closed && size <= self.pools[p].setup.max_pooled() {
            self.pools[p].here.raise(Mag::Yes);
        }
        self.take_allocation(p, size, r, &before, mark)
    }

    /// Checks the outcome of a request for `size` bytes from allocator `p` (`before`: the
    /// stats before it, `mark` taken just after them; every buffer live when it was made is in
    /// the model); a new buffer is filled with a fresh pattern and its region recorded.
    fn take_allocation(
        &mut self,
        p: usize,
        size: usize,
        r: Result<PooledBuf, AllocError>,
        before: &Stats,
        mark: Mark,
    ) -> Option<(PooledBuf, Meta)> {
        let setup = self.pools[p].setup;
        let closed = self.pools[p].closed();
        match r {
            Ok(mut buf) => {
                assert!(size <= MAX_ALLOC, "{size} bytes allocated");
                assert!(buf.capacity() >= size, "capacity below the request");
                assert!(buf.is_empty(), "a new buffer is not empty");
                if closed {
                    self.check_unpooled_after_close(p, before, mark, "an allocation");
                }
                self.check_fresh(p, &mut buf, "a new buffer");
                let seed = self.fresh_seed();
                let cap = buf.capacity();
                put_pattern(&mut buf, seed, size);
                assert_eq!(buf.capacity(), cap, "writing within capacity moved");
                self.note_written(buf.as_ptr() as usize, size);
                let region = self.new_region_at(p, buf.as_ptr() as usize, cap);
                Some((
                    buf,
                    Meta {
                        seed,
                        start: 0,
                        region,
                    },
                ))
            }
            Err(AllocError::CapacityOverflow { requested }) => {
                assert_eq!(requested, size);
                assert!(
                    size > isize::MAX as usize - OVERFLOW_MARGIN,
                    "CapacityOverflow for {size} bytes"
                );
                None
            }
            Err(AllocError::MemoryLimit { limit, .. }) => {
                assert!(size <= MAX_ALLOC, "{size} bytes: expected CapacityOverflow");
                assert_eq!(limit, setup.max_memory, "the error names another limit");
                // With nothing live, every byte held is idle and must be given back to make
                // room (from every thread's magazine and the cache): a request that fits the
                // limit on its own must succeed. Unless a waker's action ran meanwhile (it
                // may take memory between the reclaim and the retry).
                let pooled = size <= setup.max_pooled();
                let unpooled_bytes = (size.max(32) + 15) & !15;
                assert!(
                    self.pools[p].live_regions != 0
                        || !(pooled || unpooled_bytes <= limit)
                        || !self.quiet_since(mark),
                    "MemoryLimit for {size} bytes with nothing live: {before} -> {:?}",
                    self.pools[p].stats()
                );
                None
            }
            Err(e) => panic!("unexpected error for {size} bytes: {e}"),
        }
    }

    /// After a closed allocator served one request (allocation, growth, clone): it was
    /// unpooled, one unpooled allocation and no chunk (besides those of wakers' actions since
    /// `mark`, each one unpooled allocation too).
    fn check_unpooled_after_close(&self, p: usize, before: &Stats, mark: Mark, what: &str) {
        let s = self.pools[p].stats().expect("the allocator is observable");
        let by_wakers = self.wakes.allocs[p].load(SeqCst) - mark.allocs[p];
        assert_eq!(
            s.unpooled_allocations,
            before.unpooled_allocations + 1 + by_wakers,
            "{what} through a closed allocator was not served unpooled ({by_wakers} more by \
             wakers): {before} -> {s}"
        );
        assert_eq!(
            s.chunk_allocations, before.chunk_allocations,
            "{what} through a closed allocator created a chunk: {before} -> {s}"
        );
    }

    /// `try_reserve(add)` on a buffer whose model is `meta` (a live handle's, or the buffer
    /// being initialised).
    fn reserve(&mut self, buf: &mut PooledBuf, meta: &mut Meta, add: usize) {
        let r = self.regions[meta.region].expect("live region");
        let p = r.pool;
        let closed = self.pools[p].closed();
        let before = self
            .observe(p)
            .expect("a live buffer's allocator is observable");
        let mark = self.mark();
        let (ptr, len, cap) = (buf.as_ptr(), buf.len(), buf.capacity());
        match buf.try_reserve(add) {
            Ok(()) => {
                assert_eq!(buf.len(), len, "reserve changed the length");
                assert!(buf.capacity() - len >= add, "reserve made too little room");
                let q = buf.as_ptr() as usize;
                // A zero-capacity handle may point just past its region (the start of a
                // neighbour's); only a pointer that changed and left the region means a move.
                if q != ptr as usize && !(r.base..r.base + r.cap.max(1)).contains(&q) {
                    // Moved to a new region: the buffer is its only handle.
                    if !closed {
                        self.pools[p].here.raise(Mag::Maybe);
                    } else {
                        self.check_unpooled_after_close(p, &before, mark, "a growth");
                    }
                    self.check_fresh(p, buf, "a grown buffer");
                    self.note_written(q, len);
                    self.release_handle(meta.region);
                    meta.region = self.new_region_at(p, q, buf.capacity());
                } else if q + buf.capacity() > r.base + r.cap {
                    // Grown in place past its region: a large buffer's mapping resized by the
                    // kernel (`mremap`), its region growing with it. Only a region's one
                    // handle may do that, and the larger region overlaps no other.
                    assert_eq!(r.handles, 1, "a shared region grew in place");
                    let new_cap = q + buf.capacity() - r.base;
                    for (i, o) in self.regions.iter().enumerate() {
                        let Some(o) = o else { continue };
                        if i == meta.region || o.cap == 0 {
                            continue;
                        }
                        assert!(
                            r.base + new_cap <= o.base || o.base + o.cap <= r.base,
                            "a region grown in place [{:#x}, +{new_cap}) overlaps a live one \
                             [{:#x}, +{}]",
                            r.base,
                            o.base,
                            o.cap
                        );
                    }
                    self.pools[p].live_bytes += new_cap - r.cap;
                    self.regions[meta.region].as_mut().expect("live region").cap = new_cap;
                }
            }
            Err(AllocError::MemoryLimit { .. }) => {
                assert_eq!(
                    (buf.as_ptr(), buf.len(), buf.capacity()),
                    (ptr, len, cap),
                    "a failed reserve changed the buffer"
                );
                if !closed {
                    self.pools[p].here.raise(Mag::Maybe);
                }
            }
            Err(e) => panic!("unexpected error growing by {add}: {e}"),
        }
    }

    /// Splits a piece off a buffer (model `meta`): `split_to(at % (len + 1))` if `to`, else
    /// `split_off(at % (capacity + 1))`. Answers the piece and its pattern start; the caller
    /// adds the piece's handle to the region.
    fn split_buf(buf: &mut PooledBuf, meta: &mut Meta, at: usize, to: bool) -> (PooledBuf, usize) {
        let start = meta.start;
        let (len, cap) = (buf.len(), buf.capacity());
        if to {
            let at = at % (len + 1);
            let front = buf.split_to(at);
            assert_eq!((front.len(), front.capacity()), (at, at));
            assert_eq!((buf.len(), buf.capacity()), (len - at, cap - at));
            meta.start = start + at;
            (front, start)
        } else {
            let at = at % (cap + 1);
            let back = buf.split_off(at);
            assert_eq!(back.len(), len.saturating_sub(at));
            assert_eq!(back.capacity(), cap - at);
            assert_eq!((buf.len(), buf.capacity()), (len.min(at), at));
            (back, start + at)
        }
    }

    /// The same for a frozen handle, strictly inside only (`Bytes` returns an empty handle
    /// that keeps no region when split at either end); `None` if it is too short.
    fn split_frozen(b: &mut Bytes, meta: &mut Meta, at: usize, to: bool) -> Option<(Bytes, usize)> {
        let start = meta.start;
        let len = b.len();
        if len < 2 {
            return None;
        }
        let at = 1 + at % (len - 1);
        Some(if to {
            let front = b.split_to(at);
            meta.start = start + at;
            (front, start)
        } else {
            (b.split_off(at), start + at)
        })
    }

    fn split(&mut self, i: usize, at: usize, to: bool) {
        if self.live.len() >= MAX_LIVE {
            return;
        }
        let mut meta = self.live[i].meta;
        let piece = match &mut self.live[i].handle {
            Handle::Buf(buf) => {
                let (piece, start) = Self::split_buf(buf, &mut meta, at, to);
                Some((Handle::Buf(piece), start))
            }
            Handle::Frozen(b) => Self::split_frozen(b, &mut meta, at, to)
                .map(|(piece, start)| (Handle::Frozen(piece), start)),
        };
        self.live[i].meta = meta;
        self.touched.push(i);
        if let Some((piece, start)) = piece {
            self.add_handle(meta.region);
            let pmeta = Meta { start, ..meta };
            assert!(self.push(piece, pmeta).is_ok());
        }
    }

    fn clone_handle(&mut self, i: usize) {
        if self.live.len() >= MAX_LIVE {
            return;
        }
        let meta = self.live[i].meta;
        let p = self.regions[meta.region].expect("live region").pool;
        match &self.live[i].handle {
            Handle::Frozen(b) => {
                let copy = b.clone();
                assert_eq!(copy.as_ptr(), b.as_ptr(), "a Bytes clone copied");
                self.add_handle(meta.region);
                assert!(self.push(Handle::Frozen(copy), meta).is_ok());
            }
            Handle::Buf(buf) => {
                // `Clone` panics if the allocation fails: clone only when the copy cannot
                // reach the limit (one new chunk or one unpooled region, page-rounded, at
                // most; and as much for each armed waker that allocates, which may keep a
                // new chunk).
                let setup = self.pools[p].setup;
                let chunk = setup.max_chunk + 4096 + 64;
                let need =
                    buf.len().max(setup.max_chunk) + 4096 + 64 + self.armed_allocs(p) * chunk;
                let s = self.observe(p).expect("observable");
                let mark = self.mark();
                if s.allocated_bytes + need > setup.max_memory {
                    return;
                }
                let Handle::Buf(buf) = &self.live[i].handle else {
                    unreachable!("a buffer");
                };
                let mut copy = buf.clone();
                assert_eq!(&copy[..], &buf[..], "a clone differs");
                if self.pools[p].closed() {
                    self.check_unpooled_after_close(p, &s, mark, "a clone");
                } else {
                    self.pools[p].here.raise(Mag::Maybe);
                }
                // The bytes past the copied ones are fresh.
                self.check_fresh(p, &mut copy, "a clone");
                self.note_written(copy.as_ptr() as usize, copy.len());
                // `new_region_at` checks that the copy's region overlaps no live region.
                let region = self.new_region_at(p, copy.as_ptr() as usize, copy.capacity());
                let cmeta = Meta {
                    seed: meta.seed,
                    start: meta.start,
                    region,
                };
                assert!(self.push(Handle::Buf(copy), cmeta).is_ok());
            }
        }
    }

    /// `trim()` on allocator `p`, from thread `who`. Its answer and what it leaves are checked
    /// unless a waker's action ran meanwhile (it may allocate, drop, reclaim or trim too).
    fn trim(&mut self, p: usize, who: Who) {
        let Some(h) = self.pools[p].handle() else {
            return;
        };
        let before = self.observe(p).expect("observable");
        let mark = self.mark();
        let freed = match who {
            Who::Here => h.trim(),
            Who::Remote => self.remote.run(move || h.trim()),
            Who::Worker => self.worker().run(move || h.trim()),
        };
        let after = self.observe(p).expect("observable");
        if !self.quiet_since(mark) {
            return;
        }
        assert!(
            after.allocated_bytes + freed <= before.allocated_bytes,
            "trim ({who:?}) freed {freed} of {before}, left {after}"
        );
        if self.exact(p) {
            // No idle sweep can run meanwhile (the sweep may free more, never less).
            assert_eq!(
                after.allocated_bytes,
                before.allocated_bytes - freed,
                "trim's ({who:?}) answer disagrees with the stats: {before} -> {after}"
            );
        }
        self.check_trimmed(p, &after, &format!("trim ({who:?})"));
    }

    /// Whether no idle sweep can free anything during an operation on allocator `p`: with the
    /// default `idle_release` (10 s) no case lasts long enough, except under Miri.
    fn exact(&self, p: usize) -> bool {
        self.pools[p].setup.idle_release.is_none() && !cfg!(miri)
    }

    /// After `trim()`: nothing cached, and every chunk holds a live region.
    fn check_trimmed(&self, p: usize, s: &Stats, what: &str) {
        let pool = &self.pools[p];
        assert_eq!(s.cached_bytes, 0, "{what} left cached chunks: {s}");
        assert!(
            s.chunks <= pool.live_regions,
            "{what} left chunks that hold no live region: {s}; model: {} live regions",
            pool.live_regions
        );
        if pool.live_regions == 0 {
            assert_eq!(
                s.allocated_bytes, 0,
                "{what} with nothing live left memory: {s}"
            );
        }
    }

    /// `trim_thread()` on allocator `p`, here or on the worker. Its answer is checked unless a
    /// waker's action ran meanwhile.
    fn trim_thread(&mut self, p: usize, on_worker: bool) {
        let Some(h) = self.pools[p].handle() else {
            return;
        };
        let before = self.observe(p).expect("observable");
        let mark = self.mark();
        let handed = if on_worker {
            self.worker().run(move || h.trim_thread())
        } else {
            h.trim_thread()
        };
        let after = self.observe(p).expect("observable");
        if !self.quiet_since(mark) {
            return;
        }
        // What was handed back went to the cache or to the system.
        let moved = (before.allocated_bytes - after.allocated_bytes) as isize
            + (after.cached_bytes as isize - before.cached_bytes as isize);
        if self.exact(p) {
            assert_eq!(
                moved, handed as isize,
                "trim_thread's answer disagrees with the stats: {before} -> {after}"
            );
        } else {
            // The idle sweep may free more meanwhile (other magazines' expired chunks).
            assert!(
                moved >= handed as isize,
                "trim_thread's answer disagrees with the stats: {before} -> {after}"
            );
        }
    }

    /// Drops allocator `p`'s last handle (here or on the remote thread), keeping one more
    /// buffer, the watch, to observe it. Armed waiters stay armed (none holds a handle):
    /// their wakers may run while it closes.
    fn drop_allocator(&mut self, p: usize, remote: bool) {
        let Some(h) = self.pools[p].handle.clone() else {
            return;
        };
        let before = self.observe(p).expect("open");
        let mark = self.mark();
        match h.try_allocate(0) {
            Ok(mut w) => {
                self.pools[p].here.raise(Mag::Yes);
                self.check_fresh(p, &mut w, "the watch buffer");
                let region = self.new_region_at(p, w.as_ptr() as usize, w.capacity());
                self.pools[p].watch = Some((w, region));
            }
            Err(e) => {
                // No room for even that: keep the allocator open.
                assert!(
                    matches!(e, AllocError::MemoryLimit { .. })
                        && (self.pools[p].live_regions > 0 || !self.quiet_since(mark)),
                    "a buffer of 0 bytes refused: {e}; {before}"
                );
                self.pools[p].here.raise(Mag::Yes);
                return;
            }
        }
        // What the wakers did while it was open, applied while the model says so; from here
        // on its requests make no magazine.
        self.apply_fired();
        self.pools[p].handle = None;
        if remote {
            self.remote.run(move || drop(h));
        } else {
            drop(h);
        }
        let pool = &mut self.pools[p];
        pool.here = Mag::No;
        pool.worker = Mag::No;
        let s = self.observe(p).expect("the watch lives");
        self.pools[p].chunks_at_close = s.chunk_allocations;
    }

    /// The worker allocates a buffer for each of `raws` from allocator `p`, hands them back,
    /// and exits if `exit`.
    fn hand_off(&mut self, p: usize, raws: &[u32], exit: bool) {
        if self.pools[p].closed() {
            return;
        }
        let h = self.pools[p].handle().expect("open");
        let sizes: Vec<usize> = raws
            .iter()
            .take(MAX_BATCH)
            .map(|&r| decode_size(r))
            .collect();
        let before = self.observe(p).expect("open");
        let mark = self.mark();
        let asked = sizes.clone();
        let got: Vec<Result<PooledBuf, AllocError>> = self
            .worker()
            .run(move || asked.iter().map(|&n| h.try_allocate(n)).collect());
        let max_pooled = self.pools[p].setup.max_pooled();
        if sizes.iter().any(|&n| n <= max_pooled) {
            self.pools[p].worker.raise(Mag::Yes);
        }
        if exit {
            self.worker_exit();
        }
        // All of them are recorded before any is added to `live` (which may drop the oldest
        // handle): each was requested while the ones before it lived.
        let mut taken = Vec::new();
        for (size, r) in sizes.into_iter().zip(got) {
            taken.extend(self.take_allocation(p, size, r, &before, mark));
        }
        for (buf, meta) in taken {
            self.push_evicting(Handle::Buf(buf), meta);
        }
    }

    /// `allocate_with(size, init)` on allocator `p`, `init` running `steps` and ending as
    /// `end` says.
    fn allocate_with(&mut self, p: usize, size: usize, steps: &[InitStep], end: InitEnd) {
        let Some(h) = self.pools[p].handle() else {
            return;
        };
        let closed = self.pools[p].closed();
        let before = self.observe(p).expect("observable");
        let mark = self.mark();
        // An initialiser that only writes, grows, splits off and drops, and allocates and
        // drops through the same allocator must leave no more memory held when rolled back.
        let pure = steps.iter().all(|s| match s {
            InitStep::Fill | InitStep::Grow(_) => true,
            InitStep::Split { keep, .. } => !keep,
            InitStep::Alloc { pool, keep, .. } => !keep && *pool as usize % 2 == p,
            _ => false,
        });
        if !closed && size <= self.pools[p].setup.max_pooled() {
            // The request makes the magazine (before `init` runs and the model is checked).
            self.pools[p].here.raise(Mag::Yes);
        }
        let mut ran = false;
        let r = {
            let me = &mut *self;
            let ran = &mut ran;
            panic::catch_unwind(AssertUnwindSafe(|| {
                h.allocate_with(size, |buf| {
                    *ran = true;
                    me.init_run(p, size, closed, &before, mark, buf, steps);
                    match end {
                        InitEnd::Ok => Ok(()),
                        InitEnd::Err => Err(InitFailed),
                        InitEnd::Panic => panic::panic_any(InitPanic),
                    }
                })
            }))
        };
        drop(h);
        let rolled_back = match r {
            Ok(Ok(buf)) => {
                assert_eq!(end, InitEnd::Ok, "allocate_with succeeded");
                let meta = self.init.take().expect("init ran");
                self.push_evicting(Handle::Buf(buf), meta);
                false
            }
            Ok(Err(InitError::Init(InitFailed))) => {
                assert_eq!(end, InitEnd::Err, "allocate_with failed");
                true
            }
            Ok(Err(InitError::Alloc(e))) => {
                assert!(!ran, "allocate_with answered Alloc({e}) after running init");
                assert!(self
                    .take_allocation(p, size, Err(e), &before, mark)
                    .is_none());
                false
            }
            Err(payload) => {
                if !payload.is::<InitPanic>() {
                    // A failed check inside the initialiser: report it.
                    panic::resume_unwind(payload);
                }
                assert_eq!(end, InitEnd::Panic, "allocate_with panicked");
                true
            }
        };
        if rolled_back {
            // The buffer has been returned (its other handles, kept split pieces, still live).
            let meta = self.init.take().expect("init ran");
            self.release_handle(meta.region);
            let after = self.observe(p).expect("observable");
            if pure && !closed && self.quiet_since(mark) {
                // Outside the cache: a chunk that `init` emptied may have been retired to the
                // cache by the per-thread idle budget before the rollback looked for it (with
                // `max_thread_idle_bytes(0)` every chunk that empties is); it stays cached.
                // (A waker's action may have allocated meanwhile.)
                let held = |s: &Stats| s.allocated_bytes - s.cached_bytes;
                assert!(
                    held(&after) <= held(&before),
                    "allocate_with rolled back ({end:?}, steps {steps:?}) but holds more \
                     outside the cache: {before} -> {after}"
                );
            }
        }
    }

    /// The initialiser: the buffer enters the model as the one being initialised, then runs
    /// `steps`, checking the model after each.
    #[allow(clippy::too_many_arguments)]
    fn init_run(
        &mut self,
        p: usize,
        size: usize,
        closed: bool,
        before: &Stats,
        mark: Mark,
        buf: &mut PooledBuf,
        steps: &[InitStep],
    ) {
        assert!(
            buf.capacity() >= size && buf.is_empty(),
            "allocate_with's buffer"
        );
        if closed {
            self.check_unpooled_after_close(p, before, mark, "allocate_with");
        }
        self.check_fresh(p, buf, "allocate_with's buffer");
        let seed = self.fresh_seed();
        put_pattern(buf, seed, size);
        self.note_written(buf.as_ptr() as usize, size);
        let region = self.new_region_at(p, buf.as_ptr() as usize, buf.capacity());
        self.init = Some(Meta {
            seed,
            start: 0,
            region,
        });
        self.check_init(buf, "in init, after allocation");
        for step in steps.iter().take(MAX_STEPS) {
            self.touched.clear();
            self.init_step(buf, step);
            self.check_init(buf, &format!("in init, after {step:?}"));
        }
    }

    fn init_step(&mut self, buf: &mut PooledBuf, step: &InitStep) {
        let mut meta = self.init.expect("in init");
        match *step {
            InitStep::Fill => {
                let seed = self.fresh_seed();
                let (base, n) = Self::write(buf, seed);
                meta.seed = seed;
                meta.start = 0;
                self.note_written(base, n);
            }
            InitStep::Grow(add) => self.reserve(buf, &mut meta, add as usize),
            InitStep::Split {
                to,
                at,
                keep,
                freeze,
            } => {
                let (piece, start) = Self::split_buf(buf, &mut meta, at as usize, to);
                self.add_handle(meta.region);
                let pmeta = Meta { start, ..meta };
                let piece = if freeze {
                    Handle::Frozen(Self::freeze(Handle::Buf(piece)))
                } else {
                    Handle::Buf(piece)
                };
                if keep {
                    if let Err(piece) = self.push(piece, pmeta) {
                        self.discard(piece, pmeta);
                    }
                } else {
                    self.discard(piece, pmeta);
                }
            }
            InitStep::Alloc { pool, raw, keep } => {
                if self.allocate_here(pool as usize % 2, decode_size(raw)) && !keep {
                    drop(self.take(self.live.len() - 1));
                }
            }
            InitStep::Trim { pool, who } => self.trim(pool as usize % 2, who),
            InitStep::TrimThread { pool, worker } => self.trim_thread(pool as usize % 2, worker),
            InitStep::Drop(i) => {
                if let Some(i) = self.pick(i) {
                    drop(self.take(i));
                }
            }
        }
        self.init = Some(meta);
    }

    fn check_init(&mut self, buf: &PooledBuf, what: &str) {
        let meta = self.init.expect("in init");
        Self::check_bytes(buf, meta, true, what);
        self.check(what);
    }

    // --- checks ----------------------------------------------------------------------------

    /// Checks every live handle and each allocator's stats against the model (with what the
    /// wakers did up to the stats applied to it first).
    pub fn check(&mut self, what: &str) {
        for i in 0..self.live.len() {
            let full = self.depth == Depth::Full || self.touched.contains(&i);
            self.check_handle(i, full, what);
        }
        for p in 0..self.pools.len() {
            let Some(s) = self.observe(p) else { continue };
            let pool = &self.pools[p];
            let ctx = || {
                format!(
                    "{what}, allocator {p} ({}): {s}; model: {} regions of {} B, magazines \
                     here {:?}, worker {:?}",
                    if pool.closed() { "closed" } else { "open" },
                    pool.live_regions,
                    pool.live_bytes,
                    pool.here,
                    pool.worker
                )
            };
            assert_eq!(s.live_buffers, pool.live_regions, "live_buffers, {}", ctx());
            assert_eq!(s.live_bytes, pool.live_bytes, "live_bytes, {}", ctx());
            assert!(
                s.allocated_bytes <= pool.setup.max_memory,
                "over max_memory, {}",
                ctx()
            );
            assert!(
                s.cached_bytes <= pool.setup.max_cached,
                "over max_cached_bytes, {}",
                ctx()
            );
            assert!(
                s.cached_bytes <= s.allocated_bytes,
                "cache larger than held, {}",
                ctx()
            );
            assert!(
                s.live_bytes <= s.allocated_bytes,
                "live larger than held, {}",
                ctx()
            );
            assert!(
                s.pinned_bytes <= s.live_bytes,
                "pinned bytes are bytes of live regions, {}",
                ctx()
            );
            assert_eq!(
                s.chunk_allocations - s.chunk_releases,
                s.chunks as u64,
                "chunk counters disagree, {}",
                ctx()
            );
            let sure = (pool.here == Mag::Yes) as usize + (pool.worker == Mag::Yes) as usize;
            let maybe = (pool.here != Mag::No) as usize + (pool.worker != Mag::No) as usize;
            assert!(
                (sure..=maybe).contains(&s.magazines),
                "magazines, {}",
                ctx()
            );
            if pool.closed() {
                assert_eq!(s.cached_bytes, 0, "a closed allocator caches, {}", ctx());
                assert_eq!(
                    s.chunk_allocations,
                    pool.chunks_at_close,
                    "a closed allocator created chunks, {}",
                    ctx()
                );
                assert!(
                    s.chunks <= pool.live_regions,
                    "a closed allocator holds chunks without live regions, {}",
                    ctx()
                );
            }
        }
    }

    /// Disarms the waiters and drops every handle (alternately here and on the remote
    /// thread); then the first allocator, if open, must be quiet and `trim()` must give back
    /// every byte, the second, if open, is closed; a closed allocator must hold nothing once
    /// its last buffer drops.
    pub fn finish(mut self) {
        self.disarm_all();
        let mut k = 0;
        while !self.live.is_empty() {
            let h = self.take(self.live.len() - 1);
            if k % 2 == 0 {
                drop(h);
            } else {
                self.remote.run(move || drop(h));
            }
            k += 1;
        }
        self.touched.clear();
        self.check("after dropping everything");
        if !self.pools[0].closed() {
            let h = self.pools[0].handle().expect("open");
            let s = h.stats();
            assert!(s.is_quiet(), "everything dropped but not quiet: {s}");
            assert_eq!(
                s.pinned_bytes, 0,
                "everything dropped, pinned bytes left (the figure drifted): {s}"
            );
            h.trim();
            let s = h.stats();
            assert_eq!(
                s.allocated_bytes, 0,
                "trim() after dropping everything left memory: {s}"
            );
            assert_eq!(
                (s.cached_bytes, s.chunks),
                (0, 0),
                "trim() left chunks: {s}"
            );
        }
        if !self.pools[1].closed() {
            self.drop_allocator(1, false);
            self.check("after closing the second allocator");
        }
        for p in 0..2 {
            if let Some((w, region)) = self.pools[p].watch.take() {
                let h = w.allocator();
                drop(w);
                self.release_handle(region);
                let s = h.stats();
                assert!(
                    s.is_quiet() && s.pinned_bytes == 0,
                    "a closed allocator's buffers dropped, not quiet: {s}"
                );
                assert_eq!(
                    (s.allocated_bytes, s.cached_bytes, s.chunks, s.magazines),
                    (0, 0, 0, 0),
                    "a closed allocator whose last buffer dropped holds memory: {s}"
                );
            }
        }
        self.worker_exit();
        let mapped = self.mapped_at_start;
        let Harness { pools, remote, .. } = self;
        remote.exit();
        drop(pools);
        if let Some(at_start) = mapped {
            assert_eq!(
                adaptive_pool::mapped_bytes(),
                at_start,
                "memory still mapped once every allocator is gone"
            );
        }
    }
}
