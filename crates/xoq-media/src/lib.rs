//! Media codecs of xoq: packed RGB pictures to and from the encoded frames camera streams
//! carry. Encoders take what a camera source produces; decoders take bytes from the network,
//! so they are total (any bytes give a picture or an error, never a panic) and bounded (the
//! picture size is checked against a limit from the header, before anything is allocated).

pub mod jpeg;

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

/// A decoded picture: packed 8-bit RGB, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height × 3` bytes.
    pub data: Vec<u8>,
}

/// Default decode limit: 8K UHD.
pub const MAX_PIXELS: usize = 7680 * 4320;
