//! Unit tests of `os` on Linux: spans, dirty slots, direct mappings, the decay of what is
//! kept, the barrier.
use super::*;

#[test]
fn spans_carve_chunks_and_unmap_when_empty() {
    let m = Memory::new(MemorySource::Os, 0, 0);
    let blocks: Vec<Block> = (0..300).map(|_| m.alloc_chunk(16 << 10).unwrap()).collect();
    // 256 chunks of 16 KiB per span: two spans.
    assert_eq!(m.mapped(), 2 * SPAN_BYTES);
    for b in &blocks {
        // SAFETY: each block is ours; write its first and last byte.
        unsafe {
            b.ptr().as_ptr().write(1);
            b.ptr().as_ptr().add(b.bytes() - 1).write(2);
        }
    }
    let mut addrs: Vec<usize> = blocks.iter().map(|b| b.ptr().as_ptr() as usize).collect();
    addrs.sort_unstable();
    assert!(
        addrs.windows(2).all(|w| w[1] - w[0] >= 16 << 10),
        "no overlap"
    );
    for b in blocks {
        // SAFETY: from `m`, unused.
        unsafe { m.free(b) };
    }
    // One empty span per size is kept, decommitted.
    assert_eq!(m.mapped(), SPAN_BYTES);
    assert_eq!(m.release_empty(), SPAN_BYTES);
    assert_eq!(m.mapped(), 0);
}

/// Fault counter of the calling process (minor faults), for the reuse tests.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    // Field 10 (minflt), counted after the command name's closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    rest.split(' ')
        .nth(7)
        .expect("minflt")
        .parse()
        .expect("a number")
}

/// With decay, a large mapping given back is kept resident and the next block of its
/// size (or up to an eighth smaller) reuses it without faulting its pages in again; one
/// of a very different size does not. Everything goes back at the decay time, and at once
/// with `purge`.
#[test]
fn kept_mappings_are_reused_and_decay() {
    const MIB: usize = 1 << 20;
    let decay = 200_000_000; // 200 ms
    let m = Memory::new(MemorySource::Os, 0, decay);
    let a = m.alloc_unpooled(4 * MIB).unwrap();
    let p = a.ptr();
    // SAFETY: ours: touch every page.
    unsafe { p.as_ptr().write_bytes(7, 4 * MIB) };
    // SAFETY: from `m`, unused.
    unsafe { m.free(a) };
    assert_eq!(m.retained(), 4 * MIB);
    assert_eq!(m.mapped(), 4 * MIB, "kept, not unmapped");
    let before = minor_faults();
    let b = m.alloc_unpooled(4 * MIB - 64 * 1024).unwrap();
    assert_eq!(b.ptr(), p, "the kept mapping is reused");
    // SAFETY: ours (its `bytes` are within the mapping).
    unsafe { b.ptr().as_ptr().write_bytes(9, b.bytes()) };
    let faults = minor_faults() - before;
    assert!(
        faults < 64,
        "{faults} page faults touching a reused 4 MiB mapping"
    );
    assert_eq!(m.retained(), 0);
    // A much smaller block does not take it.
    // SAFETY: from `m`, unused.
    unsafe { m.free(b) };
    let c = m.alloc_unpooled(2 * MIB).unwrap();
    assert_ne!(c.ptr(), p);
    assert_eq!(m.retained(), 4 * MIB);
    // SAFETY: from `m`, unused.
    unsafe { m.free(c) };
    assert_eq!(m.retained(), 6 * MIB);
    // Not yet at the decay curve's start, all of it at the decay time.
    let now = now_ns();
    assert_eq!(m.decay(now), 0, "nothing goes back at once");
    assert_eq!(m.decay(now + decay + 1), 6 * MIB);
    assert_eq!((m.retained(), m.mapped()), (0, 0));
    // `purge` gives back everything whatever its age.
    let d = m.alloc_unpooled(4 * MIB).unwrap();
    // SAFETY: from `m`, unused.
    unsafe { m.free(d) };
    assert_eq!(m.purge(), 4 * MIB);
    assert_eq!(m.mapped(), 0);
}

/// With decay, what is kept stays within recent demand: memory kept of one chunk size goes
/// back as fresh memory is committed for another, so the footprint (handed out and kept)
/// stays at the peak of what was handed out; a burst of the same size takes its memory back
/// and keeps the whole of it.
#[test]
fn what_is_kept_stays_within_recent_demand() {
    const MIB: usize = 1 << 20;
    let m = Memory::new(MemorySource::Os, 0, 10_000_000_000); // 10 s: no decay by age here
    let touch = |b: &Block| {
        // SAFETY: ours: make it resident.
        unsafe { b.ptr().as_ptr().write_bytes(1, b.bytes()) };
    };
    let burst = |size: usize, n: usize| -> Vec<Block> {
        (0..n)
            .map(|_| {
                let b = m.alloc_chunk(size).unwrap();
                touch(&b);
                b
            })
            .collect()
    };
    let free_all = |v: Vec<Block>| {
        for b in v {
            // SAFETY: from `m`, unused.
            unsafe { m.free(b) };
        }
    };
    // 8 MiB of 64 KiB chunks, freed: all kept (the peak was 8 MiB).
    free_all(burst(64 << 10, 128));
    assert_eq!(m.retained(), 8 * MIB);
    // The same burst again takes it back, then keeps it again.
    free_all(burst(64 << 10, 128));
    assert_eq!(
        m.retained(),
        8 * MIB,
        "a burst of the same size reuses, keeps"
    );
    // 6 MiB of 128 KiB chunks: fresh memory. What is kept of the 64 KiB chunks goes back as
    // it is committed, so kept + handed out stays within the 8 MiB peak.
    let other = burst(128 << 10, 48);
    let in_use = 6 * MIB;
    assert!(
        m.retained() + in_use <= 8 * MIB,
        "kept {} with {} in use, past the 8 MiB peak",
        m.retained(),
        in_use
    );
    assert!(m.retained() >= MIB, "not more than the excess goes back");
    // A new peak (12 MiB in use): nothing of the old size is kept beyond it.
    let more = burst(128 << 10, 48);
    assert_eq!(
        m.retained(),
        0,
        "a new peak of other sizes: the old size's memory went back"
    );
    free_all(other);
    free_all(more);
    assert_eq!(
        m.retained(),
        12 * MIB,
        "the new burst's memory is kept for the next"
    );
    // A large mapping counts in the demand like chunks. Fresh 4 MiB with 12 kept and a peak
    // of 12: a decay step goes back at once (an allocation path), and the decay tick is
    // wanted at once for the rest.
    assert!(!m.decay_wanted());
    let big = m.alloc_unpooled(4 * MIB).unwrap();
    touch(&big);
    assert_eq!(m.retained(), 12 * MIB - retention::DECAY_STEP_BYTES);
    assert!(m.decay_wanted(), "the tick is wanted for what is left");
    m.take_decay_wanted();
    m.decay(now_ns());
    assert_eq!(m.retained(), 8 * MIB, "kept + handed out back at the peak");
    // SAFETY: from `m`, unused.
    unsafe { m.free(big) };
    assert_eq!(m.retained(), 12 * MIB, "the mapping is kept too");
    assert_eq!(m.purge(), 12 * MIB);
    m.release_empty();
    assert_eq!(m.mapped(), 0);
}

/// With decay, freed span slots all stay committed (whatever the eager budget), a new
/// chunk takes one back, and they go back gradually: about half at half the decay time,
/// oldest first, and all at the decay time; the spans they emptied then go too.
#[test]
fn dirty_slots_decay_by_age() {
    let decay = 1_000_000_000; // 1 s, on the clock passed in
    let m = Memory::new(MemorySource::Os, 0, decay);
    let blocks: Vec<Block> = (0..512).map(|_| m.alloc_chunk(64 << 10).unwrap()).collect();
    for b in &blocks {
        // SAFETY: ours: make the slot resident.
        unsafe { b.ptr().as_ptr().write_bytes(1, b.bytes()) };
    }
    let mapped = m.mapped();
    for b in blocks {
        // SAFETY: from `m`, unused.
        unsafe { m.free(b) };
    }
    assert_eq!(m.retained(), 512 * (64 << 10), "every freed slot kept");
    assert_eq!(
        m.mapped(),
        mapped,
        "the emptied spans stay while they hold dirty slots"
    );
    assert_eq!(m.release_empty(), 0, "nor does release_empty unmap them");
    let t0 = now_ns();
    assert_eq!(m.decay(t0), 0);
    let half = m.decay(t0 + decay / 2);
    let total = 512 * (64 << 10);
    assert!(
        half.abs_diff(total / 2) <= total / 16,
        "about half at half the decay time: {half} of {total}"
    );
    let again = m.alloc_chunk(64 << 10).unwrap();
    assert_eq!(
        m.retained(),
        total - half - (64 << 10),
        "a dirty slot is reused"
    );
    // SAFETY: from `m`, unused.
    unsafe { m.free(again) };
    m.decay(t0 + 2 * decay);
    assert_eq!(m.retained(), 0);
    m.release_empty();
    assert_eq!(m.mapped(), 0);
}

#[test]
fn freed_slots_read_as_zero_and_are_reused() {
    let m = Memory::new(MemorySource::Os, 0, 0);
    let a = m.alloc_chunk(64 << 10).unwrap();
    let p = a.ptr();
    // SAFETY: ours.
    unsafe { p.as_ptr().write_bytes(0xEE, 64 << 10) };
    // SAFETY: from `m`, unused.
    unsafe { m.free(a) };
    let b = m.alloc_chunk(64 << 10).unwrap();
    assert_eq!(b.ptr(), p, "the lowest free slot is reused");
    // SAFETY: ours; the decommitted pages read as zeros.
    let bytes = unsafe { std::slice::from_raw_parts(b.ptr().as_ptr(), 64 << 10) };
    assert!(bytes.iter().all(|&x| x == 0));
    // SAFETY: from `m`, unused.
    unsafe { m.free(b) };
}

#[test]
fn large_chunks_and_unpooled_buffers_map_directly() {
    let m = Memory::new(MemorySource::Os, 0, 0);
    let big = m.alloc_chunk(SPAN_BYTES).unwrap();
    let unpooled = m.alloc_unpooled((DIRECT_MIN) + 16).unwrap();
    let small = m.alloc_unpooled(4096).unwrap();
    assert_eq!(
        m.mapped(),
        SPAN_BYTES + (DIRECT_MIN + 16).next_multiple_of(sys::page_size())
    );
    // SAFETY: from `m`, unused.
    unsafe {
        m.free(big);
        m.free(unpooled);
        m.free(small);
    }
    assert_eq!(m.mapped(), 0);
}

#[test]
fn dirty_slots_are_reused_first_and_purged() {
    let m = Memory::new(MemorySource::Os, 64 << 10, 0);
    let a = m.alloc_chunk(16 << 10).unwrap();
    let b = m.alloc_chunk(16 << 10).unwrap();
    let c = m.alloc_chunk(16 << 10).unwrap();
    let (pb, pc) = (b.ptr(), c.ptr());
    // SAFETY: ours.
    unsafe { pc.as_ptr().write_bytes(0xEE, 16 << 10) };
    // SAFETY: from `m`, unused. `c` stays committed (dirty), within the budget.
    unsafe { m.free(c) };
    let again = m.alloc_chunk(16 << 10).unwrap();
    assert_eq!(
        again.ptr(),
        pc,
        "the dirty slot is taken before the lower clean one"
    );
    // SAFETY: ours; it was never decommitted, so its bytes are still there.
    assert_eq!(unsafe { pc.as_ptr().read() }, 0xEE);
    // SAFETY: from `m`, unused.
    unsafe { m.free(again) };
    assert_eq!(m.purge(), 16 << 10);
    assert_eq!(m.purge(), 0, "nothing dirty is left");
    let clean = m.alloc_chunk(16 << 10).unwrap();
    assert_eq!(clean.ptr(), pc, "the lowest free slot");
    // SAFETY: ours; purged, so it reads as zeros.
    assert_eq!(unsafe { pc.as_ptr().read() }, 0);
    // Past the budget a slot is decommitted at once.
    let big: Vec<Block> = (0..8).map(|_| m.alloc_chunk(16 << 10).unwrap()).collect();
    // SAFETY: from `m`, unused.
    unsafe {
        for x in big {
            m.free(x);
        }
        m.free(a);
        m.free(b);
        m.free(clean);
    }
    // Eleven 16 KiB slots were freed one by one; each stayed dirty only while the dirty
    // bytes fit the budget plus half the bytes still in use.
    let dirty = m.purge();
    assert!(dirty > 0 && dirty < 11 * (16 << 10), "{dirty}");
    assert!(dirty <= (64 << 10) + 11 * (16 << 10) / 2, "{dirty}");
    let _ = pb;
    assert_eq!(m.release_empty(), SPAN_BYTES);
    assert_eq!(m.mapped(), 0);
}

/// Four threads take and give back slots of two sizes at once, half of them kept dirty,
/// with purges in between; each writes its own pattern over a slot while it holds it and
/// checks it before giving it back, so a slot handed to two holders at once is caught.
#[test]
fn concurrent_takes_and_frees_never_share_a_slot() {
    let m = std::sync::Arc::new(Memory::new(MemorySource::Os, 256 << 10, 0));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut held: Vec<Block> = Vec::new();
                for i in 0..20_000usize {
                    let size = if (i + t as usize) % 3 == 0 {
                        64 << 10
                    } else {
                        16 << 10
                    };
                    let b = m.alloc_chunk(size).unwrap();
                    // SAFETY: the slot is this thread's until it gives it back.
                    unsafe { b.ptr().as_ptr().write_bytes(t + 1, 256) };
                    held.push(b);
                    if held.len() > 6 || i % 5 == 0 {
                        let b = held.swap_remove((i * 7) % held.len());
                        // SAFETY: as above.
                        let bytes = unsafe { std::slice::from_raw_parts(b.ptr().as_ptr(), 256) };
                        assert!(bytes.iter().all(|&x| x == t + 1), "a slot was shared");
                        // SAFETY: from `m`, ours, unused from now on.
                        unsafe { m.free(b) };
                    }
                    if i % 997 == 0 {
                        m.purge();
                    }
                }
                for b in held {
                    // SAFETY: as above.
                    unsafe { m.free(b) };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    m.purge();
    m.release_empty();
    assert_eq!(m.mapped(), 0);
}

#[test]
fn the_barrier_can_be_called() {
    heavy_barrier();
    heavy_barrier();
}

/// The `VmFlags` line of the mapping that holds `addr`, from `/proc/self/smaps`.
fn vm_flags_of(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps is readable");
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.to_string();
            }
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// `huge_pages`: spans and mappings of 2 MiB or more carry the advice (`hg` in the
/// mapping's flags), shorter mappings and memory without the setting do not.
#[test]
fn huge_pages_are_advised_on_spans_and_large_mappings_only() {
    let flagged = |b: &Block| vm_flags_of(b.ptr().as_ptr() as usize).contains(" hg");
    for huge in [true, false] {
        let m = Memory::new(MemorySource::Os, 0, 0).with_huge_pages(huge);
        let chunk = m.alloc_chunk(64 << 10).unwrap();
        let large = m.alloc_unpooled(3 << 20).unwrap();
        let small = m.alloc_unpooled(DIRECT_MIN).unwrap();
        assert_eq!(flagged(&chunk), huge, "a span, huge_pages({huge})");
        assert_eq!(flagged(&large), huge, "a 3 MiB mapping, huge_pages({huge})");
        assert!(
            !flagged(&small),
            "a mapping under 2 MiB cannot hold a huge page"
        );
        for b in [chunk, large, small] {
            // SAFETY: from `m`, unused.
            unsafe { m.free(b) };
        }
        m.purge();
        m.release_empty();
    }
}

/// The decay in steps: each step gives back at most its bytes (the oldest first), says
/// whether more was due, and the steps together give back what one whole decay would.
#[test]
fn the_decay_goes_in_steps_of_bounded_bytes() {
    let decay = 1_000_000_000;
    let m = Memory::new(MemorySource::Os, 0, decay);
    // 32 chunks of 256 KiB freed at t0: 8 MiB kept, all of it expired at t0 + decay.
    let blocks: Vec<Block> = (0..32).map(|_| m.alloc_chunk(256 << 10).unwrap()).collect();
    for b in blocks {
        // SAFETY: from `m`, unused.
        unsafe { m.free(b) };
    }
    let t0 = now_ns();
    assert_eq!(m.retained(), 8 << 20);
    // A decay time and an epoch of the curve (`retention::Ages`) on: all of it due.
    let later = t0 + decay + decay / 100;
    let mut steps = 0;
    loop {
        let Stepped { given, left, .. } = m.decay_step(later, 2 << 20, false);
        assert!(given <= 2 << 20, "a step gave back {given}");
        steps += 1;
        assert_eq!(left, m.retained(), "what is still due: all of what is kept");
        if left == 0 {
            break;
        }
        assert_eq!(given, 2 << 20, "a step that leaves more gives a full step");
    }
    assert_eq!(steps, 4);
    assert_eq!(m.retained(), 0);
    assert_eq!(
        m.decay_step(later, 2 << 20, false),
        Stepped::default(),
        "nothing left"
    );
    m.release_empty();
}

/// A decay step looks at the pieces it gives back and one more, never at everything kept:
/// with 16,384 dirty slots (1 GiB of 64 KiB chunks, never touched) kept, a step with nothing
/// due looks at one piece and a step of 1 MiB at 17, and it gives back the oldest. (Before,
/// every step listed and sorted every piece under the span table's lock: 105 us with
/// nothing due on the development machine, 204 us for a 1 MiB step; the times are printed
/// with `--nocapture`.)
#[test]
fn a_decay_step_looks_only_at_what_it_gives_back() {
    use std::sync::atomic::Ordering::Relaxed;
    // Long, so the time the frees take (a debug build is slow) puts nothing due at `t0`.
    let decay = 10_000_000_000_000;
    let m = Memory::new(MemorySource::Os, 0, decay);
    let n = 16_384;
    let blocks: Vec<Block> = (0..n).map(|_| m.alloc_chunk(64 << 10).unwrap()).collect();
    let first = blocks[0].ptr();
    for b in blocks {
        // SAFETY: from `m`, unused.
        unsafe { m.free(b) };
    }
    assert_eq!(m.retained(), n * (64 << 10));
    let t0 = now_ns();
    let started = std::time::Instant::now();
    assert_eq!(
        m.decay_step(t0, 1 << 20, false),
        Stepped::default(),
        "nothing due yet"
    );
    let idle_step = started.elapsed();
    assert_eq!(m.looked.load(Relaxed), 1, "the oldest piece, kept");
    let started = std::time::Instant::now();
    let Stepped { given, left, .. } = m.decay_step(t0 + decay / 4, 1 << 20, false);
    let due_step = started.elapsed();
    assert_eq!(given, 1 << 20, "a full step");
    assert!(left > 0, "more is due a quarter of the decay time on");
    assert_eq!(
        m.looked.load(Relaxed),
        17,
        "16 pieces given back and the next"
    );
    eprintln!("{n} pieces kept: a step with nothing due {idle_step:?}, a 1 MiB step {due_step:?}");
    // The oldest went first: the first slot freed is clean again, and the lowest free slot.
    let again = m.alloc_chunk(64 << 10).unwrap();
    assert_ne!(
        again.ptr(),
        first,
        "a dirty slot is reused before a clean one"
    );
    // SAFETY: from `m`, unused.
    unsafe { m.free(again) };
    assert_eq!(m.decay(t0 + 2 * decay), n * (64 << 10) - (1 << 20));
    assert_eq!(m.retained(), 0);
    m.release_empty();
    assert_eq!(m.mapped(), 0);
}

/// On an application thread a piece larger than the step does not go alone: the step stops
/// at it and says so, for a thread of its own; where that is allowed, it goes alone.
#[test]
fn a_piece_larger_than_the_step_goes_alone_only_where_allowed() {
    const MIB: usize = 1 << 20;
    let decay = 1_000_000_000;
    let m = Memory::new(MemorySource::Os, 0, decay);
    let big = m.alloc_unpooled(4 * MIB).unwrap();
    // SAFETY: from `m`, unused.
    unsafe { m.free(big) };
    let later = now_ns() + 2 * decay;
    let st = m.decay_step(later, MIB, false);
    assert_eq!((st.given, st.too_big), (0, true), "{st:?}");
    assert!(st.left >= 4 * MIB, "{st:?}");
    assert_eq!(m.retained(), 4 * MIB);
    let st = m.decay_step(later, MIB, true);
    assert_eq!(
        st,
        Stepped {
            given: 4 * MIB,
            left: 0,
            too_big: false
        }
    );
    assert_eq!((m.retained(), m.mapped()), (0, 0));
}

/// `purge` and the whole decay go in batches (the span table's lock released between them)
/// and still give back everything: 3,000 pieces, three purge batches.
#[test]
fn purge_and_decay_go_in_batches_and_take_everything() {
    let decay = 1_000_000_000;
    let m = Memory::new(MemorySource::Os, 0, decay);
    let n = 3 * PURGE_BATCH - 72;
    for give_back in [0, 1] {
        let blocks: Vec<Block> = (0..n).map(|_| m.alloc_chunk(16 << 10).unwrap()).collect();
        for b in blocks {
            // SAFETY: from `m`, unused.
            unsafe { m.free(b) };
        }
        assert_eq!(m.retained(), n * (16 << 10));
        let given = if give_back == 0 {
            m.purge()
        } else {
            m.decay(now_ns() + 2 * decay)
        };
        assert_eq!(given, n * (16 << 10));
        assert_eq!(m.retained(), 0);
    }
    m.release_empty();
    assert_eq!(m.mapped(), 0);
}
