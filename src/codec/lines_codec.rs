//! [`LinesCodec`]: text lines ended by `\n` (a `\r` before it is dropped too), with a maximum
//! length and UTF-8 checking, like tokio-util's `LinesCodec`: each line is a `String`.
//!
//! Owns: the search state (where the last search for a newline stopped, whether an overlong
//! line is being discarded).

use std::error::Error as StdError;
use std::fmt;
use std::io;

use bytes::{Buf, BufMut};

use super::{Decoder, Encoder};
use crate::io::OutOfMemory;
use crate::PooledBuf;

/// A codec for lines of UTF-8 text, as tokio-util's: decodes each line, without its `\n` or
/// `\r\n`, into a `String` (checked UTF-8; the line's bytes leave the pooled read buffer,
/// which is reused for the next read). Encodes anything `AsRef<str>` followed by `\n`.
///
/// With a maximum length (`new_with_max_length`), a line longer than that (a `\r` before the
/// `\n` counts) is an error, [`LinesCodecError::MaxLineLengthExceeded`] ("max line length
/// exceeded"), raised as soon as more bytes than that have come without a newline; the rest
/// of that line is then discarded and decoding resumes at the next line. A line that is not
/// UTF-8 is consumed and is an error of kind [`io::ErrorKind::InvalidData`], "Unable to
/// decode input as UTF8" (tokio-util's kind and message), after which decoding resumes at the
/// next line. At the end of the stream, a last line without a newline is returned as a
/// line.
///
/// ```
/// use adaptive_pool::codec::{Decoder, LinesCodec};
/// use adaptive_pool::PooledBuf;
///
/// let mut codec = LinesCodec::new();
/// let mut buf = PooledBuf::from("hello\r\nwor");
/// let line: String = codec.decode(&mut buf)?.unwrap();
/// assert_eq!(line, "hello");
/// assert_eq!(codec.decode(&mut buf)?, None); // "wor" waits for its newline
/// assert_eq!(codec.decode_eof(&mut buf)?.unwrap(), "wor"); // or for the end of the stream
/// # Ok::<(), adaptive_pool::codec::LinesCodecError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinesCodec {
    /// Bytes of the buffer already searched for a newline (so each byte is searched once).
    searched: usize,
    /// The longest line accepted, the `\n` excluded.
    max_length: Option<usize>,
    /// Inside a line that was too long: drop bytes up to its newline.
    discarding: bool,
}

/// An error of [`LinesCodec`].
#[derive(Debug)]
pub enum LinesCodecError {
    /// A line was longer than the maximum.
    MaxLineLengthExceeded,
    /// An I/O error of the transport, a refused allocation (kind `OutOfMemory`), or a line
    /// that is not UTF-8 (kind `InvalidData`).
    Io(io::Error),
}

impl fmt::Display for LinesCodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinesCodecError::MaxLineLengthExceeded => f.write_str("max line length exceeded"),
            LinesCodecError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl StdError for LinesCodecError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            LinesCodecError::MaxLineLengthExceeded => None,
            LinesCodecError::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for LinesCodecError {
    fn from(e: io::Error) -> LinesCodecError {
        LinesCodecError::Io(e)
    }
}

impl LinesCodec {
    /// Lines of any length.
    pub fn new() -> LinesCodec {
        LinesCodec::default()
    }

    /// Lines of at most `max_length` bytes (the `\n` excluded, a `\r` before it included). Set a maximum for any
    /// peer you do not trust: without one, a peer that never sends a newline makes the
    /// buffer grow without bound.
    pub fn new_with_max_length(max_length: usize) -> LinesCodec {
        LinesCodec {
            max_length: Some(max_length),
            ..LinesCodec::default()
        }
    }

    /// The longest line accepted (`usize::MAX` if there is no maximum).
    pub fn max_length(&self) -> usize {
        self.max_length.unwrap_or(usize::MAX)
    }

    /// Takes the first `end` bytes of `buf` and the terminator after them (`terminator`
    /// bytes) off as a line, dropping a `\r` at its end; checks UTF-8. The line's bytes are
    /// consumed either way, as in tokio-util.
    fn take_line(buf: &mut PooledBuf, end: usize, terminator: usize) -> io::Result<String> {
        let mut text = &buf[..end];
        if let Some((b'\r', rest)) = text.split_last() {
            text = rest;
        }
        let line = std::str::from_utf8(text)
            .map(str::to_owned)
            .map_err(|_| invalid_utf8());
        buf.advance(end + terminator);
        line
    }
}

/// tokio-util's error for a line (or chunk) that is not UTF-8.
fn invalid_utf8() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "Unable to decode input as UTF8")
}

impl Decoder for LinesCodec {
    type Item = String;
    type Error = LinesCodecError;

    fn decode(&mut self, buf: &mut PooledBuf) -> Result<Option<String>, LinesCodecError> {
        loop {
            // Search no further than one byte past the longest line: its `\n` is there at
            // the latest, or the line is too long.
            let limit = self.max_length().saturating_add(1).min(buf.len());
            let from = self.searched.min(limit);
            let found = buf[from..limit]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| from + i);
            match (self.discarding, found) {
                (true, Some(newline)) => {
                    // The end of the overlong line: drop it, resume with the next.
                    buf.advance(newline + 1);
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
                (false, Some(newline)) => {
                    self.searched = 0;
                    return Ok(Some(Self::take_line(buf, newline, 1)?));
                }
                (false, None) if buf.len() > self.max_length() => {
                    // Too long, and no newline in sight: drop it as it comes.
                    self.discarding = true;
                    return Err(LinesCodecError::MaxLineLengthExceeded);
                }
                (false, None) => {
                    self.searched = limit;
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut PooledBuf) -> Result<Option<String>, LinesCodecError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.searched = 0;
        // A lone `\r` may be the start of a `\r\n` of a stream that resumes: keep it.
        if buf.is_empty() || buf[..] == b"\r"[..] {
            return Ok(None);
        }
        // The last line, without a newline.
        let end = buf.len();
        Ok(Some(Self::take_line(buf, end, 0)?))
    }
}

impl<T: AsRef<str>> Encoder<T> for LinesCodec {
    type Error = LinesCodecError;

    /// Writes the line and a `\n` (it does not check the line for newlines or its length).
    fn encode(&mut self, line: T, dst: &mut PooledBuf) -> Result<(), LinesCodecError> {
        let line = line.as_ref();
        dst.try_reserve(line.len() + 1)
            .map_err(|e| OutOfMemory::io_error(e, &dst.allocator()))?;
        dst.extend_from_slice(line.as_bytes());
        dst.put_u8(b'\n');
        Ok(())
    }
}
