//! The standard and `bytes` trait implementations of [`PooledBuf`]: `Deref`/`DerefMut` and
//! the slice views (`AsRef`, `AsMut`, `Borrow`), comparisons (with itself and, both ways,
//! with the byte containers `BytesMut` compares with), `Hash`, `Clone` (a deep copy into a
//! new region), `fmt` (`Debug`, `Write`, hex), `Extend`, `FromIterator`, `IntoIterator`,
//! `Default`, the `From` conversions, `io::Write`, `bytes::BufMut` and `bytes::Buf`, and serde
//! (feature `serde`).
//!
//! Owns: nothing but these impls; each works through the buffer's own methods and view
//! (`ptr`, `len`, `cap`, the parent's fields). The region's life cycle (allocation, growth,
//! splitting, sharing, release) stays in the parent, `buf`. May import: `allocator` (for
//! `Clone`'s allocation through the buffer's allocator), `error`, and the parent.

use std::borrow::{Borrow, BorrowMut};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::allocator;

use super::PooledBuf;

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

// Comparisons: byte-wise, with every type `BytesMut` compares with, in both directions, plus
// byte arrays (`buf == b"abc"`, `b"abc" == buf`) and `BytesMut` itself.

impl PartialEq for PooledBuf {
    fn eq(&self, other: &PooledBuf) -> bool {
        self[..] == other[..]
    }
}

impl Eq for PooledBuf {}

impl PartialOrd for PooledBuf {
    fn partial_cmp(&self, other: &PooledBuf) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PooledBuf {
    fn cmp(&self, other: &PooledBuf) -> Ordering {
        self[..].cmp(&other[..])
    }
}

/// `PartialEq` and `PartialOrd` of `$ty` with `PooledBuf` (the `$ty == buf` direction): the
/// second half of `compare_both_ways`, and alone for references, whose other half is generic.
macro_rules! compare_both_ways_reverse_only {
    ($([$($generics:tt)*] $ty:ty;)*) => {$(
        impl<$($generics)*> PartialEq<PooledBuf> for $ty {
            fn eq(&self, other: &PooledBuf) -> bool {
                *AsRef::<[u8]>::as_ref(self) == other[..]
            }
        }

        impl<$($generics)*> PartialOrd<PooledBuf> for $ty {
            fn partial_cmp(&self, other: &PooledBuf) -> Option<Ordering> {
                AsRef::<[u8]>::as_ref(self).partial_cmp(&other[..])
            }
        }
    )*};
}

/// `PartialEq` and `PartialOrd` between `PooledBuf` and `$ty`, both ways, through the bytes
/// (each `$ty` is `AsRef<[u8]>`).
macro_rules! compare_both_ways {
    ($([$($generics:tt)*] $ty:ty;)*) => {$(
        impl<$($generics)*> PartialEq<$ty> for PooledBuf {
            fn eq(&self, other: &$ty) -> bool {
                self[..] == *AsRef::<[u8]>::as_ref(other)
            }
        }

        impl<$($generics)*> PartialOrd<$ty> for PooledBuf {
            fn partial_cmp(&self, other: &$ty) -> Option<Ordering> {
                self[..].partial_cmp(AsRef::<[u8]>::as_ref(other))
            }
        }

        compare_both_ways_reverse_only! { [$($generics)*] $ty; }
    )*};
}

compare_both_ways! {
    [] [u8];
    [] str;
    [] Vec<u8>;
    [] String;
    [] Bytes;
    [] BytesMut;
    [const N: usize] [u8; N];
}

// The reverse direction for references (`"abc" == buf`, `b"abc" == buf`); the forward one is
// the generic `&T` impl below.
compare_both_ways_reverse_only! {
    [] &[u8];
    [] &str;
    [const N: usize] &[u8; N];
}

impl<T: ?Sized> PartialEq<&T> for PooledBuf
where
    PooledBuf: PartialEq<T>,
{
    fn eq(&self, other: &&T) -> bool {
        *self == **other
    }
}

impl<T: ?Sized> PartialOrd<&T> for PooledBuf
where
    PooledBuf: PartialOrd<T>,
{
    fn partial_cmp(&self, other: &&T) -> Option<Ordering> {
        self.partial_cmp(*other)
    }
}

impl Hash for PooledBuf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self[..].hash(state)
    }
}

impl Clone for PooledBuf {
    /// A deep copy of the written bytes, in a new buffer of the same allocator.
    fn clone(&self) -> PooledBuf {
        let Some(chunk) = self.chunk else {
            return PooledBuf::new();
        };
        let mut copy = match allocator::region_like(chunk, self.len) {
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

impl Extend<Bytes> for PooledBuf {
    fn extend<T: IntoIterator<Item = Bytes>>(&mut self, iter: T) {
        for bytes in iter {
            self.extend_from_slice(&bytes);
        }
    }
}

impl FromIterator<u8> for PooledBuf {
    /// Collects into a buffer from [`global()`](crate::global).
    fn from_iter<T: IntoIterator<Item = u8>>(iter: T) -> PooledBuf {
        let mut buf = PooledBuf::new();
        buf.extend(iter);
        buf
    }
}

impl<'a> FromIterator<&'a u8> for PooledBuf {
    /// Collects into a buffer from [`global()`](crate::global).
    fn from_iter<T: IntoIterator<Item = &'a u8>>(iter: T) -> PooledBuf {
        iter.into_iter().copied().collect()
    }
}

impl IntoIterator for PooledBuf {
    type Item = u8;
    type IntoIter = bytes::buf::IntoIter<PooledBuf>;

    /// Iterates over the bytes, consuming the buffer (its memory goes back when the iterator
    /// drops).
    fn into_iter(self) -> Self::IntoIter {
        bytes::buf::IntoIter::new(self)
    }
}

impl<'a> IntoIterator for &'a PooledBuf {
    type Item = &'a u8;
    type IntoIter = std::slice::Iter<'a, u8>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Default for PooledBuf {
    /// [`PooledBuf::new()`]: no memory until the buffer grows.
    fn default() -> PooledBuf {
        PooledBuf::new()
    }
}

impl From<&[u8]> for PooledBuf {
    /// A copy of `src` in a buffer from [`global()`](crate::global).
    fn from(src: &[u8]) -> PooledBuf {
        let mut buf = PooledBuf::with_capacity(src.len());
        buf.extend_from_slice(src);
        buf
    }
}

impl From<&str> for PooledBuf {
    /// A copy of `src`'s bytes in a buffer from [`global()`](crate::global).
    fn from(src: &str) -> PooledBuf {
        PooledBuf::from(src.as_bytes())
    }
}

impl From<Bytes> for PooledBuf {
    /// A copy of `src` in a buffer from [`global()`](crate::global): the way back from a
    /// frozen frame to a mutable one, as `BytesMut::from(bytes)` is for tokio-util's frames
    /// (which copies too unless `bytes` is unique). A `Bytes` frozen from a `PooledBuf` cannot
    /// be turned back into that buffer (`bytes` gives no access to its owner), so keep the
    /// `PooledBuf` (the codecs' frames, `read_pooled`) where you will change it, and freeze
    /// only what you hand on.
    ///
    /// ```
    /// use adaptive_pool::PooledBuf;
    /// use bytes::Bytes;
    ///
    /// let frozen = Bytes::from_static(b"frame");
    /// let mut buf = PooledBuf::from(frozen.clone());
    /// buf.extend_from_slice(b"!");
    /// assert_eq!(buf, "frame!");
    /// assert_eq!(frozen, "frame"); // a copy: the `Bytes` is unchanged
    /// ```
    fn from(src: Bytes) -> PooledBuf {
        PooledBuf::from(&src[..])
    }
}

impl From<PooledBuf> for Bytes {
    /// [`PooledBuf::freeze`]: no copy.
    fn from(buf: PooledBuf) -> Bytes {
        buf.freeze()
    }
}

impl From<PooledBuf> for Vec<u8> {
    /// A copy of the bytes (pooled memory cannot become a `Vec`'s); the buffer's memory goes
    /// back to the pool.
    fn from(buf: PooledBuf) -> Vec<u8> {
        buf.to_vec()
    }
}

impl fmt::Write for PooledBuf {
    /// Appends `s`; fails (with `fmt::Error`) only if the buffer cannot grow.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.try_reserve(s.len()).map_err(|_| fmt::Error)?;
        self.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl fmt::LowerHex for PooledBuf {
    /// The bytes as two lower-case hex digits each, with no separator.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::UpperHex for PooledBuf {
    /// The bytes as two upper-case hex digits each, with no separator.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.iter().try_for_each(|b| write!(f, "{b:02X}"))
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

/// `serde` support (feature `serde`): a buffer serialises as a byte string, as `BytesMut` does,
/// and deserialises from a byte string, a sequence of bytes or a string, into a buffer from
/// [`global()`](crate::global).
#[cfg(feature = "serde")]
mod serde_impl {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
    use serde::ser::{Serialize, Serializer};

    use super::PooledBuf;

    impl Serialize for PooledBuf {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self)
        }
    }

    struct PooledBufVisitor;

    impl<'de> Visitor<'de> for PooledBufVisitor {
        type Value = PooledBuf;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string, a sequence of bytes or a string")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PooledBuf, A::Error> {
            // The hint comes from the input: cap it, the buffer grows as bytes arrive.
            let hint = seq.size_hint().unwrap_or(0).min(4096);
            let mut buf = PooledBuf::try_with_capacity(hint).map_err(de::Error::custom)?;
            while let Some(b) = seq.next_element::<u8>()? {
                buf.try_reserve(1).map_err(de::Error::custom)?;
                buf.extend_from_slice(&[b]);
            }
            Ok(buf)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<PooledBuf, E> {
            let mut buf = PooledBuf::try_with_capacity(v.len()).map_err(E::custom)?;
            buf.extend_from_slice(v);
            Ok(buf)
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<PooledBuf, E> {
            self.visit_bytes(&v)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<PooledBuf, E> {
            self.visit_bytes(v.as_bytes())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<PooledBuf, E> {
            self.visit_bytes(v.as_bytes())
        }
    }

    impl<'de> Deserialize<'de> for PooledBuf {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PooledBuf, D::Error> {
            deserializer.deserialize_byte_buf(PooledBufVisitor)
        }
    }
}
