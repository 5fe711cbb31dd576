//! Framing over pooled buffers (feature `codec`), a drop-in for `tokio_util::codec`: the
//! [`Decoder`] and [`Encoder`] traits, shaped like tokio-util's but over [`PooledBuf`](crate::PooledBuf);
//! [`FramedRead`], [`FramedWrite`] and [`Framed`], which turn a tokio
//! `AsyncRead`/`AsyncWrite` into a [`Stream`](futures_core::Stream) of frames and a
//! [`Sink`](futures_sink::Sink) of items, and [`FramedParts`] to take them apart; and the
//! ready codecs: [`LengthDelimitedCodec`] (module [`length_delimited`]), [`LinesCodec`],
//! [`AnyDelimiterCodec`] and [`BytesCodec`].
//!
//! Owns: the framing state machines (`framed_impl`: reading, decoding, end of stream,
//! errors; encoding, flushing, back-pressure) under thin `FramedRead`/`FramedWrite`/`Framed`
//! wrappers, the traits and each codec in a file of its own, as tokio-util lays them out.
//! May import: the public API only (`AdaptiveAllocator`, `PooledBuf`, `RecvPredictor`,
//! `AllocError`, `io::OutOfMemory`); no `unsafe` (reads go through tokio's `read_buf`, which
//! fills the buffer's spare capacity through [`bytes::BufMut`]).
//!
//! # Moving from `tokio_util::codec`
//! Replace the import line: a server written against `tokio_util::codec` compiles against
//! `adaptive_pool::codec` unchanged. Item types are tokio-util's with `PooledBuf` in place of
//! `BytesMut`: [`LengthDelimitedCodec`] and [`BytesCodec`] yield `PooledBuf` frames split off
//! the pooled read buffer (call `.freeze()` where you did on tokio-util's `BytesMut`, for a
//! `Bytes` on the same memory), [`LinesCodec`] yields `String`, [`AnyDelimiterCodec`] yields
//! `Bytes`. Error kinds and messages are tokio-util's. A `Decoder` or `Encoder` of your own
//! changes in two lines: the trait's import, and `&mut BytesMut` becoming `&mut PooledBuf`
//! in its signature. See the README's migration guide.
//!
//! # The read path
//! [`FramedRead`] (and the read half of [`Framed`]) keeps one `PooledBuf` per connection:
//!
//! * **Sized by a [`RecvPredictor`](crate::RecvPredictor).** Before each read the buffer gets
//!   room for `next_size()` bytes (8 KiB for the first read, tokio-util's initial capacity,
//!   unless `with_capacity` or `with_pool` say otherwise); the read's size goes back into the
//!   predictor, so reads grow fast while they fill the buffer and shrink after small ones.
//! * **Reused in place.** A decoder hands a frame out with `split_to(n)`: a `PooledBuf` on
//!   the same memory. Once the frames of a region have dropped, the buffer is that region's
//!   only handle again and `reserve` reuses the region where it is, as `BytesMut` does;
//!   while frames live, the unread rest moves to a new region of the pool.
//! * **Nothing held while idle.** When a read finds no data (`Pending`) or the end of the
//!   stream, and no partial frame waits in the buffer, the buffer is given back; the next
//!   read takes a new one from the pool. An idle connection holds no pooled memory.
//! * **Out of memory is not a desync.** A refused allocation (past `max_memory`) is an error
//!   of kind [`OutOfMemory`](std::io::ErrorKind::OutOfMemory) that consumes nothing; after it
//!   (and the `None` that follows an error) the stream decodes what is buffered before it
//!   reads more, so polling again once memory came back (e.g. after
//!   `pool.ready(n).await`) resumes on the frame boundary.
//!
//! The write half encodes into a pooled buffer taken when the first item of a burst arrives,
//! its size following the bytes of past flushes through a second predictor. A back-pressure
//! flush (`poll_ready` once the buffer holds the boundary, 8 KiB by default) keeps the
//! emptied buffer, up to 64 KiB, for the item that follows, as tokio-util keeps its capacity;
//! the burst's own `poll_flush` or `poll_close` gives it back once everything is written, so
//! the write half too holds nothing between bursts. A write buffer of 4 KiB or more leaves its
//! first 64 bytes unused, so that a frame echoed from the start of a read buffer does not land
//! a few bytes past its source's offset in a page, where x86's `rep movsb` (glibc's `memcpy`
//! for large copies) slows down 30 to 40 times.
//!
//! ```
//! use adaptive_pool::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
//! use bytes::Bytes;
//! use futures_util::{SinkExt, StreamExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // Encode two frames into a byte vector (any `AsyncWrite`)...
//! let mut writer = FramedWrite::new(Vec::new(), LengthDelimitedCodec::new());
//! writer.send(Bytes::from_static(b"hello")).await?;
//! writer.send(Bytes::from_static(b"world")).await?;
//! let wire = writer.into_inner();
//! assert_eq!(&wire[..9], b"\0\0\0\x05hello");
//!
//! // ...and decode them from a byte slice (any `AsyncRead`): `PooledBuf`s on pooled memory.
//! let mut reader = FramedRead::new(&wire[..], LengthDelimitedCodec::new());
//! assert_eq!(reader.next().await.unwrap()?, "hello");
//! let world: Bytes = reader.next().await.unwrap()?.freeze();
//! assert_eq!(world, "world");
//! assert!(reader.next().await.is_none());
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]

mod any_delimiter_codec;
mod bytes_codec;
mod decoder;
mod encoder;
mod framed;
mod framed_impl;
mod framed_read;
mod framed_write;
pub mod length_delimited;
mod lines_codec;

pub use any_delimiter_codec::{AnyDelimiterCodec, AnyDelimiterCodecError};
pub use bytes_codec::BytesCodec;
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use framed::{Framed, FramedParts};
pub use framed_read::FramedRead;
pub use framed_write::FramedWrite;
pub use length_delimited::{Builder, LengthDelimitedCodec, LengthDelimitedCodecError};
pub use lines_codec::{LinesCodec, LinesCodecError};
