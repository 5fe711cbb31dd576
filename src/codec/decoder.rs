//! The [`Decoder`] trait: tokio-util's, over a [`PooledBuf`].
//!
//! Owns: the trait, its default `decode_eof` (tokio-util's error kind and message) and
//! `framed`.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Framed;
use crate::PooledBuf;

/// Decodes frames from the bytes read so far, like `tokio_util::codec::Decoder` but over a
/// [`PooledBuf`].
///
/// [`FramedRead`](super::FramedRead) calls [`decode`](Self::decode) after every read, and
/// again after every frame it returns, until it answers `Ok(None)` (no complete frame yet);
/// at the end of the stream it calls [`decode_eof`](Self::decode_eof) until that answers
/// `Ok(None)`. A decoder takes a frame off the front with `src.split_to(len)` (a
/// `PooledBuf` on the same memory, no copy; `.freeze()` it for a `Bytes`), and may
/// `src.reserve(n)` when it knows how much more a frame needs. It leaves incomplete data in
/// `src`. An error ends the stream: `FramedRead` returns it, then `None`.
///
/// A decoder written for tokio-util changes in two lines: the trait's import
/// (`use adaptive_pool::codec::Decoder;`) and the buffer's type in `decode` (and
/// `decode_eof`), `&mut BytesMut` becoming `&mut PooledBuf`, which has `BytesMut`'s methods.
///
/// A decoder that can fail to allocate (`try_reserve`) must leave `src` and its own state as
/// they were when it returns that error, so that decoding resumes where it stopped once
/// memory comes back: `FramedRead` decodes the buffered bytes again before it reads more.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `adaptive_pool::codec::Decoder`",
    label = "not an `adaptive_pool::codec::Decoder`",
    note = "a `tokio_util::codec::Decoder` decodes from `&mut BytesMut`: implement \
            `adaptive_pool::codec::Decoder` instead, with `&mut adaptive_pool::PooledBuf` in \
            place of `&mut BytesMut` (the same methods)"
)]
pub trait Decoder {
    /// The frames decoded.
    type Item;
    /// The errors: a decoding error, or an I/O error of the reader (hence `From<io::Error>`).
    type Error: From<io::Error>;

    /// Takes one frame off the front of `src`, or answers `Ok(None)` if `src` does not hold a
    /// complete one yet.
    fn decode(&mut self, src: &mut PooledBuf) -> Result<Option<Self::Item>, Self::Error>;

    /// Called at the end of the stream, until it answers `Ok(None)`. By default: a frame
    /// if [`decode`](Self::decode) finds one, else `Ok(None)` if `buf` is empty, else an
    /// error of kind [`io::ErrorKind::Other`] with the message "bytes remaining on stream"
    /// (tokio-util's kind and message).
    fn decode_eof(&mut self, buf: &mut PooledBuf) -> Result<Option<Self::Item>, Self::Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(io::Error::other("bytes remaining on stream").into()),
        }
    }

    /// Wraps `io` in a [`Framed`] with this codec (which must also be an
    /// [`Encoder`](super::Encoder) for writing), reading into buffers from
    /// [`global()`](crate::global).
    fn framed<T: AsyncRead + AsyncWrite + Sized>(self, io: T) -> Framed<T, Self>
    where
        Self: Sized,
    {
        Framed::new(io, self)
    }
}
