//! The [`Encoder`] trait: tokio-util's, into a [`PooledBuf`].
//!
//! Owns: the trait.

use std::io;

use crate::PooledBuf;

/// Encodes items into bytes to write, like `tokio_util::codec::Encoder` but into a
/// [`PooledBuf`].
///
/// An encoder written for tokio-util changes in two lines: the trait's import
/// (`use adaptive_pool::codec::Encoder;`) and the buffer's type in `encode`,
/// `&mut BytesMut` becoming `&mut PooledBuf`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `adaptive_pool::codec::Encoder<{Item}>`",
    label = "not an `adaptive_pool::codec::Encoder<{Item}>`",
    note = "a `tokio_util::codec::Encoder` encodes into `&mut BytesMut`: implement \
            `adaptive_pool::codec::Encoder` instead, with `&mut adaptive_pool::PooledBuf` in \
            place of `&mut BytesMut` (the same methods)"
)]
pub trait Encoder<Item> {
    /// The errors: an encoding error, or an I/O error of the writer.
    type Error: From<io::Error>;

    /// Appends the encoding of `item` to `dst` (growing it as needed).
    fn encode(&mut self, item: Item, dst: &mut PooledBuf) -> Result<(), Self::Error>;
}
