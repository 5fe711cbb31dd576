//! Chunks: one region of memory from the system, carved into equal segments of one size
//! class, with its allocation cursor, its usage accounting, its local and remote free lists
//! and its life-cycle state; the raw allocation and release. Most of the crate's `unsafe`
//! code lives here.
//!
//! Owns: [`Chunk`], [`ChunkPtr`], the chunk-creation guard. May import: `sync`, `stats`,
//! `error`. Knows nothing of magazines or allocators: the owner keeps an opaque context pointer
//! in the chunk, and a chunk that must be recycled is handed to its [`Home`].
//!
//! # Who owns which field
//! * Immutable after creation: `base`, `bytes`, `unpooled`, `home`, `home_id`, `poison`,
//!   `scrub`.
//! * The *format* (`class`, `seg_size`, `seg_count`) is written only while the chunk is held
//!   exclusively (fresh, or just taken from the central queue) and before any region is
//!   handed out; a region's holder reads `seg_size` (the handoff of the region orders it).
//! * *Owner-only* (`cursor`, `local_head`, `live`, `ctx`, `seq`, `slot`, `idle_since`): read
//!   and written only by the thread whose token is in `owner`, or by whoever holds the chunk
//!   exclusively (creator, central queue, recycler). Plain loads and stores.
//! * *Shared*: `owner` (written by the owner only, read by anyone to ask "is it me?"),
//!   `remote` (the remote-free stack plus the `ABANDONED` and `PARKED` flags and, when
//!   parked, the live count) and `abandoned_live`.
//!
//! The allocation cursor (`cursor`, segments ever carved) and the usage accounting (`live`,
//! segments handed out and not yet returned) are separate fields: a freed segment goes on a
//! free list and is carved again before the cursor moves, and the chunk is fully free exactly
//! when `live == 0`, wherever the cursor stands.
//!
//! # Life cycle
//! ```text
//!   system ──allocate──▶ Exclusive ──format+adopt──▶ Owned (current or partial in a magazine)
//!                          ▲   │                         │ live == 0, not current: retire
//!                          │   └──────────────┐          │ thread exit / trim: abandon
//!            pop (central) │                  ▼          ▼
//!                        Idle ◀──recycle── Exclusive ◀── Abandoned (live > 0; last free
//!                    (central queue)          │              recycles, exactly once)
//!                          │ over budget,     │
//!                          └ idle, trim ──────┴──▶ system
//! ```
//! An unpooled buffer is a chunk of one segment that starts out Abandoned with one live
//! region, so its release takes the same path. At thread exit a chunk with live regions may
//! be *parked* instead of abandoned ([`ChunkPtr::park`]): no owner, its free space kept, its
//! releases pushing and counting down in the `remote` word; the last one recycles it, unless
//! a thread adopted it first ([`ChunkPtr::unpark`]), which makes it Owned again.
//!
//! # Remote frees
//! A thread that frees a region of a chunk it does not own pushes the segment onto `remote`,
//! a Treiber stack whose links live in the freed segments' first four bytes. Pushers only push
//! and the owner only takes the whole stack with `swap`, so the stack has no ABA problem.
//! Each push is a `Release` CAS; the owner's `swap` is `Acquire`, so the pusher's writes into
//! the segment (link, poison) happen before the owner reuses it. The word also counts the
//! segments on the stack (from bit [`PUSH_ONE`] up; the same CAS adds one), so the owner
//! takes the stack and its length in one `swap`: when its local free list is empty it makes
//! the stack its list as it is, without walking it (the walk was a chain of cache misses on
//! lines the freeing thread last wrote), and the pops of later allocations read each link
//! as they reach the segment they are about to hand out anyway.
//!
//! # Abandoning
//! When the owner (or a reclaimer holding the owner's magazine) gives a chunk up it (1) clears
//! `owner`, (2) swaps `remote` to `ABANDONED` (`Acquire`), taking any stacked frees, (3) adds
//! its remaining `live` count to `abandoned_live` with `fetch_add(Release)`. A remote free that
//! sees `ABANDONED` does `abandoned_live.fetch_sub(1, Release)` instead of pushing. The counter
//! starts at zero, goes negative while frees race ahead of step 3, and reaches zero exactly
//! once after step 3: the thread that makes it zero (the owner in step 3 if nothing is live,
//! otherwise the last freer) recycles the chunk, after an `Acquire` (as `Arc` does:
//! `sync::acquire_count`), so every write into the chunk happens before the recycler touches
//! it.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::AllocError;
use crate::os::{Block, Memory};
use crate::stats::Counters;
use crate::sync::{self, AtomicI64, AtomicU64, AtomicUsize, Ordering::*, UnsafeCell};

/// "No segment": the end of a free list.
pub(crate) const NONE: u32 = u32::MAX;
/// Flag in `remote`: the chunk has no owner; frees count down `abandoned_live`, or, with
/// `PARKED`, the count in the word itself.
const ABANDONED: u64 = 1 << 32;
/// Flag in `remote`, with `ABANDONED`: the chunk is parked (its owner exited, see
/// [`ChunkPtr::park`]). A release pushes its segment and decrements the live count held in
/// the word's bits from [`PARK_ONE`] up, in one compare-and-swap.
const PARKED: u64 = 1 << 33;
/// One live region in the count of a parked chunk's `remote` word.
const PARK_ONE: u64 = 1 << 34;
/// One segment in the count of an owned chunk's remote stack, in the same bits of the word
/// as a parked chunk's live count.
const PUSH_ONE: u64 = PARK_ONE;
/// The most live regions a parked chunk's word can count.
const PARK_MAX: u64 = u64::MAX / PARK_ONE;
/// The byte freed regions are filled with when poisoning is on.
pub(crate) const POISON: u8 = 0xA5;
/// Bytes at the start of a free segment that hold its free-list link.
const LINK: usize = 4;
/// Flag on a segment index returned by [`ChunkPtr::carve`]: the segment came off a free list
/// of a poisoning chunk, and its poison must be checked ([`ChunkPtr::check_carved`]) before
/// use. Kept out of the carve itself so that nothing inside the magazine's gate can panic.
pub(crate) const CHECK: u32 = 1 << 31;
/// The most segments a chunk is formatted for: indices stay below [`CHECK`], and the counts
/// in the `remote` word (segments stacked, live regions of a parked chunk) below
/// [`PARK_MAX`]. (Chunks are at most 1 GiB, so 2^25 segments of 32 bytes: far below both.)
const MAX_SEGMENTS: usize = PARK_MAX as usize;
const _: () = assert!(PARK_MAX < CHECK as u64);

/// Where a chunk goes when nobody holds it any more.
pub(crate) trait Home: Any + Send + Sync {
    /// The counters that account for this chunk.
    fn counters(&self) -> &Counters;

    /// Where the chunk's memory comes from and goes back to.
    fn memory(&self) -> &Memory;

    /// Takes a chunk with no live region and no owner: cache it or give it to the system.
    fn recycle(&self, chunk: ChunkPtr);

    /// A number naming this home among the live ones (kept in each chunk, so a releasing
    /// thread can find its own per-home state without a virtual call).
    fn id(&self) -> usize;

    /// `true` once the home has closed for good (releases still come back to it).
    fn is_closed(&self) -> bool;
}

/// A free segment waiting in the older part of a magazine's per-class cache, written over the
/// segment's first bytes: the next node of the cache, and the segment's chunk and index. The
/// newest cached segments are kept in the magazine itself (its hot stack); those it spills
/// become such nodes, and allocations pop them once the hot stack is empty. A cached segment
/// counts as free in its chunk's `live`, which stays exact.
pub(crate) struct CachedSeg {
    next: Option<NonNull<CachedSeg>>,
    chunk: ChunkPtr,
    idx: u32,
}

impl CachedSeg {
    /// Reads a cache node: the segment's chunk and index, and the next node.
    ///
    /// # Safety
    /// `node` is a node of a cache the calling thread owns (written by
    /// [`CachedSeg::write`] and not taken since).
    #[inline(always)]
    pub(crate) unsafe fn read(
        node: NonNull<CachedSeg>,
    ) -> (ChunkPtr, u32, Option<NonNull<CachedSeg>>) {
        // SAFETY: a node written by `write`, in a free segment nobody else touches.
        let n = unsafe { node.as_ptr().read() };
        (n.chunk, n.idx, n.next)
    }

    /// Writes a cache node over the first bytes of free segment `idx` of `chunk`, linking to
    /// `next`, and answers it. The live count does not change (the segment is already free:
    /// it moves from the magazine's hot stack to the cache's list).
    ///
    /// # Safety
    /// The calling thread owns `chunk`, whose segment `idx` is free and held by its cache;
    /// `next` is a node of the same cache. The chunk does not scrub released regions.
    pub(crate) unsafe fn write(
        chunk: ChunkPtr,
        idx: u32,
        next: Option<NonNull<CachedSeg>>,
    ) -> NonNull<CachedSeg> {
        debug_assert!(!chunk.header().scrub);
        // SAFETY: the segment is free and the cache's (16-aligned, at least 32 bytes, so a
        // node fits), by the caller's guarantee.
        unsafe {
            let node = chunk.segment(idx).cast::<CachedSeg>();
            node.as_ptr().write(CachedSeg { next, chunk, idx });
            node
        }
    }

    /// Relinks `node` to `next` (the cache drops the node that followed it).
    ///
    /// # Safety
    /// As for [`CachedSeg::read`].
    pub(crate) unsafe fn set_next(node: NonNull<CachedSeg>, next: Option<NonNull<CachedSeg>>) {
        // SAFETY: as the caller guarantees; the field is written in place.
        unsafe { (*node.as_ptr()).next = next };
    }
}

/// Holds its content on cache lines of its own (128 bytes: x86 prefetches lines in adjacent
/// pairs), so that fields written by different threads never share a line.
#[repr(align(128))]
struct CacheLines<T>(T);

impl<T> std::ops::Deref for CacheLines<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One chunk's header. The memory it describes is `bytes` bytes at `base`.
///
/// Laid out in three groups by who writes them, so a remote free (which reads the first group
/// and writes the third) never contends for the line the owner writes on every allocation
/// (the second). `repr(C)` keeps the fields that every release reads (the owner, the format,
/// the flags) together on the first 64-byte line: left to the compiler they straddled two,
/// one more cache miss on each release into a chunk not touched lately (larson, B4).
#[repr(C)]
pub(crate) struct Chunk {
    // Shared, read by every release, written only when the owner changes.
    owner: AtomicUsize,

    // Format: written while exclusive, read by region holders.
    seg_size: UnsafeCell<usize>,
    /// `home.id()`, read on remote releases.
    home_id: usize,
    seg_count: UnsafeCell<u32>,
    class: UnsafeCell<u16>,
    unpooled: bool,
    poison: bool,
    /// Released regions are filled (with `POISON` if `poison`, else zeros): one test on the
    /// release path.
    scrub: bool,
    home: Arc<dyn Home>,
    /// The memory: `block.bytes()` bytes at `block.ptr()`.
    block: Block,

    // Owner-only, written on every allocation and local release.
    own: CacheLines<OwnerFields>,

    // Shared, written by remote releases.
    shared: CacheLines<RemoteFields>,
}

/// The owner-only fields of a [`Chunk`].
struct OwnerFields {
    cursor: UnsafeCell<u32>,
    local_head: UnsafeCell<u32>,
    live: UnsafeCell<u32>,
    ctx: UnsafeCell<*mut ()>,
    seq: UnsafeCell<u64>,
    /// Whether the owner took the chunk from the central queue (else from the system).
    from_cache: UnsafeCell<bool>,
    slot: UnsafeCell<usize>,
    /// When the chunk was last seen idle (nanoseconds of `os::now_ns`; 0: not idle).
    idle_since: UnsafeCell<u64>,
}

/// The fields of a [`Chunk`] that remote releases write.
struct RemoteFields {
    remote: AtomicU64,
    abandoned_live: AtomicI64,
}

/// A placeholder for the unused slots of an array of chunk pointers: points to no chunk and
/// is never dereferenced (only compared, and only where a slot is in use).
pub(crate) const NO_CHUNK: ChunkPtr = ChunkPtr(NonNull::dangling());

/// A pointer to a chunk header. Who may do what through it is stated on each method; moving
/// exclusive ownership between threads (through the central queue) is why it is `Send`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ChunkPtr(NonNull<Chunk>);

// SAFETY: a `ChunkPtr` is a plain address (the header it points to holds raw pointers only
// as documented, ownership-protected fields). Every access through it follows the ownership
// protocol documented on `Chunk` (owner-only fields by the owner or exclusive holder, shared
// fields through atomics), which holds whichever thread the pointer travels to.
unsafe impl Send for ChunkPtr {}
// SAFETY: as for `Send`: sharing the address gives no access beyond that protocol.
unsafe impl Sync for ChunkPtr {}

/// What a remote free asks of its caller.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum RemoteFree {
    /// The segment is on its way back to the owner.
    Queued,
    /// The chunk is abandoned and this was its last live region: the caller now holds it
    /// exclusively and must recycle it.
    Recycle,
    /// The chunk is parked and this was its last live region: the caller now holds it
    /// exclusively (no thread can adopt it any more) and must take it out of the parked set
    /// and recycle it.
    RecycleParked,
}

/// Rolls back a chunk creation: the byte reservation and, once made, the memory.
struct CreationGuard<'a> {
    counters: &'a Counters,
    memory: &'a Memory,
    bytes: usize,
    block: Option<Block>,
}

impl Drop for CreationGuard<'_> {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            // SAFETY: `block` came from `self.memory` in `Chunk::create` and has not been
            // handed to anyone: creation failed before the header took it.
            unsafe { self.memory.free(block) };
        }
        self.counters.unreserve(self.bytes);
    }
}

impl ChunkPtr {
    /// Allocates a chunk of `bytes` (or, `unpooled`, the memory of one buffer) from the
    /// home's memory, under `limit`, accounted in the home's counters. The caller holds the
    /// new chunk exclusively. Every step is rolled back if a later one fails or panics.
    pub(crate) fn create(
        home: &Arc<dyn Home>,
        bytes: usize,
        limit: usize,
        unpooled: bool,
        poison: bool,
        zero: bool,
    ) -> Result<ChunkPtr, AllocError> {
        let counters = home.counters();
        let memory = home.memory();
        counters.reserve(bytes, limit)?;
        let mut guard = CreationGuard {
            counters,
            memory,
            bytes,
            block: None,
        };
        guard.block = Some(if unpooled {
            memory.alloc_unpooled(bytes)?
        } else {
            memory.alloc_chunk(bytes)?
        });
        let header = Box::new(Chunk {
            block: guard.block.take().expect("set just above"),
            unpooled,
            poison,
            scrub: poison || zero,
            home: home.clone(),
            home_id: home.id(),
            class: UnsafeCell::new(0),
            seg_size: UnsafeCell::new(bytes),
            seg_count: UnsafeCell::new(0),
            owner: AtomicUsize::new(0),
            own: CacheLines(OwnerFields {
                cursor: UnsafeCell::new(0),
                local_head: UnsafeCell::new(NONE),
                live: UnsafeCell::new(0),
                ctx: UnsafeCell::new(std::ptr::null_mut()),
                seq: UnsafeCell::new(0),
                from_cache: UnsafeCell::new(false),
                slot: UnsafeCell::new(0),
                idle_since: UnsafeCell::new(0),
            }),
            shared: CacheLines(RemoteFields {
                remote: AtomicU64::new(NONE as u64),
                abandoned_live: AtomicI64::new(0),
            }),
        });
        std::mem::forget(guard);
        counters.on_system_alloc(unpooled);
        Ok(ChunkPtr(NonNull::from(Box::leak(header))))
    }

    /// Creates an unpooled buffer: a chunk of one segment of `bytes`, already abandoned with
    /// that one region live, so its single release recycles it through [`Home::recycle`].
    pub(crate) fn create_unpooled(
        home: &Arc<dyn Home>,
        bytes: usize,
        limit: usize,
        poison: bool,
        zero: bool,
    ) -> Result<ChunkPtr, AllocError> {
        let c = ChunkPtr::create(home, bytes, limit, true, poison, zero)?;
        let h = c.header();
        // SAFETY: the chunk was just created and is held exclusively by this thread.
        unsafe {
            h.seg_size.set(bytes);
            h.seg_count.set(1);
            h.own.cursor.set(1);
            h.own.live.set(1);
        }
        h.shared.remote.store(ABANDONED | NONE as u64, Relaxed);
        h.shared.abandoned_live.store(1, Relaxed);
        Ok(c)
    }

    /// Gives an exclusively held chunk back to the system.
    ///
    /// # Safety
    /// The caller holds the chunk exclusively and no region of it is live; the pointer is
    /// dangling afterwards.
    pub(crate) unsafe fn free_to_system(self) {
        // SAFETY: the header was leaked from a `Box` in `create` and, by the caller's
        // guarantee, nobody else refers to it any more.
        let header = unsafe { Box::from_raw(self.0.as_ptr()) };
        let Chunk {
            block,
            unpooled,
            home,
            ..
        } = *header;
        let bytes = block.bytes();
        // SAFETY: the block came from the home's memory in `create`, and no region of it is
        // live.
        unsafe { home.memory().free(block) };
        home.counters().on_system_free(bytes, unpooled);
    }

    #[inline(always)]
    fn header(&self) -> &Chunk {
        // SAFETY: a `ChunkPtr` in circulation always points to a live header: headers are
        // freed only by `free_to_system`, whose caller holds the chunk exclusively.
        unsafe { self.0.as_ref() }
    }

    /// The chunk's size in bytes.
    pub(crate) fn bytes(self) -> usize {
        self.header().block.bytes()
    }

    /// Grows the chunk of an unpooled buffer mapped on its own to `bytes`, its one region
    /// with it, without copying (`Memory::remap`), accounting the bytes added under `limit`.
    /// Answers `Ok(true)` when done (the region, still `idx` 0, now `bytes` long at
    /// `segment(0)`, which may have moved), `Ok(false)` when it cannot be done here (not
    /// mapped on its own, or the kernel refused: nothing changed, the caller copies), and
    /// `MemoryLimit` when the bytes added do not fit.
    ///
    /// # Safety
    /// `self` is an unpooled chunk, `bytes` at least its size, and the caller holds the only
    /// handle on its region (so nothing else reads the header's block or the region's
    /// memory while it changes).
    pub(crate) unsafe fn grow_unpooled(
        self,
        bytes: usize,
        limit: usize,
    ) -> Result<bool, AllocError> {
        let h = self.header();
        debug_assert!(h.unpooled && bytes >= h.block.bytes());
        let added = bytes - h.block.bytes();
        let counters = h.home.counters();
        counters.reserve(added, limit)?;
        // SAFETY: the caller holds the only handle on the region, so nothing else refers to
        // the block's memory.
        let Some(block) = (unsafe { h.home.memory().remap(&h.block, bytes) }) else {
            counters.unreserve(added);
            return Ok(false);
        };
        let header = self.0.as_ptr();
        // SAFETY: the header lives (the caller's handle keeps it) and nobody else reads it
        // now (the only handle is the caller's); written through the pointer the header was
        // leaked as, so every `ChunkPtr` to it stays valid.
        unsafe {
            (*header).block = block;
            (*header).seg_size.set(bytes);
        }
        Ok(true)
    }

    /// `true` for the one-segment chunk of an unpooled buffer.
    pub(crate) fn is_unpooled(self) -> bool {
        self.header().unpooled
    }

    /// The home this chunk recycles to.
    pub(crate) fn home(&self) -> &Arc<dyn Home> {
        &self.header().home
    }

    /// The id of the chunk's home.
    #[inline]
    pub(crate) fn home_id(&self) -> usize {
        self.header().home_id
    }

    /// Formats an exclusively held chunk for segments of `seg_size` bytes of class `class`:
    /// empty free lists, cursor at zero, nothing live, no owner, no remote frees.
    ///
    /// # Safety
    /// The caller holds the chunk exclusively and no region of it is live.
    pub(crate) unsafe fn format(self, class: u16, seg_size: usize) {
        let h = self.header();
        let bytes = h.block.bytes();
        debug_assert!(seg_size >= 32 && seg_size <= bytes && seg_size % 16 == 0);
        let count = (bytes / seg_size).min(MAX_SEGMENTS) as u32;
        // SAFETY: exclusive, by the caller's guarantee.
        unsafe {
            h.class.set(class);
            h.seg_size.set(seg_size);
            h.seg_count.set(count);
            h.own.cursor.set(0);
            h.own.local_head.set(NONE);
            h.own.live.set(0);
            h.own.idle_since.set(0);
        }
        h.owner.store(0, Relaxed);
        h.shared.remote.store(NONE as u64, Relaxed);
        h.shared.abandoned_live.store(0, Relaxed);
    }

    /// Makes the calling thread (`token`) the owner, with an opaque owner context, a
    /// sequence number (the owner's age order) and where the chunk came from.
    ///
    /// # Safety
    /// The caller holds the chunk exclusively and `token` is its own thread token.
    pub(crate) unsafe fn adopt(self, token: usize, ctx: *mut (), seq: u64, from_cache: bool) {
        let h = self.header();
        // SAFETY: exclusive, by the caller's guarantee.
        unsafe {
            h.own.ctx.set(ctx);
            h.own.seq.set(seq);
            h.own.from_cache.set(from_cache);
        }
        h.owner.store(token, Relaxed);
    }

    /// `true` if the thread with `token` owns this chunk. Sound from any thread: only the
    /// owner ever writes its own token into `owner`, so a thread reads its own token there
    /// exactly while it is the owner.
    #[inline(always)]
    pub(crate) fn is_owned_by(self, token: usize) -> bool {
        self.header().owner.load(Relaxed) == token
    }

    /// The address of segment `idx`.
    ///
    /// # Safety
    /// Segment `idx` has been carved under the chunk's current format, and the caller keeps
    /// that format stable: it holds a live region of the chunk, owns it, or holds it
    /// exclusively (so `seg_size` is not being rewritten and `idx` lies inside the chunk).
    #[inline(always)]
    pub(crate) unsafe fn segment(self, idx: u32) -> NonNull<u8> {
        let h = self.header();
        // SAFETY: by the caller's guarantee the format is stable.
        let offset = idx as usize * unsafe { h.seg_size.get() };
        debug_assert!(offset < h.block.bytes().max(1));
        // SAFETY: `offset` is inside the chunk's memory (`block`).
        unsafe { NonNull::new_unchecked(h.block.ptr().as_ptr().add(offset)) }
    }

    /// The segment size (the capacity of every region of this chunk).
    ///
    /// # Safety
    /// The caller holds a live region of the chunk, or owns or exclusively holds it.
    #[inline(always)]
    pub(crate) unsafe fn seg_size(self) -> usize {
        // SAFETY: by the caller's guarantee the format is stable.
        unsafe { self.header().seg_size.get() }
    }

    /// The size class the chunk is formatted for.
    ///
    /// # Safety
    /// As for [`ChunkPtr::seg_size`].
    #[inline(always)]
    pub(crate) unsafe fn class(self) -> u16 {
        // SAFETY: by the caller's guarantee the format is stable.
        unsafe { self.header().class.get() }
    }

    /// Writes the free-list link of segment `idx`.
    ///
    /// # Safety
    /// The caller owns segment `idx` (it is free and on no list, or being freed by the caller).
    #[inline(always)]
    unsafe fn set_link(self, idx: u32, next: u32) {
        // SAFETY: segments are 16-aligned and at least 32 bytes, and the caller owns this one
        // (so the format is stable).
        unsafe { self.segment(idx).cast::<u32>().as_ptr().write(next) }
    }

    /// Reads the free-list link of segment `idx`.
    ///
    /// # Safety
    /// Segment `idx` is on a free list the caller owns.
    #[inline(always)]
    unsafe fn link(self, idx: u32) -> u32 {
        // SAFETY: as for `set_link`; the link was written before the segment was listed.
        unsafe { self.segment(idx).cast::<u32>().as_ptr().read() }
    }

    /// Scrubs a released segment (poison or zero), leaving its first `keep` bytes alone.
    ///
    /// # Safety
    /// The caller is releasing segment `idx` and no handle to it remains.
    #[inline(always)]
    unsafe fn scrub(self, idx: u32, keep: usize) {
        if self.header().scrub {
            // SAFETY: as the caller guarantees.
            unsafe { self.scrub_now(idx, keep) }
        }
    }

    /// The fill itself, out of line: scrubbing is off unless asked for, and a call on the
    /// release path would make every release save registers for it.
    ///
    /// # Safety
    /// As for [`ChunkPtr::scrub`].
    #[cold]
    #[inline(never)]
    unsafe fn scrub_now(self, idx: u32, keep: usize) {
        let h = self.header();
        let fill = if h.poison { POISON } else { 0 };
        // SAFETY: the caller holds the region.
        let size = unsafe { self.seg_size() };
        // SAFETY: the segment's bytes `keep..size` lie inside the chunk and nobody else
        // refers to them.
        unsafe {
            self.segment(idx)
                .as_ptr()
                .add(keep)
                .write_bytes(fill, size - keep)
        };
    }

    /// Checks the poison of a segment [`carve`](ChunkPtr::carve) returned with the [`CHECK`]
    /// flag, and answers its index without the flag. Panics, naming it, if the segment was
    /// written after it was released.
    ///
    /// # Safety
    /// The caller holds region `idx & !CHECK`, just carved, which nobody has written yet.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn check_carved(self, idx: u32) -> u32 {
        let idx = idx & !CHECK;
        // SAFETY: the caller holds the region, so the format is stable.
        let size = unsafe { self.seg_size() };
        // SAFETY: the caller holds the segment; its bytes lie inside the chunk.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.segment(idx).as_ptr().add(LINK), size - LINK)
        };
        // Compare eight bytes at a time; find the exact byte only when reporting.
        let word = u64::from_ne_bytes([POISON; 8]);
        let words = bytes.chunks_exact(8);
        let tail_ok = words.remainder().iter().all(|&b| b == POISON);
        let clean = tail_ok
            && words
                .into_iter()
                .all(|w| u64::from_ne_bytes(w.try_into().unwrap()) == word);
        if !clean {
            let pos = bytes.iter().position(|&b| b != POISON).unwrap_or(0);
            panic!(
                "adaptive-pool: a freed buffer was written after release (byte {} of a {}-byte \
                 region holds {:#04x}, expected poison {:#04x}): use after free through unsafe code",
                pos + LINK,
                size,
                bytes[pos],
                POISON
            );
        }
        idx
    }

    /// Carves one segment: from the local free list if it has one, else from the remote
    /// frees (drained first, so space other threads gave back is reused before fresh space),
    /// else at the cursor. A segment from a free list of a poisoning chunk comes back with
    /// the [`CHECK`] flag: the caller checks it with [`check_carved`](ChunkPtr::check_carved)
    /// once it has left the owner's critical section. Never panics.
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline(always)]
    pub(crate) unsafe fn carve(self) -> Option<u32> {
        // SAFETY (whole block): owned by the caller.
        unsafe {
            match self.carve_from_list_or_cursor::<true>() {
                // It gives up when its local list is empty and frees wait.
                None if self.has_remote() => {
                    self.drain_remote();
                    self.carve_from_list_or_cursor::<true>()
                }
                carved => carved,
            }
            .map(|(idx, _)| idx)
        }
    }

    /// [`carve`](ChunkPtr::carve) without draining and without checks to make: from the local
    /// free list, else at the cursor; `None` if neither has space or remote frees wait (the
    /// caller's slow path drains them, so space other threads gave back is still reused
    /// before fresh space), and `None` while a poisoning chunk's free list holds segments,
    /// which must be checked (the slow path carves them with [`carve`](ChunkPtr::carve)). So
    /// what it answers is ready for use: the fast path has no check to make. It answers the
    /// segment's address with its index (the carve computes it anyway). Calls nothing: the
    /// allocation fast path.
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline(always)]
    pub(crate) unsafe fn carve_local(self) -> Option<(u32, NonNull<u8>)> {
        // SAFETY: as the caller guarantees.
        unsafe { self.carve_from_list_or_cursor::<false>() }
    }

    /// The carve of [`carve`](ChunkPtr::carve) and [`carve_local`](ChunkPtr::carve_local):
    /// the local free list first, else the cursor (unless remote frees wait); the segment's
    /// index and address. A segment on a poisoning chunk's free list is carved with the
    /// [`CHECK`] flag on its index if `CHECKED` (the caller checks it), and not at all
    /// otherwise.
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline(always)]
    unsafe fn carve_from_list_or_cursor<const CHECKED: bool>(self) -> Option<(u32, NonNull<u8>)> {
        let h = self.header();
        // SAFETY (whole block): owner-only fields, accessed by the owner; a listed segment's
        // link was written before it was listed, and the owner holds its list.
        unsafe {
            let head = h.own.local_head.get();
            let carved = if head != NONE {
                let flag = match h.poison {
                    false => 0,
                    true if CHECKED => CHECK,
                    true => return None,
                };
                // The address once, for the link and for the caller.
                let seg = self.segment(head);
                h.own.local_head.set(seg.cast::<u32>().as_ptr().read());
                (head | flag, seg)
            } else {
                let c = h.own.cursor.get();
                if c >= h.seg_count.get() || self.has_remote() {
                    return None;
                }
                h.own.cursor.set(c + 1);
                (c, self.segment(c))
            };
            h.own.live.set(h.own.live.get() + 1);
            Some(carved)
        }
    }

    /// `true` if released regions of this chunk are scrubbed (poison or zeroing).
    #[inline(always)]
    pub(crate) fn scrubs(self) -> bool {
        self.header().scrub
    }

    /// Returns segment `idx` to the local free list; answers the number of live regions left.
    ///
    /// # Safety
    /// The calling thread owns the chunk and is releasing the last handle to region `idx`.
    #[inline(always)]
    pub(crate) unsafe fn free_local(self, idx: u32) -> u32 {
        // SAFETY: as the caller guarantees.
        unsafe {
            self.scrub(idx, LINK);
            self.free_local_unscrubbed(idx)
        }
    }

    /// [`free_local`](ChunkPtr::free_local) for a chunk that does not scrub
    /// ([`scrubs`](ChunkPtr::scrubs) is `false`).
    ///
    /// # Safety
    /// As for [`free_local`](ChunkPtr::free_local).
    #[inline(always)]
    pub(crate) unsafe fn free_local_unscrubbed(self, idx: u32) -> u32 {
        let h = self.header();
        // SAFETY (whole block): owner-only fields by the owner; the segment is the caller's.
        unsafe {
            self.set_link(idx, h.own.local_head.get());
            h.own.local_head.set(idx);
            let live = h.own.live.get() - 1;
            h.own.live.set(live);
            live
        }
    }

    /// Releases a region into its owner's cache of free segments, which keeps its chunk and
    /// index (the magazine's hot stack, or a [`CachedSeg`] node written later): one live
    /// region fewer, and nothing written into the segment. Answers the live regions left.
    /// The segment goes on no list of the chunk: it is free space only the cache can hand
    /// out again ([`ChunkPtr::take_cached`]) or give back ([`ChunkPtr::uncache`]).
    ///
    /// # Safety
    /// The calling thread owns the chunk and gives up the last handle to one of its regions,
    /// which its cache takes.
    #[inline(always)]
    pub(crate) unsafe fn release_cached(self) -> u32 {
        let h = self.header();
        // SAFETY: `live` is owner-only, written by the owner.
        unsafe {
            let live = h.own.live.get() - 1;
            h.own.live.set(live);
            live
        }
    }

    /// A segment the owner's cache held is handed out again: one live region more.
    ///
    /// # Safety
    /// The calling thread owns the chunk, and took one of its segments out of its cache.
    #[inline(always)]
    pub(crate) unsafe fn take_cached(self) {
        let h = self.header();
        // SAFETY: `live` is owner-only, written by the owner.
        unsafe { h.own.live.set(h.own.live.get() + 1) };
    }

    /// Puts a segment of this chunk that waited in its owner's cache back on the chunk's
    /// local free list, as a local release would have (the live count already excludes it).
    ///
    /// # Safety
    /// The calling thread owns the chunk, and took segment `idx` out of its cache.
    pub(crate) unsafe fn uncache(self, idx: u32) {
        let h = self.header();
        // SAFETY (whole block): owner-only fields by the owner; the segment is free and on no
        // list now.
        unsafe {
            self.set_link(idx, h.own.local_head.get());
            h.own.local_head.set(idx);
        }
    }

    /// Releases region `idx` from a thread that does not own the chunk.
    ///
    /// # Safety
    /// The caller is releasing the last handle to region `idx`, and does not own the chunk.
    pub(crate) unsafe fn free_remote(self, idx: u32) -> RemoteFree {
        let h = self.header();
        // The whole segment: a release into an abandoned chunk writes no link over its first
        // bytes, so they must not keep the released data either.
        // SAFETY: the caller holds the region.
        unsafe { self.scrub(idx, 0) };
        let mut head = h.shared.remote.load(Relaxed);
        loop {
            if head & ABANDONED != 0 {
                if head & PARKED != 0 {
                    // SAFETY: as the caller guarantees; the segment is scrubbed.
                    match unsafe { self.free_parked(idx, head) } {
                        Ok(done) => return done,
                        Err(actual) => {
                            head = actual;
                            continue;
                        }
                    }
                }
                // `Release`, and `Acquire` by the last one (see `abandon`).
                return if h.shared.abandoned_live.fetch_sub(1, Release) == 1 {
                    sync::acquire_count(&h.shared.abandoned_live);
                    RemoteFree::Recycle
                } else {
                    RemoteFree::Queued
                };
            }
            // SAFETY: the segment is the caller's until the CAS below publishes it.
            unsafe { self.set_link(idx, head as u32) };
            // The new head, and the stack's length one more (no flag is set here).
            let next = ((head & !(NONE as u64)) + PUSH_ONE) | idx as u64;
            match h
                .shared
                .remote
                .compare_exchange_weak(head, next, Release, Relaxed)
            {
                Ok(_) => return RemoteFree::Queued,
                Err(actual) => head = actual,
            }
        }
    }

    /// One attempt of [`free_remote`](ChunkPtr::free_remote) into a parked chunk (`head`, as
    /// loaded, has `PARKED`): pushes the segment and counts down in one CAS (see `park`), so
    /// the segment stays known to the thread that adopts the chunk, and exactly one release
    /// sees the count reach zero. `Err` with the word found if it changed meanwhile (another
    /// release, or an adoption): the caller looks at it again.
    ///
    /// # Safety
    /// As for `free_remote`, whose scrub is done.
    #[cold]
    #[inline(never)]
    unsafe fn free_parked(self, idx: u32, head: u64) -> Result<RemoteFree, u64> {
        // SAFETY: the segment is the caller's until the CAS below publishes it.
        unsafe { self.set_link(idx, head as u32) };
        let next = ((head - PARK_ONE) & !(NONE as u64)) | idx as u64;
        let last = next < PARK_ONE;
        // `Release` publishes the link (and scrub); the last one also acquires every earlier
        // push and the parking, before it recycles the chunk.
        let order = if last { AcqRel } else { Release };
        self.header()
            .shared
            .remote
            .compare_exchange_weak(head, next, order, Relaxed)
            .map(|_| {
                if last {
                    RemoteFree::RecycleParked
                } else {
                    RemoteFree::Queued
                }
            })
    }

    /// `true` if remote frees are waiting to be drained. A relaxed load: a hint only.
    #[inline]
    pub(crate) fn has_remote(self) -> bool {
        self.header().shared.remote.load(Relaxed) as u32 != NONE
    }

    /// Moves the remote-free stack onto the local free list; answers how many it moved.
    /// With the local list empty (the usual case: the carve drains only then) the stack
    /// becomes the list as it is, in O(1); otherwise its segments are moved one by one.
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    pub(crate) unsafe fn drain_remote(self) -> u32 {
        let h = self.header();
        if !self.has_remote() {
            return 0;
        }
        let word = h.shared.remote.swap(NONE as u64, Acquire);
        let top = word as u32;
        let n = (word / PUSH_ONE) as u32;
        // SAFETY (whole block): the owner now holds every segment of the taken stack, whose
        // links were written before their pushes (ordered by the `Acquire` swap); the stack
        // ends in `NONE` (a drained or fresh word's head), as a free list does.
        unsafe {
            if h.own.local_head.get() == NONE {
                h.own.local_head.set(top);
            } else {
                let mut idx = top;
                let mut moved = 0;
                while idx != NONE {
                    let next = self.link(idx);
                    self.set_link(idx, h.own.local_head.get());
                    h.own.local_head.set(idx);
                    idx = next;
                    moved += 1;
                }
                debug_assert_eq!(moved, n, "the word counts the stack");
            }
            h.own.live.set(h.own.live.get() - n);
        }
        n
    }

    /// Live regions as the owner counts them (remote frees count once drained).
    ///
    /// # Safety
    /// The calling thread owns the chunk or holds it exclusively.
    #[inline(always)]
    pub(crate) unsafe fn live(self) -> u32 {
        // SAFETY: owner-only field, by the owner.
        unsafe { self.header().own.live.get() }
    }

    /// `true` if [`carve`](ChunkPtr::carve) would succeed without draining.
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline]
    pub(crate) unsafe fn has_local_space(self) -> bool {
        let h = self.header();
        // SAFETY: owner-only fields, by the owner.
        unsafe { h.own.local_head.get() != NONE || h.own.cursor.get() < h.seg_count.get() }
    }

    /// Gives up ownership. If no region is live the caller now holds the chunk exclusively
    /// and must recycle it (`RemoteFree::Recycle`); otherwise the last release will.
    ///
    /// # Safety
    /// The calling thread owns the chunk; it must not touch owner-only fields afterwards.
    pub(crate) unsafe fn abandon(self) -> RemoteFree {
        let h = self.header();
        h.owner.store(0, Relaxed);
        // `Acquire`: the stacked frees' writes into their segments (links, scrubs) happen
        // before this thread, which may recycle the chunk below, lets anyone reuse them. Our
        // own writes are published by the `Release` count below.
        let word = h.shared.remote.swap(ABANDONED | NONE as u64, Acquire);
        // SAFETY: owner-only field, by the owner. The taken stack's segments are free: the
        // word counts them, and nobody reads them again (an abandoned chunk is recycled
        // whole).
        let live = unsafe { h.own.live.get() } as i64 - (word / PUSH_ONE) as i64;
        // As in `Arc`: every step of the count is a `Release`; the one that reaches zero
        // then acquires them all (`sync::acquire_count`) before it recycles the chunk.
        if h.shared.abandoned_live.fetch_add(live, Release) + live == 0 {
            sync::acquire_count(&h.shared.abandoned_live);
            RemoteFree::Recycle
        } else {
            RemoteFree::Queued
        }
    }

    /// The owner's thread exits: parks the chunk for another thread to adopt
    /// ([`ChunkPtr::unpark`]) instead of abandoning it. `owner` is cleared, the remote frees
    /// that arrived are drained onto the local list, and the `remote` word becomes `PARKED`
    /// with the live count in it: from then on a release pushes its segment and counts down
    /// in one CAS, and the release that reaches zero holds the chunk
    /// ([`RemoteFree::RecycleParked`]). The owner-only fields (free list, cursor, live
    /// count) stay as they are for the adopter. Answers `false`, parking nothing, if no
    /// region is live: the caller then retires the chunk as usual (it still owns it).
    ///
    /// # Safety
    /// The calling thread owns the chunk and will not touch it again unless it adopts it.
    /// The caller holds the lock of the parked set and enters the chunk into it before
    /// releasing the lock (so the release that empties it finds it there).
    pub(crate) unsafe fn park(self) -> bool {
        let h = self.header();
        loop {
            // SAFETY: owned by the caller.
            unsafe { self.drain_remote() };
            // SAFETY: owner-only field, by the owner.
            let live = unsafe { h.own.live.get() } as u64;
            if live == 0 {
                return false;
            }
            debug_assert!(live <= PARK_MAX);
            // `Release`: the owner-only fields written so far happen before the adopter's or
            // the last releaser's `Acquire`. Fails only if a remote free arrived since the
            // drain: drain it too and try again.
            if h.shared
                .remote
                .compare_exchange(
                    NONE as u64,
                    (live * PARK_ONE) | PARKED | ABANDONED | NONE as u64,
                    Release,
                    Relaxed,
                )
                .is_ok()
            {
                // No thread takes itself for the owner any more (a later thread may get this
                // one's token). Nothing reads the fields as the owner's from here.
                h.owner.store(0, Relaxed);
                return true;
            }
        }
    }

    /// Takes a parked chunk out of its parked state for the calling thread, which took it
    /// out of the parked set: its stacked releases go onto the local free list and the
    /// `remote` word becomes an ordinary empty stack. Answers `false`, touching nothing, if
    /// its last live region was released meanwhile: that release holds the chunk now and
    /// recycles it. On `true` the caller holds the chunk exclusively, its owner-only fields
    /// as the parking left them, and makes itself the owner with [`ChunkPtr::adopt`].
    ///
    /// # Safety
    /// The chunk was parked ([`ChunkPtr::park`]), and the caller took it out of the parked
    /// set and still holds the set's lock: so no other thread is unparking it, and a release
    /// that emptied it cannot have recycled it yet (it takes that lock first).
    pub(crate) unsafe fn unpark(self) -> bool {
        let h = self.header();
        let mut w = h.shared.remote.load(Relaxed);
        loop {
            debug_assert!(
                w & PARKED != 0,
                "a chunk taken from the parked set is parked"
            );
            if w < PARK_ONE {
                // Nothing live: the last release holds it. Once zero, the count never moves.
                return false;
            }
            // `Acquire`: the parking's and every pushing release's writes happen before we
            // read the fields and the stacked segments.
            match h
                .shared
                .remote
                .compare_exchange_weak(w, NONE as u64, Acquire, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => w = actual,
            }
        }
        let mut idx = w as u32;
        let mut n = 0;
        // SAFETY (whole block): we hold the chunk exclusively now; the taken stack's segments
        // are free, their links written before their pushes (ordered by the `Acquire`).
        unsafe {
            while idx != NONE {
                let next = self.link(idx);
                self.set_link(idx, h.own.local_head.get());
                h.own.local_head.set(idx);
                idx = next;
                n += 1;
            }
            let live = h.own.live.get() - n;
            debug_assert_eq!(live as u64, w / PARK_ONE);
            h.own.live.set(live);
            h.own.idle_since.set(0);
        }
        true
    }

    /// The owner's opaque context pointer (a pointer, not an integer, so its provenance
    /// survives the round trip).
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline(always)]
    pub(crate) unsafe fn ctx(self) -> *mut () {
        // SAFETY: owner-only field, by the owner.
        unsafe { self.header().own.ctx.get() }
    }

    /// The owner's sequence number for this chunk (lower is older).
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline(always)]
    pub(crate) unsafe fn seq(self) -> u64 {
        // SAFETY: owner-only field, by the owner.
        unsafe { self.header().own.seq.get() }
    }

    /// Whether the owner took the chunk from the central queue.
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline]
    pub(crate) unsafe fn came_from_cache(self) -> bool {
        // SAFETY: owner-only field, by the owner.
        unsafe { self.header().own.from_cache.get() }
    }

    /// The owner's slot word (e.g. a position in one of its lists).
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline(always)]
    pub(crate) unsafe fn slot(self) -> usize {
        // SAFETY: owner-only field, by the owner.
        unsafe { self.header().own.slot.get() }
    }

    /// Sets the owner's slot word.
    ///
    /// # Safety
    /// The calling thread owns the chunk.
    #[inline(always)]
    pub(crate) unsafe fn set_slot(self, slot: usize) {
        // SAFETY: owner-only field, by the owner.
        unsafe { self.header().own.slot.set(slot) }
    }

    /// When the chunk was first seen idle (nanoseconds of `os::now_ns`), 0 if not since it
    /// was last in use.
    ///
    /// # Safety
    /// The caller owns the chunk or holds it exclusively.
    pub(crate) unsafe fn idle_since(self) -> u64 {
        // SAFETY: by the caller's guarantee.
        unsafe { self.header().own.idle_since.get() }
    }

    /// Records when the chunk was first seen idle (0: it is in use).
    ///
    /// # Safety
    /// The caller owns the chunk or holds it exclusively.
    pub(crate) unsafe fn set_idle_since(self, at: u64) {
        // SAFETY: by the caller's guarantee.
        unsafe { self.header().own.idle_since.set(at) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::stats::Counters;

    struct TestHome {
        counters: Counters,
        memory: Memory,
        recycled: crate::sync::Mutex<Vec<ChunkPtr>>,
    }
    impl Default for TestHome {
        fn default() -> Self {
            TestHome {
                counters: Counters::default(),
                memory: Memory::new(crate::os::MemorySource::GlobalAllocator, 0, 0),
                recycled: Default::default(),
            }
        }
    }
    impl Home for TestHome {
        fn counters(&self) -> &Counters {
            &self.counters
        }
        fn memory(&self) -> &Memory {
            &self.memory
        }
        fn recycle(&self, chunk: ChunkPtr) {
            self.recycled.with(|v| v.push(chunk));
        }
        fn id(&self) -> usize {
            0
        }
        fn is_closed(&self) -> bool {
            false
        }
    }

    fn home() -> (Arc<TestHome>, Arc<dyn Home>) {
        let h = Arc::new(TestHome::default());
        let d: Arc<dyn Home> = h.clone();
        (h, d)
    }

    /// A 4 KiB chunk of `home`, formatted for `seg_size`-byte segments (class 0) and owned by
    /// the token 7 (the test thread stands in for its owner); `poison` as the chunk's flag.
    fn owned_chunk(home: &Arc<dyn Home>, seg_size: usize, poison: bool) -> ChunkPtr {
        let c = ChunkPtr::create(home, 4096, usize::MAX, false, poison, false).unwrap();
        // SAFETY: the new chunk is held exclusively here, then owned by the token 7.
        unsafe {
            c.format(0, seg_size);
            c.adopt(7, std::ptr::null_mut(), 0, false);
        }
        c
    }

    /// The fields every release and every allocation read of a chunk's header share its
    /// first 64-byte line (one cache miss, not two, for a chunk not touched lately), and the
    /// owner's and the remote releasers' fields sit on lines of their own.
    #[test]
    fn the_fields_every_release_reads_share_one_line() {
        use std::mem::offset_of;
        let line = |end: usize| assert!(end <= 64, "a hot field ends at byte {end}");
        line(offset_of!(Chunk, owner) + size_of::<AtomicUsize>());
        line(offset_of!(Chunk, seg_size) + size_of::<usize>());
        line(offset_of!(Chunk, home_id) + size_of::<usize>());
        line(offset_of!(Chunk, seg_count) + size_of::<u32>());
        line(offset_of!(Chunk, class) + size_of::<u16>());
        line(offset_of!(Chunk, poison) + 1);
        line(offset_of!(Chunk, scrub) + 1);
        // `Block` keeps its pointer first (`repr(C)`).
        line(offset_of!(Chunk, block) + size_of::<NonNull<u8>>());
        assert_eq!(offset_of!(Chunk, own) % 128, 0);
        assert_eq!(offset_of!(Chunk, shared) % 128, 0);
        assert!(
            offset_of!(Chunk, own) >= 128,
            "the owner's line is apart from the first"
        );
    }

    #[test]
    fn cursor_and_accounting_are_separate() {
        let (th, h) = home();
        let c = owned_chunk(&h, 1024, true);
        // SAFETY: this test thread owns the chunk.
        unsafe {
            let a: Vec<u32> = (0..4).map(|_| c.carve().unwrap()).collect();
            assert_eq!(a, [0, 1, 2, 3]);
            assert_eq!(c.carve(), None, "the cursor is at the end");
            assert_eq!(c.free_local(2), 3);
            assert_eq!(c.free_local(0), 2);
            // Freed space is reused although the cursor stays at the end (poisoned: flagged
            // for the check, which passes).
            assert_eq!(c.carve(), Some(CHECK));
            assert_eq!(c.check_carved(CHECK), 0);
            assert_eq!(c.carve().map(|i| c.check_carved(i)), Some(2));
            assert_eq!(c.live(), 4);
            for i in 0..4 {
                c.free_local(i);
            }
            assert_eq!(c.live(), 0);
            assert_eq!(c.abandon(), RemoteFree::Recycle);
            c.free_to_system();
        }
        assert_eq!(th.counters.snapshot().allocated_bytes, 0);
    }

    #[test]
    fn remote_frees_drain_and_abandon_counts_down() {
        let (th, h) = home();
        let c = owned_chunk(&h, 512, false);
        // SAFETY: this test thread owns the chunk; "remote" frees are made with
        // regions this thread holds, as another thread would.
        unsafe {
            let segs: Vec<u32> = (0..8).map(|_| c.carve().unwrap()).collect();
            assert_eq!(c.free_remote(segs[1]), RemoteFree::Queued);
            assert_eq!(c.free_remote(segs[5]), RemoteFree::Queued);
            assert!(c.has_remote());
            assert_eq!(c.drain_remote(), 2);
            assert_eq!(c.live(), 6);
            assert_eq!(c.free_remote(segs[6]), RemoteFree::Queued);
            // Abandon with 6 live, one of which was already stacked.
            assert_eq!(c.abandon(), RemoteFree::Queued);
            for &s in &[segs[0], segs[2], segs[3], segs[4]] {
                assert_eq!(c.free_remote(s), RemoteFree::Queued);
            }
            assert_eq!(c.free_remote(segs[7]), RemoteFree::Recycle);
            c.free_to_system();
        }
        assert!(th.recycled.with(|v| v.is_empty()));
        assert_eq!(th.counters.snapshot().chunks, 0);
    }

    #[test]
    fn the_remote_word_counts_its_stack_and_a_drain_takes_it_whole_or_walks_it() {
        let (th, h) = home();
        let c = owned_chunk(&h, 512, false);
        // SAFETY: this test thread owns the chunk; "remote" frees are made with regions this
        // thread holds, as another thread would.
        unsafe {
            let segs: Vec<u32> = (0..8).map(|_| c.carve().unwrap()).collect();
            for &s in &segs[..3] {
                assert_eq!(c.free_remote(s), RemoteFree::Queued);
            }
            let word = c.header().shared.remote.load(Relaxed);
            assert_eq!(
                (word as u32, word / PUSH_ONE),
                (segs[2], 3),
                "the top and the length"
            );
            // An empty local list: the stack becomes the list as it is (newest first).
            assert_eq!(c.drain_remote(), 3);
            assert_eq!(c.header().shared.remote.load(Relaxed), NONE as u64);
            assert_eq!(c.live(), 5);
            assert_eq!(c.carve(), Some(segs[2]));
            // A local list that is not empty: the stack is moved onto it segment by segment.
            c.free_local(segs[3]);
            assert_eq!(c.free_remote(segs[4]), RemoteFree::Queued);
            assert_eq!(c.free_remote(segs[5]), RemoteFree::Queued);
            assert_eq!(c.drain_remote(), 2);
            assert_eq!(c.live(), 3);
            let mut free: Vec<u32> = (0..5).map(|_| c.carve().unwrap()).collect();
            free.sort_unstable();
            assert_eq!(free, [segs[0], segs[1], segs[3], segs[4], segs[5]]);
            assert_eq!(c.live(), 8);
            assert_eq!(c.carve(), None, "every segment is live again");
            // Abandoning takes the stack's length off the live count without walking it.
            for &s in &segs[..6] {
                assert_eq!(c.free_remote(s), RemoteFree::Queued);
            }
            assert_eq!(c.abandon(), RemoteFree::Queued, "two regions are live");
            assert_eq!(c.free_remote(segs[6]), RemoteFree::Queued);
            assert_eq!(c.free_remote(segs[7]), RemoteFree::Recycle);
            c.free_to_system();
        }
        assert!(th.recycled.with(|v| v.is_empty()));
        assert_eq!(th.counters.snapshot().chunks, 0);
    }

    #[test]
    fn parking_keeps_free_space_and_counts_down_in_the_word() {
        let (th, h) = home();
        let c = owned_chunk(&h, 512, true);
        // SAFETY: this test thread owns, parks, then adopts the chunk; "remote" frees are
        // made with regions this thread holds, as another thread would.
        unsafe {
            let segs: Vec<u32> = (0..6).map(|_| c.carve().unwrap()).collect();
            c.free_local(segs[0]);
            assert_eq!(c.free_remote(segs[1]), RemoteFree::Queued);
            // Parking drains the stacked release: 4 live (segments 2..=5).
            assert!(c.park());
            assert!(!c.is_owned_by(7), "a parked chunk has no owner");
            assert_eq!(c.free_remote(segs[2]), RemoteFree::Queued);
            assert_eq!(c.free_remote(segs[3]), RemoteFree::Queued);
            // Adoption takes the two stacked releases onto the local list.
            assert!(c.unpark());
            c.adopt(8, std::ptr::null_mut(), 1, true);
            assert_eq!(c.live(), 2);
            // The free segments come back (poisoned: flagged for the check, which passes),
            // then the cursor moves on.
            let mut again: Vec<u32> = (0..6)
                .map(|_| match c.carve().unwrap() {
                    i if i & CHECK != 0 => c.check_carved(i),
                    i => i,
                })
                .collect();
            again.sort_unstable();
            assert_eq!(again, [0, 1, 2, 3, 6, 7]);
            assert_eq!(c.carve(), None);
            assert_eq!(c.live(), 8);
            // Park again with two live; their releases count down to zero: the last one
            // holds the chunk, and an adopter coming after finds nothing to adopt.
            for i in [0, 1, 2, 3, 6, 7] {
                c.free_local(i);
            }
            assert!(c.park());
            assert_eq!(c.free_remote(segs[4]), RemoteFree::Queued);
            assert_eq!(c.free_remote(segs[5]), RemoteFree::RecycleParked);
            assert!(
                !c.unpark(),
                "an emptied parked chunk belongs to its last release"
            );
            c.free_to_system();
        }
        assert_eq!(th.counters.snapshot().chunks, 0);
    }

    #[test]
    fn a_chunk_with_nothing_live_is_not_parked() {
        let (_th, h) = home();
        let c = owned_chunk(&h, 1024, false);
        // SAFETY: this test thread owns the chunk.
        unsafe {
            let a = c.carve().unwrap();
            assert_eq!(c.free_remote(a), RemoteFree::Queued);
            // The stacked release was its only live region: nothing to park.
            assert!(!c.park());
            assert!(c.is_owned_by(7), "still the owner's, to retire");
            assert_eq!(c.live(), 0);
            assert_eq!(c.abandon(), RemoteFree::Recycle);
            c.free_to_system();
        }
    }

    #[test]
    fn memory_limit_and_rollback() {
        let (th, h) = home();
        let err = ChunkPtr::create(&h, 8192, 4096, false, false, false).unwrap_err();
        assert_eq!(
            err,
            AllocError::MemoryLimit {
                requested: 8192,
                limit: 4096
            }
        );
        let err =
            ChunkPtr::create(&h, usize::MAX - 10, usize::MAX, true, false, false).unwrap_err();
        assert!(matches!(err, AllocError::CapacityOverflow { .. }));
        let s = th.counters.snapshot();
        assert_eq!(
            (s.allocated_bytes, s.chunks, s.chunk_allocations),
            (0, 0, 0)
        );
    }

    #[test]
    fn poison_catches_a_stray_write() {
        let (th, h) = home();
        let c = owned_chunk(&h, 1024, true);
        // SAFETY: deliberately writes into a freed segment this thread owns, to trip the
        // check; the chunk is freed afterwards.
        let s = unsafe {
            let s = c.carve().unwrap();
            c.free_local(s);
            c.segment(s).as_ptr().add(100).write(1);
            s
        };
        // SAFETY: as above.
        let idx = unsafe { c.carve() }.unwrap();
        assert_eq!(
            idx,
            s | CHECK,
            "a poisoned segment off the free list is flagged"
        );
        // SAFETY: as above.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            c.check_carved(idx)
        }))
        .unwrap_err();
        let msg = caught
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(
            msg.contains("use after free") && msg.contains("byte 100"),
            "{msg}"
        );
        // SAFETY: held by this thread; the carved region is released, so none is live.
        unsafe {
            c.free_local(s);
            c.free_to_system()
        };
        assert_eq!(th.counters.snapshot().allocated_bytes, 0);
    }
}
