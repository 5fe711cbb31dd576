//! loom models of the concurrent protocols, run through the real code via the `sync` facade:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --test loom
//! ```
//!
//! Under `cfg(loom)` every atomic, cell, lock and thread-local of the core is loom's, the
//! central queue is a capacity-checked `Mutex<VecDeque>` (loom cannot see inside crossbeam's
//! queue), and chunk memory comes from `loom::alloc`, so every execution also fails on a chunk
//! leaked or freed twice (that is how "exactly once" is checked where no counter can say it).
//! loom drops a model thread's thread-locals (its magazines) when the thread ends, which is
//! how thread-exit hand-back is modelled.
//!
//! The models, one per protocol of the verification issue:
//! 1. the last release of a chunk recycles it exactly once while its magazine gives it up
//!    (the allocator closes);
//! 2. concurrent offers to the central queue never exceed the byte budget and lose no chunk;
//! 3. a remote free racing the owner's drain of returned space;
//! 4. a thread exiting while another thread drops one of its buffers;
//! 5. `trim()` racing an allocation;
//! 6. a frozen `Bytes` and its clone dropped on two threads;
//!
//! and 7. the two handles of a split region dropped on two threads (the share count).
//!
//! The reclaim protocol of the memory issue (the magazine gate, the roster) and the review's
//! races: 8. `trim()` racing the owner's allocate and free; 9. `trim()` racing a remote free
//! into the same chunk; 10. `trim()` racing thread exit; 11. `trim()` racing an
//! `allocate_with` whose `init` allocates (review finding 1); 12. the close racing the idle
//! sweep (finding 2); 13. the idle sweep racing allocation; 14. the close racing the owner's
//! local frees (the re-check inside the gate); 15. one `trim()` claiming two owners at once;
//! and of the speed issue: 16. a consumer thread's release shard folded while snapshots run.
//!
//! Back-pressure (issue 13): 17. a task waiting in `ready()` registers while another thread
//! releases the memory it waits for (the waiter registry's check, register, re-check); 18. the
//! same when the memory comes back as a chunk entering the central cache.
//!
//! Parked chunks (the speed issue): model 4 now parks (4b abandons, parking off); 19. a
//! thread adopts a parked chunk while another releases its last regions (and the adopter
//! exits, parking it again, while the releases go on); 19b the same without a central cache
//! (the emptied chunk goes back to the system).
//!
//! The remote stack's length (the speed issue): 20. two remote releases race each other and
//! the owner's drains, which take the stack with the length the word counts.
//!
//! User code outside the pool's critical sections (issue 21): 21. a waker that re-enters the
//! pool (allocates and drops) from the wake-up point inside a release.
//!
//! Every model runs with a preemption bound of 3 except models 2, 12, 13 and 15, which run at
//! 2 to keep CI within its time: they explore 74,000, 65,000, 117,000 and 378,000 executions
//! at 2 already (2026-12-07, after the wakers' deferral and the decay; model 13 now runs one
//! sweep, which takes a chunk stamped when it emptied, where it ran two; before: 58,000,
//! 412,000 and 187,000 for models 12, 13 and 15) (59,000, 461,000 and 193,000 for models 12, 13 and 15 on main `1d7ea6d`,
//! before back-pressure's `fence(SeqCst)` where a chunk goes back, which loom orders against
//! every other `SeqCst` fence of an execution; model 12 at 3: 2.8 million executions in about five minutes, and it passes; run
//! with `LOOM_MAX_PREEMPTIONS=3` to check them deeper). `LOOM_MAX_PREEMPTIONS` overrides the bound of every model. The
//! configurations are tiny (4 KiB chunks of four 1 KiB segments, a cache of one chunk), so the
//! whole run takes about two and a half minutes in release on 2 cores.
//!
//! Without `--cfg loom` the same models are ordinary tests that run once each on real threads;
//! `.ci/run` runs them under Miri over several seeds (`-Zmiri-many-seeds`), where each seed is
//! another schedule and other weak-memory outcomes, inside crossbeam's queue and `bytes` too,
//! which loom cannot see.
//!
//! A loom 0.7 quirk: a thread's result is published to `join` before its thread-locals are
//! dropped, so right after `join` a model cannot assume that thread's magazine is gone. Models
//! that need it gone wait for `stats().magazines` to reach zero, yielding to loom meanwhile.

use adaptive_pool::{AdaptiveAllocator, PooledBuf};
use bytes::BufMut;

#[cfg(loom)]
use loom::{sync::mpsc, thread};
#[cfg(not(loom))]
use std::{sync::mpsc, thread};

/// Chunk size, and the size of the buffers the models allocate: four segments a chunk.
const CHUNK: usize = 4096;
const SEG: usize = 1024;

/// 4 KiB chunks only, a cache of one chunk, poisoning on (a freed segment written before it
/// is reused panics).
fn tiny_pool() -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .min_chunk_size(CHUNK)
        .max_chunk_size(CHUNK)
        .max_cached_bytes(CHUNK)
        .poison(true)
        .build()
        .unwrap()
}

/// Without `--cfg loom`: runs the model once, on real threads.
#[cfg(not(loom))]
fn model<F: Fn()>(_name: &str, _bound: usize, f: F) {
    f()
}

/// Runs a model with `bound` preemptions (`LOOM_MAX_PREEMPTIONS` overrides it for every
/// model), and prints how many executions loom explored (seen with `--nocapture`).
#[cfg(loom)]
fn model<F: Fn() + Sync + Send + 'static>(name: &str, bound: usize, f: F) {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let started = std::time::Instant::now();
    builder.check(move || {
        counted.fetch_add(1, Relaxed);
        f()
    });
    eprintln!(
        "loom model {name}: {} executions, preemption bound {}, {:.1} s",
        runs.load(Relaxed),
        builder.preemption_bound.unwrap(),
        started.elapsed().as_secs_f64()
    );
}

fn filled(pool: &AdaptiveAllocator, byte: u8) -> PooledBuf {
    let mut b = pool.allocate(SEG);
    assert_eq!(b.capacity(), SEG);
    b.put_bytes(byte, SEG);
    b
}

fn check(b: &[u8], byte: u8) {
    assert!(
        b.iter().all(|&x| x == byte),
        "a buffer lost its contents (expected {byte:#04x})"
    );
}

/// An explicit scheduling point. loom's DPOR remembers only the last access to each atomic,
/// so when a thread loads an atomic and then CASes it (every CAS loop here), the CAS is not
/// seen to conflict with another thread's earlier load, and the order "other thread first" is
/// never tried (with nothing else to schedule on, a model can run in one execution). A
/// `yield_now` in the model's main thread right after it starts the other threads lets them
/// run first in loom's first execution; the main thread's later accesses then see their
/// writes as conflicts, and loom goes back to try the other orders.
fn race() {
    thread::yield_now();
}

/// Waits until every magazine of `pool` is gone (see the module doc's quirk).
fn wait_for_magazines(pool: &AdaptiveAllocator) {
    while pool.stats().magazines != 0 {
        thread::yield_now();
    }
}

/// Model 1. The allocator's last handle is dropped on the owner thread (its magazine gives up
/// the chunk, still holding one live region) while another thread releases that region: the
/// owner's abandon and the releaser's count-down race, and exactly one of them recycles the
/// chunk (to the system: the allocator is closed, so nothing may stay cached). An unpooled
/// buffer keeps the allocator's state alive so that the counters can be read afterwards.
#[test]
fn last_release_recycles_once_while_the_magazine_gives_up() {
    model(
        "last_release_recycles_once_while_the_magazine_gives_up",
        3,
        || {
            let pool = tiny_pool();
            let keep = pool.allocate(2 * CHUNK); // unpooled: its own region, no magazine
            let a = filled(&pool, 1);
            let t = thread::spawn(move || {
                check(&a, 1);
                drop(a);
            });
            race();
            drop(pool);
            t.join().unwrap();
            let pool = keep.allocator();
            let s = pool.stats();
            assert_eq!(
                (s.chunk_allocations, s.chunk_releases, s.chunks),
                (1, 1, 0),
                "the chunk was not recycled exactly once: {s}"
            );
            assert_eq!(s.cached_bytes, 0, "a closed allocator kept a chunk: {s}");
            assert_eq!((s.live_buffers, s.live_bytes), (1, keep.capacity()), "{s}");
        },
    );
}

/// Model 2. Two threads each give a chunk back when they exit, into a queue whose budget holds
/// one; a third looks at the counters meanwhile. The budget is never exceeded at any instant,
/// and once both magazines are gone no chunk is lost: what is held is exactly what is cached,
/// and loom's leak check sees every chunk freed at the end.
#[test]
fn concurrent_offers_respect_the_byte_budget() {
    model("concurrent_offers_respect_the_byte_budget", 2, || {
        let pool = tiny_pool();
        let workers: Vec<_> = (0..2u8)
            .map(|i| {
                let p = pool.clone();
                thread::spawn(move || {
                    let b = filled(&p, i);
                    check(&b, i);
                })
            })
            .collect();
        race();
        let s = pool.stats();
        assert!(s.cached_bytes <= CHUNK, "over the cache budget: {s}");
        for w in workers {
            w.join().unwrap();
        }
        wait_for_magazines(&pool);
        let s = pool.stats();
        assert!(s.cached_bytes <= CHUNK, "over the cache budget: {s}");
        assert_eq!(s.allocated_bytes, s.cached_bytes, "a chunk was lost: {s}");
        assert_eq!(s.chunks * CHUNK, s.cached_bytes, "a chunk was lost: {s}");
        assert_eq!(
            s.chunk_allocations - s.chunk_releases,
            s.chunks as u64,
            "{s}"
        );
        assert!(s.is_quiet(), "{s}");
    });
}

/// Model 3. The owner fills its chunk, then allocates again while another thread releases one
/// of the chunk's regions: the remote push and the owner's drain (in `carve`, then in the slow
/// path) race. Nothing is lost or handed out twice: all live buffers keep their contents, the
/// counters are exact, and at most two chunks exist.
#[test]
fn remote_free_races_owner_drain() {
    model("remote_free_races_owner_drain", 3, || {
        let pool = tiny_pool();
        let a = filled(&pool, 1);
        let b = filled(&pool, 2);
        let c = filled(&pool, 3);
        let d = filled(&pool, 4);
        let t = thread::spawn(move || {
            check(&a, 1);
            drop(a);
        });
        race();
        let e = filled(&pool, 5); // carve drains the remote free, or takes a new chunk
        t.join().unwrap();
        let f = filled(&pool, 6);
        for (buf, byte) in [(&b, 2), (&c, 3), (&d, 4), (&e, 5), (&f, 6)] {
            check(buf, byte);
        }
        let s = pool.stats();
        assert_eq!((s.live_buffers, s.live_bytes), (5, 5 * SEG), "{s}");
        assert!(s.chunks <= 2, "{s}");
        drop((b, c, d, e, f));
        assert!(pool.stats().is_quiet());
    });
}

/// Model 4. A thread exits (its magazine parks its chunk, which holds a live region) while
/// another thread holds one of its buffers and drops it: the release lands before the
/// parking (on the remote stack, which the parking drains) or after it (the parked count
/// reaches zero); either way the chunk is recycled exactly once (loom's allocation tracking
/// fails the execution on a leak or a double free), and once the magazine is gone the chunk
/// is cached or freed, not lost or left parked. Model 4b is the same with parking off (the
/// chunk is abandoned).
#[test]
fn thread_exit_races_remote_drop() {
    model("thread_exit_races_remote_drop", 3, || {
        thread_exit_races_remote_drop_in(tiny_pool())
    });
}

/// Model 4b: model 4 with parking off.
#[test]
fn thread_exit_races_remote_drop_abandoning() {
    model("thread_exit_races_remote_drop_abandoning", 3, || {
        thread_exit_races_remote_drop_in(
            AdaptiveAllocator::builder()
                .min_chunk_size(CHUNK)
                .max_chunk_size(CHUNK)
                .max_cached_bytes(CHUNK)
                .poison(true)
                .max_parked_chunks(0)
                .build()
                .unwrap(),
        )
    });
}

fn thread_exit_races_remote_drop_in(pool: AdaptiveAllocator) {
    let (tx, rx) = mpsc::channel();
    let p = pool.clone();
    let owner = thread::spawn(move || {
        let keep = filled(&p, 1);
        let give = filled(&p, 2);
        tx.send(give).unwrap();
        check(&keep, 1);
    });
    let dropper = thread::spawn(move || {
        let b = rx.recv().unwrap();
        check(&b, 2);
    });
    race();
    owner.join().unwrap();
    dropper.join().unwrap();
    wait_for_magazines(&pool);
    let s = pool.stats();
    assert!(s.is_quiet(), "{s}");
    assert_eq!(s.parked_chunks, 0, "an emptied chunk stayed parked: {s}");
    assert_eq!(s.allocated_bytes, s.cached_bytes, "a chunk was lost: {s}");
    assert_eq!(s.chunks * CHUNK, s.cached_bytes, "{s}");
}

/// Model 5. One thread allocates (its new magazine takes the cached chunk or makes one) while
/// another calls `trim()` (drains the central queue, frees its own idle chunk): the chunk goes
/// to exactly one of them, the new buffer is intact, and afterwards nothing is cached.
#[test]
fn trim_races_allocation() {
    model("trim_races_allocation", 3, || {
        let pool = tiny_pool();
        // Put one chunk in the central queue: fill the first chunk, start a second, and free
        // everything; the second chunk is retired into the queue, the first stays current.
        let bufs: Vec<PooledBuf> = (0..5).map(|i| filled(&pool, i)).collect();
        drop(bufs);
        let s = pool.stats();
        assert_eq!((s.chunks, s.cached_bytes), (2, CHUNK), "setup: {s}");

        let p = pool.clone();
        let t = thread::spawn(move || filled(&p, 9));
        race();
        let freed = pool.trim();
        let b = t.join().unwrap();
        check(&b, 9);
        let s = pool.stats();
        assert!(
            freed == CHUNK || freed == 2 * CHUNK,
            "trim freed {freed}: {s}"
        );
        assert_eq!(s.cached_bytes, 0, "{s}");
        assert_eq!((s.chunks, s.allocated_bytes), (1, CHUNK), "{s}");
        assert_eq!((s.live_buffers, s.live_bytes), (1, SEG), "{s}");
        drop(b);
    });
}

/// Model 6. A frozen `Bytes` and its clone are dropped on two other threads: the last one
/// releases the region (a remote free) exactly once, the allocator is quiet, and the owner's
/// next allocation reuses the region (it drains the remote free).
#[test]
fn frozen_bytes_and_clone_dropped_on_two_threads() {
    model("frozen_bytes_and_clone_dropped_on_two_threads", 3, || {
        let pool = tiny_pool();
        let frozen = filled(&pool, 7).freeze();
        let addr = frozen.as_ptr();
        let clone = frozen.clone();
        let t1 = thread::spawn(move || check(&frozen, 7));
        let t2 = thread::spawn(move || check(&clone, 7));
        race();
        t1.join().unwrap();
        t2.join().unwrap();
        let s = pool.stats();
        assert!(s.is_quiet(), "{s}");
        let again = pool.allocate(SEG);
        assert_eq!(again.as_ptr(), addr, "the released region was not reused");
        assert_eq!(pool.stats().chunks, 1);
    });
}

/// Model 7. The two handles of a split region are dropped on two threads: the share count
/// lets exactly the last one release the region, after the other's accesses.
#[test]
fn split_handles_dropped_on_two_threads() {
    model("split_handles_dropped_on_two_threads", 3, || {
        let pool = tiny_pool();
        let mut back = filled(&pool, 3);
        let front = back.split_to(SEG / 2);
        let t = thread::spawn(move || {
            check(&front, 3);
            drop(front);
        });
        race();
        check(&back, 3);
        drop(back);
        t.join().unwrap();
        let s = pool.stats();
        assert!(s.is_quiet(), "{s}");
        assert_eq!(s.chunks, 1, "{s}");
    });
}

// ---------------------------------------------------------------------------------------------
// The reclaim protocol (the magazine gate, the roster) and the close handshake: models of the
// memory issue and of the review's findings 1 and 2. In each, a reclaimer (`trim()`, the idle
// sweep or the close) works on another thread's magazine while that thread allocates, frees,
// exits, or another thread frees into the same chunk. loom checks every access to a
// magazine's state (a loom `UnsafeCell`: two threads inside at once fail the execution), the
// chunk memory (leaks and double frees), and the assertions below.

/// A pool whose idle sweep falls due at every reading of loom's logical clock (a millisecond
/// per reading): an `idle_release` of `idle_ms` milliseconds, swept every quarter of it. With
/// 1 ms, a chunk stamped idle at one sweep is taken at the next; with 4 ms, a chunk cached a
/// moment ago is not yet expired.
fn sweeping_pool(idle_ms: u64) -> AdaptiveAllocator {
    AdaptiveAllocator::builder()
        .min_chunk_size(CHUNK)
        .max_chunk_size(CHUNK)
        .max_cached_bytes(CHUNK)
        .idle_release(std::time::Duration::from_millis(idle_ms))
        .poison(true)
        .build()
        .unwrap()
}

/// Model 8. The owner allocates and frees (the Netty loop: its current chunk empties and
/// fills again on the fast path) while another thread calls `trim()`, which claims the
/// owner's magazine and takes its current chunk whenever it is empty. The owner's buffers
/// keep their contents, the counters are exact, and once both are done and the owner has
/// exited, a last `trim()` leaves nothing allocated (loom checks no chunk leaks or is freed
/// twice).
#[test]
fn trim_races_owner_allocate_and_free() {
    model("trim_races_owner_allocate_and_free", 3, || {
        let pool = tiny_pool();
        let p = pool.clone();
        let owner = thread::spawn(move || {
            for i in 0..2 {
                let b = filled(&p, i + 1);
                check(&b, i + 1);
                drop(b);
            }
            let kept = filled(&p, 7);
            check(&kept, 7);
            kept
        });
        race();
        pool.trim();
        let kept = owner.join().unwrap();
        check(&kept, 7);
        let s = pool.stats();
        assert_eq!((s.live_buffers, s.live_bytes), (1, SEG), "{s}");
        drop(kept);
        wait_for_magazines(&pool);
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.allocated_bytes, s.chunks), (0, 0), "{s}");
    });
}

/// Model 9. One region of the owner's chunk is freed remotely while a trim on a third
/// thread claims the owner's magazine: the trim drains the remote stack as the owner would,
/// and takes the chunk only if nothing is live in it. The owner, idle meanwhile, keeps its
/// other buffer intact; the chunk is given back exactly once, whichever of the trim and the
/// owner's last free comes last.
#[test]
fn trim_races_remote_free_into_the_same_chunk() {
    model("trim_races_remote_free_into_the_same_chunk", 3, || {
        let pool = tiny_pool();
        let a = filled(&pool, 1);
        let b = filled(&pool, 2);
        let p = pool.clone();
        let t = thread::spawn(move || {
            check(&b, 2);
            drop(b);
        });
        let trimmer = thread::spawn(move || p.trim());
        race();
        t.join().unwrap();
        trimmer.join().unwrap();
        check(&a, 1);
        let s = pool.stats();
        assert_eq!((s.live_buffers, s.live_bytes, s.chunks), (1, SEG, 1), "{s}");
        drop(a);
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.allocated_bytes, s.chunks), (0, 0), "{s}");
    });
}

/// Model 10. A thread exits (its registry leaves the roster and drops the magazine, which
/// gives its chunks up) while another thread trims (claims every magazine on the roster):
/// the exit waits for a trim in progress, a trim after the exit no longer sees the magazine,
/// and the idle chunk is given back exactly once.
#[test]
fn trim_races_thread_exit() {
    model("trim_races_thread_exit", 3, || {
        let pool = tiny_pool();
        let p = pool.clone();
        let t = thread::spawn(move || {
            let b = filled(&p, 4);
            check(&b, 4);
        });
        race();
        pool.trim();
        t.join().unwrap();
        wait_for_magazines(&pool);
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.allocated_bytes, s.chunks), (0, 0), "{s}");
        assert!(s.is_quiet(), "{s}");
    });
}

/// Model 11 (review finding 1). An `allocate_with` whose `init` allocates (its magazine
/// adopts a second chunk), frees, and fails, while another thread trims: the trim may take
/// the young chunk out of the magazine before the rollback runs. The rollback looks only at
/// the chunks the magazine still holds, so it never touches one the trim freed (loom fails
/// the execution on a use after free of a chunk's memory, and on the magazine state touched
/// by two threads at once); afterwards nothing is live and a trim leaves nothing allocated.
#[test]
fn trim_races_allocate_with_whose_init_allocates() {
    model("trim_races_allocate_with_whose_init_allocates", 3, || {
        let pool = tiny_pool();
        let p = pool.clone();
        let t = thread::spawn(move || {
            let q = p.clone();
            let r = p.allocate_with(SEG, move |buf| {
                buf.put_bytes(5, SEG);
                // Four more fill the first chunk's remaining three segments and start a second.
                let more: Vec<PooledBuf> = (0..4).map(|i| filled(&q, i)).collect();
                drop(more);
                Err("init failed")
            });
            assert!(r.is_err());
        });
        race();
        pool.trim();
        t.join().unwrap();
        wait_for_magazines(&pool);
        let s = pool.stats();
        assert!(s.is_quiet(), "{s}");
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.allocated_bytes, s.chunks), (0, 0), "{s}");
    });
}

/// Model 12 (review finding 2). The last handle is dropped (the close: every magazine gives
/// up its chunks, the cache is drained and refuses chunks from then on) while a thread that
/// holds only a buffer grows it, which runs the idle sweep: the sweep pops the cached chunk
/// (not yet expired) and pushes it back. Every push goes through the close handshake and the
/// sweep holds the lock the close drains under, so the chunk cannot be left in the closed
/// queue, where its `Arc` to the allocator would keep both alive: loom fails the execution
/// on the leaked chunk memory.
#[test]
fn close_races_the_idle_sweep() {
    model("close_races_the_idle_sweep", 2, || {
        let pool = sweeping_pool(4);
        // One chunk into the cache: filled and emptied on a thread that exits.
        let p = pool.clone();
        thread::spawn(move || drop((0..4).map(|i| filled(&p, i)).collect::<Vec<_>>()))
            .join()
            .unwrap();
        let mut buf = pool.allocate(SEG / 4);
        buf.put_bytes(9, SEG / 4);
        let t = thread::spawn(move || {
            // Growth: a new region (from a new magazine on this thread, or unpooled once the
            // allocator has closed), then the sweep, due at once.
            buf.reserve(SEG);
            check(&buf, 9);
            buf
        });
        race();
        drop(pool);
        let buf = t.join().unwrap();
        check(&buf, 9);
        drop(buf);
    });
}

/// Model 13. The idle sweep (run by another thread's activity: here `stats()`) takes the
/// owner's empty current chunk (stamped when it emptied, `idle_release` of loom's logical
/// clock before) while the owner allocates from it again: the gate keeps the two apart, the
/// owner's buffer is intact, and nothing leaks (the close at the end gives back whatever the
/// sweep left; loom checks every chunk is freed exactly once).
#[test]
fn idle_sweep_races_allocation() {
    model("idle_sweep_races_allocation", 2, || {
        let pool = sweeping_pool(1);
        let p = pool.clone();
        let owner = thread::spawn(move || {
            drop(filled(&p, 1));
            let b = filled(&p, 2);
            check(&b, 2);
            b
        });
        race();
        // One sweep (`stats()` finds one due): it takes the empty chunk if it was stamped
        // long enough ago and the owner has not allocated since it emptied, else (re)stamps it.
        let _ = pool.stats();
        let b = owner.join().unwrap();
        check(&b, 2);
        let s = pool.stats();
        assert_eq!((s.live_buffers, s.live_bytes), (1, SEG), "{s}");
        drop(b);
        drop(pool);
    });
}

/// Model 14. The allocator closes on one thread (its last handle dropped) while the owner of
/// a chunk frees two of its regions on another: each free enters the owner's gate and finds
/// the chunk still its own (a local free, which the close then sees as an empty chunk, or a
/// chunk with one live region) or already abandoned by the close (the free then goes the
/// remote way, and the last one recycles the chunk). The owner's buffers keep their contents
/// until dropped, the chunk is given back exactly once (loom fails the execution on a leak
/// or a double free), and nothing stays cached in the closed allocator.
#[test]
fn close_races_the_owners_local_free() {
    model("close_races_the_owners_local_free", 3, || {
        let pool = tiny_pool();
        let keep = pool.allocate(2 * CHUNK); // unpooled: keeps the counters readable
        let p = pool.clone();
        let (tx, rx) = mpsc::channel();
        let owner = thread::spawn(move || {
            let a = filled(&p, 1);
            let b = filled(&p, 2);
            drop(p);
            tx.send(()).unwrap();
            check(&a, 1);
            drop(a);
            check(&b, 2);
            drop(b);
        });
        rx.recv().unwrap();
        drop(pool);
        owner.join().unwrap();
        let pool = keep.allocator();
        wait_for_magazines(&pool);
        let s = pool.stats();
        assert_eq!(
            (s.chunk_allocations, s.chunk_releases, s.chunks),
            (1, 1, 0),
            "the chunk was not given back exactly once: {s}"
        );
        assert_eq!(s.cached_bytes, 0, "a closed allocator kept a chunk: {s}");
        assert_eq!((s.live_buffers, s.live_bytes), (1, keep.capacity()), "{s}");
    });
}

/// Model 15. One `trim()` claims two owners' magazines at once (one heavy barrier) and works
/// through them in turn while both owners free and allocate: each owner either finishes its
/// operation before the trim reaches its magazine or waits at its gate until the trim has
/// released it, whichever magazine comes first. Every buffer keeps its contents, the counters
/// are exact, and once the owners have exited a last `trim()` leaves nothing allocated (loom
/// checks that no chunk leaks or is freed twice).
#[test]
fn one_trim_claims_two_owners() {
    model("one_trim_claims_two_owners", 2, || {
        let pool = tiny_pool();
        let owners: Vec<_> = (0..2u8)
            .map(|i| {
                let p = pool.clone();
                thread::spawn(move || {
                    drop(filled(&p, i));
                    let b = filled(&p, 10 + i);
                    check(&b, 10 + i);
                    b
                })
            })
            .collect();
        race();
        pool.trim();
        let bufs: Vec<PooledBuf> = owners.into_iter().map(|t| t.join().unwrap()).collect();
        for (i, b) in bufs.iter().enumerate() {
            check(b, 10 + i as u8);
        }
        let s = pool.stats();
        assert_eq!((s.live_buffers, s.live_bytes), (2, 2 * SEG), "{s}");
        drop(bufs);
        wait_for_magazines(&pool);
        pool.trim();
        let s = pool.stats();
        assert_eq!((s.allocated_bytes, s.chunks), (0, 0), "{s}");
    });
}

/// Model 16. A thread that only releases (a consumer) counts its releases in a release shard
/// of its own, registered with the allocator's counters; when it exits, the shard is folded
/// into the shared counters, which may happen after `join` (see the loom quirk above) and so
/// race with this thread's snapshots. Every snapshot counts the release at most once, and
/// after `join` exactly once, folded or not; the allocator ends quiet.
#[test]
fn a_consumer_exits_during_a_snapshot() {
    model("a_consumer_exits_during_a_snapshot", 3, || {
        let pool = tiny_pool();
        let a = filled(&pool, 1);
        let b = filled(&pool, 2);
        let consumer = thread::spawn(move || {
            check(&a, 1);
            drop(a);
        });
        race();
        let s = pool.stats();
        assert!(
            (1..=2).contains(&s.live_buffers),
            "a release counted twice or a buffer lost: {s}"
        );
        consumer.join().unwrap();
        for _ in 0..2 {
            let s = pool.stats();
            assert_eq!((s.live_buffers, s.live_bytes), (1, SEG), "{s}");
            thread::yield_now();
        }
        check(&b, 2);
        drop(b);
        assert!(pool.stats().is_quiet(), "{}", pool.stats());
    });
}

/// Drives a future to completion on the calling thread, polling again only after its waker
/// was woken. Under loom the waker notifies a `loom::sync::Notify` the thread waits on, so an
/// execution in which the future waits for a wake-up that never comes is reported as a
/// deadlock; on real threads it parks.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    block_on_with(f, || {})
}

/// [`block_on`] with a waker that runs `hook` (user code: it may use the pool) on whichever
/// thread wakes it, before it wakes the blocked thread.
fn block_on_with<F: std::future::Future>(
    f: F,
    hook: impl Fn() + Send + Sync + 'static,
) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    type Hook = Box<dyn Fn() + Send + Sync>;
    #[cfg(loom)]
    struct Wakeup(loom::sync::Notify, Hook);
    #[cfg(loom)]
    impl Wakeup {
        fn new(hook: Hook) -> Self {
            Wakeup(loom::sync::Notify::new(), hook)
        }
        fn wait(&self) {
            self.0.wait();
        }
    }
    #[cfg(loom)]
    impl Wake for Wakeup {
        fn wake(self: Arc<Self>) {
            (self.1)();
            self.0.notify();
        }
    }
    #[cfg(not(loom))]
    struct Wakeup(std::thread::Thread, Hook);
    #[cfg(not(loom))]
    impl Wakeup {
        fn new(hook: Hook) -> Self {
            Wakeup(std::thread::current(), hook)
        }
        fn wait(&self) {
            std::thread::park();
        }
    }
    #[cfg(not(loom))]
    impl Wake for Wakeup {
        fn wake(self: Arc<Self>) {
            (self.1)();
            self.0.unpark();
        }
    }
    let wakeup = Arc::new(Wakeup::new(Box::new(hook)));
    let waker = Waker::from(wakeup.clone());
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        wakeup.wait();
    }
}

/// Model 17. Back-pressure: the main thread waits in `ready(BIG)` while an unpooled buffer
/// of `BIG` bytes keeps the allocator over its limit, and another thread drops that buffer.
/// The waiter checks, registers its waker, fences and re-checks; the releaser lowers the
/// bytes held, fences and loads the waiter count (relaxed). Whatever the interleaving, the
/// waiter resolves: it sees the release in its re-check, or the releaser sees it registered
/// and wakes it (a lost wake-up leaves it blocked, which loom reports as a deadlock).
/// Afterwards nothing is registered or held. Fails when the waiter skips its re-check.
#[test]
fn ready_races_a_release() {
    const LIMIT: usize = 80 << 10;
    const BIG: usize = 48 << 10;
    model("ready_races_a_release", 3, || {
        let pool = AdaptiveAllocator::builder()
            .min_chunk_size(CHUNK)
            .max_chunk_size(CHUNK)
            .max_cached_bytes(CHUNK)
            .max_memory(LIMIT)
            .build()
            .unwrap();
        let big = pool.allocate(BIG);
        let releaser = thread::spawn(move || drop(big));
        race();
        block_on(pool.ready(BIG));
        releaser.join().unwrap();
        assert_eq!(pool.waiting_for_memory(), 0);
        let s = pool.stats();
        assert_eq!((s.allocated_bytes, s.live_buffers), (0, 0), "{s}");
    });
}

/// Model 18. Back-pressure through the cache: a chunk abandoned by its thread (which exited)
/// with one live buffer; the main thread waits in `ready()` for room that exists only once
/// that chunk is free, while another thread drops the buffer, so the chunk enters the
/// central cache (`Shared::recycle`, the second place that notifies waiters; a cached chunk
/// counts as free). The waiter resolves whatever the interleaving, and nothing stays
/// registered. Fails when `recycle` does not notify.
#[test]
fn ready_races_a_chunk_entering_the_cache() {
    const LIMIT: usize = 80 << 10;
    model("ready_races_a_chunk_entering_the_cache", 3, || {
        let pool = AdaptiveAllocator::builder()
            .min_chunk_size(CHUNK)
            .max_chunk_size(CHUNK)
            .max_cached_bytes(CHUNK)
            .max_memory(LIMIT)
            .build()
            .unwrap();
        let p = pool.clone();
        let buf = thread::spawn(move || p.allocate(SEG)).join().unwrap();
        wait_for_magazines(&pool);
        assert_eq!(pool.stats().allocated_bytes, CHUNK);
        let releaser = thread::spawn(move || drop(buf));
        race();
        // Fits only once the chunk is free (cached or given back).
        block_on(pool.ready(LIMIT - CHUNK + 1));
        releaser.join().unwrap();
        assert_eq!(pool.waiting_for_memory(), 0);
        let s = pool.stats();
        assert_eq!(s.live_buffers, 0, "{s}");
        assert_eq!(s.allocated_bytes, s.cached_bytes, "{s}");
    });
}

/// Model 21. A waker that re-enters the pool from a wake-up point (review of 2026-12-07): the
/// main thread waits in `ready()` for room that exists once another thread's chunk is free;
/// that thread drops its buffer, which empties its current chunk, which its idle budget (0)
/// retires into the cache from inside its magazine's gate, which notifies. The waker, run on
/// the releasing thread, allocates and drops a buffer of the same pool there (its own
/// magazine again). Wake-ups are deferred until the gate is left, so whatever the
/// interleaving the waker's allocation finds the magazine consistent: no chunk orphaned
/// (loom's leak check), no segment handed out twice (poisoning), and at the end nothing is
/// live and everything held is cached. Before the fix the waker ran inside the gate.
#[test]
fn a_waker_reenters_the_pool_from_a_wake_up() {
    const LIMIT: usize = 80 << 10;
    model("a_waker_reenters_the_pool_from_a_wake_up", 3, || {
        let pool = AdaptiveAllocator::builder()
            .min_chunk_size(CHUNK)
            .max_chunk_size(CHUNK)
            .max_cached_bytes(CHUNK)
            .max_memory(LIMIT)
            .max_thread_idle_bytes(0)
            .poison(true)
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let p = pool.clone();
        let releaser = thread::spawn(move || {
            let b = filled(&p, 0x5a);
            tx.send(()).unwrap();
            drop(b);
        });
        rx.recv().unwrap();
        let p = pool.clone();
        // Fits only once the releaser's chunk is free (cached).
        block_on_with(pool.ready(LIMIT - CHUNK + 1), move || {
            let b = filled(&p, 0xa5);
            check(&b, 0xa5);
        });
        releaser.join().unwrap();
        assert_eq!(pool.waiting_for_memory(), 0);
        let s = pool.stats();
        assert_eq!(s.live_buffers, 0, "{s}");
        assert_eq!(s.allocated_bytes, s.cached_bytes, "{s}");
    });
}

/// Model 19. A thread exits with two buffers of its chunk alive: the chunk is parked. Then
/// one thread releases both (the second release empties the parked chunk, unless the chunk
/// was adopted first) while another allocates from the same class (it adopts the parked
/// chunk if its count has not reached zero, and otherwise takes the recycled chunk or a new
/// one) and exits (parking the adopted chunk again if a buffer of it is still live). Exactly
/// one thread ends up with the chunk each time: loom's allocation tracking fails a double
/// recycle or a leak, poisoning fails a segment handed out twice, and at the end nothing is
/// parked or lost.
#[test]
fn adoption_races_the_parked_chunks_last_release() {
    model("adoption_races_the_parked_chunks_last_release", 3, || {
        adoption_races_the_parked_chunks_last_release_in(tiny_pool())
    });
}

/// Model 19b: model 19 with no central cache, so the chunk that the last release recycles
/// goes back to the system at once, its header freed, while the adopter races it. loom
/// checks that the chunk is freed exactly once and nothing leaks; it cannot see a read of the
/// freed header itself (the review of 2026-11-29 found the adopter doing that when it
/// unparked after letting go of the set's lock, which this model did not catch; it was
/// reproduced under AddressSanitizer with an injected delay, and the pop and the CAS now
/// happen under one hold of the lock: DESIGN.md, "Parked chunks").
#[test]
fn adoption_races_the_parked_chunks_last_release_uncached() {
    model(
        "adoption_races_the_parked_chunks_last_release_uncached",
        3,
        || {
            adoption_races_the_parked_chunks_last_release_in(
                AdaptiveAllocator::builder()
                    .min_chunk_size(CHUNK)
                    .max_chunk_size(CHUNK)
                    .max_cached_bytes(0)
                    .poison(true)
                    .build()
                    .unwrap(),
            )
        },
    );
}

fn adoption_races_the_parked_chunks_last_release_in(pool: AdaptiveAllocator) {
    {
        let p = pool.clone();
        let (a, b) = thread::spawn(move || (filled(&p, 1), filled(&p, 2)))
            .join()
            .unwrap();
        wait_for_magazines(&pool);
        let s = pool.stats();
        assert_eq!(s.parked_chunks, 1, "{s}");
        let releaser = thread::spawn(move || {
            check(&a, 1);
            drop(a);
            check(&b, 2);
            drop(b);
        });
        let p = pool.clone();
        let adopter = thread::spawn(move || {
            let c = filled(&p, 3);
            thread::yield_now();
            check(&c, 3);
        });
        race();
        releaser.join().unwrap();
        adopter.join().unwrap();
        wait_for_magazines(&pool);
        let s = pool.stats();
        assert!(s.is_quiet(), "{s}");
        assert_eq!(s.parked_chunks, 0, "an emptied chunk stayed parked: {s}");
        assert_eq!(s.allocated_bytes, s.cached_bytes, "a chunk was lost: {s}");
    }
}

/// Model 20. Two threads release two regions of the owner's full chunk at once while the
/// owner allocates: the two pushes race each other and the owner's drains. The `remote`
/// word counts the segments on its stack, and a drain into an empty local list takes the
/// stack as the list with that count instead of walking it, so the count must be exactly
/// what was pushed: one too few and the chunk never looks empty again (the last `trim()`
/// below could not give it back), one too many and it would be recycled with a region live
/// (a double free or a use after free, which loom's allocation tracking and the poison
/// check catch). Every live buffer keeps its contents, the released regions are reused
/// before a third chunk is made, and at the end nothing is allocated.
#[test]
fn two_remote_frees_race_the_owners_drain() {
    model("two_remote_frees_race_the_owners_drain", 3, || {
        let pool = tiny_pool();
        let a = filled(&pool, 1);
        let b = filled(&pool, 2);
        let c = filled(&pool, 3);
        let d = filled(&pool, 4);
        let ta = thread::spawn(move || {
            check(&a, 1);
            drop(a);
        });
        let tb = thread::spawn(move || {
            check(&b, 2);
            drop(b);
        });
        race();
        let e = filled(&pool, 5); // drains what was pushed so far, or takes a new chunk
        ta.join().unwrap();
        tb.join().unwrap();
        let f = filled(&pool, 6);
        let g = filled(&pool, 7);
        for (buf, byte) in [(&c, 3), (&d, 4), (&e, 5), (&f, 6), (&g, 7)] {
            check(buf, byte);
        }
        let s = pool.stats();
        assert_eq!((s.live_buffers, s.live_bytes), (5, 5 * SEG), "{s}");
        assert!(s.chunks <= 2, "{s}");
        drop((c, d, e, f, g));
        pool.trim();
        let s = pool.stats();
        assert!(s.is_quiet(), "{s}");
        assert_eq!(
            s.allocated_bytes, 0,
            "a chunk whose regions all came back stayed: {s}"
        );
    });
}
