//! Framing over pooled buffers (feature `codec`): the [`Decoder`] and [`Encoder`] traits,
//! shaped like `tokio_util::codec`'s but over [`PooledBuf`]; [`FramedRead`], [`FramedWrite`]
//! and [`Framed`], which turn a tokio `AsyncRead`/`AsyncWrite` into a
//! [`Stream`](futures_core::Stream) of frames and a [`Sink`](futures_sink::Sink) of items;
//! and ready codecs: [`LengthDelimitedCodec`], [`LinesCodec`] and [`BytesCodec`].
//!
//! Owns: the framing state machines (reading, decoding, end of stream, errors; encoding,
//! flushing, back-pressure) and the ready codecs. May import: the public API only
//! (`AdaptiveAllocator`, `PooledBuf`, `RecvPredictor`, `AllocError`); no `unsafe` (reads go
//! through tokio's `read_buf`, which fills the buffer's spare capacity through
//! [`bytes::BufMut`]).
//!
//! # Moving from `tokio_util::codec`
//! Replace the imports; a `Decoder` takes `&mut PooledBuf` where it took `&mut BytesMut`, an
//! `Encoder` writes into `&mut PooledBuf`; the method names, the `Stream`/`Sink` behaviour and
//! the ready codecs' options are tokio-util's. The ready codecs hand frames out as
//! [`bytes::Bytes`] on the pooled read buffer, without copying (tokio-util's give `BytesMut`
//! or `String`). See the README's migration guide.
//!
//! # The read path
//! [`FramedRead`] (and the read half of [`Framed`]) keeps one `PooledBuf` per connection:
//!
//! * **Sized by a [`RecvPredictor`](crate::RecvPredictor).** Before each read the buffer gets room for
//!   `next_size()` bytes; the read's size goes back into the predictor, so reads grow fast
//!   while they fill the buffer and shrink after small ones.
//! * **Reused in place.** A decoder hands a frame out with `split_to(n).freeze()`: a `Bytes`
//!   on the same memory. Once the frames of a region have dropped, the buffer is that
//!   region's only handle again and `reserve` reuses the region where it is, as `BytesMut`
//!   does; while frames live, the unread rest moves to a new region of the pool.
//! * **Nothing held while idle.** When a read finds no data (`Pending`) or the end of the
//!   stream, and no partial frame waits in the buffer, the buffer is given back; the next
//!   read takes a new one from the pool. An idle connection holds no pooled memory.
//!
//! The write half encodes into a pooled buffer taken when the first item arrives and given
//! back once a flush has written everything, so it too holds nothing between bursts; its
//! size follows the bytes of each flush through a second predictor.
//!
//! ```
//! use adaptive_pool::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
//! use futures_util::{SinkExt, StreamExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // Encode two frames into a byte vector (any `AsyncWrite`)...
//! let mut writer = FramedWrite::new(Vec::new(), LengthDelimitedCodec::new());
//! writer.send(bytes::Bytes::from_static(b"hello")).await?;
//! writer.send(bytes::Bytes::from_static(b"world")).await?;
//! let wire = writer.into_inner();
//! assert_eq!(&wire[..9], b"\0\0\0\x05hello");
//!
//! // ...and decode them from a byte slice (any `AsyncRead`): `Bytes` on pooled memory.
//! let mut reader = FramedRead::new(&wire[..], LengthDelimitedCodec::new());
//! assert_eq!(reader.next().await.unwrap()?, "hello");
//! assert_eq!(reader.next().await.unwrap()?, "world");
//! assert!(reader.next().await.is_none());
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::PooledBuf;

mod bytes_codec;
mod framed;
mod length_delimited;
mod lines;

pub use bytes_codec::BytesCodec;
pub use framed::{Framed, FramedRead, FramedWrite};
pub use length_delimited::{Builder, LengthDelimitedCodec, LengthDelimitedCodecError};
pub use lines::{LinesCodec, LinesCodecError};

/// Decodes frames from the bytes read so far, like `tokio_util::codec::Decoder` but over a
/// [`PooledBuf`].
///
/// [`FramedRead`] calls [`decode`](Self::decode) after every read, and again after every
/// frame it returns, until it answers `Ok(None)` (no complete frame yet); at the end of the
/// stream it calls [`decode_eof`](Self::decode_eof) until that answers `Ok(None)`. A decoder
/// takes a frame off the front with `src.split_to(len)` (and `.freeze()` for a `Bytes`,
/// without copying), and may `src.reserve(n)` when it knows how much more a frame needs. It
/// leaves incomplete data in `src`. An error ends the stream: `FramedRead` returns it, then
/// `None`.
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
    /// error of kind [`io::ErrorKind::UnexpectedEof`] ("bytes remaining on stream";
    /// tokio-util uses kind `Other` for it).
    fn decode_eof(&mut self, buf: &mut PooledBuf) -> Result<Option<Self::Item>, Self::Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("bytes remaining on stream: {}", buf.len()),
            )
            .into()),
        }
    }

    /// Wraps `io` in a [`Framed`] with this codec (which must also be an [`Encoder`] for
    /// writing), reading into buffers from [`global()`](crate::global).
    fn framed<T: AsyncRead + AsyncWrite + Sized>(self, io: T) -> Framed<T, Self>
    where
        Self: Sized,
    {
        Framed::new(io, self)
    }
}

/// Encodes items into bytes to write, like `tokio_util::codec::Encoder` but into a
/// [`PooledBuf`].
pub trait Encoder<Item> {
    /// The errors: an encoding error, or an I/O error of the writer.
    type Error: From<io::Error>;

    /// Appends the encoding of `item` to `dst` (growing it as needed).
    fn encode(&mut self, item: Item, dst: &mut PooledBuf) -> Result<(), Self::Error>;
}
