//! Fuzz target `ops`: a random sequence of buffer operations on one of the corner
//! configurations, checked after every step against the model.
//!
//! ```text
//! cargo +nightly fuzz run ops -- -max_total_time=60
//! ```
//!
//! The operation language and the model are those of the proptest state machine, included
//! from `tests/support/ops.rs`: allocate (0 to 4 MiB and past `isize::MAX`), write a pattern,
//! reserve, split_to, split_off, freeze, clone, drop here or on another thread, trim. After
//! every operation every live handle's bytes are checked (in full for the handles it touched,
//! sampled for the others; every handle in full when it is dropped), `stats()` must match the
//! model exactly, and the memory limit and the cache bound must hold; at the end everything is
//! dropped and `trim()` must give every byte back. The input is decoded with `arbitrary`.

#![no_main]

#[path = "../../tests/support/ops.rs"]
mod ops;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ops::{Depth, Harness, Op, Setup};

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=9)? {
            0 => Op::Allocate(u.arbitrary()?),
            1 => Op::Write(u.arbitrary()?),
            2 => Op::Reserve(u.arbitrary()?, u.arbitrary()?),
            3 => Op::SplitTo(u.arbitrary()?, u.arbitrary()?),
            4 => Op::SplitOff(u.arbitrary()?, u.arbitrary()?),
            5 => Op::Freeze(u.arbitrary()?),
            6 => Op::Clone(u.arbitrary()?),
            7 => Op::Drop(u.arbitrary()?),
            8 => Op::DropRemote(u.arbitrary()?),
            _ => Op::Trim,
        })
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which corner configuration (`Setup::corner`).
    setup: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(Setup::corner(input.setup, true), Depth::Touched);
    for op in &input.ops {
        h.apply(op);
    }
    h.finish();
});
