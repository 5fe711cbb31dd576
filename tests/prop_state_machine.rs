//! SPEC section 6: a proptest state-machine test against a simple model.
//!
//! Random sequences of operations from `support/ops.rs` run on two allocators, each on one of
//! its corner configurations (tiny chunks with no per-thread idle budget, no cache with a
//! 2 ms idle sweep, a roomy pool on the global allocator, a memory limit near the least
//! `build()` accepts, zero on release with mid-sized and with small chunks): allocate (sizes
//! from 0 to 4 MiB and past `isize::MAX`), write a distinct pattern, reserve, split_to,
//! split_off, freeze, clone, drop (here, on a thread that never allocates, or on a worker
//! thread), `trim()` and `trim_thread()` from those threads, `allocate_with` whose initialiser
//! writes, grows, splits, freezes, allocates, trims and drops and then succeeds, fails or
//! panics, hand-offs of buffers allocated by the worker (which then exits or stays), and
//! dropping an allocator's last handle while its buffers live, after which they are grown,
//! cloned and dropped. After every step the model checks every live handle's bytes and
//! `stats()` (live regions and bytes exactly, magazines, the memory limit, the cache bound,
//! what a trim and a close leave); at the end everything is dropped and every byte must come
//! back. A failure shrinks to a short sequence (proptest removes and simplifies operations)
//! and its seed is kept in `proptest-regressions/`, which is checked in and replayed first on
//! every run.
//!
//! Cases: 256 in a debug build, 4096 in a release build (`PROPTEST_CASES` overrides both), 4
//! under Miri; of up to 64 operations each (12 under Miri).

#[path = "support/ops.rs"]
mod ops;

use ops::{Depth, Harness, InitEnd, InitStep, Op, Setup, Who, MAX_BATCH, MAX_STEPS, SETUPS};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// A raw request size (see `ops::decode_size`): mostly any, sometimes the limits.
fn raw_size() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => any::<u32>(),
        // The limits: exactly 4 MiB, and three sizes that must overflow.
        1 => 0xFFFF_FFFCu32..=u32::MAX,
    ]
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::Here), Just(Who::Remote), Just(Who::Worker)]
}

fn init_step() -> impl Strategy<Value = InitStep> {
    prop_oneof![
        2 => Just(InitStep::Fill),
        2 => any::<u16>().prop_map(InitStep::Grow),
        3 => (any::<bool>(), any::<u32>(), any::<bool>(), any::<bool>())
            .prop_map(|(to, at, keep, freeze)| InitStep::Split { to, at, keep, freeze }),
        3 => (any::<u8>(), raw_size(), any::<bool>())
            .prop_map(|(pool, raw, keep)| InitStep::Alloc { pool, raw, keep }),
        2 => (any::<u8>(), who()).prop_map(|(pool, who)| InitStep::Trim { pool, who }),
        1 => (any::<u8>(), any::<bool>())
            .prop_map(|(pool, worker)| InitStep::TrimThread { pool, worker }),
        1 => any::<u8>().prop_map(InitStep::Drop),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let handle = any::<u8>();
    let pool = any::<u8>();
    prop_oneof![
        6 => (pool, raw_size()).prop_map(|(p, raw)| Op::Allocate(p, raw)),
        2 => handle.prop_map(Op::Write),
        2 => (handle, any::<u16>()).prop_map(|(h, n)| Op::Reserve(h, n)),
        2 => (handle, any::<u32>()).prop_map(|(h, at)| Op::SplitTo(h, at)),
        2 => (handle, any::<u32>()).prop_map(|(h, at)| Op::SplitOff(h, at)),
        2 => handle.prop_map(Op::Freeze),
        2 => handle.prop_map(Op::Clone),
        3 => handle.prop_map(Op::Drop),
        2 => handle.prop_map(Op::DropRemote),
        1 => handle.prop_map(Op::DropOnWorker),
        2 => (pool, who()).prop_map(|(p, w)| Op::Trim(p, w)),
        1 => (pool, any::<bool>()).prop_map(|(p, w)| Op::TrimThread(p, w)),
        3 => (
            pool,
            raw_size(),
            prop::collection::vec(init_step(), 0..=MAX_STEPS),
            prop_oneof![Just(InitEnd::Ok), Just(InitEnd::Err), Just(InitEnd::Panic)],
        )
            .prop_map(|(pool, raw, steps, end)| Op::AllocateWith { pool, raw, steps, end }),
        1 => (pool, any::<bool>()).prop_map(|(p, r)| Op::DropAllocator(p, r)),
        2 => (pool, prop::collection::vec(raw_size(), 1..=MAX_BATCH), any::<bool>())
            .prop_map(|(pool, raws, exit)| Op::HandOff { pool, raws, exit }),
        1 => Just(Op::WorkerExit),
    ]
}

fn cases() -> u32 {
    match std::env::var("PROPTEST_CASES") {
        Ok(n) => n.parse().expect("PROPTEST_CASES is a number"),
        Err(_) if cfg!(miri) => 4,
        Err(_) if cfg!(debug_assertions) => 256,
        Err(_) => 4096,
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Miri's isolation forbids reading the regressions file; the seeds in it are
        // replayed by the native runs.
        // proptest's default place for the file looks for `lib.rs` beside the test's source,
        // which an integration test has not; name the file (relative to the package root,
        // cargo's working directory for tests).
        failure_persistence: if cfg!(miri) {
            None
        } else {
            Some(Box::new(FileFailurePersistence::Direct(
                "proptest-regressions/prop_state_machine.txt",
            )))
        },
        ..ProptestConfig::default()
    }
}

/// The longest sequence: shorter under Miri, whose interpreter runs each step ~1000x slower.
const MAX_OPS: usize = if cfg!(miri) { 12 } else { 64 };

proptest! {
    #![proptest_config(config())]

    // The only test of this binary: nothing else in the process allocates from a pool while
    // it runs, so the memory mapped by the process must come back after every case.
    #[test]
    fn operations_match_the_model(
        setups in (0..SETUPS, 0..SETUPS),
        ops in prop::collection::vec(op(), 1..MAX_OPS),
    ) {
        // Poison on (a write through a dangling pointer panics when the region is reused),
        // except under Miri, which checks every access itself.
        let poison = !cfg!(miri);
        let setups = [Setup::corner(setups.0, poison), Setup::corner(setups.1, poison)];
        let mut h = Harness::new(setups, Depth::Full).alone();
        for op in &ops {
            h.apply(op);
        }
        h.finish();
    }
}
