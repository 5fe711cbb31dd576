//! The idle sweep in steps (SPEC section 3, "Decay, not purge": maintenance on an application
//! thread is bounded in time). A sweep run by an allocation, a release or `stats()` looks at
//! a bounded number of chunks (12, and the rest of the class it is in: under 24 here), and
//! when it had more
//! to look at it is due again at once and the next one goes on where it stopped. So a thread
//! whose magazine holds hundreds of chunks that other threads emptied does not make the one
//! `stats()` (or allocation) that finds the sweep due look at all of them; a few more calls
//! do, and everything still comes back.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use adaptive_pool::{AdaptiveAllocator, PooledBuf};

/// Sizes in distinct size classes (1 KiB apart from 2 KiB to 63 KiB: the classes are finer
/// than that, so each size is a class of its own).
fn sizes() -> Vec<usize> {
    (2..64).map(|k| k << 10).collect()
}

#[test]
#[cfg_attr(
    miri,
    ignore = "hundreds of chunks and real sleeps; the step is plain code"
)]
fn a_sweep_step_looks_at_a_bounded_number_of_chunks_and_the_steps_take_everything() {
    let idle = Duration::from_millis(100);
    let pool = AdaptiveAllocator::builder()
        .idle_release(idle)
        .decay_time(Duration::ZERO)
        .max_cached_bytes(0)
        .build()
        .unwrap();
    // The owner allocates 6 buffers of each of 62 classes (3 chunks or more a class), hands
    // them to this thread and waits, alive, with its magazine full of chunks.
    let (tx, rx) = mpsc::channel::<Vec<PooledBuf>>();
    let (done_tx, done) = mpsc::channel::<()>();
    let owner = {
        let pool = pool.clone();
        thread::spawn(move || {
            let mut bufs = Vec::new();
            for &size in &sizes() {
                for _ in 0..6 {
                    bufs.push(pool.allocate(size));
                }
            }
            tx.send(bufs).unwrap();
            done.recv().unwrap();
        })
    };
    let bufs = rx.recv().unwrap();
    let before = pool.stats();
    assert!(
        before.chunks > 4 * 24,
        "the owner holds more chunks than a step looks at: {before}"
    );
    // Dropped here: every chunk is emptied by another thread than its owner, which does not
    // see it (it sleeps), so the chunks stay in its magazine until a sweep drains them.
    drop(bufs);
    thread::sleep(idle + idle / 2);
    let held = pool.stats().chunks;
    // That `stats()` ran one step (the sweep was due): at most a step's worth went back. The
    // emptied chunks that are not current go at once; the current ones are stamped.
    let first = before.chunks - held;
    assert!(
        first > 0 && first <= 24,
        "one step gave back {first} of {} chunks",
        before.chunks
    );
    let mut steps = 1;
    let mut last = held;
    while last > 0 && steps < 1000 {
        let s = pool.stats();
        steps += 1;
        assert!(
            last - s.chunks <= 24,
            "a step gave back {}",
            last - s.chunks
        );
        last = s.chunks;
        if last > 0 && steps % 20 == 0 {
            // The current chunks, stamped by the first pass, go at a pass `idle_release`
            // later.
            thread::sleep(idle);
        }
    }
    assert_eq!(last, 0, "after {steps} steps: {}", pool.stats());
    assert!(steps > 2, "the sweep went in steps: {steps}");
    done_tx.send(()).unwrap();
    owner.join().unwrap();
    assert!(pool.stats().is_quiet());
}
