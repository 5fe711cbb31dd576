//! [`BytesCodec`]: no framing at all; whatever each read brought is one frame, like
//! tokio-util's `BytesCodec`.
//!
//! Owns: nothing but the two trivial conversions.

use std::io;

use bytes::{Bytes, BytesMut};

use super::{Decoder, Encoder};
use crate::io::OutOfMemory;
use crate::PooledBuf;

/// A codec that passes bytes through: each frame decoded is all the bytes buffered (usually
/// one read), as a [`PooledBuf`] split off the pooled read buffer, without copying
/// (tokio-util's are `BytesMut`; `.freeze()` works on both); encoding appends the bytes
/// given (`Bytes`, `BytesMut`, `PooledBuf` or `&[u8]`).
///
/// ```
/// use adaptive_pool::codec::{BytesCodec, Decoder};
/// use adaptive_pool::PooledBuf;
///
/// let mut buf = PooledBuf::from("as it came");
/// let frame: PooledBuf = BytesCodec::new().decode(&mut buf)?.unwrap();
/// assert_eq!(frame, "as it came");
/// assert!(buf.is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BytesCodec(());

impl BytesCodec {
    /// The codec.
    pub fn new() -> BytesCodec {
        BytesCodec(())
    }
}

impl Decoder for BytesCodec {
    type Item = PooledBuf;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut PooledBuf) -> io::Result<Option<PooledBuf>> {
        if buf.is_empty() {
            return Ok(None);
        }
        Ok(Some(buf.split()))
    }
}

/// Appends `data` to `dst`, reporting a refused allocation as an error rather than a panic.
fn append(data: &[u8], dst: &mut PooledBuf) -> io::Result<()> {
    dst.try_reserve(data.len())
        .map_err(|e| OutOfMemory::io_error(e, &dst.allocator()))?;
    dst.extend_from_slice(data);
    Ok(())
}

impl Encoder<Bytes> for BytesCodec {
    type Error = io::Error;

    fn encode(&mut self, data: Bytes, dst: &mut PooledBuf) -> io::Result<()> {
        append(&data, dst)
    }
}

impl Encoder<BytesMut> for BytesCodec {
    type Error = io::Error;

    fn encode(&mut self, data: BytesMut, dst: &mut PooledBuf) -> io::Result<()> {
        append(&data, dst)
    }
}

/// A frame decoded (or read) on the pool, sent back as it is: an echo needs no `freeze`.
impl Encoder<PooledBuf> for BytesCodec {
    type Error = io::Error;

    fn encode(&mut self, data: PooledBuf, dst: &mut PooledBuf) -> io::Result<()> {
        append(&data, dst)
    }
}

impl Encoder<&[u8]> for BytesCodec {
    type Error = io::Error;

    fn encode(&mut self, data: &[u8], dst: &mut PooledBuf) -> io::Result<()> {
        append(data, dst)
    }
}
