//! Frames preceded by their length: [`LengthDelimitedCodec`], with the options of
//! tokio-util's [`Builder`] (length field offset, length and adjustment, bytes to skip, byte
//! order, maximum frame length). The module path is tokio-util's:
//! `adaptive_pool::codec::length_delimited::Builder`, as
//! `tokio_util::codec::length_delimited::Builder`.
//!
//! Owns: the header arithmetic and the decode state (header or payload). Frames come out as
//! [`PooledBuf`]s split off the pooled read buffer, without copying (tokio-util's are
//! `BytesMut`s split off its read buffer); `.freeze()` one for a `Bytes`.
//!
//! ```
//! use adaptive_pool::codec::length_delimited::{Builder, LengthDelimitedCodec};
//! use adaptive_pool::codec::Decoder;
//! use adaptive_pool::PooledBuf;
//!
//! let mut codec: LengthDelimitedCodec = Builder::new().length_field_type::<u16>().new_codec();
//! let mut buf = PooledBuf::from(&b"\0\x02hi"[..]);
//! let frame: PooledBuf = codec.decode(&mut buf)?.unwrap();
//! assert_eq!(frame, "hi");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Decoder, Encoder, Framed, FramedRead, FramedWrite};
use crate::io::OutOfMemory;
use crate::PooledBuf;

/// The default maximum frame length: 8 MiB, as in tokio-util.
const DEFAULT_MAX_FRAME_LENGTH: usize = 8 << 20;

/// A codec for frames preceded by their length: by default a 4-byte big-endian length, then
/// that many payload bytes. Decodes into a [`PooledBuf`] (the payload, split off the pooled
/// read buffer, no copy: tokio-util's frames are `BytesMut`, `.freeze()` works on both);
/// encodes `Bytes`, `&[u8]` or `PooledBuf` payloads with their header.
///
/// A length over [`max_frame_length`](Self::max_frame_length) is an error of kind
/// [`io::ErrorKind::InvalidData`] carrying a [`LengthDelimitedCodecError`] ("frame size too
/// big"), raised from the header alone: nothing is allocated for such a frame. Otherwise,
/// once the header is read, the read buffer makes room for the whole frame, so a large frame
/// moves at most once. If the pool refuses that room, the error is of kind
/// [`io::ErrorKind::OutOfMemory`] (an [`OutOfMemory`] inside) and nothing is consumed: the
/// header is decoded again on the next call, so decoding resumes on the frame boundary once
/// memory comes back.
///
/// ```
/// use adaptive_pool::codec::{Decoder, LengthDelimitedCodec};
/// use adaptive_pool::PooledBuf;
///
/// let mut codec = LengthDelimitedCodec::builder()
///     .length_field_length(2)
///     .little_endian()
///     .new_codec();
/// let mut buf = PooledBuf::from(&b"\x03\x00abc\x01\x00"[..]);
/// let frame: PooledBuf = codec.decode(&mut buf)?.unwrap();
/// assert_eq!(frame, "abc");
/// assert_eq!(codec.decode(&mut buf)?, None); // the next frame is not complete yet
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LengthDelimitedCodec {
    settings: Builder,
    /// `Some(n)` once a header has been read: the payload of `n` bytes is awaited.
    payload: Option<usize>,
}

/// The error of a frame longer than the codec's maximum, inside an `io::Error`.
pub struct LengthDelimitedCodecError {
    _private: (),
}

impl fmt::Debug for LengthDelimitedCodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LengthDelimitedCodecError")
    }
}

impl fmt::Display for LengthDelimitedCodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("frame size too big")
    }
}

impl StdError for LengthDelimitedCodecError {}

fn too_big(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, LengthDelimitedCodecError { _private: () })
}

fn adjustment_overflow() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "provided length would overflow after adjustment",
    )
}

impl LengthDelimitedCodec {
    /// The default codec: a 4-byte big-endian length at offset 0, no adjustment, frames up to
    /// 8 MiB.
    pub fn new() -> LengthDelimitedCodec {
        Builder::new().new_codec()
    }

    /// A builder for other header layouts.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The longest payload accepted, in bytes.
    pub fn max_frame_length(&self) -> usize {
        self.settings.max_frame_len
    }

    /// Sets the longest payload accepted (capped at what the length field can express).
    pub fn set_max_frame_length(&mut self, max: usize) {
        self.settings.max_frame_length(max);
        self.settings.cap_max_frame_length();
    }

    /// Reads a header, if one is complete: the payload length, after checking it, making
    /// room for the payload in `src` and then skipping the header bytes. An error (a length
    /// refused, no room) consumes nothing.
    fn decode_head(&self, src: &mut PooledBuf) -> io::Result<Option<usize>> {
        let s = &self.settings;
        if src.len() < s.head_len() {
            return Ok(None);
        }
        let mut field = &src[s.length_field_offset..s.length_field_offset + s.length_field_len];
        let raw = if s.big_endian {
            field.get_uint(s.length_field_len)
        } else {
            field.get_uint_le(s.length_field_len)
        };
        if raw > s.max_frame_len as u64 {
            return Err(too_big(io::ErrorKind::InvalidData));
        }
        // `raw` fits a usize: it is at most `max_frame_len`.
        let n = raw as usize;
        let n = if s.length_adjustment < 0 {
            n.checked_sub(s.length_adjustment.unsigned_abs())
        } else {
            n.checked_add(s.length_adjustment as usize)
        }
        .ok_or_else(adjustment_overflow)?;
        // Room for the whole frame, so it lands in one region (pooled reads then move it at
        // most once); made before the header is skipped, so that a refusal leaves the
        // header in place to be decoded again (issue 21).
        let needed = s.skip().saturating_add(n);
        if needed > src.len() {
            src.try_reserve(needed - src.len())
                .map_err(|e| OutOfMemory::io_error(e, &src.allocator()))?;
        }
        src.advance(s.skip());
        Ok(Some(n))
    }
}

impl Default for LengthDelimitedCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for LengthDelimitedCodec {
    type Item = PooledBuf;
    type Error = io::Error;

    fn decode(&mut self, src: &mut PooledBuf) -> io::Result<Option<PooledBuf>> {
        let n = match self.payload {
            Some(n) => n,
            None => match self.decode_head(src)? {
                Some(n) => {
                    self.payload = Some(n);
                    n
                }
                None => return Ok(None),
            },
        };
        if src.len() < n {
            return Ok(None);
        }
        self.payload = None;
        Ok(Some(src.split_to(n)))
    }
}

impl Encoder<&[u8]> for LengthDelimitedCodec {
    type Error = io::Error;

    /// Writes the length field (at the start: the encoder writes no bytes before it) and the
    /// payload. The length written is the payload's minus the adjustment.
    fn encode(&mut self, data: &[u8], dst: &mut PooledBuf) -> io::Result<()> {
        let s = &self.settings;
        if data.len() > s.max_frame_len {
            return Err(too_big(io::ErrorKind::InvalidInput));
        }
        let n = if s.length_adjustment < 0 {
            data.len().checked_add(s.length_adjustment.unsigned_abs())
        } else {
            data.len().checked_sub(s.length_adjustment as usize)
        }
        .ok_or_else(adjustment_overflow)?;
        dst.try_reserve(s.length_field_len + data.len())
            .map_err(|e| OutOfMemory::io_error(e, &dst.allocator()))?;
        if s.big_endian {
            dst.put_uint(n as u64, s.length_field_len);
        } else {
            dst.put_uint_le(n as u64, s.length_field_len);
        }
        dst.extend_from_slice(data);
        Ok(())
    }
}

impl Encoder<Bytes> for LengthDelimitedCodec {
    type Error = io::Error;

    fn encode(&mut self, data: Bytes, dst: &mut PooledBuf) -> io::Result<()> {
        Encoder::<&[u8]>::encode(self, &data, dst)
    }
}

/// A frame decoded (or read) on the pool, sent back as it is: an echo needs no `freeze`.
impl Encoder<PooledBuf> for LengthDelimitedCodec {
    type Error = io::Error;

    #[inline]
    fn encode(&mut self, data: PooledBuf, dst: &mut PooledBuf) -> io::Result<()> {
        Encoder::<&[u8]>::encode(self, &data, dst)
    }
}

/// Settings of a [`LengthDelimitedCodec`], with tokio-util's names and defaults: a 4-byte
/// big-endian length field at offset 0, no adjustment, the header skipped, frames up to
/// 8 MiB.
///
/// The header is `length_field_offset` bytes, the length field of `length_field_length`
/// bytes, and possibly more; decoding skips `num_skip` bytes (by default the offset plus the
/// field) and takes `length + length_adjustment` bytes as the frame.
///
/// ```
/// use adaptive_pool::codec::length_delimited::LengthDelimitedCodec;
/// use adaptive_pool::codec::Decoder;
/// use adaptive_pool::PooledBuf;
///
/// // A 1-byte tag, then a 2-byte length of the payload; the frame keeps the 3-byte header.
/// let mut codec = LengthDelimitedCodec::builder()
///     .length_field_offset(1)
///     .length_field_length(2)
///     .length_adjustment(3)
///     .num_skip(0)
///     .new_codec();
/// let mut buf = PooledBuf::from(&b"\x07\x00\x02hi"[..]);
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), &b"\x07\x00\x02hi"[..]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Builder {
    max_frame_len: usize,
    length_field_len: usize,
    length_field_offset: usize,
    length_adjustment: isize,
    num_skip: Option<usize>,
    big_endian: bool,
}

impl Builder {
    /// The defaults (see the type's docs).
    pub fn new() -> Builder {
        Builder {
            max_frame_len: DEFAULT_MAX_FRAME_LENGTH,
            length_field_len: 4,
            length_field_offset: 0,
            length_adjustment: 0,
            num_skip: None,
            big_endian: true,
        }
    }

    /// The length field is big-endian (network order; the default).
    pub fn big_endian(&mut self) -> &mut Self {
        self.big_endian = true;
        self
    }

    /// The length field is little-endian.
    pub fn little_endian(&mut self) -> &mut Self {
        self.big_endian = false;
        self
    }

    /// The length field is in this machine's byte order.
    pub fn native_endian(&mut self) -> &mut Self {
        self.big_endian = cfg!(target_endian = "big");
        self
    }

    /// The longest payload accepted (8 MiB by default). A longer one is an error, raised
    /// from its header before anything is allocated for it.
    pub fn max_frame_length(&mut self, max: usize) -> &mut Self {
        self.max_frame_len = max;
        self
    }

    /// Bytes in the length field, 1 to 8 (4 by default).
    ///
    /// # Panics
    /// Outside 1..=8.
    pub fn length_field_length(&mut self, bytes: usize) -> &mut Self {
        assert!(
            (1..=8).contains(&bytes),
            "invalid length field length {bytes}: 1 to 8 bytes"
        );
        self.length_field_len = bytes;
        self
    }

    /// The length field's type: `u8`, `u16`, `u32`, `u64` (its size is the field's length).
    pub fn length_field_type<T: LengthFieldType>(&mut self) -> &mut Self {
        self.length_field_length(std::mem::size_of::<T>())
    }

    /// Bytes in the header before the length field (0 by default).
    pub fn length_field_offset(&mut self, bytes: usize) -> &mut Self {
        self.length_field_offset = bytes;
        self
    }

    /// Added to the length field's value to get the frame's length (0 by default); for
    /// lengths that count the header, or part of it.
    pub fn length_adjustment(&mut self, delta: isize) -> &mut Self {
        self.length_adjustment = delta;
        self
    }

    /// Bytes to skip from the start of the header before the frame (by default the offset
    /// plus the length field: the frame is the payload alone).
    pub fn num_skip(&mut self, bytes: usize) -> &mut Self {
        self.num_skip = Some(bytes);
        self
    }

    /// A codec with these settings.
    pub fn new_codec(&self) -> LengthDelimitedCodec {
        let mut settings = *self;
        settings.cap_max_frame_length();
        LengthDelimitedCodec {
            settings,
            payload: None,
        }
    }

    /// A [`FramedRead`] of `inner` with these settings.
    pub fn new_read<T: AsyncRead>(&self, inner: T) -> FramedRead<T, LengthDelimitedCodec> {
        FramedRead::new(inner, self.new_codec())
    }

    /// A [`FramedWrite`] onto `inner` with these settings.
    pub fn new_write<T: AsyncWrite>(&self, inner: T) -> FramedWrite<T, LengthDelimitedCodec> {
        FramedWrite::new(inner, self.new_codec())
    }

    /// A [`Framed`] over `inner` with these settings.
    pub fn new_framed<T: AsyncRead + AsyncWrite>(
        &self,
        inner: T,
    ) -> Framed<T, LengthDelimitedCodec> {
        Framed::new(inner, self.new_codec())
    }

    /// Bytes needed before the length can be read (and the header skipped).
    fn head_len(&self) -> usize {
        (self.length_field_offset + self.length_field_len).max(self.num_skip.unwrap_or(0))
    }

    fn skip(&self) -> usize {
        self.num_skip
            .unwrap_or(self.length_field_offset + self.length_field_len)
    }

    /// No longer than the length field can express (after the adjustment).
    fn cap_max_frame_length(&mut self) {
        let field_max = match 1u64.checked_shl(8 * self.length_field_len as u32) {
            Some(limit) => limit - 1,
            None => u64::MAX,
        };
        let expressible = field_max.saturating_add_signed(self.length_adjustment as i64);
        let expressible = usize::try_from(expressible).unwrap_or(usize::MAX);
        self.max_frame_len = self.max_frame_len.min(expressible);
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

/// The types [`Builder::length_field_type`] accepts.
pub trait LengthFieldType: sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

impl LengthFieldType for u8 {}
impl LengthFieldType for u16 {}
impl LengthFieldType for u32 {}
impl LengthFieldType for u64 {}
