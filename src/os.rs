//! Memory and barriers from the operating system: the only room that makes system calls.
//!
//! Owns: [`Memory`] (where chunk and unpooled memory comes from, and where it goes back),
//! [`Block`] (one piece of it, as a chunk header keeps it), the spans that small chunks are
//! carved from, what is kept resident for reuse (dirty slots, kept mappings) and its stamps,
//! the process-wide memory barrier of the magazine protocol ([`heavy_barrier`]), and the
//! clock of idle ages ([`now_ns`]). May import: `sync`, `error`, `retention` (what to give
//! back, and when: the policy is decided there, not here).
//!
//! # Two sources
//! * [`MemorySource::Os`] (the default on Linux): memory is mapped from the kernel with
//!   `mmap`, so what the pool gives back lowers the process's resident memory whatever the
//!   global allocator is. Chunks smaller than a span ([`SPAN_BYTES`], 4 MiB) are carved from
//!   spans of chunks of one size, as mimalloc carves pages from segments, so the number of
//!   mappings stays far below the kernel's `vm.max_map_count` (65,530 by default): at most
//!   one mapping per 4 MiB held. A chunk given back keeps its slot committed ("dirty", for
//!   the next chunk of its size to reuse without page faults). With a decay time (the
//!   default), every freed slot stays dirty, and every mapping of its own given back stays
//!   mapped on a list for the next block of its length, each stamped with the time it was
//!   freed; [`Memory::decay`] gives them back by age as module `retention` decides. Under
//!   the eager policy (decay time 0) a slot stays dirty only while the dirty bytes stay
//!   within the memory's budget plus half the slot bytes in use, is decommitted at once
//!   (`madvise(MADV_DONTNEED)`) past it, and a mapping is unmapped at once.
//!   [`Memory::purge`] (trim, close; the sweep under the eager policy) gives back everything
//!   kept. A decommitted slot costs address space, not resident memory.
//!   A span whose chunks are all free is unmapped, except one per chunk size kept (empty and
//!   decommitted) to absorb churn until [`Memory::release_empty`] (trim, idle sweep, drop).
//!   Chunks of a span or larger, and unpooled buffers of [`DIRECT_MIN`] (1 MiB) or more, get
//!   a mapping of their own; smaller unpooled buffers come from the global allocator.
//! * [`MemorySource::GlobalAllocator`]: every chunk and unpooled buffer is one allocation of
//!   the global allocator (64-byte aligned). Used under Miri and loom (whose models check
//!   every allocation for leaks), on platforms without the calls above, and by choice.
//!
//! The platform's calls are in `os/sys_linux.rs` (and `os/sys_none.rs` where there are none:
//! Miri, loom, other systems), the unit tests in `os/tests.rs`.
//!
//! # Who may touch what
//! The span table is behind one lock, taken only when a chunk is created or given back (the
//! slow paths). A [`Block`] is owned by the chunk header that holds it; the span it points to
//! lives at least as long as any of its chunks is allocated, since a span is unmapped only
//! when none is, so that pointer never outlives its span.

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use crate::error::AllocError;
use crate::retention;
use crate::sync::{self, AtomicUsize, Mutex, Ordering::*};

/// The size of a span: the mapping small chunks are carved from.
pub(crate) const SPAN_BYTES: usize = 4 << 20;

/// The size of a transparent huge page on the platforms that advise them (x86-64 and
/// aarch64 with 4 KiB base pages): a mapping shorter than this cannot hold one.
const HUGE_PAGE: usize = 2 << 20;
/// Unpooled buffers of at least this size get a mapping of their own (smaller ones come from
/// the global allocator, so that a few-KiB buffer does not cost a mapping).
pub(crate) const DIRECT_MIN: usize = 1 << 20;
/// Freed span slots stay committed while their bytes are within the memory's budget plus
/// this fraction of the slot bytes in use: the busier the pool, the more churn it absorbs
/// without page faults, and the memory kept so is bounded by what the load itself holds.
const DIRTY_SHARE: usize = 2;
/// Alignment of heap-backed chunk memory (mapped memory is page aligned).
pub(crate) const HEAP_ALIGN: usize = 64;
/// The smallest chunk (and so span slot) size: `MIN_CHUNK_SIZE_FLOOR`.
const MIN_SLOT_SHIFT: u32 = 12;
/// Slots of the smallest chunks in one span.
const MAX_SLOTS: usize = SPAN_BYTES >> MIN_SLOT_SHIFT;

/// Where an allocator's chunk memory comes from. See
/// [`Builder::memory_source`](crate::Builder::memory_source).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemorySource {
    /// Mapped from the operating system (`mmap`), carved into chunks from 4 MiB spans and
    /// decommitted when given back: memory the pool frees leaves the process's resident set,
    /// under any global allocator, at once or (within a budget of `max_cached_bytes` plus
    /// half the chunk bytes in use, kept for reuse) at the next idle sweep or `trim()`.
    /// Linux and Android only.
    Os,
    /// The global allocator (`#[global_allocator]`): one allocation per chunk. What it does
    /// with memory the pool gives back is its own affair (glibc, for one, keeps much of it).
    GlobalAllocator,
}

impl MemorySource {
    /// The default: [`Os`](MemorySource::Os) where it is supported (Linux and Android, not
    /// under Miri), else [`GlobalAllocator`](MemorySource::GlobalAllocator).
    pub const fn default_for_platform() -> MemorySource {
        if OS_SUPPORTED {
            MemorySource::Os
        } else {
            MemorySource::GlobalAllocator
        }
    }

    /// `true` if this source can be used on this platform.
    pub const fn is_supported(self) -> bool {
        match self {
            MemorySource::Os => OS_SUPPORTED,
            MemorySource::GlobalAllocator => true,
        }
    }
}

/// Whether mapping memory from the OS is compiled in.
const OS_SUPPORTED: bool = cfg!(all(
    any(target_os = "linux", target_os = "android"),
    not(loom),
    not(miri)
));

/// One piece of memory handed out by a [`Memory`]: `bytes` bytes at `ptr`.
#[derive(Debug)]
// `repr(C)`: `ptr` first, so that it lies on the first line of a chunk header, with the
// fields every allocation reads (see `Chunk`).
#[repr(C)]
pub(crate) struct Block {
    ptr: NonNull<u8>,
    bytes: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// From the global allocator, with `HEAP_ALIGN`.
    Heap,
    /// A mapping of its own, `len` bytes (page-rounded).
    Mapped { len: usize },
    /// A slot of a span.
    InSpan { span: NonNull<Span>, slot: u32 },
}

// SAFETY: a block is a plain description of memory its owner (a chunk header) holds; the span
// it may point to is only touched under the span table's lock.
unsafe impl Send for Block {}
// SAFETY: as above; shared access reads only the immutable `ptr` and `bytes`.
unsafe impl Sync for Block {}

impl Block {
    /// The start of the memory.
    #[inline(always)]
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The usable size.
    #[inline(always)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// One span: `SPAN_BYTES` of address space carved into equal slots of `slot_bytes`.
#[derive(Debug)]
struct Span {
    base: NonNull<u8>,
    slot_bytes: usize,
    slots: u32,
    /// Slots allocated, or taken out for a purge.
    used: u32,
    /// Bit `i` set: slot `i` is free.
    free: [u64; MAX_SLOTS / 64],
    /// Bit `i` set: slot `i` is free and still committed (not decommitted since it was used).
    dirty: [u64; MAX_SLOTS / 64],
    /// When each dirty slot was freed (`now_ns`), for the decay (module `retention`).
    dirty_since: Box<[u64]>,
}

// SAFETY: a span describes address space its `Memory` owns; it is only read or written
// under the span table's lock.
unsafe impl Send for Span {}

/// The spans of each slot size (`sizes[k]`: slots of `1 << (MIN_SLOT_SHIFT + k)` bytes), and
/// what is kept resident for reuse, indexed so that the decay looks only at what it gives
/// back.
#[derive(Debug)]
struct SpanTable {
    /// Boxed so a span stays put while the list around it changes: blocks point to it.
    #[allow(clippy::vec_box)]
    sizes: Vec<Vec<Box<Span>>>,
    /// Bytes of dirty slots.
    dirty_bytes: usize,
    /// Bytes of span slots allocated (chunks in use or cached).
    in_use: usize,
    /// Bytes of mappings of their own handed out (large chunks, large unpooled buffers), with
    /// a decay time (not counted under the eager policy, which keeps none of them).
    direct_in_use: usize,
    /// The recent peak of `in_use + direct_in_use`, with a decay time: what is kept resident
    /// for reuse stays within it (`retention::Demand`).
    demand: retention::Demand,
    /// Everything kept resident for reuse (dirty slots and kept mappings), oldest first:
    /// keyed by `(freed at, address)`. The decay walks it from the front and stops at the
    /// first piece it keeps, so a step costs the pieces it gives back, not all that is kept.
    /// Invariant (under the lock): it lists exactly the dirty slots of the spans in `sizes`
    /// and the mappings of `kept_maps`, each once, with the stamp it was kept with
    /// (`check_kept` asserts it in debug builds); so a `Piece::Slot` always points at a
    /// span in `sizes`.
    kept: BTreeMap<(u64, usize), Piece>,
    /// Mappings of their own (large chunks, large unpooled buffers) given back and kept
    /// resident for reuse while they decay, by `(length, address)`: when each was freed, and
    /// the mapping.
    kept_maps: BTreeMap<(usize, usize), (u64, NonNull<u8>)>,
    /// Bytes of `kept_maps`.
    kept_map_bytes: usize,
    /// The bytes freed for reuse over the last decay time by when they were freed, less what
    /// was reused since (not less what the decay gave back), for the decay curve's
    /// allowance (`retention::Ages`).
    ages: retention::Ages,
    /// The newest stamp in `kept`: stamps are made strictly increasing (a nanosecond past
    /// this at least, on a clock of millisecond resolution), so pieces freed in the same tick
    /// keep the order they were freed in.
    last_stamp: u64,
}

impl SpanTable {
    fn new(decay_ns: u64) -> SpanTable {
        SpanTable {
            sizes: Vec::new(),
            dirty_bytes: 0,
            in_use: 0,
            direct_in_use: 0,
            demand: retention::Demand::default(),
            kept: BTreeMap::new(),
            kept_maps: BTreeMap::new(),
            kept_map_bytes: 0,
            ages: retention::Ages::new(decay_ns),
            last_stamp: 0,
        }
    }

    /// The stamp of a piece freed at `now`: `now`, or just past the newest stamp.
    fn stamp(&mut self, now: u64) -> u64 {
        self.last_stamp = now.max(self.last_stamp + 1);
        self.last_stamp
    }

    /// Bytes kept resident for reuse: dirty slots and kept mappings.
    fn kept_bytes(&self) -> usize {
        self.dirty_bytes + self.kept_map_bytes
    }

    /// Marks `slot` of `span` dirty (free, still committed), freed at `now`, and lists it as
    /// kept.
    ///
    /// # Safety
    /// `span` is a span of this table (listed in `sizes`), and `slot` one of its slots that
    /// is being freed (in use until now, so neither dirty nor listed).
    unsafe fn keep_slot(&mut self, span: NonNull<Span>, slot: u32, now: u64) {
        let since = self.stamp(now);
        // SAFETY: a span of this table, by the caller's guarantee; `self` is the table, so
        // its lock is held.
        let s = unsafe { &mut *span.as_ptr() };
        s.dirty[slot as usize / 64] |= 1 << (slot % 64);
        s.dirty_since[slot as usize] = since;
        self.dirty_bytes += s.slot_bytes;
        self.ages.add(s.slot_bytes, since);
        let at = s.slot_ptr(slot).as_ptr() as usize;
        self.kept.insert((since, at), Piece::Slot(span, slot));
    }

    /// Takes dirty `slot` of `span` off the kept lists (its dirty bit is being cleared:
    /// `reused` for a new chunk, or given back, or its span unmapped).
    fn unkeep_slot(&mut self, span: &Span, slot: u32, reused: bool) {
        let since = span.dirty_since[slot as usize];
        self.dirty_bytes -= span.slot_bytes;
        if reused {
            self.ages.reuse(span.slot_bytes, since);
        }
        let at = span.slot_ptr(slot).as_ptr() as usize;
        let gone = self.kept.remove(&(since, at));
        debug_assert!(gone.is_some(), "a dirty slot is listed as kept");
    }

    /// Takes every dirty slot of `span` (leaving the table) off the kept lists. Every span
    /// taken out of `sizes` goes through here before it is unmapped, which is what keeps
    /// every `Piece::Slot` in `kept` pointing at a live span.
    fn forget_span(&mut self, span: &Span) {
        for w in 0..span.dirty.len() {
            let mut bits = span.dirty[w];
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                self.unkeep_slot(span, (w * 64) as u32 + bit, false);
            }
        }
    }

    /// Lists a mapping of `len` bytes at `ptr`, given back at `now`, as kept.
    fn keep_map(&mut self, ptr: NonNull<u8>, len: usize, now: u64) {
        let since = self.stamp(now);
        let at = ptr.as_ptr() as usize;
        self.kept_maps.insert((len, at), (since, ptr));
        self.kept_map_bytes += len;
        self.ages.add(len, since);
        self.kept.insert((since, at), Piece::Map(len));
    }

    /// Takes the kept mapping of `len` bytes at `at` off the kept lists (`reused` for a new
    /// block, or given back), and answers it.
    fn unkeep_map(&mut self, at: usize, len: usize, reused: bool) -> NonNull<u8> {
        let (since, ptr) = self
            .kept_maps
            .remove(&(len, at))
            .expect("a kept mapping is listed by its length");
        self.kept_map_bytes -= len;
        if reused {
            self.ages.reuse(len, since);
        }
        let gone = self.kept.remove(&(since, at));
        debug_assert!(gone.is_some(), "a kept mapping is listed as kept");
        ptr
    }

    /// Debug builds: `kept` lists exactly the dirty slots and the kept mappings.
    fn check_kept(&self) {
        #[cfg(debug_assertions)]
        {
            let dirty: usize = self
                .sizes
                .iter()
                .flatten()
                .map(|s| {
                    s.dirty
                        .iter()
                        .map(|w| w.count_ones() as usize)
                        .sum::<usize>()
                })
                .sum();
            assert_eq!(
                self.kept.len(),
                dirty + self.kept_maps.len(),
                "every dirty slot and kept mapping is listed once in `kept`"
            );
        }
    }
}

// SAFETY: the kept mappings are address space this `Memory` owns and nothing else refers to
// (their blocks were given back); the `Piece::Slot`s of `kept` point at the table's own boxed
// spans (a span leaves `sizes` only through `forget_span`, which takes its pieces off
// `kept`); the table is only read or written under its lock.
unsafe impl Send for SpanTable {}

/// One thing kept resident for reuse (`SpanTable::kept`).
#[derive(Clone, Copy, Debug)]
enum Piece {
    /// A dirty slot of a span.
    Slot(NonNull<Span>, u32),
    /// A kept mapping of this length (its address is the key's).
    Map(usize),
}

/// How much of what is kept [`Memory::give_back`] gives back.
#[derive(Clone, Copy)]
enum Choose {
    /// Everything (`trim()`, the close, the eager sweep), up to [`PURGE_BATCH`] pieces a
    /// hold of the lock.
    All,
    /// What the decay says at `now` (with `curve`, the curve's excess and what is beyond
    /// recent demand; without, only what is beyond demand, and what is past the decay time),
    /// in a step of at most `step` bytes, a first piece larger than that going alone if
    /// `alone` (`retention::GiveBack`).
    Decay {
        now: u64,
        step: usize,
        alone: bool,
        curve: bool,
    },
}

/// Pieces [`Memory::purge`] takes out per hold of the span table's lock.
const PURGE_BATCH: usize = 1024;

/// What one step of the decay did ([`Memory::decay_step`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stepped {
    /// Bytes given back.
    pub(crate) given: usize,
    /// Bytes still due after the step (0: the walk stopped at a piece not due).
    pub(crate) left: usize,
    /// The step stopped at its first piece, due but larger than the step, which was not
    /// allowed to go alone: a thread of its own should take it.
    pub(crate) too_big: bool,
}

/// Where one allocator's memory comes from and goes back to.
#[derive(Debug)]
pub(crate) struct Memory {
    source: MemorySource,
    /// The most bytes of free span slots kept committed until the next purge, with the
    /// eager policy (`decay_ns == 0`).
    dirty_budget: usize,
    /// The decay time of freed memory kept resident for reuse (module `retention`); 0: the
    /// eager policy (slots within `dirty_budget` kept until the next purge, the rest
    /// decommitted at once; mappings unmapped at once).
    decay_ns: u64,
    /// Advise transparent huge pages on spans and on mappings of [`HUGE_PAGE`] or more.
    huge: bool,
    spans: Mutex<SpanTable>,
    /// Bytes kept resident for reuse: dirty span slots and kept mappings (a mirror of the
    /// table's figures, for `Stats` without the lock).
    retained: AtomicUsize,
    /// Bytes of address space mapped now (spans, empty ones included, and direct mappings).
    mapped: AtomicUsize,
    /// Set when a give-back on an allocation path (the cap of recent demand) left something
    /// due: the allocator's decay tick is then due at once ([`Memory::decay_wanted`]).
    wanted: sync::AtomicBool,
    /// Pieces the last [`Memory::give_back`] looked at (the unit tests check it is bounded).
    #[cfg(test)]
    looked: std::sync::atomic::AtomicUsize,
}

/// Bytes mapped from the OS by every [`Memory`] of the process, now.
static PROCESS_MAPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Bytes of address space the crate holds mapped from the operating system now, over every
/// allocator of the process (spans, including the few kept empty and decommitted, and
/// buffers mapped on their own). Zero when every allocator using
/// [`MemorySource::Os`] has been dropped and its buffers released.
pub fn mapped_bytes() -> usize {
    PROCESS_MAPPED.load(std::sync::atomic::Ordering::Relaxed)
}

impl Memory {
    /// A source of memory that keeps up to `dirty_budget` bytes of freed chunk slots
    /// committed until the next purge. `source` must be supported on this platform (checked
    /// by the builder).
    /// With `decay_ns` non-zero, freed slots and mappings are instead kept resident and
    /// given back by age ([`Memory::decay`]).
    pub(crate) fn new(source: MemorySource, dirty_budget: usize, decay_ns: u64) -> Memory {
        debug_assert!(source.is_supported());
        Memory {
            source,
            dirty_budget,
            decay_ns,
            huge: false,
            spans: Mutex::new(SpanTable::new(decay_ns)),
            retained: AtomicUsize::new(0),
            mapped: AtomicUsize::new(0),
            wanted: sync::AtomicBool::new(false),
            #[cfg(test)]
            looked: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The same, advising transparent huge pages on what it maps from now (`Builder::
    /// huge_pages`): every span, and every mapping of its own of [`HUGE_PAGE`] or more.
    pub(crate) fn with_huge_pages(mut self, on: bool) -> Memory {
        self.huge = on;
        self
    }

    /// Maps `len` bytes (a page multiple) from the system, advised for huge pages when this
    /// memory asks for them and the mapping holds at least one.
    fn map(&self, len: usize) -> Option<NonNull<u8>> {
        let ptr = sys::map(len)?;
        if self.huge && len >= HUGE_PAGE {
            // SAFETY: a mapping just made, `len` bytes long.
            unsafe { sys::advise_huge(ptr, len) };
        }
        Some(ptr)
    }

    /// Whether this memory keeps what is freed resident and gives it back by age (a decay
    /// time, and memory from the operating system: the global allocator's blocks are freed
    /// at once, so there is nothing to decay).
    pub(crate) fn decays(&self) -> bool {
        self.decay_ns != 0 && self.source == MemorySource::Os
    }

    /// Bytes kept resident for reuse now: free span slots still committed and mappings kept
    /// after their buffer or chunk was given back.
    pub(crate) fn retained(&self) -> usize {
        self.retained.load(Relaxed)
    }

    /// Updates the `retained` mirror from the table (under its lock).
    fn mirror(&self, t: &SpanTable) {
        self.retained.store(t.kept_bytes(), Relaxed);
    }

    /// Notes a change of the bytes handed out in the recent demand (with a decay time; under
    /// the lock). Answers how many bytes of what is kept resident go beyond it now: the caller
    /// that just mapped or committed fresh memory gives them back ([`Memory::keep_to_demand`]).
    fn note_demand(&self, t: &mut SpanTable, now: u64) -> usize {
        if self.decay_ns == 0 {
            return 0;
        }
        let in_use = t.in_use + t.direct_in_use;
        t.demand.note(in_use, now, self.decay_ns);
        self.beyond_demand(t, now)
    }

    /// What is kept resident beyond recent demand at `now` (under the lock).
    fn beyond_demand(&self, t: &SpanTable, now: u64) -> usize {
        if !self.decays() {
            return 0;
        }
        t.demand.beyond(
            t.in_use + t.direct_in_use,
            t.kept_bytes(),
            now,
            self.decay_ns,
        )
    }

    /// After fresh memory was mapped or committed while more was kept resident than recent
    /// demand allows (`beyond` bytes): gives the oldest of it back now, a decay step at most
    /// (an allocation path: no piece larger than the step), so keeping freed memory of one
    /// chunk size does not add to the footprint of another for long. What it leaves makes
    /// the allocator's decay tick due at once ([`Memory::decay_wanted`]): the next slow path
    /// of any thread takes a step, or starts a helper for a large rest.
    fn keep_to_demand(&self, beyond: usize, now: u64) {
        if beyond > 0 {
            let st = self.give_back(Choose::Decay {
                now,
                step: retention::DECAY_STEP_BYTES,
                alone: false,
                curve: false,
            });
            if st.left > 0 {
                self.wanted.store(true, Relaxed);
            }
        }
    }

    /// Whether a give-back on an allocation path left something due (see
    /// [`Memory::keep_to_demand`]); cleared by [`Memory::take_decay_wanted`].
    pub(crate) fn decay_wanted(&self) -> bool {
        self.wanted.load(Relaxed)
    }

    /// Clears [`Memory::decay_wanted`] (the decay tick is running).
    pub(crate) fn take_decay_wanted(&self) {
        if self.wanted.load(Relaxed) {
            self.wanted.store(false, Relaxed);
        }
    }

    /// Bytes of address space this memory holds mapped now.
    pub(crate) fn mapped(&self) -> usize {
        self.mapped.load(Relaxed)
    }

    /// The size an unpooled buffer asking for `bytes` (a multiple of 16) gets: rounded up to
    /// the page when it will be mapped on its own, so the whole mapping is the buffer's.
    pub(crate) fn unpooled_size(&self, bytes: usize) -> usize {
        match self.source {
            MemorySource::Os if bytes >= DIRECT_MIN => bytes
                .checked_next_multiple_of(sys::page_size())
                .unwrap_or(bytes),
            _ => bytes,
        }
    }

    /// Memory for a chunk of `bytes` (a power of two of at least 4 KiB).
    pub(crate) fn alloc_chunk(&self, bytes: usize) -> Result<Block, AllocError> {
        debug_assert!(bytes.is_power_of_two() && bytes >= 1 << MIN_SLOT_SHIFT);
        match self.source {
            MemorySource::GlobalAllocator => heap_alloc(bytes),
            MemorySource::Os if bytes >= SPAN_BYTES => self.map_direct(bytes),
            MemorySource::Os => self.span_alloc(bytes),
        }
    }

    /// Memory for an unpooled buffer of `bytes` (a multiple of 16, non-zero).
    pub(crate) fn alloc_unpooled(&self, bytes: usize) -> Result<Block, AllocError> {
        match self.source {
            MemorySource::Os if bytes >= DIRECT_MIN => self.map_direct(bytes),
            _ => heap_alloc(bytes),
        }
    }

    /// Resizes a block mapped on its own to `bytes` (a large unpooled buffer growing), keeping
    /// its contents: the kernel moves its pages (`mremap`), no byte is copied, as glibc's
    /// `realloc` does for its own mapped chunks. `None` where that cannot be done (not a
    /// mapping of its own, another source, the call refused): `block` is then unchanged.
    ///
    /// # Safety
    /// `block` came from this `Memory`; nothing refers to its memory except through the block
    /// returned (its address may change: the old one is then unmapped).
    pub(crate) unsafe fn remap(&self, block: &Block, bytes: usize) -> Option<Block> {
        let Kind::Mapped { len } = block.kind else {
            return None;
        };
        let new_len = bytes.checked_next_multiple_of(sys::page_size())?;
        // SAFETY: a whole mapping of `len` bytes made by `map_direct`, as the caller
        // guarantees nothing refers to but through the result.
        let ptr = unsafe { sys::remap(block.ptr, len, new_len) }?;
        if self.huge && new_len >= HUGE_PAGE && len < HUGE_PAGE {
            // Mapped too short for the advice; long enough now.
            // SAFETY: the mapping just resized, `new_len` bytes long.
            unsafe { sys::advise_huge(ptr, new_len) };
        }
        if new_len >= len {
            self.account(new_len - len);
        } else {
            self.unaccount(len - new_len);
        }
        if self.decay_ns != 0 {
            let now = now_ns();
            let beyond = self.spans.with(|t| {
                t.direct_in_use = t.direct_in_use - len + new_len;
                self.note_demand(t, now)
            });
            if new_len > len {
                self.keep_to_demand(beyond, now);
            }
        }
        Some(Block {
            ptr,
            bytes,
            kind: Kind::Mapped { len: new_len },
        })
    }

    /// Gives a block back: decommitted and its span slot freed, unmapped, or freed to the
    /// global allocator.
    ///
    /// # Safety
    /// `block` came from this `Memory` and nothing refers to its memory any more.
    pub(crate) unsafe fn free(&self, block: Block) {
        match block.kind {
            Kind::Heap => {
                let layout = heap_layout(block.bytes).expect("layout was valid when allocated");
                // SAFETY: allocated by `heap_alloc` with this layout, and unused now.
                unsafe { sync::dealloc(block.ptr.as_ptr(), layout) };
            }
            Kind::Mapped { len } => {
                if self.decay_ns != 0 {
                    // Kept resident for the next block of about its size, until it decays.
                    let now = now_ns();
                    self.spans.with(|t| {
                        t.direct_in_use -= len;
                        t.keep_map(block.ptr, len, now);
                        self.note_demand(t, now);
                        self.mirror(t);
                    });
                    return;
                }
                // SAFETY: a mapping of `len` bytes made by `map_direct`, unused now.
                unsafe { sys::unmap(block.ptr, len) };
                self.unaccount(len);
            }
            Kind::InSpan { span, slot } => {
                // Within the budget the slot stays committed (dirty) for the next taker, marked
                // dirty and free at once under the lock; beyond it, it is decommitted first,
                // while it is still marked in use (once it is free, another thread may take it
                // and write into it), and marked free after.
                // With decay, every freed slot is kept; `decay` gives them back by age.
                let bytes = block.bytes;
                let now = if self.decay_ns != 0 { now_ns() } else { 0 };
                let mut result = self.spans.with(|t| {
                    t.in_use -= bytes;
                    self.note_demand(t, now);
                    if self.decay_ns == 0
                        && !retention::eager_keeps_dirty(
                            t.dirty_bytes,
                            bytes,
                            self.dirty_budget,
                            t.in_use,
                            DIRTY_SHARE,
                        )
                    {
                        return None;
                    }
                    // SAFETY: the span outlives its allocated slots, and this is one, being
                    // freed; `t` is its table.
                    unsafe { t.keep_slot(span, slot, now) };
                    let released = Self::release_slot(t, span, slot, self.decay_ns != 0);
                    self.mirror(t);
                    Some(released)
                });
                if result.is_none() {
                    // SAFETY: the slot's memory is ours and unused.
                    unsafe { sys::decommit(block.ptr, bytes) };
                    result = Some(self.spans.with(|t| {
                        let released = Self::release_slot(t, span, slot, self.decay_ns != 0);
                        self.mirror(t);
                        released
                    }));
                }
                if let Some(Some(span)) = result {
                    self.unmap_span(&span);
                }
            }
        }
    }

    /// Marks `slot` of `span` free; if that empties the span and another span of its size is
    /// empty too, takes the span out of the table (for the caller to unmap), unless it has
    /// dirty slots and `decaying` (they are kept resident until they decay). Under the lock.
    fn release_slot(
        t: &mut SpanTable,
        span: NonNull<Span>,
        slot: u32,
        decaying: bool,
    ) -> Option<Box<Span>> {
        // SAFETY: the span outlives its allocated slots, and this is one; the table's lock is
        // held (the caller's `t`).
        let s = unsafe { &mut *span.as_ptr() };
        s.free[slot as usize / 64] |= 1 << (slot % 64);
        s.used -= 1;
        if s.used != 0 || (decaying && s.dirty_bytes() != 0) {
            return None;
        }
        // Keep one empty span per size (the first one found), unmap the others.
        let list = &mut t.sizes[size_index(s.slot_bytes)];
        let empties = list.iter().filter(|x| x.used == 0).count();
        if empties <= 1 {
            return None;
        }
        let i = list
            .iter()
            .position(|x| std::ptr::eq(&**x, s))
            .expect("a span is listed while it lives");
        let span = list.swap_remove(i);
        t.forget_span(&span);
        Some(span)
    }

    /// Gives back everything kept resident for reuse (`trim()`, the close, and the idle
    /// sweep under the eager policy): every dirty slot is decommitted (free chunk memory then
    /// costs address space only) and every kept mapping unmapped. Answers the bytes given
    /// back. A span this leaves wholly free stays mapped until [`Memory::release_empty`],
    /// which every caller runs next.
    pub(crate) fn purge(&self) -> usize {
        if self.source != MemorySource::Os {
            // The global allocator's blocks were freed when given back: nothing is kept.
            return 0;
        }
        let mut bytes = 0;
        loop {
            let st = self.give_back(Choose::All);
            bytes += st.given;
            if st.left == 0 {
                return bytes;
            }
        }
    }

    /// The whole decay, on a thread of its own (the decay helper, the background reclaimer):
    /// gives back, oldest first, what is kept beyond the allowance of the retention policy at
    /// `now` (module `retention`) or beyond recent demand, and everything at least the decay
    /// time old, in steps of [`retention::DECAY_BATCH_BYTES`] (the span table's lock is
    /// released between them). Under the eager policy, [`Memory::purge`]. Answers the bytes
    /// given back. (Not used under loom, where nothing decays.)
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn decay(&self, now: u64) -> usize {
        let mut bytes = 0;
        loop {
            let st = self.decay_step(now, retention::DECAY_BATCH_BYTES, true);
            bytes += st.given;
            if st.left == 0 || st.given == 0 {
                return bytes;
            }
        }
    }

    /// What the decay would give back at `now`, about (the curve's excess over its allowance,
    /// or what is kept beyond recent demand, whichever is more), giving nothing back: a look
    /// at the ages' counters under the lock, for a caller choosing between a step and a
    /// thread of its own.
    pub(crate) fn due(&self, now: u64) -> usize {
        if !self.decays() {
            return 0;
        }
        self.spans.with(|t| {
            let kept = t.kept_bytes();
            t.ages.excess(kept, now).max(self.beyond_demand(t, now))
        })
    }

    /// One step of [`Memory::decay`], of at most `step` bytes: at least one piece, if any is
    /// due, where a piece larger than the step goes alone only if `alone` (else the step
    /// stops and says so: [`Stepped::too_big`]). Answers what it gave back and what is still
    /// due after it (the caller takes another step later, or hands the rest to a thread of
    /// its own). Application threads take steps of [`retention::DECAY_STEP_BYTES`] without
    /// `alone`, so that the allocation or release that runs the decay does not wait on system
    /// calls for more than a step. Under the eager policy, [`Memory::purge`] (whole).
    pub(crate) fn decay_step(&self, now: u64, step: usize, alone: bool) -> Stepped {
        if !self.decays() {
            return Stepped {
                given: self.purge(),
                ..Stepped::default()
            };
        }
        self.give_back(Choose::Decay {
            now,
            step,
            alone,
            curve: true,
        })
    }

    /// Gives back the oldest of what is kept, as `how` says: everything (a batch of it), or
    /// what the decay chooses (`retention::GiveBack`, asked piece by piece from the oldest,
    /// with the excess over the curve from `retention::Ages` and what is kept beyond recent
    /// demand). Answers what it gave back and what is still due after it (for `All`, non-zero
    /// while pieces are left). Under the lock it looks at the pieces it gives back and one
    /// more, and at the ages' counters: never at everything kept.
    fn give_back(&self, how: Choose) -> Stepped {
        // Take the chosen dirty slots out (marked in use, so no thread takes one meanwhile)
        // and the chosen mappings off the list; decommit and unmap outside the lock; give the
        // slots back clean.
        let (slots, maps, left, too_big) = self.spans.with(|t| {
            let mut choice = match how {
                Choose::All => None,
                Choose::Decay {
                    now,
                    step,
                    alone,
                    curve,
                } => {
                    let kept = t.kept_bytes();
                    let excess = if curve { t.ages.excess(kept, now) } else { 0 };
                    let beyond = self.beyond_demand(t, now);
                    Some(retention::GiveBack::new(
                        excess,
                        beyond,
                        now,
                        self.decay_ns,
                        step,
                        alone,
                    ))
                }
            };
            let mut more = false;
            let mut slots = Vec::new();
            let mut maps = Vec::new();
            #[cfg(test)]
            self.looked.store(0, Relaxed);
            while let Some(entry) = t.kept.first_entry() {
                #[cfg(test)]
                self.looked.fetch_add(1, Relaxed);
                let (since, at) = *entry.key();
                let piece = *entry.get();
                let bytes = match piece {
                    // SAFETY: a listed span, under the table's lock.
                    Piece::Slot(span, _) => unsafe { span.as_ref() }.slot_bytes,
                    Piece::Map(len) => len,
                };
                if let Some(c) = &mut choice {
                    if !c.takes(bytes, since) {
                        break;
                    }
                } else if slots.len() + maps.len() == PURGE_BATCH {
                    more = true;
                    break;
                }
                match piece {
                    Piece::Slot(span, slot) => {
                        // SAFETY: a listed span, under the table's lock.
                        let s = unsafe { &mut *span.as_ptr() };
                        t.unkeep_slot(s, slot, false);
                        let (w, bit) = (slot as usize / 64, slot % 64);
                        s.dirty[w] &= !(1 << bit);
                        s.free[w] &= !(1 << bit);
                        s.used += 1;
                        slots.push((span, slot, s.slot_ptr(slot), s.slot_bytes));
                    }
                    Piece::Map(len) => maps.push((t.unkeep_map(at, len, false), len)),
                }
            }
            if t.kept.is_empty() && choice.is_none() {
                // Everything given back (`trim()`, the close): the history of what was
                // freed goes too.
                t.ages.clear();
            }
            t.check_kept();
            self.mirror(t);
            let (left, too_big) = match choice {
                Some(c) => (c.left(), c.too_big()),
                None => (usize::from(more), false),
            };
            (slots, maps, left, too_big)
        });
        let mut bytes = 0;
        for &(_, _, ptr, len) in &slots {
            // SAFETY: a free slot taken out of its span: nobody refers to its memory.
            unsafe { sys::decommit(ptr, len) };
            bytes += len;
        }
        for &(ptr, len) in &maps {
            // SAFETY: a kept mapping taken off the list: nobody refers to its memory.
            unsafe { sys::unmap(ptr, len) };
            self.unaccount(len);
            bytes += len;
        }
        if !slots.is_empty() {
            self.spans.with(|_t| {
                for &(span, slot, _, _) in &slots {
                    // SAFETY: the span lives: the slot taken out keeps it from being unmapped;
                    // the table's lock is held.
                    let s = unsafe { &mut *span.as_ptr() };
                    s.free[slot as usize / 64] |= 1 << (slot % 64);
                    s.used -= 1;
                }
            });
        }
        Stepped {
            given: bytes,
            left,
            too_big,
        }
    }

    /// Unmaps the spans kept empty, but with decay not those with dirty slots (kept resident
    /// while they decay; [`Memory::purge`] before this leaves none); answers the bytes of
    /// address space released.
    pub(crate) fn release_empty(&self) -> usize {
        let empties: Vec<Box<Span>> = self.spans.with(|t| {
            let mut out = Vec::new();
            for list in t.sizes.iter_mut() {
                let mut i = 0;
                while i < list.len() {
                    if list[i].used == 0 && (self.decay_ns == 0 || list[i].dirty_bytes() == 0) {
                        out.push(list.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            for span in &out {
                t.forget_span(span);
            }
            t.check_kept();
            self.mirror(t);
            out
        });
        let n = empties.len() * SPAN_BYTES;
        for span in empties {
            self.unmap_span(&span);
        }
        n
    }

    fn span_alloc(&self, bytes: usize) -> Result<Block, AllocError> {
        let k = size_index(bytes);
        let now = if self.decay_ns != 0 { now_ns() } else { 0 };
        // First, a slot of an existing span (the oldest spans first, so chunks pack low and
        // later spans empty out).
        let (found, beyond) = self.spans.with(|t| {
            if t.sizes.len() <= k {
                t.sizes.resize_with(k + 1, Vec::new);
            }
            // A dirty slot first (its pages are resident: no faults to touch it again), else
            // the lowest free one.
            if t.dirty_bytes > 0 {
                if let Some(b) = t.sizes[k].iter_mut().find_map(|s| s.take_dirty_slot()) {
                    let Kind::InSpan { span, slot } = b.kind else {
                        unreachable!("a slot is in a span")
                    };
                    // SAFETY: a listed span, under the table's lock.
                    t.unkeep_slot(unsafe { span.as_ref() }, slot, true);
                    t.in_use += b.bytes;
                    self.note_demand(t, now);
                    self.mirror(t);
                    return (Some(b), 0);
                }
            }
            let b = t.sizes[k].iter_mut().find_map(|s| s.take_slot());
            let mut beyond = 0;
            if let Some(b) = &b {
                t.in_use += b.bytes;
                beyond = self.note_demand(t, now);
            }
            (b, beyond)
        });
        if let Some(block) = found {
            // A clean slot: fresh memory, touched from now on.
            self.keep_to_demand(beyond, now);
            return Ok(block);
        }
        // Map a new span outside the lock, then take its first slot and list it.
        let base = self
            .map(SPAN_BYTES)
            .ok_or(AllocError::System { size: bytes })?;
        self.account(SPAN_BYTES);
        let slots = (SPAN_BYTES / bytes) as u32;
        let mut span = Box::new(Span {
            base,
            slot_bytes: bytes,
            slots,
            used: 0,
            free: [0; MAX_SLOTS / 64],
            dirty: [0; MAX_SLOTS / 64],
            dirty_since: vec![0; slots as usize].into_boxed_slice(),
        });
        for i in 0..slots {
            span.free[i as usize / 64] |= 1 << (i % 64);
        }
        let block = span.take_slot().expect("a new span has free slots");
        let beyond = self.spans.with(|t| {
            t.in_use += block.bytes;
            t.sizes[k].push(span);
            self.note_demand(t, now)
        });
        self.keep_to_demand(beyond, now);
        Ok(block)
    }

    fn map_direct(&self, bytes: usize) -> Result<Block, AllocError> {
        let len = bytes
            .checked_next_multiple_of(sys::page_size())
            .ok_or(AllocError::CapacityOverflow { requested: bytes })?;
        let now = if self.decay_ns != 0 { now_ns() } else { 0 };
        if self.decay_ns != 0 {
            // A kept mapping of the length, or up to an eighth longer (the smallest such):
            // its pages are resident, so the buffer or chunk is not faulted in again. The
            // tail past `bytes` is never touched through this block.
            let reused = self.spans.with(|t| {
                let (&(kept_len, at), _) = t
                    .kept_maps
                    .range((len, 0)..=(len + len / 8, usize::MAX))
                    .next()?;
                let ptr = t.unkeep_map(at, kept_len, true);
                t.direct_in_use += kept_len;
                self.note_demand(t, now);
                self.mirror(t);
                Some((ptr, kept_len))
            });
            if let Some((ptr, len)) = reused {
                return Ok(Block {
                    ptr,
                    bytes,
                    kind: Kind::Mapped { len },
                });
            }
        }
        let ptr = self.map(len).ok_or(AllocError::System { size: bytes })?;
        self.account(len);
        if self.decay_ns != 0 {
            let beyond = self.spans.with(|t| {
                t.direct_in_use += len;
                self.note_demand(t, now)
            });
            self.keep_to_demand(beyond, now);
        }
        Ok(Block {
            ptr,
            bytes,
            kind: Kind::Mapped { len },
        })
    }

    fn unmap_span(&self, span: &Span) {
        debug_assert_eq!(span.used, 0);
        // SAFETY: a span with no slot in use: nothing refers to its memory.
        unsafe { sys::unmap(span.base, SPAN_BYTES) };
        self.unaccount(SPAN_BYTES);
    }

    fn account(&self, len: usize) {
        self.mapped.fetch_add(len, Relaxed);
        PROCESS_MAPPED.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    }

    fn unaccount(&self, len: usize) {
        self.mapped.fetch_sub(len, Relaxed);
        PROCESS_MAPPED.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Memory {
    /// Every chunk has been given back by now (chunks keep their allocator alive): unmap the
    /// spans kept empty.
    fn drop(&mut self) {
        self.purge();
        self.release_empty();
        debug_assert_eq!(self.mapped(), 0, "a span outlived its allocator");
    }
}

impl Span {
    /// Bytes of this span's dirty slots.
    fn dirty_bytes(&self) -> usize {
        self.dirty
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum::<usize>()
            * self.slot_bytes
    }

    /// Takes the lowest dirty (free, still committed) slot, if any.
    fn take_dirty_slot(&mut self) -> Option<Block> {
        let (w, word) = self.dirty.iter().enumerate().find(|(_, w)| **w != 0)?;
        let bit = word.trailing_zeros();
        self.dirty[w] &= !(1 << bit);
        Some(self.take((w * 64) as u32 + bit))
    }

    /// Takes the lowest free slot, if any (clean or dirty: the caller accounts for a dirty
    /// one only through `take_dirty_slot`, so this is used when no slot is dirty or for a new
    /// span).
    fn take_slot(&mut self) -> Option<Block> {
        if self.used == self.slots {
            return None;
        }
        let (w, word) = self.free.iter().enumerate().find(|(_, w)| **w != 0)?;
        let bit = word.trailing_zeros();
        Some(self.take((w * 64) as u32 + bit))
    }

    /// The address of `slot` (one of this span's: `slot < slots`, checked).
    fn slot_ptr(&self, slot: u32) -> NonNull<u8> {
        assert!(slot < self.slots, "a slot of the span");
        // SAFETY: `slot < slots`, so the offset lies inside the span's mapping of
        // `SPAN_BYTES` (`slots * slot_bytes <= SPAN_BYTES`), whose base is not null.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(slot as usize * self.slot_bytes)) }
    }

    /// Marks `slot` (free) as in use and hands it out.
    fn take(&mut self, slot: u32) -> Block {
        let (w, bit) = (slot as usize / 64, slot % 64);
        debug_assert!(self.free[w] & (1 << bit) != 0);
        self.free[w] &= !(1 << bit);
        self.used += 1;
        Block {
            ptr: self.slot_ptr(slot),
            bytes: self.slot_bytes,
            kind: Kind::InSpan {
                span: NonNull::from(&*self),
                slot,
            },
        }
    }
}

fn size_index(bytes: usize) -> usize {
    (bytes.trailing_zeros() - MIN_SLOT_SHIFT) as usize
}

fn heap_layout(bytes: usize) -> Option<Layout> {
    Layout::from_size_align(bytes.max(1), HEAP_ALIGN).ok()
}

fn heap_alloc(bytes: usize) -> Result<Block, AllocError> {
    let layout = heap_layout(bytes).ok_or(AllocError::CapacityOverflow { requested: bytes })?;
    // SAFETY: `layout` has a non-zero size.
    let raw = unsafe { sync::alloc(layout) };
    let ptr = NonNull::new(raw).ok_or(AllocError::System { size: bytes })?;
    Ok(Block {
        ptr,
        bytes,
        kind: Kind::Heap,
    })
}

/// A monotonic clock in nanoseconds, never 0, for idle ages and sweep periods. On Linux it is
/// `CLOCK_MONOTONIC_COARSE` (a few nanoseconds to read, millisecond resolution: plenty for
/// ages measured against `idle_release`); elsewhere `Instant`. Under loom a logical clock
/// that advances a millisecond per reading, so the same schedule always takes the same
/// branches (models that exercise the idle sweep set `idle_release` to a few milliseconds;
/// with the default of 10 s no sweep falls due inside a model).
pub(crate) fn now_ns() -> u64 {
    #[cfg(loom)]
    {
        // A plain std thread-local even under loom: not part of any modelled protocol. loom
        // runs every thread of a model on the test's own OS thread, one at a time, so each
        // schedule reads the same sequence of values relative to its start. (A process-wide
        // counter made models depend on each other: `cargo test` runs them in parallel, and
        // one model's readings moved another's clock, which loom reports as a model that is
        // not deterministic.)
        std::thread_local! {
            static CLOCK: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
        }
        CLOCK.with(|c| {
            let now = c.get();
            c.set(now + 1_000_000);
            now
        })
    }
    #[cfg(not(loom))]
    {
        sys::now_ns().max(1)
    }
}

/// The heavy side of the asymmetric barrier that the magazine gate relies on (see
/// `magazine`): when it returns, every thread of the process has passed a full memory
/// barrier since it was called, so a store a thread made before that point is visible, and
/// stores made before the call are visible to the thread's later loads. With
/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` available the light side is only a
/// compiler fence; otherwise both sides are `fence(SeqCst)`.
pub(crate) fn heavy_barrier() {
    if asymmetric() {
        sys::membarrier();
    } else {
        sync::fence(sync::Ordering::SeqCst);
    }
}

/// `true` when [`heavy_barrier`] is the kernel's expedited membarrier, so the light side may
/// be a compiler fence. Decided once per process (the registration is made on first use).
pub(crate) fn asymmetric() -> bool {
    static STATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STATE.get_or_init(sys::register_membarrier)
}

#[cfg(all(any(target_os = "linux", target_os = "android"), not(loom), not(miri)))]
#[path = "os/sys_linux.rs"]
mod sys;

#[cfg(not(all(any(target_os = "linux", target_os = "android"), not(loom), not(miri))))]
#[path = "os/sys_none.rs"]
mod sys;

#[cfg(all(
    test,
    not(loom),
    not(miri),
    any(target_os = "linux", target_os = "android")
))]
#[path = "os/tests.rs"]
mod tests;
