//! Buffers: [`PooledBuf`], a `BytesMut`-like handle on a region of a chunk, and its zero-copy
//! freeze into `bytes::Bytes`.
//!
//! Owns: the view (`ptr`, `len`, `cap`) of each handle, the share count of a region split
//! between handles, and the region's life cycle (growth, splitting, sharing, freezing,
//! release); buffers wrap the [`Region`]s the allocator carves. Beside it: `buf/allocate.rs`,
//! the entry points that hand out buffers ([`AdaptiveAllocator::allocate`], `try_allocate`,
//! `allocate_with`). May import: `chunk` (a
//! handle to a region), `allocator` (regions, their release, growth), `error`, `sync`. The
//! arrow runs one way: the allocator knows regions, not buffers. The standard and `bytes` trait
//! implementations (`Deref`, comparisons, `fmt`, `Extend`, `From`, `io::Write`, `BufMut`,
//! `Buf`, serde) are in the file beside it, `buf/impls.rs`.
//!
//! A fresh buffer owns its region alone and carries no reference count, so allocate and drop
//! on the owning thread touch no atomic. `split_to`/`split_off` move the region to shared
//! ownership through a boxed count; the last handle dropped releases the region. `freeze`
//! hands the buffer itself to `Bytes::from_owner`, so the `Bytes` and all its clones and
//! slices keep the region alive, and the last one dropped, on any thread, releases it.
//!
//! No safe method exposes bytes the caller did not write: `len` only grows by writing
//! (`extend_from_slice`, `resize`, `BufMut`), and the spare capacity is offered only as
//! `UninitSlice` or `MaybeUninit`.

use std::mem::MaybeUninit;
use std::ops::{Bound, RangeBounds};
use std::panic::Location;
use std::ptr::{self, NonNull};

use bytes::Bytes;

use crate::allocator::{self, AdaptiveAllocator, Region};
use crate::chunk::ChunkPtr;
use crate::error::AllocError;
use crate::sync::{self, AtomicUsize, Ordering::*};
use crate::tracking::{SampleId, Tracker};

mod allocate;
mod impls;

/// The number of handles on a region shared by `split_to`/`split_off`, the region's size,
/// and the bytes of it that dropped handles gave up.
struct ShareCount {
    refs: AtomicUsize,
    /// Bytes of the whole region, from its start. Recorded when the region is first shared
    /// (an unshared handle's view always ends at its region's end, so `offset + cap` is the
    /// region then); in-place growth of the last handle and growth hints read it.
    region: usize,
    /// Bytes of the region that no live handle covers: the views of handles that dropped
    /// while others lived on (added before their decrement of `refs`). The same bytes are in
    /// the allocator's `pinned_bytes`, from which the region's last handle takes them out.
    uncovered: AtomicUsize,
    /// The region's record in its allocator's live-buffer report, when it was sampled
    /// (`Builder::sample_allocations`): a sampled region is "shared" from birth, with one
    /// handle, so that its last handle's drop (out of line, on the shared path) ends the
    /// record and the unshared drop path pays nothing for sampling.
    sample: Option<SampleId>,
}

impl ShareCount {
    /// A count for a region of `region` bytes with `refs` handles and nothing uncovered,
    /// leaked from a `Box` (the last handle frees it).
    fn leak(refs: usize, region: usize, sample: Option<SampleId>) -> NonNull<ShareCount> {
        NonNull::from(Box::leak(Box::new(ShareCount {
            refs: AtomicUsize::new(refs),
            region,
            uncovered: AtomicUsize::new(0),
            sample,
        })))
    }
}

/// The most of a shared region's size that growth after a split takes as its hint, as
/// `BytesMut` caps its "original capacity" (64 KiB).
const MAX_GROWTH_HINT: usize = 64 << 10;

/// A growable byte buffer carved from an [`AdaptiveAllocator`]'s pool, used like
/// `bytes::BytesMut`.
///
/// It dereferences to the bytes written so far (`len()` of them) and has room for
/// `capacity()` in all. Write with [`BufMut`](bytes::BufMut) (`put_slice`, `put_u32`, …), [`io::Write`](std::io::Write),
/// `extend_from_slice` or `Extend`; read with [`Buf`](bytes::Buf) or as a slice; hand frames on with
/// [`split_to`](Self::split_to) and [`freeze`](Self::freeze), both without copying. The
/// memory goes back to the pool when the last handle on it drops, on whatever thread.
///
/// ```
/// use adaptive_pool::PooledBuf;
/// use bytes::{Buf, BufMut};
///
/// let mut buf = PooledBuf::with_capacity(64);
/// buf.put_u16(5);
/// buf.put_slice(b"hello");
/// buf.put_slice(b"rest of stream");
/// let len = (&buf[..2]).get_u16() as usize;
/// buf.advance(2);
/// let frame = buf.split_to(len).freeze();
/// assert_eq!(frame, "hello");
/// assert_eq!(&buf[..], b"rest of stream");
/// ```
///
/// # Compared with `BytesMut`
/// The API is `BytesMut`'s (see the crate's `tests/buf_parity.rs`, which re-expresses the
/// `bytes` crate's own tests), with these deliberate differences:
///
/// * **Capacity is rounded up to a size class** (less than 25 % above 64 bytes): `capacity()`
///   may exceed what was asked for, and `reserve` may give more than `BytesMut` would.
/// * **Growth copies to the start of the new region**: a buffer that moves keeps no unused
///   prefix (`BytesMut` keeps a `Vec`'s offset).
/// * **`Debug` prints a summary** (`len`, `capacity` and the first 64 bytes), not every byte.
/// * **`From<PooledBuf> for Vec<u8>` copies**: pooled memory cannot become a `Vec`'s.
/// * **Where memory comes from**: `new()`, `Default`, `zeroed`, `From<&[u8]>`, `From<&str>`
///   and `FromIterator` use [`global()`](crate::global); growth and `clone` use the buffer's
///   own allocator.
///
/// `reserve` follows `BytesMut`: a handle that is its region's only one (every handle split
/// from it, and every `Bytes` frozen from those, has dropped) reuses the region in place
/// when the bytes fit, moving them to its start if the bytes before them are at least as
/// many; after a split, while other handles live, it moves to a new region of what is
/// needed, with the shared region's size (up to 64 KiB) as a lower bound.
pub struct PooledBuf {
    /// Start of this handle's view (dangling, never read, when there is no region).
    ptr: NonNull<u8>,
    /// Bytes written (initialised) from `ptr`.
    len: usize,
    /// Bytes available from `ptr` within the region.
    cap: usize,
    /// The chunk of the region, and the region's segment index in it; `None` for a buffer
    /// without a region (`new()`, `Default`), which is empty with capacity 0.
    chunk: Option<ChunkPtr>,
    idx: u32,
    /// `Some` when other handles share the region.
    share: Option<NonNull<ShareCount>>,
}

// SAFETY: a `PooledBuf` owns its view of the region exclusively (split handles have
// disjoint views), the region stays allocated while any handle lives (share count, chunk
// accounting), and releasing it is sound from any thread (`release_region` routes remote
// frees through the chunk's atomic stack).
unsafe impl Send for PooledBuf {}
// SAFETY: `&PooledBuf` gives only read access to its initialised bytes.
unsafe impl Sync for PooledBuf {}

// A panic never leaves a buffer, or the pool behind it, in a state that later use could
// observe as broken: a buffer's view changes only after its growth succeeded, and the pool's
// own steps are rolled back by guards. So, like `BytesMut`, a buffer may cross
// `catch_unwind`. (The raw pointers and the chunk header's cells are what keep the auto
// traits from applying.)
impl std::panic::UnwindSafe for PooledBuf {}
impl std::panic::RefUnwindSafe for PooledBuf {}

impl PooledBuf {
    /// An empty buffer with no memory: nothing is allocated until it grows, then from
    /// [`global()`](crate::global), like `BytesMut::new()`.
    ///
    /// ```
    /// use adaptive_pool::PooledBuf;
    ///
    /// let mut buf = PooledBuf::new();
    /// assert_eq!((buf.len(), buf.capacity()), (0, 0));
    /// buf.extend_from_slice(b"grows on first use");
    /// assert_eq!(buf, "grows on first use");
    /// ```
    #[inline]
    pub const fn new() -> PooledBuf {
        PooledBuf {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            chunk: None,
            idx: 0,
            share: None,
        }
    }

    /// A buffer of `len` zero bytes from [`global()`](crate::global).
    ///
    /// # Panics
    /// If the allocation fails.
    #[track_caller]
    pub fn zeroed(len: usize) -> PooledBuf {
        let mut buf = PooledBuf::with_capacity(len);
        buf.resize(len, 0);
        buf
    }

    /// Allocates from the process-wide default allocator, [`global()`](crate::global).
    ///
    /// # Panics
    /// If the allocation fails, like `Vec::with_capacity`.
    #[track_caller]
    pub fn with_capacity(capacity: usize) -> PooledBuf {
        crate::global().allocate(capacity)
    }

    /// Like [`with_capacity`](Self::with_capacity), but returns the error instead of
    /// panicking.
    #[track_caller]
    pub fn try_with_capacity(capacity: usize) -> Result<PooledBuf, AllocError> {
        crate::global().try_allocate(capacity)
    }

    /// Wraps a freshly carved region, which the buffer then owns.
    #[inline(always)]
    fn from_region(region: Region) -> PooledBuf {
        let Region {
            chunk,
            idx,
            cap,
            ptr,
        } = region;
        // SAFETY: the region is ours, so its chunk's format is stable.
        debug_assert_eq!(
            ptr,
            unsafe { chunk.segment(idx) },
            "a region knows its address"
        );
        PooledBuf {
            ptr,
            len: 0,
            cap,
            chunk: Some(chunk),
            idx,
            share: None,
        }
    }

    /// Bytes written.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if no byte has been written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes this buffer can hold without moving.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Drops the contents; the capacity stays.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the buffer to `len` bytes; no effect if it is already shorter.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
        }
    }

    /// Sets the length to `new_len`, filling new bytes with `value`.
    ///
    /// # Panics
    /// If growing fails (see [`reserve`](Self::reserve)).
    pub fn resize(&mut self, new_len: usize, value: u8) {
        if new_len > self.len {
            let extra = new_len - self.len;
            self.reserve(extra);
            // SAFETY: `reserve` made room for `extra` bytes past `len`.
            unsafe {
                self.ptr.as_ptr().add(self.len).write_bytes(value, extra);
                self.set_len(new_len);
            }
        } else {
            self.len = new_len;
        }
    }

    /// Makes room for at least `additional` more bytes, as `BytesMut::reserve` does:
    ///
    /// * **In place** when this handle is its region's only one (a fresh buffer, or one whose
    ///   split-off handles and the `Bytes` frozen from them have all dropped) and the region
    ///   holds `len() + additional` bytes: after the view, or at the region's start when the
    ///   bytes before the view are at least `len()` (the contents are then moved there; a
    ///   smaller gap is not worth the copy, as in `BytesMut`).
    /// * **Moving** otherwise, to a new region of the same allocator: when this handle was the
    ///   only one, at least double the region (amortised growth); while other handles share
    ///   the region (after a split), what is needed, but at least the shared region's size up
    ///   to 64 KiB (its "original capacity", as `BytesMut` keeps it). The bytes are copied to
    ///   the new region's start; the old one is released when its last handle drops.
    ///
    /// A buffer without a region (`new()`) allocates from [`global()`](crate::global).
    ///
    /// # Panics
    /// If the allocation fails; see [`try_reserve`](Self::try_reserve).
    #[inline]
    #[track_caller]
    pub fn reserve(&mut self, additional: usize) {
        if additional > self.cap - self.len {
            if let Err(e) = self.try_reserve(additional) {
                panic!("adaptive-pool: growing a buffer by {additional} bytes failed: {e}");
            }
        }
    }

    /// Like [`reserve`](Self::reserve), but returns the error. On error the buffer is
    /// unchanged.
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), AllocError> {
        if additional <= self.cap - self.len {
            return Ok(());
        }
        let needed = self
            .len
            .checked_add(additional)
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or(AllocError::CapacityOverflow {
                requested: self.len.saturating_add(additional),
            })?;
        if self.reclaim(needed) {
            return Ok(());
        }
        self.grow(needed)
    }

    /// Makes room for `additional` more bytes without allocating, if this handle's region
    /// allows it (the in-place cases of [`reserve`](Self::reserve)); answers whether there is
    /// room now. Like `BytesMut::try_reclaim`.
    ///
    /// ```
    /// use adaptive_pool::PooledBuf;
    ///
    /// let mut buf = PooledBuf::with_capacity(64);
    /// buf.extend_from_slice(b"frame");
    /// let frame = buf.split().freeze();
    /// assert!(!buf.try_reclaim(64), "the frame still uses the region");
    /// drop(frame);
    /// assert!(buf.try_reclaim(64), "the only handle again: the whole region is back");
    /// assert!(buf.capacity() >= 64);
    /// ```
    #[must_use = "`false` means nothing changed; use `reserve` to allocate"]
    pub fn try_reclaim(&mut self, additional: usize) -> bool {
        if additional <= self.cap - self.len {
            return true;
        }
        match self.len.checked_add(additional) {
            Some(needed) => self.reclaim(needed),
            None => false,
        }
    }

    /// The in-place cases of `reserve`: room for `needed` bytes (contents included) in this
    /// handle's region, if it is the region's only handle. Answers whether it made room.
    fn reclaim(&mut self, needed: usize) -> bool {
        let Some(chunk) = self.chunk else {
            return false;
        };
        // SAFETY: this handle keeps region `idx` live.
        let base = unsafe { chunk.segment(self.idx) };
        // SAFETY: `ptr` lies within the region starting at `base`.
        let offset = unsafe { self.ptr.as_ptr().offset_from(base.as_ptr()) } as usize;
        let region = match self.share {
            // An unshared view ends at the region's end.
            None => offset + self.cap,
            Some(s) => {
                // SAFETY: the count lives while any handle does; `self` is one.
                let s = unsafe { s.as_ref() };
                // `Acquire` pairs with the `Release` decrement of every handle dropped: their
                // accesses to the region happen before this one takes it over.
                if s.refs.load(Acquire) != 1 {
                    return false;
                }
                s.region
            }
        };
        if offset + needed <= region {
            // Only reachable when shared: the bytes after the view belonged to dropped handles.
            self.cap = region - offset;
            // Covered again, all but the bytes before the view.
            self.set_uncovered(chunk, offset);
            return true;
        }
        if needed <= region && offset >= self.len {
            // SAFETY: this handle is the region's only one, so `[base, base + region)` is
            // ours; `offset >= len` keeps `[base, base + len)` apart from `[ptr, ptr + len)`.
            unsafe { ptr::copy_nonoverlapping(self.ptr.as_ptr(), base.as_ptr(), self.len) };
            self.ptr = base;
            self.cap = region;
            self.set_uncovered(chunk, 0);
            return true;
        }
        false
    }

    /// Makes this fresh buffer (its region unshared, just carved) a sampled one: its region
    /// becomes shared with one handle and recorded as allocated at `site`.
    fn start_sample(&mut self, t: &Tracker, id: SampleId, site: &'static Location<'static>) {
        debug_assert!(self.share.is_none());
        let s = ShareCount::leak(1, self.cap, Some(id));
        self.share = Some(s);
        // SAFETY: the count (and its `uncovered`) lives until the region's last handle drops,
        // which removes the record first (`leave_share`).
        unsafe { t.insert(id, site, self.cap, &s.as_ref().uncovered) };
    }

    /// If `old` is a sampled region's handle, records this fresh buffer (which takes over its
    /// contents: growth, a compacting freeze) as a sampled region of the same site and age.
    fn continue_sample_of(&mut self, old: &PooledBuf) {
        let (Some(s), Some(chunk)) = (old.share, self.chunk) else {
            return;
        };
        // SAFETY: the count lives while any handle does; `old` is one.
        let Some(from) = (unsafe { s.as_ref() }).sample else {
            return;
        };
        let Some(t) = allocator::tracker_of(&chunk) else {
            return;
        };
        debug_assert!(self.share.is_none());
        let id = t.new_id();
        let s = ShareCount::leak(1, self.cap, Some(id));
        self.share = Some(s);
        // SAFETY: as in `start_sample`.
        unsafe { t.insert_like(from, id, self.cap, &s.as_ref().uncovered) };
    }

    /// Sets the uncovered bytes of this handle's shared region to `bytes` (this handle is its
    /// only one and has just taken the rest of the region back), keeping the allocator's
    /// `pinned_bytes` in step. Nothing to do for an unshared region.
    fn set_uncovered(&mut self, chunk: ChunkPtr, bytes: usize) {
        let Some(s) = self.share else { return };
        // SAFETY: the count lives while any handle does; `self` is one (the only one, so no
        // other thread touches the count now).
        let count = unsafe { s.as_ref() };
        let old = count.uncovered.swap(bytes, Relaxed);
        if bytes > old {
            allocator::pin(chunk, bytes - old);
        } else if old > bytes {
            allocator::unpin(chunk, old - bytes);
        }
    }

    /// The moving case of `reserve`: a new region for `needed` bytes, the contents copied
    /// over; allocates before it touches anything, so a failure leaves the buffer as it was.
    fn grow(&mut self, needed: usize) -> Result<(), AllocError> {
        let Some(chunk) = self.chunk else {
            *self = crate::global().try_allocate(needed)?;
            return Ok(());
        };
        let shared_with_others = match self.share {
            // SAFETY: the count lives while any handle does; `self` is one.
            Some(s) => unsafe { s.as_ref() }.refs.load(Relaxed) != 1,
            None => false,
        };
        let target = if shared_with_others {
            // After a split: what is needed, with the shared region as a hint.
            let s = self.share.expect("a shared handle has a count");
            // SAFETY: as above.
            let hint = unsafe { s.as_ref() }.region.min(MAX_GROWTH_HINT);
            needed.max(hint)
        } else {
            // The only handle: amortised growth from the whole region (1.5x past 1 MiB).
            // SAFETY: this handle keeps region `idx` live.
            let base = unsafe { chunk.segment(self.idx) };
            // SAFETY: `ptr` lies within the region starting at `base`.
            let offset = unsafe { self.ptr.as_ptr().offset_from(base.as_ptr()) } as usize;
            let region = match self.share {
                // SAFETY: as above.
                Some(s) => unsafe { s.as_ref() }.region,
                None => offset + self.cap,
            };
            let doubled = needed.max(region.saturating_mul(2));
            if doubled > needed && doubled > (1 << 20) {
                needed.max(region + region / 2)
            } else {
                doubled
            }
        }
        .min(isize::MAX as usize);
        if self.share.is_none() && chunk.is_unpooled() && self.grow_in_place(chunk, target) {
            return Ok(());
        }
        let mut grown = PooledBuf::from_region(allocator::region_like(chunk, target)?);
        // SAFETY: `grown` has room for `needed >= len` bytes and does not overlap `self`.
        unsafe {
            ptr::copy_nonoverlapping(self.ptr.as_ptr(), grown.ptr.as_ptr(), self.len);
            grown.set_len(self.len);
        }
        grown.continue_sample_of(self);
        // The old region is released when `grown`'s old value (now `self`'s) drops.
        std::mem::swap(self, &mut grown);
        Ok(())
    }

    /// The in-place case of growth for a large buffer mapped on its own: the region grows to
    /// hold `target` bytes from this handle's start by moving its pages (`mremap`), without
    /// copying a byte. Answers whether it did; where it cannot (a heap region, the kernel
    /// refused, the memory limit: the moving path then reclaims and tries as usual), nothing
    /// changed.
    ///
    /// The caller checked that the region is unpooled and this handle unshared, so the only
    /// one on it.
    fn grow_in_place(&mut self, chunk: ChunkPtr, target: usize) -> bool {
        // SAFETY: this handle keeps region `idx` live.
        let base = unsafe { chunk.segment(self.idx) };
        // SAFETY: `ptr` lies within the region starting at `base`.
        let offset = unsafe { self.ptr.as_ptr().offset_from(base.as_ptr()) } as usize;
        // SAFETY: unpooled, and this unshared handle is the region's only one.
        let grown = unsafe { allocator::grow_in_place(chunk, offset.saturating_add(target)) };
        let Ok(Some(bytes)) = grown else {
            return false;
        };
        // SAFETY: the region, still segment `idx` of the chunk, is `bytes` long at its (maybe
        // new) start.
        let base = unsafe { chunk.segment(self.idx) };
        // SAFETY: `offset` is within the old region, so within the larger new one.
        self.ptr = unsafe { NonNull::new_unchecked(base.as_ptr().add(offset)) };
        self.cap = bytes - offset;
        true
    }

    /// Appends `src`, growing if needed.
    #[inline]
    pub fn extend_from_slice(&mut self, src: &[u8]) {
        self.reserve(src.len());
        // SAFETY: room reserved; `src` cannot overlap the spare capacity we own.
        unsafe {
            ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(self.len), src.len());
            self.set_len(self.len + src.len());
        }
    }

    /// Splits off the first `at` bytes: returns `[0, at)`, leaves `[at, len)` in `self`.
    /// Both handles share the region; no byte is copied.
    ///
    /// # Panics
    /// If `at > len()`.
    #[must_use = "the split-off part is dropped otherwise; use `advance` to discard bytes"]
    pub fn split_to(&mut self, at: usize) -> PooledBuf {
        assert!(
            at <= self.len,
            "split_to out of bounds: {at} > {}",
            self.len
        );
        if self.chunk.is_none() {
            return PooledBuf::new();
        }
        let share = self.share_region();
        let front = PooledBuf {
            ptr: self.ptr,
            len: at,
            cap: at,
            chunk: self.chunk,
            idx: self.idx,
            share,
        };
        // SAFETY: `at <= len <= cap`, so the new start is within the region.
        self.ptr = unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(at)) };
        self.len -= at;
        self.cap -= at;
        front
    }

    /// Splits off everything from `at`: returns `[at, capacity)` (with the bytes written past
    /// `at`), leaves `[0, at)` in `self`. No byte is copied.
    ///
    /// # Panics
    /// If `at > capacity()`.
    #[must_use = "the split-off part is dropped otherwise; use `truncate` to discard bytes"]
    pub fn split_off(&mut self, at: usize) -> PooledBuf {
        assert!(
            at <= self.cap,
            "split_off out of bounds: {at} > {}",
            self.cap
        );
        if self.chunk.is_none() {
            return PooledBuf::new();
        }
        let share = self.share_region();
        // SAFETY: `at <= cap`, so the new start is within the region.
        let ptr = unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(at)) };
        let back = PooledBuf {
            ptr,
            len: self.len.saturating_sub(at),
            cap: self.cap - at,
            chunk: self.chunk,
            idx: self.idx,
            share,
        };
        self.len = self.len.min(at);
        self.cap = at;
        back
    }

    /// Takes the whole contents, leaving `self` empty with the remaining capacity.
    #[must_use = "the split-off part is dropped otherwise; use `clear` to discard bytes"]
    pub fn split(&mut self) -> PooledBuf {
        self.split_to(self.len)
    }

    /// Converts into an immutable `bytes::Bytes` without copying (`Bytes::from_owner`, which
    /// boxes the buffer once). The `Bytes`, its clones and slices keep the memory; the last
    /// one dropped, on any thread, returns it to the pool.
    ///
    /// **Keeping a small frozen slice for long keeps its whole region.** A `Bytes` frozen from
    /// a `split_to` of a large read buffer holds the read buffer's entire region until the
    /// `Bytes` (and every clone) drops: a store of such values can hold many times the bytes
    /// it stores (`Stats::pinned_bytes` shows it). For values kept beyond the request, use
    /// [`freeze_compact`](Self::freeze_compact), or build the allocator with
    /// [`compact_frozen_below`](crate::Builder::compact_frozen_below), with which `freeze`
    /// itself copies a small view of a split region into a region of its own size.
    #[inline]
    pub fn freeze(self) -> Bytes {
        if self.chunk.is_none() {
            return Bytes::new();
        }
        if self.share.is_some() {
            return self.freeze_shared();
        }
        Bytes::from_owner(self)
    }

    /// `freeze` of a handle of a shared region: compacts under the allocator's
    /// `compact_frozen_below` when the region holds bytes of other handles, live or dropped.
    #[inline(never)]
    fn freeze_shared(self) -> Bytes {
        let (Some(chunk), Some(s)) = (self.chunk, self.share) else {
            return Bytes::from_owner(self);
        };
        let percent = allocator::compact_percent(chunk);
        // SAFETY: the count lives while any handle does; `self` is one.
        let count = unsafe { s.as_ref() };
        let split = count.refs.load(Relaxed) != 1 || count.uncovered.load(Relaxed) != 0;
        if percent != 0 && split && self.is_small_in_region(percent) {
            return self.compact();
        }
        Bytes::from_owner(self)
    }

    /// Freezes into `Bytes`, copying the bytes into a region of their own size when they are
    /// a small part of this handle's region, so that the `Bytes` does not keep the rest of the
    /// region alive: use it for values kept long (a cache, a key-value store, a session's last
    /// message) that were split from a large read buffer. "Small" is under the allocator's
    /// [`compact_frozen_below`](crate::Builder::compact_frozen_below) percentage of the
    /// region, or [`DEFAULT_COMPACT_PERCENT`](crate::DEFAULT_COMPACT_PERCENT) (50 %) when that
    /// is not set. Otherwise, and if the copy's allocation fails, it is a plain zero-copy
    /// [`freeze`](Self::freeze).
    ///
    /// The copy costs an allocation and a `memcpy` of the bytes (see `docs/BENCHMARKS.md`);
    /// the handle given up releases its part of the region at once.
    ///
    /// ```
    /// use adaptive_pool::AdaptiveAllocator;
    ///
    /// let pool = AdaptiveAllocator::new();
    /// let mut read = pool.allocate(64 << 10);
    /// read.extend_from_slice(b"key=value; the rest of a large read");
    /// let value = read.split_to(9).freeze_compact(); // copied: 9 B of a 64 KiB region
    /// drop(read);
    /// assert_eq!(value, "key=value");
    /// let s = pool.stats();
    /// assert_eq!((s.live_buffers, s.pinned_bytes), (1, 0));
    /// assert!(s.live_bytes < 64, "only the value's own small region is live: {s}");
    /// ```
    pub fn freeze_compact(self) -> Bytes {
        let Some(chunk) = self.chunk else {
            return Bytes::new();
        };
        let percent = match allocator::compact_percent(chunk) {
            0 => crate::DEFAULT_COMPACT_PERCENT,
            p => p,
        };
        if self.is_small_in_region(percent) {
            return self.compact();
        }
        Bytes::from_owner(self)
    }

    /// `true` if the bytes written are less than `percent` % of this handle's whole region.
    fn is_small_in_region(&self, percent: u32) -> bool {
        let region = match (self.share, self.chunk) {
            // SAFETY: the count lives while any handle does; `self` is one.
            (Some(s), _) => unsafe { s.as_ref() }.region,
            (None, Some(chunk)) => {
                // SAFETY: this handle keeps region `idx` live.
                let base = unsafe { chunk.segment(self.idx) };
                // SAFETY: `ptr` lies within the region starting at `base`.
                let offset = unsafe { self.ptr.as_ptr().offset_from(base.as_ptr()) } as usize;
                offset + self.cap
            }
            (None, None) => return false,
        };
        (self.len as u128) * 100 < u128::from(percent) * region as u128
    }

    /// Copies the bytes into a buffer of their own size from the same allocator and freezes
    /// that; `self` is dropped (releasing its part of the region). Zero-copy if the copy
    /// cannot be allocated.
    #[cold]
    fn compact(self) -> Bytes {
        let Some(chunk) = self.chunk else {
            return Bytes::new();
        };
        if self.len == 0 {
            return Bytes::new();
        }
        let Ok(region) = allocator::region_like(chunk, self.len) else {
            return Bytes::from_owner(self);
        };
        let mut own = PooledBuf::from_region(region);
        own.extend_from_slice(&self);
        own.continue_sample_of(&self);
        drop(self);
        Bytes::from_owner(own)
    }

    /// Appends `other` when it is the part split off right after this one (`split_off`, or
    /// `split_to` in the other order) and both still share their region: then no byte is
    /// copied and `self` takes over `other`'s view. Otherwise hands `other` back. An `other`
    /// with no capacity is simply dropped. Like `BytesMut::try_unsplit`.
    ///
    /// ```
    /// use adaptive_pool::PooledBuf;
    ///
    /// let mut buf = PooledBuf::from(&b"helloworld"[..]);
    /// let world = buf.split_off(5);
    /// buf.try_unsplit(world).expect("contiguous");
    /// assert_eq!(buf, "helloworld");
    /// ```
    pub fn try_unsplit(&mut self, other: PooledBuf) -> Result<(), PooledBuf> {
        if other.cap == 0 {
            return Ok(());
        }
        let contiguous = self.chunk.is_some()
            && self.chunk == other.chunk
            && self.idx == other.idx
            && self.share.is_some()
            && self.share == other.share
            && self.ptr.as_ptr().wrapping_add(self.len) == other.ptr.as_ptr();
        if !contiguous {
            return Err(other);
        }
        // Views are disjoint, so `other` starting right after `self`'s bytes means `self` has
        // no spare capacity: the joined view is `[ptr, ptr + cap + other.cap)`.
        debug_assert_eq!(self.len, self.cap);
        self.len += other.len;
        self.cap += other.cap;
        let share = self.share.expect("checked above");
        // `other` goes without releasing the region, which `self` still holds: one handle
        // fewer. `Release`, as in `Drop`, so its accesses happen before the region's release.
        // SAFETY: the count lives while any handle does; `self` is one.
        unsafe { share.as_ref() }.refs.fetch_sub(1, Release);
        std::mem::forget(other);
        Ok(())
    }

    /// Appends `other`: without copying when [`try_unsplit`](Self::try_unsplit) can, else by
    /// copying its bytes; an empty `self` becomes `other`. Like `BytesMut::unsplit`.
    pub fn unsplit(&mut self, other: PooledBuf) {
        if self.is_empty() {
            *self = other;
            return;
        }
        if let Err(other) = self.try_unsplit(other) {
            self.extend_from_slice(&other);
        }
    }

    /// Appends a copy of the bytes in `range` (of the bytes written) to the end, growing if
    /// needed. Like `Vec::extend_from_within`.
    ///
    /// # Panics
    /// If the range is out of bounds or decreasing, or if growing fails.
    #[track_caller]
    pub fn extend_from_within<R: RangeBounds<usize>>(&mut self, range: R) {
        let start = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.checked_add(1).expect("range start overflows"),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.checked_add(1).expect("range end overflows"),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => self.len,
        };
        assert!(start <= end, "range start {start} is past its end {end}");
        assert!(
            end <= self.len,
            "range end {end} is out of bounds for length {}",
            self.len
        );
        let count = end - start;
        self.reserve(count);
        // SAFETY: `[start, end)` lies in the written bytes, `[len, len + count)` in the spare
        // capacity that `reserve` made; the two do not overlap. Growth moved the bytes along
        // with `ptr`, so the offsets still hold.
        unsafe {
            let base = self.ptr.as_ptr();
            ptr::copy_nonoverlapping(base.add(start), base.add(self.len), count);
            self.set_len(self.len + count);
        }
    }

    /// A handle on the allocator this buffer came from ([`global()`](crate::global) for a
    /// buffer without a region).
    pub fn allocator(&self) -> AdaptiveAllocator {
        match self.chunk {
            Some(chunk) => allocator::handle_of(chunk),
            None => crate::global().clone(),
        }
    }

    /// The spare capacity, for writing before [`set_len`](Self::set_len).
    pub fn spare_capacity_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: `[len, cap)` lies in this handle's view; `MaybeUninit` asks nothing of the
        // bytes.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.len).cast(),
                self.cap - self.len,
            )
        }
    }

    /// Sets the length.
    ///
    /// # Safety
    /// `len <= capacity()`, and the first `len` bytes have been initialised.
    #[inline]
    pub unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.cap);
        self.len = len;
    }

    /// Puts the region in shared mode (or adds a handle to it); returns the count to store in
    /// the new handle.
    fn share_region(&mut self) -> Option<NonNull<ShareCount>> {
        match self.share {
            Some(s) => {
                // SAFETY: the count lives while any handle on the region does, and `self` is one.
                unsafe { s.as_ref() }.refs.fetch_add(1, Relaxed);
                Some(s)
            }
            None => {
                let chunk = self
                    .chunk
                    .expect("callers share only a buffer with a region");
                // SAFETY: this handle keeps region `idx` live.
                let base = unsafe { chunk.segment(self.idx) };
                // SAFETY: `ptr` lies within the region starting at `base`.
                let offset = unsafe { self.ptr.as_ptr().offset_from(base.as_ptr()) } as usize;
                // Unshared until now, so the view ends at the region's end.
                let s = ShareCount::leak(2, offset + self.cap, None);
                self.share = Some(s);
                Some(s)
            }
        }
    }
}

impl Drop for PooledBuf {
    #[inline(always)]
    fn drop(&mut self) {
        let Some(chunk) = self.chunk else {
            return;
        };
        // Read before the shared path's call, so that the unshared path keeps no copy of
        // `self` across it (one instruction on every drop, as callgrind showed).
        let idx = self.idx;
        if let Some(s) = self.share {
            return self.drop_shared(chunk, idx, s);
        }
        // SAFETY: this is the last handle on the region.
        unsafe { allocator::release_region(chunk, idx) }
    }
}

impl PooledBuf {
    /// Drops a handle of a shared region (out of line, and the drop's last act, so the
    /// unshared drop saves no registers for it): releases the region if it was the last.
    #[inline(never)]
    fn drop_shared(&mut self, chunk: ChunkPtr, idx: u32, s: NonNull<ShareCount>) {
        if self.leave_share(chunk, s) {
            // SAFETY: this was the last handle on the region.
            unsafe { allocator::release_region(chunk, idx) }
        }
    }

    /// The shared part of dropping a handle: gives up its place in region's count `s`.
    /// Answers `true` if it was the region's last handle (the count is then freed and the
    /// caller releases the region). A handle that leaves others behind adds its view to the
    /// region's uncovered bytes and to the allocator's `pinned_bytes`; the last one takes the
    /// region's whole uncovered figure back out, so the figure returns to exactly zero.
    fn leave_share(&mut self, chunk: ChunkPtr, s: NonNull<ShareCount>) -> bool {
        // SAFETY: the count lives while any handle does; `self` is one.
        let count = unsafe { s.as_ref() };
        // One handle left (this one): nobody can add a handle, so this is the last drop.
        // `Acquire` pairs with the `Release` decrements of the handles dropped before.
        if count.refs.load(Acquire) != 1 {
            // Others may live on: this view becomes bytes no live handle covers. Counted
            // before the decrement, after which another thread may free the count.
            if self.cap != 0 {
                count.uncovered.fetch_add(self.cap, Relaxed);
                allocator::pin(chunk, self.cap);
            }
            if count.refs.fetch_sub(1, Release) != 1 {
                return false;
            }
            // Every other handle's accesses (their `uncovered` additions included) happen
            // before the region is released.
            sync::acquire_count(&count.refs);
        }
        let uncovered = count.uncovered.load(Relaxed);
        if uncovered != 0 {
            allocator::unpin(chunk, uncovered);
        }
        if let Some(id) = count.sample {
            // Before the count (whose `uncovered` the record points to) is freed.
            if let Some(t) = allocator::tracker_of(&chunk) {
                t.remove(id);
            }
        }
        // SAFETY: this was the last handle; the count was leaked from a `Box`, and nothing
        // refers to it any more.
        drop(unsafe { Box::from_raw(s.as_ptr()) });
        true
    }
}
