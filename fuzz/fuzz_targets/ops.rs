//! Fuzz target `ops`: a random sequence of buffer operations on two allocators (each on one
//! of the corner configurations), checked after every step against the model.
//!
//! ```text
//! cargo +nightly fuzz run ops -- -max_total_time=60
//! ```
//!
//! The operation language and the model are those of the proptest state machine, included
//! from `tests/support/ops.rs`: allocate (0 to 4 MiB and past `isize::MAX`), write a pattern,
//! reserve, split_to, split_off, freeze, clone, drop here, on a thread that never allocates or
//! on a worker thread, `trim()` and `trim_thread()` from those threads, `allocate_with` whose
//! initialiser writes, grows, splits, freezes, allocates, trims and drops and then succeeds,
//! fails or panics (caught), hand-offs from the worker (which then exits or stays), dropping
//! an allocator's last handle while its buffers live, and waiters (`ready()` futures) with
//! hostile wakers that allocate, drop a handle, trim, `trim_thread()` or poll another
//! `ready()` from wherever the pool wakes them. After every operation every live handle's
//! bytes are checked (in full for the handles it touched, sampled for the others; every handle
//! in full when it is dropped), `stats()` must match the model exactly, and the limits, the
//! magazines, what a trim or a close leaves, and zero-on-release must hold; at the end
//! everything is dropped and every byte must come back, and the memory the process maps with
//! it. The input is decoded with `arbitrary` (the operation `Wait` was added as choices 18 and
//! 19 of 20, so older corpus entries may decode to other sequences than they did; they remain
//! seeds).
//!
//! cargo-fuzz builds with AddressSanitizer and, unless `-O`, debug assertions by default, so a
//! use after free or a leak of system memory in the core (chunk headers, heap chunks) stops
//! the run too, and so does a waker run inside one of the pool's critical sections.

#![no_main]

#[path = "../../tests/support/ops.rs"]
mod ops;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ops::{Depth, Harness, InitEnd, InitStep, Op, Setup, WakeAction, Who, MAX_BATCH, MAX_STEPS};

fn who(u: &mut Unstructured<'_>) -> Result<Who> {
    Ok(match u.int_in_range(0u8..=2)? {
        0 => Who::Here,
        1 => Who::Remote,
        _ => Who::Worker,
    })
}

fn init_step(u: &mut Unstructured<'_>) -> Result<InitStep> {
    Ok(match u.int_in_range(0u8..=6)? {
        0 => InitStep::Fill,
        1 => InitStep::Grow(u.arbitrary()?),
        2 => InitStep::Split {
            to: u.arbitrary()?,
            at: u.arbitrary()?,
            keep: u.arbitrary()?,
            freeze: u.arbitrary()?,
        },
        3 => InitStep::Alloc {
            pool: u.arbitrary()?,
            raw: u.arbitrary()?,
            keep: u.arbitrary()?,
        },
        4 => InitStep::Trim {
            pool: u.arbitrary()?,
            who: who(u)?,
        },
        5 => InitStep::TrimThread {
            pool: u.arbitrary()?,
            worker: u.arbitrary()?,
        },
        _ => InitStep::Drop(u.arbitrary()?),
    })
}

fn wake_action(u: &mut Unstructured<'_>) -> Result<WakeAction> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 => WakeAction::AllocDrop(u.arbitrary()?),
        1 => WakeAction::DropVictim(u.arbitrary()?),
        2 => WakeAction::Trim,
        3 => WakeAction::TrimThread,
        _ => WakeAction::PollReady(u.arbitrary()?),
    })
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=19)? {
            0 | 1 => Op::Allocate(u.arbitrary()?, u.arbitrary()?),
            2 => Op::Write(u.arbitrary()?),
            3 => Op::Reserve(u.arbitrary()?, u.arbitrary()?),
            4 => Op::SplitTo(u.arbitrary()?, u.arbitrary()?),
            5 => Op::SplitOff(u.arbitrary()?, u.arbitrary()?),
            6 => Op::Freeze(u.arbitrary()?),
            7 => Op::Clone(u.arbitrary()?),
            8 => Op::Drop(u.arbitrary()?),
            9 => Op::DropRemote(u.arbitrary()?),
            10 => Op::DropOnWorker(u.arbitrary()?),
            11 => Op::Trim(u.arbitrary()?, who(u)?),
            12 => Op::TrimThread(u.arbitrary()?, u.arbitrary()?),
            13 => {
                let pool = u.arbitrary()?;
                let raw = u.arbitrary()?;
                let n = u.int_in_range(0..=MAX_STEPS)?;
                let steps = (0..n).map(|_| init_step(u)).collect::<Result<_>>()?;
                let end = match u.int_in_range(0u8..=2)? {
                    0 => InitEnd::Ok,
                    1 => InitEnd::Err,
                    _ => InitEnd::Panic,
                };
                Op::AllocateWith {
                    pool,
                    raw,
                    steps,
                    end,
                }
            }
            14 => Op::DropAllocator(u.arbitrary()?, u.arbitrary()?),
            15 => {
                let pool = u.arbitrary()?;
                let n = u.int_in_range(1..=MAX_BATCH)?;
                let raws = (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?;
                Op::HandOff {
                    pool,
                    raws,
                    exit: u.arbitrary()?,
                }
            }
            16 => Op::WorkerExit,
            17 => Op::Trim(u.arbitrary()?, Who::Here),
            _ => Op::Wait {
                pool: u.arbitrary()?,
                need: u.arbitrary()?,
                action: wake_action(u)?,
            },
        })
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which corner configurations (`Setup::corner`) the two allocators use.
    setups: (u8, u8),
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let setups = [
        Setup::corner(input.setups.0, true),
        Setup::corner(input.setups.1, true),
    ];
    // A fuzzing process runs one input at a time and nothing else that allocates from a pool.
    let mut h = Harness::new(setups, Depth::Touched).alone();
    for op in &input.ops {
        h.apply(op);
    }
    h.finish();
});
