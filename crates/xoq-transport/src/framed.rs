//! Stream adapter for the sans-IO codecs: read → decode → on `Short` read more.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use xoq_wire::DecodeError;

/// Why a framed read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramedError {
    /// The peer sent bytes that are not a valid message.
    #[error("protocol error from peer: {0}")]
    Decode(#[from] DecodeError),
    /// The stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended in the middle of a message.
    #[error("stream ended inside a message")]
    Truncated,
}

/// Reads whole messages from a byte stream. The buffer never grows beyond one maximal
/// message plus one read, since the envelope's length is checked before buffering.
#[derive(Debug)]
pub struct FramedReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FramedReader<R> {
    /// Wrap a stream.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Next message, or `None` at a clean end of stream.
    pub async fn next<T>(
        &mut self,
        decode: impl Fn(&mut BytesMut) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, FramedError> {
        loop {
            match decode(&mut self.buf) {
                Ok(m) => return Ok(Some(m)),
                Err(DecodeError::Short) => {}
                Err(e) => return Err(e.into()),
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self
                .inner
                .read_buf(&mut (&mut self.buf).limit(64 * 1024))
                .await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FramedError::Truncated)
                };
            }
        }
    }

    /// Whether a whole message may already be buffered (lets writers batch replies).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}
