//! Media codecs of xoq: packed RGB pictures (feature `video`), interleaved float samples
//! (feature `audio`) and 16-bit depth images (feature `depth`) to and from the encoded frames camera and audio streams carry. Encoders take what a camera source produces; decoders take bytes from the network,
//! so they are total (any bytes give a picture or an error, never a panic) and bounded (the
//! picture size is checked against a limit from the header, before anything is allocated).
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]

#[cfg(feature = "audio")]
pub mod audio;
#[cfg(feature = "video")]
pub mod convert;
#[cfg(feature = "depth")]
pub mod depth;
#[cfg(feature = "video")]
pub mod h264;
#[cfg(feature = "video")]
pub mod jpeg;
#[cfg(feature = "video")]
mod picture;
#[cfg(feature = "video")]
pub use picture::*;

/// Why a picture could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The bytes are not a picture this decoder understands (or are damaged).
    #[error("undecodable {codec} frame: {reason}")]
    Undecodable {
        /// Codec name.
        codec: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// The picture is larger than the caller allows.
    #[error("{width}x{height} picture is over the {max_pixels}-pixel limit")]
    TooLarge {
        /// Width from the header.
        width: usize,
        /// Height from the header.
        height: usize,
        /// The limit.
        max_pixels: usize,
    },
    /// The picture handed to an encoder does not match its stated size.
    #[error("picture of {len} bytes does not match {width}x{height} RGB")]
    BadPicture {
        /// Bytes given.
        len: usize,
        /// Stated width.
        width: u32,
        /// Stated height.
        height: u32,
    },
}
