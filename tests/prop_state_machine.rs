//! SPEC section 6: a proptest state-machine test against a simple model.
//!
//! Random sequences of allocate (sizes from 0 to 4 MiB and past `isize::MAX`), write a
//! distinct pattern, reserve, split_to, split_off, freeze, clone, drop (here or on another
//! thread) and trim run on each corner configuration of `support/ops.rs` (tiny chunks, no
//! cache, a roomy pool, a memory limit near the least `build()` accepts, zero on release). After every
//! step the model checks every live handle's bytes and `stats()` (live regions and bytes
//! exactly, the memory limit, the cache bound); at the end everything is dropped and `trim()`
//! must give every byte back. A failure shrinks to a short sequence (proptest removes and
//! simplifies operations) and its seed is kept in `proptest-regressions/`, which is checked in
//! and replayed first on every run.
//!
//! Cases: 256 in a debug build (about 1 s), 8192 in a release build (about 6 s;
//! `PROPTEST_CASES` overrides both), 4 under Miri; of up to 64 operations each (12 under
//! Miri). 100,000 release cases have passed once (about 80 s).

#[path = "support/ops.rs"]
mod ops;

use ops::{Depth, Harness, Op, Setup, SETUPS};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn op() -> impl Strategy<Value = Op> {
    let handle = any::<u8>();
    prop_oneof![
        5 => prop_oneof![
            8 => any::<u32>(),
            // The limits: exactly 4 MiB, and three sizes that must overflow.
            1 => 0xFFFF_FFFCu32..=u32::MAX,
        ]
        .prop_map(Op::Allocate),
        2 => handle.prop_map(Op::Write),
        2 => (handle, any::<u16>()).prop_map(|(h, n)| Op::Reserve(h, n)),
        2 => (handle, any::<u32>()).prop_map(|(h, at)| Op::SplitTo(h, at)),
        2 => (handle, any::<u32>()).prop_map(|(h, at)| Op::SplitOff(h, at)),
        2 => handle.prop_map(Op::Freeze),
        2 => handle.prop_map(Op::Clone),
        3 => handle.prop_map(Op::Drop),
        2 => handle.prop_map(Op::DropRemote),
        1 => Just(Op::Trim),
    ]
}

fn cases() -> u32 {
    match std::env::var("PROPTEST_CASES") {
        Ok(n) => n.parse().expect("PROPTEST_CASES is a number"),
        Err(_) if cfg!(miri) => 4,
        Err(_) if cfg!(debug_assertions) => 256,
        Err(_) => 8192,
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

    #[test]
    fn operations_match_the_model(
        setup in 0..SETUPS,
        ops in prop::collection::vec(op(), 1..MAX_OPS),
    ) {
        // Poison on (a write through a dangling pointer panics when the region is reused),
        // except under Miri, which checks every access itself.
        let mut h = Harness::new(Setup::corner(setup, !cfg!(miri)), Depth::Full);
        for op in &ops {
            h.apply(op);
        }
        h.finish();
    }
}
