//! Fuzz target `ops`: a random sequence of buffer operations on a small allocator.
//!
//! ```text
//! cargo +nightly fuzz run ops -- -max_total_time=60
//! ```
//!
//! Every live handle (a `PooledBuf` or a frozen `Bytes`) is filled with its own byte; after
//! every operation every live handle's bytes are checked, so two handles that overlap, a
//! region reused while still live, or a move that loses data is caught. The allocator's
//! counters are checked against its memory limit after every operation and, once everything
//! is dropped, the allocator must be quiet and `trim()` must give every byte back.

#![no_main]

use adaptive_pool::{AdaptiveAllocator, AllocError, PooledBuf};
use arbitrary::Arbitrary;
use bytes::{BufMut, Bytes};
use libfuzzer_sys::fuzz_target;

/// The allocator's memory limit.
const MAX_MEMORY: usize = 32 << 20;
/// The largest buffer asked for.
const MAX_ALLOC: u32 = 4 << 20;
/// Live handles kept at most; an allocation past it drops the oldest handle.
const MAX_LIVE: usize = 64;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Allocate a buffer of [`size`] bytes (at most 4 MiB, log-uniform, so small sizes are as
    /// common as in real traffic) and fill it with a fresh byte.
    Allocate(u32),
    /// Overwrite the handle's bytes with `byte` and fill its spare capacity with it too.
    Write(u8, u8),
    /// `try_reserve(add)`; the contents must survive.
    Reserve(u8, u16),
    /// `split_to(at % (len + 1))`.
    SplitTo(u8, u32),
    /// `split_off(at % (capacity + 1))` (of `len + 1` for a frozen handle).
    SplitOff(u8, u32),
    /// Freeze a buffer into `Bytes`; on a frozen handle, clone it.
    Freeze(u8),
    /// Drop a handle.
    Drop(u8),
    /// `trim()`.
    Trim,
}

enum Handle {
    Buf(PooledBuf),
    Frozen(Bytes),
}

struct Live {
    handle: Handle,
    fill: u8,
}

impl Live {
    fn bytes(&self) -> &[u8] {
        match &self.handle {
            Handle::Buf(b) => b,
            Handle::Frozen(b) => b,
        }
    }

    /// Checks every byte. Compares whole blocks (`memcmp`) rather than byte by byte, which
    /// the fuzzer's comparison tracing would make slow.
    fn check(&self, what: &str) {
        const BLOCK: usize = 4096;
        let pattern = [self.fill; BLOCK];
        for (n, block) in self.bytes().chunks(BLOCK).enumerate() {
            if block != &pattern[..block.len()] {
                self.check_stride(what, 1);
                unreachable!("block {n} differs but no byte does");
            }
        }
    }

    /// Checks the last byte and every `stride`-th byte.
    fn check_stride(&self, what: &str, stride: usize) {
        let bytes = self.bytes();
        let last = bytes.len().checked_sub(1);
        let bad = (0..bytes.len())
            .step_by(stride)
            .chain(last)
            .find(|&i| bytes[i] != self.fill);
        if let Some(i) = bad {
            panic!(
                "{what}: byte {i} of a {}-byte handle is {:#04x}, expected {:#04x}",
                bytes.len(),
                bytes[i],
                self.fill
            );
        }
    }
}

/// Decodes a request size: the low 5 bits pick a bit width from 0 to 22, the rest the value,
/// so every size up to 4 MiB can be reached but sizes of each magnitude are equally likely.
/// `u32::MAX` asks for exactly [`MAX_ALLOC`].
fn decode_size(raw: u32) -> usize {
    if raw == u32::MAX {
        return MAX_ALLOC as usize;
    }
    let bits = (raw & 31) % 23;
    ((raw >> 5) & ((1u32 << bits) - 1)) as usize
}

fn tolerate(r: Result<(), AllocError>) {
    match r {
        Ok(()) | Err(AllocError::MemoryLimit { .. }) => {}
        Err(e) => panic!("unexpected allocation error: {e}"),
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let pool = AdaptiveAllocator::builder()
        .max_memory(MAX_MEMORY)
        .poison(true)
        .build()
        .expect("valid settings");
    let mut live: Vec<Live> = Vec::new();
    let mut next_fill: u8 = 1;

    for op in ops {
        let pick = |i: u8, n: usize| (n > 0).then(|| i as usize % n);
        match op {
            Op::Allocate(size) => {
                let size = decode_size(size);
                match pool.try_allocate(size) {
                    Ok(mut buf) => {
                        assert!(buf.capacity() >= size, "capacity below the request");
                        assert!(buf.is_empty(), "a new buffer is not empty");
                        let fill = next_fill;
                        next_fill = next_fill.wrapping_add(1).max(1);
                        buf.put_bytes(fill, size);
                        if live.len() == MAX_LIVE {
                            live.remove(0).check("when dropped");
                        }
                        live.push(Live {
                            handle: Handle::Buf(buf),
                            fill,
                        });
                    }
                    Err(e) => tolerate(Err(e)),
                }
            }
            Op::Write(i, byte) => {
                if let Some(i) = pick(i, live.len()) {
                    if let Handle::Buf(buf) = &mut live[i].handle {
                        buf.fill(byte);
                        let spare = buf.capacity() - buf.len();
                        buf.put_bytes(byte, spare);
                        assert_eq!(buf.len(), buf.capacity());
                        live[i].fill = byte;
                    }
                }
            }
            Op::Reserve(i, add) => {
                if let Some(i) = pick(i, live.len()) {
                    if let Handle::Buf(buf) = &mut live[i].handle {
                        let (len, cap) = (buf.len(), buf.capacity());
                        let r = buf.try_reserve(add as usize);
                        assert_eq!(buf.len(), len, "reserve changed the length");
                        match r {
                            Ok(()) => assert!(buf.capacity() - len >= add as usize),
                            Err(_) => assert_eq!(buf.capacity(), cap, "a failed reserve moved"),
                        }
                        tolerate(r);
                        live[i].check("after reserve");
                    }
                }
            }
            Op::SplitTo(i, at) => {
                if let Some(i) = pick(i, live.len()) {
                    let fill = live[i].fill;
                    let handle = match &mut live[i].handle {
                        Handle::Buf(buf) => {
                            let at = at as usize % (buf.len() + 1);
                            Handle::Buf(buf.split_to(at))
                        }
                        Handle::Frozen(b) => {
                            let at = at as usize % (b.len() + 1);
                            Handle::Frozen(b.split_to(at))
                        }
                    };
                    if live.len() < MAX_LIVE {
                        live.push(Live { handle, fill });
                    }
                }
            }
            Op::SplitOff(i, at) => {
                if let Some(i) = pick(i, live.len()) {
                    let fill = live[i].fill;
                    let handle = match &mut live[i].handle {
                        Handle::Buf(buf) => {
                            let at = at as usize % (buf.capacity() + 1);
                            Handle::Buf(buf.split_off(at))
                        }
                        Handle::Frozen(b) => {
                            let at = at as usize % (b.len() + 1);
                            Handle::Frozen(b.split_off(at))
                        }
                    };
                    if live.len() < MAX_LIVE {
                        live.push(Live { handle, fill });
                    }
                }
            }
            Op::Freeze(i) => {
                if let Some(i) = pick(i, live.len()) {
                    let fill = live[i].fill;
                    let placeholder = Handle::Frozen(Bytes::new());
                    match std::mem::replace(&mut live[i].handle, placeholder) {
                        Handle::Buf(buf) => {
                            let len = buf.len();
                            let frozen = buf.freeze();
                            assert_eq!(frozen.len(), len, "freeze changed the length");
                            live[i].handle = Handle::Frozen(frozen);
                        }
                        Handle::Frozen(b) => {
                            let copy = b.clone();
                            live[i].handle = Handle::Frozen(b);
                            if live.len() < MAX_LIVE {
                                live.push(Live {
                                    handle: Handle::Frozen(copy),
                                    fill,
                                });
                            }
                        }
                    }
                }
            }
            Op::Drop(i) => {
                if let Some(i) = pick(i, live.len()) {
                    live.swap_remove(i).check("when dropped");
                }
            }
            Op::Trim => {
                pool.trim();
            }
        }

        // A cheap look at every handle after every operation (a byte per 256, which sees any
        // page-sized damage at once); each handle is checked in full when it is dropped.
        for l in &live {
            l.check_stride("after an operation", 256);
        }
        let s = pool.stats();
        assert!(
            s.allocated_bytes <= MAX_MEMORY,
            "over the memory limit: {s}"
        );
        assert!(
            s.cached_bytes <= s.allocated_bytes,
            "cache larger than held: {s}"
        );
        assert!(
            s.live_bytes <= s.allocated_bytes,
            "live larger than held: {s}"
        );
        assert!(
            s.live_buffers <= live.len(),
            "more live regions than handles: {s}"
        );
        if live.is_empty() {
            assert!(s.is_quiet(), "no handle left but not quiet: {s}");
        }
    }

    for l in live {
        l.check("at the end");
    }
    let s = pool.stats();
    assert!(s.is_quiet(), "everything dropped but not quiet: {s}");
    pool.trim();
    let s = pool.stats();
    assert_eq!(
        s.allocated_bytes, 0,
        "trim() after dropping everything left memory: {s}"
    );
    assert_eq!(s.cached_bytes, 0, "trim() left cached chunks: {s}");
});
