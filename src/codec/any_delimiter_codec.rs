//! [`AnyDelimiterCodec`]: chunks ended by any one of a set of delimiter bytes, with a
//! maximum length, like tokio-util's `AnyDelimiterCodec`.
//!
//! Owns: the search state (where the last search for a delimiter stopped, whether an
//! overlong chunk is being discarded) and the delimiters.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use bytes::{Buf, Bytes};

use super::{Decoder, Encoder};
use crate::io::OutOfMemory;
use crate::PooledBuf;

/// tokio-util's default delimiters to split on: `,`, `;`, `\n` and `\r`.
const DEFAULT_SEEK_DELIMITERS: &[u8] = b",;\n\r";
/// tokio-util's default delimiter to write after each chunk: `,`.
const DEFAULT_SEQUENCE_WRITER: &[u8] = b",";

/// A codec that splits the stream into chunks at any of the `seek_delimiters` bytes, as
/// tokio-util's: each chunk, without its delimiter, is a [`Bytes`] split off the pooled read
/// buffer (no copy; tokio-util's are `Bytes` too). Encodes anything `AsRef<str>` followed by
/// the `sequence_writer` bytes.
///
/// With a maximum length (`new_with_max_length`), a chunk longer than that is an error,
/// [`AnyDelimiterCodecError::MaxChunkLengthExceeded`] ("max chunk length exceeded"), raised as
/// soon as more bytes than that have come without a delimiter; the rest of that chunk is
/// then discarded and decoding resumes after the next delimiter. At the end of the stream,
/// what is left is the last chunk.
///
/// ```
/// use adaptive_pool::codec::{AnyDelimiterCodec, Decoder};
/// use adaptive_pool::PooledBuf;
///
/// let mut codec = AnyDelimiterCodec::new(b",;\r\n".to_vec(), b";".to_vec());
/// let mut buf = PooledBuf::from("chunk 1,chunk 2;chunk 3\n\r");
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "chunk 1");
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "chunk 2");
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "chunk 3");
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), ""); // between `\n` and `\r`
/// assert_eq!(codec.decode(&mut buf)?, None);
/// # Ok::<(), adaptive_pool::codec::AnyDelimiterCodecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AnyDelimiterCodec {
    /// Bytes of the buffer already searched for a delimiter (so each byte is searched once).
    searched: usize,
    /// The longest chunk accepted, its delimiter excluded.
    max_length: usize,
    /// Inside a chunk that was too long: drop bytes up to its delimiter.
    discarding: bool,
    /// The bytes that end a chunk.
    seek_delimiters: Vec<u8>,
    /// The bytes written after each chunk encoded.
    sequence_writer: Vec<u8>,
}

impl AnyDelimiterCodec {
    /// Chunks of any length, ended by any byte of `seek_delimiters`; encoding writes
    /// `sequence_writer` after each chunk.
    pub fn new(seek_delimiters: Vec<u8>, sequence_writer: Vec<u8>) -> AnyDelimiterCodec {
        AnyDelimiterCodec {
            searched: 0,
            max_length: usize::MAX,
            discarding: false,
            seek_delimiters,
            sequence_writer,
        }
    }

    /// Chunks of at most `max_length` bytes. Set a maximum for any peer you do not trust:
    /// without one, a peer that never sends a delimiter makes the buffer grow without bound.
    pub fn new_with_max_length(
        seek_delimiters: Vec<u8>,
        sequence_writer: Vec<u8>,
        max_length: usize,
    ) -> AnyDelimiterCodec {
        AnyDelimiterCodec {
            max_length,
            ..AnyDelimiterCodec::new(seek_delimiters, sequence_writer)
        }
    }

    /// The longest chunk accepted (`usize::MAX` if there is no maximum).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

impl Default for AnyDelimiterCodec {
    /// tokio-util's defaults: split on `,`, `;`, `\n` and `\r`; write `,` after each chunk.
    fn default() -> Self {
        AnyDelimiterCodec::new(
            DEFAULT_SEEK_DELIMITERS.to_vec(),
            DEFAULT_SEQUENCE_WRITER.to_vec(),
        )
    }
}

impl Decoder for AnyDelimiterCodec {
    type Item = Bytes;
    type Error = AnyDelimiterCodecError;

    fn decode(&mut self, buf: &mut PooledBuf) -> Result<Option<Bytes>, AnyDelimiterCodecError> {
        loop {
            // Search no further than one byte past the longest chunk: its delimiter is there
            // at the latest, or the chunk is too long.
            let limit = self.max_length.saturating_add(1).min(buf.len());
            let from = self.searched.min(limit);
            let found = buf[from..limit]
                .iter()
                .position(|b| self.seek_delimiters.contains(b))
                .map(|i| from + i);
            match (self.discarding, found) {
                (true, Some(delimiter)) => {
                    // The end of the overlong chunk: drop it, resume with the next.
                    buf.advance(delimiter + 1);
                    self.discarding = false;
                    self.searched = 0;
                }
                (true, None) => {
                    buf.advance(limit);
                    self.searched = 0;
                    if buf.is_empty() {
                        return Ok(None);
                    }
                }
                (false, Some(delimiter)) => {
                    self.searched = 0;
                    let mut chunk = buf.split_to(delimiter + 1);
                    chunk.truncate(delimiter);
                    return Ok(Some(chunk.freeze()));
                }
                (false, None) if buf.len() > self.max_length => {
                    // Too long, and no delimiter in sight: drop it as it comes.
                    self.discarding = true;
                    return Err(AnyDelimiterCodecError::MaxChunkLengthExceeded);
                }
                (false, None) => {
                    self.searched = limit;
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut PooledBuf) -> Result<Option<Bytes>, AnyDelimiterCodecError> {
        if let Some(chunk) = self.decode(buf)? {
            return Ok(Some(chunk));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        // The last chunk, without a delimiter.
        self.searched = 0;
        Ok(Some(buf.split().freeze()))
    }
}

impl<T: AsRef<str>> Encoder<T> for AnyDelimiterCodec {
    type Error = AnyDelimiterCodecError;

    /// Writes the chunk and the `sequence_writer` bytes (it does not check the chunk for
    /// delimiters or its length).
    fn encode(&mut self, chunk: T, dst: &mut PooledBuf) -> Result<(), AnyDelimiterCodecError> {
        let chunk = chunk.as_ref();
        dst.try_reserve(chunk.len() + self.sequence_writer.len())
            .map_err(|e| OutOfMemory::io_error(e, &dst.allocator()))?;
        dst.extend_from_slice(chunk.as_bytes());
        dst.extend_from_slice(&self.sequence_writer);
        Ok(())
    }
}

/// An error of [`AnyDelimiterCodec`].
#[derive(Debug)]
pub enum AnyDelimiterCodecError {
    /// A chunk was longer than the maximum.
    MaxChunkLengthExceeded,
    /// An I/O error of the transport, or a refused allocation (kind `OutOfMemory`).
    Io(io::Error),
}

impl fmt::Display for AnyDelimiterCodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyDelimiterCodecError::MaxChunkLengthExceeded => {
                f.write_str("max chunk length exceeded")
            }
            AnyDelimiterCodecError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl StdError for AnyDelimiterCodecError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            AnyDelimiterCodecError::MaxChunkLengthExceeded => None,
            AnyDelimiterCodecError::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for AnyDelimiterCodecError {
    fn from(e: io::Error) -> AnyDelimiterCodecError {
        AnyDelimiterCodecError::Io(e)
    }
}
