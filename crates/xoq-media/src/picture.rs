//! Decoded pictures and the per-stream video decoder every camera client uses.

use crate::{MediaError, h264, jpeg};

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

/// Byte order of packed output pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelOrder {
    /// Red, green, blue (image libraries, browsers).
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV).
    Bgr,
}

/// Default decode limit: 8K UHD.
pub const MAX_PIXELS: usize = 7680 * 4320;

/// A decoded picture, ready to be written out as packed pixels.
pub enum Picture<'a> {
    /// An H.264 picture (borrowed from the decoder until its next call).
    H264(h264::H264Picture<'a>),
    /// A picture already in packed RGB (JPEG).
    Rgb(RgbImage),
}

impl std::fmt::Debug for Picture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Picture({}x{})", self.width(), self.height())
    }
}

impl Picture<'_> {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        match self {
            Picture::H264(p) => p.width(),
            Picture::Rgb(i) => i.width,
        }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        match self {
            Picture::H264(p) => p.height(),
            Picture::Rgb(i) => i.height,
        }
    }

    /// Write packed 8-bit pixels in `order` into `out` (`width × height × 3` bytes), so a
    /// caller can decode straight into memory it owns (a numpy array, a texture).
    pub fn write_packed(&self, order: ChannelOrder, out: &mut [u8]) -> Result<(), MediaError> {
        match self {
            Picture::H264(p) => p.write_packed(order, out),
            Picture::Rgb(i) => {
                if out.len() != i.data.len() {
                    return Err(MediaError::BadPicture {
                        len: out.len(),
                        width: i.width,
                        height: i.height,
                    });
                }
                match order {
                    ChannelOrder::Rgb => out.copy_from_slice(&i.data),
                    ChannelOrder::Bgr => {
                        for (o, p) in out.chunks_exact_mut(3).zip(i.data.chunks_exact(3)) {
                            o.copy_from_slice(&[p[2], p[1], p[0]]);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The picture as an owned packed RGB image (a JPEG picture is handed over, not copied).
    pub fn into_rgb(self) -> Result<RgbImage, MediaError> {
        match self {
            Picture::Rgb(i) => Ok(i),
            Picture::H264(p) => {
                let mut data = vec![0; p.width() as usize * p.height() as usize * 3];
                p.write_packed(ChannelOrder::Rgb, &mut data)?;
                Ok(RgbImage {
                    width: p.width(),
                    height: p.height(),
                    data,
                })
            }
        }
    }
}

/// A decoder for one camera stream's codec.
#[derive(Debug)]
pub struct VideoDecoder {
    h264: Option<h264::H264Decoder>,
    max_pixels: usize,
}

impl VideoDecoder {
    /// A JPEG decoder refusing pictures over `max_pixels`.
    pub fn jpeg(max_pixels: usize) -> Self {
        Self {
            h264: None,
            max_pixels,
        }
    }

    /// An H.264 decoder refusing pictures over `max_pixels`.
    pub fn h264(max_pixels: usize) -> Result<Self, MediaError> {
        Ok(Self {
            h264: Some(h264::H264Decoder::new(max_pixels)?),
            max_pixels,
        })
    }

    /// Decode one frame's bytes and hand the picture to `f` (an H.264 picture borrows the
    /// decoder's own buffers, so `f` can write it straight where it belongs). `Ok(None)`:
    /// nothing to show (an H.264 decoder waiting for a keyframe, or parameter sets only).
    pub fn decode_with<R>(
        &mut self,
        data: &[u8],
        f: impl FnOnce(Picture<'_>) -> R,
    ) -> Result<Option<R>, MediaError> {
        let pic = match &mut self.h264 {
            Some(d) => d.decode(data)?.map(Picture::H264),
            None => Some(Picture::Rgb(jpeg::decode(data, self.max_pixels)?)),
        };
        Ok(pic.map(f))
    }
}
