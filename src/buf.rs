//! Buffers: [`PooledBuf`], a `BytesMut`-like handle on a region of a chunk, and its zero-copy
//! freeze into `bytes::Bytes`.
//!
//! Owns: the view (`ptr`, `len`, `cap`) of each handle, the share count of a region split
//! between handles, the `BufMut`/`Buf`/`io::Write` implementations, and the allocation entry
//! points that hand out buffers ([`AdaptiveAllocator::allocate`], `try_allocate`,
//! `allocate_with`), which wrap the [`Region`]s the allocator carves. May import: `chunk` (a
//! handle to a region), `allocator` (regions, their release, growth), `error`, `sync`. The
//! arrow runs one way: the allocator knows regions, not buffers.
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

use std::borrow::{Borrow, BorrowMut};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::ptr::{self, NonNull};

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes};

use crate::allocator::{self, AdaptiveAllocator, InitGuard, Region};
use crate::chunk::ChunkPtr;
use crate::error::{AllocError, InitError};
use crate::sync::{self, AtomicUsize, Ordering::*};

/// The number of handles on a region shared by `split_to`/`split_off`.
struct ShareCount {
    refs: AtomicUsize,
}

/// A growable byte buffer carved from an [`AdaptiveAllocator`]'s pool, used like
/// `bytes::BytesMut`.
///
/// It dereferences to the bytes written so far (`len()` of them) and has room for
/// `capacity()` in all. Write with [`BufMut`] (`put_slice`, `put_u32`, …), [`io::Write`],
/// `extend_from_slice` or `Extend`; read with [`Buf`] or as a slice; hand frames on with
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
pub struct PooledBuf {
    /// Start of this handle's view.
    ptr: NonNull<u8>,
    /// Bytes written (initialised) from `ptr`.
    len: usize,
    /// Bytes available from `ptr` within the region.
    cap: usize,
    /// The chunk of the region, and the region's segment index in it.
    chunk: ChunkPtr,
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
    pub fn try_with_capacity(capacity: usize) -> Result<PooledBuf, AllocError> {
        crate::global().try_allocate(capacity)
    }

    /// Wraps a freshly carved region, which the buffer then owns.
    #[inline(always)]
    fn from_region(region: Region) -> PooledBuf {
        let Region { chunk, idx, cap } = region;
        PooledBuf {
            // SAFETY: the allocator carved `idx` for this region, which is live and now ours.
            ptr: unsafe { chunk.segment(idx) },
            len: 0,
            cap,
            chunk,
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

    /// Makes room for at least `additional` more bytes. Grows in place when the region has
    /// room (moving the contents to the region's start if this handle is the region's only
    /// one), otherwise moves to a larger region of the same allocator.
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
        // In place: the only handle on its region, with the region's start free.
        if self.share.is_none() {
            // SAFETY: this handle keeps region `idx` live.
            let base = unsafe { self.chunk.segment(self.idx) };
            // SAFETY: `ptr` lies within the region starting at `base`.
            let offset = unsafe { self.ptr.as_ptr().offset_from(base.as_ptr()) } as usize;
            let region = offset + self.cap;
            if offset > 0 && needed <= region {
                // SAFETY: both ranges lie in the region this handle owns alone; `copy`
                // allows overlap.
                unsafe { ptr::copy(self.ptr.as_ptr(), base.as_ptr(), self.len) };
                self.ptr = base;
                self.cap = region;
                return Ok(());
            }
        }
        // Move: allocate first, so a failure leaves the buffer as it was.
        let target = needed
            .max(self.cap.saturating_mul(2))
            .min(isize::MAX as usize);
        let target = if target > needed && target > (1 << 20) {
            needed.max(self.cap + self.cap / 2)
        } else {
            target
        };
        let mut grown = PooledBuf::from_region(allocator::region_like(self.chunk, target)?);
        // SAFETY: `grown` has room for `needed >= len` bytes and does not overlap `self`.
        unsafe {
            ptr::copy_nonoverlapping(self.ptr.as_ptr(), grown.ptr.as_ptr(), self.len);
            grown.set_len(self.len);
        }
        // The old region is released when `grown`'s old value (now `self`'s) drops.
        std::mem::swap(self, &mut grown);
        Ok(())
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
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }

    /// A handle on the allocator this buffer came from.
    pub fn allocator(&self) -> AdaptiveAllocator {
        allocator::handle_of(self.chunk)
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
                let s = NonNull::from(Box::leak(Box::new(ShareCount {
                    refs: AtomicUsize::new(2),
                })));
                self.share = Some(s);
                Some(s)
            }
        }
    }
}

/// The allocation entry points: they live here, next to the buffer they make, so that the
/// allocator hands out regions and knows nothing of buffers.
impl AdaptiveAllocator {
    /// Allocates a buffer with room for at least `capacity` bytes, empty (`len() == 0`).
    ///
    /// # Panics
    /// If the allocation fails (see [`try_allocate`](Self::try_allocate)), with the error's
    /// message, as `Vec` does.
    #[inline]
    #[track_caller]
    pub fn allocate(&self, capacity: usize) -> PooledBuf {
        // The fast path returns the buffer itself, not a `Result` the caller must unpack.
        if let Some(region) = self.region_fast(capacity) {
            return PooledBuf::from_region(region);
        }
        self.allocate_slow(capacity)
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn allocate_slow(&self, capacity: usize) -> PooledBuf {
        match self.region_slow(capacity) {
            Ok(region) => PooledBuf::from_region(region),
            Err(e) => panic!("adaptive-pool: allocating a buffer of {capacity} bytes failed: {e}"),
        }
    }

    /// Allocates a buffer with room for at least `capacity` bytes, empty.
    ///
    /// Capacity 0 is valid. Errors: [`AllocError::CapacityOverflow`] above `isize::MAX`,
    /// [`AllocError::MemoryLimit`] past `max_memory`, [`AllocError::System`] if the system
    /// refuses memory; in every case nothing is left allocated.
    #[inline]
    pub fn try_allocate(&self, capacity: usize) -> Result<PooledBuf, AllocError> {
        match self.region_fast(capacity) {
            Some(region) => Ok(PooledBuf::from_region(region)),
            None => self.region_slow(capacity).map(PooledBuf::from_region),
        }
    }

    /// Allocates a buffer and runs `init` on it. If the allocation fails, or `init` returns
    /// an error or panics, the buffer is returned and every chunk the calling thread acquired
    /// meanwhile (for the buffer, or for its growth inside `init`) that is now empty is given
    /// back, so `stats()` reads as before (the cumulative `chunk_allocations` and
    /// `chunk_releases` counters record both events); a panic then continues to unwind.
    ///
    /// `init` may use the allocator freely (allocate, grow, `trim()`, other threads too):
    /// the rollback finds the chunks to give back by age in the thread's magazine, so a chunk
    /// that `init` caused to be freed is simply not among them.
    ///
    /// ```
    /// use adaptive_pool::{AdaptiveAllocator, InitError};
    /// use std::io::Read;
    ///
    /// let pool = AdaptiveAllocator::new();
    /// let mut source: &[u8] = b"payload";
    /// let buf = pool.allocate_with(64, |buf| {
    ///     let mut tmp = [0u8; 64];
    ///     let n = source.read(&mut tmp)?;
    ///     buf.extend_from_slice(&tmp[..n]);
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// assert_eq!(&buf[..], b"payload");
    ///
    /// let before = pool.stats();
    /// let failed = pool.allocate_with(64, |_| Err("no data"));
    /// assert_eq!(failed.unwrap_err(), InitError::Init("no data"));
    /// assert_eq!(pool.stats().live_buffers, before.live_buffers);
    /// # Ok::<(), InitError<std::io::Error>>(())
    /// ```
    pub fn allocate_with<E, F>(&self, capacity: usize, init: F) -> Result<PooledBuf, InitError<E>>
    where
        F: FnOnce(&mut PooledBuf) -> Result<(), E>,
    {
        let mut guard = InitGuard::new(self);
        let buf = guard.hold(self.try_allocate(capacity)?);
        match init(buf) {
            Ok(()) => Ok(guard.commit()),
            // Dropping the guard returns the buffer and rolls back.
            Err(e) => Err(InitError::Init(e)),
        }
    }
}

impl Drop for PooledBuf {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(s) = self.share {
            // SAFETY: the count lives while any handle does; `self` is one.
            if unsafe { s.as_ref() }.refs.fetch_sub(1, Release) != 1 {
                return;
            }
            // Every other handle's accesses happen before the region is released.
            sync::acquire_count(&unsafe { s.as_ref() }.refs);
            // SAFETY: this was the last handle; the count was leaked from a `Box`.
            drop(unsafe { Box::from_raw(s.as_ptr()) });
        }
        // SAFETY: this is the last handle on the region.
        unsafe { allocator::release_region(self.chunk, self.idx) }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the view are initialised and owned by this handle.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PooledBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Borrow<[u8]> for PooledBuf {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl BorrowMut<[u8]> for PooledBuf {
    fn borrow_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl PartialEq<[u8]> for PooledBuf {
    fn eq(&self, other: &[u8]) -> bool {
        self[..] == *other
    }
}

impl PartialEq<&[u8]> for PooledBuf {
    fn eq(&self, other: &&[u8]) -> bool {
        self[..] == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for PooledBuf {
    fn eq(&self, other: &[u8; N]) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<Vec<u8>> for PooledBuf {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq for PooledBuf {
    fn eq(&self, other: &PooledBuf) -> bool {
        self[..] == other[..]
    }
}

impl Eq for PooledBuf {}

impl Hash for PooledBuf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self[..].hash(state)
    }
}

impl Clone for PooledBuf {
    /// A deep copy of the written bytes, in a new buffer of the same allocator.
    fn clone(&self) -> PooledBuf {
        let mut copy = match allocator::region_like(self.chunk, self.len) {
            Ok(r) => PooledBuf::from_region(r),
            Err(e) => panic!(
                "adaptive-pool: cloning a buffer of {} bytes failed: {e}",
                self.len
            ),
        };
        copy.extend_from_slice(self);
        copy
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        let shown = &self[..self.len.min(SHOWN)];
        let more = if self.len > SHOWN { "…" } else { "" };
        f.debug_struct("PooledBuf")
            .field("len", &self.len)
            .field("capacity", &self.cap)
            .field("data", &format_args!("b\"{}\"{more}", shown.escape_ascii()))
            .finish()
    }
}

impl Extend<u8> for PooledBuf {
    fn extend<T: IntoIterator<Item = u8>>(&mut self, iter: T) {
        let iter = iter.into_iter();
        self.reserve(iter.size_hint().0);
        for b in iter {
            self.put_u8(b);
        }
    }
}

impl<'a> Extend<&'a u8> for PooledBuf {
    fn extend<T: IntoIterator<Item = &'a u8>>(&mut self, iter: T) {
        self.extend(iter.into_iter().copied())
    }
}

impl io::Write for PooledBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_reserve(buf.len())
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        self.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// SAFETY: `chunk_mut` returns the spare capacity `[len, cap)` of this handle's view;
// `advance_mut` only moves `len` within `cap`, over bytes the caller has written.
unsafe impl BufMut for PooledBuf {
    #[inline]
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize - self.len
    }

    #[inline]
    unsafe fn advance_mut(&mut self, cnt: usize) {
        let spare = self.cap - self.len;
        assert!(cnt <= spare, "advance_mut out of bounds: {cnt} > {spare}");
        self.len += cnt;
    }

    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.len == self.cap {
            self.reserve(64);
        }
        // SAFETY: `[len, cap)` is this handle's spare capacity; `UninitSlice` lets the caller
        // only write it.
        unsafe {
            UninitSlice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), self.cap - self.len)
        }
    }

    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        self.extend_from_slice(src);
    }
}

impl Buf for PooledBuf {
    #[inline]
    fn remaining(&self) -> usize {
        self.len
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        self
    }

    #[inline]
    fn advance(&mut self, cnt: usize) {
        assert!(
            cnt <= self.len,
            "advance out of bounds: {cnt} > {}",
            self.len
        );
        // SAFETY: `cnt <= len <= cap`, so the new start is within the view.
        self.ptr = unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(cnt)) };
        self.len -= cnt;
        self.cap -= cnt;
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        self.split_to(len).freeze()
    }
}
