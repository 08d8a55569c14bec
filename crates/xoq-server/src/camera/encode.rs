//! Encoding on the capture thread: raw frames to H.264 or JPEG. Kept apart from the loop so
//! the per-format conversions live in one place, with the encoder and conversion buffers
//! carried across frames (the encoder is rebuilt only when the size or rate changes).

use std::time::Instant;

use xoq_device::camera::{Mode, PixelFormat, RawFrame};
use xoq_media::h264::{H264Config, H264Encoder};
use xoq_media::{MediaError, convert, jpeg};

#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodeSettings {
    pub(crate) quality: u8,
    pub(crate) gop: Option<u32>,
    pub(crate) bitrate: Option<u32>,
}

/// Per-codec encoder state on the capture thread.
pub(crate) struct Encoders {
    settings: EncodeSettings,
    h264: Option<(H264Encoder, Mode)>,
    pub(crate) last_idr: Option<Instant>,
    /// Scratch buffers reused across frames.
    rgb: Vec<u8>,
    yuv: Vec<u8>,
}

impl Encoders {
    /// No H.264 encoder yet: it is made on the first H.264 frame (and remade when the size
    /// or rate changes).
    pub(crate) fn new(settings: EncodeSettings) -> Self {
        Self {
            settings,
            h264: None,
            last_idr: None,
            rgb: Vec::new(),
            yuv: Vec::new(),
        }
    }

    pub(crate) fn h264(
        &mut self,
        raw: &RawFrame,
        mode: Mode,
        want_idr: bool,
    ) -> Result<(Vec<u8>, bool), MediaError> {
        let (w, h) = (raw.width, raw.height);
        if self
            .h264
            .as_ref()
            .is_none_or(|(_, m)| (m.width, m.height, m.fps) != (w, h, mode.fps))
        {
            let mut cfg = H264Config::for_size(w, h, mode.fps);
            if let Some(g) = self.settings.gop {
                cfg.gop = g;
            }
            if let Some(b) = self.settings.bitrate {
                cfg.bitrate = b;
            }
            self.h264 = Some((H264Encoder::new(cfg)?, mode));
        }
        let Some((enc, _)) = self.h264.as_mut() else {
            return Err(MediaError::BadPicture {
                len: 0,
                width: w,
                height: h,
            });
        };
        if want_idr {
            enc.force_keyframe();
        }
        let unit = match raw.format {
            PixelFormat::Rgb24 => enc.encode_rgb(&raw.data, w, h)?,
            PixelFormat::Yuyv => {
                convert::yuyv_to_i420(&raw.data, w, h, &mut self.yuv)?;
                enc.encode_i420(&self.yuv, w, h)?
            }
            PixelFormat::Nv12 => {
                convert::nv12_to_i420(&raw.data, w, h, &mut self.yuv)?;
                enc.encode_i420(&self.yuv, w, h)?
            }
            PixelFormat::Mjpeg => {
                let img = jpeg::decode(&raw.data, xoq_media::MAX_PIXELS)?;
                enc.encode_rgb(&img.data, img.width, img.height)?
            }
            PixelFormat::Z16 | PixelFormat::Y16 => return Err(depth_is_not_a_picture()),
        };
        if unit.keyframe {
            self.last_idr = Some(Instant::now());
        }
        Ok((unit.data, unit.keyframe))
    }

    pub(crate) fn jpeg(&mut self, raw: &RawFrame) -> Result<Vec<u8>, MediaError> {
        let (w, h) = (raw.width, raw.height);
        match raw.format {
            // The camera already compressed it: pass it through, no decode, no re-encode.
            PixelFormat::Mjpeg => Ok(raw.data.clone()),
            PixelFormat::Z16 | PixelFormat::Y16 => Err(depth_is_not_a_picture()),
            PixelFormat::Rgb24 => jpeg::encode(&raw.data, w, h, self.settings.quality),
            PixelFormat::Yuyv => {
                convert::yuyv_to_rgb(&raw.data, w, h, &mut self.rgb)?;
                jpeg::encode(&self.rgb, w, h, self.settings.quality)
            }
            PixelFormat::Nv12 => {
                convert::nv12_to_rgb(&raw.data, w, h, &mut self.rgb)?;
                jpeg::encode(&self.rgb, w, h, self.settings.quality)
            }
        }
    }
}

/// A camera source never picks a depth format for pictures (see `ModeRequest::depth`);
/// a custom source that hands one over gets this instead of a garbled picture.
fn depth_is_not_a_picture() -> MediaError {
    MediaError::Undecodable {
        codec: "picture",
        reason: "a depth frame (Z16/Y16) is not a picture: serve this node with xoq depth-server"
            .into(),
    }
}
