//! Depth camera stream (P2P), sans-IO.
//!
//! A depth server offers the camera ALPNs for its colour picture (any camera viewer plays
//! it) and two depth ALPNs: [`ALPN_DEPTH`] (depth only) and [`ALPN_DEPTH_COLOR`] (each
//! depth frame carries the JPEG colour picture of the same capture, so the pair can never
//! be mismatched). The viewer opens one bidirectional stream and sends camera
//! [`ViewerMsg`](crate::camera::ViewerMsg)s on it (credits, mode requests). The server sends
//!
//! ```text
//! length varint | kind u8 | body
//! kind 0  Info:  scale f32 | depth Intrinsics | color Intrinsics | name string | serial string
//! kind 1  Frame: seq varint | timestamp_us u64 | depth_len varint | depth | color
//! Intrinsics: width u16 | height u16 | fx f32 | fy f32 | ppx f32 | ppy f32 | model u8 | coeffs 5 × f32
//! ```
//!
//! (big-endian; `f32` as IEEE-754 bits). Info comes first and again whenever the mode
//! changes. `depth` is a depth blob (`xoq_media::depth`: lossless RVL + deflate); `color` is
//! the rest of the frame, a JPEG, empty on [`ALPN_DEPTH`]. `timestamp_us` is the capture time
//! of both pictures (µs since the Unix epoch, robot clock). Frames go out only against a
//! credit and the newest one wins, as for a JPEG camera viewer.

use bytes::{Buf, BufMut, Bytes};

use crate::coding::{
    DecodeError, finish_exact, get_string, get_u8, get_u16, get_u32, get_u64, get_varint,
    put_string, put_varint, string_len, varint_len,
};

/// ALPN of a depth-only stream, version 1.
pub const ALPN_DEPTH: &[u8] = b"xoq/depth/1";
/// ALPN of a depth stream whose frames also carry the colour picture (JPEG), version 1.
pub const ALPN_DEPTH_COLOR: &[u8] = b"xoq/depth-color/1";

/// Largest message accepted: a 1280×720 depth frame uncompressed (1.8 MB) plus a JPEG, with
/// room for larger sensors.
pub const MAX_MESSAGE: usize = 32 << 20;

/// Lens distortion model, numbered as librealsense's `rs2_distortion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Distortion {
    /// No distortion (`none`).
    #[default]
    None = 0,
    /// Modified Brown-Conrady (`modified_brown_conrady`).
    ModifiedBrownConrady = 1,
    /// Inverse Brown-Conrady (`inverse_brown_conrady`).
    InverseBrownConrady = 2,
    /// F-Theta fisheye (`ftheta`).
    Ftheta = 3,
    /// Brown-Conrady (`brown_conrady`).
    BrownConrady = 4,
    /// Kannala-Brandt fisheye (`kannala_brandt4`).
    KannalaBrandt4 = 5,
}

impl Distortion {
    /// The model numbered `v`, if there is one.
    pub fn from_u8(v: u8) -> Option<Distortion> {
        Some(match v {
            0 => Distortion::None,
            1 => Distortion::ModifiedBrownConrady,
            2 => Distortion::InverseBrownConrady,
            3 => Distortion::Ftheta,
            4 => Distortion::BrownConrady,
            5 => Distortion::KannalaBrandt4,
            _ => return None,
        })
    }

    /// The name librealsense and the intrinsics JSON use.
    pub fn name(self) -> &'static str {
        match self {
            Distortion::None => "none",
            Distortion::ModifiedBrownConrady => "modified_brown_conrady",
            Distortion::InverseBrownConrady => "inverse_brown_conrady",
            Distortion::Ftheta => "ftheta",
            Distortion::BrownConrady => "brown_conrady",
            Distortion::KannalaBrandt4 => "kannala_brandt4",
        }
    }

    /// The model called `name` (as [`name`](Self::name) spells it).
    pub fn from_name(name: &str) -> Option<Distortion> {
        (0..=5)
            .filter_map(Distortion::from_u8)
            .find(|d| d.name() == name)
    }
}

/// Pinhole intrinsics of one stream, as librealsense's `rs2_intrinsics`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Intrinsics {
    /// Picture width the intrinsics are for.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Focal length in pixels, horizontal.
    pub fx: f32,
    /// Focal length in pixels, vertical.
    pub fy: f32,
    /// Principal point, horizontal pixel coordinate.
    pub ppx: f32,
    /// Principal point, vertical pixel coordinate.
    pub ppy: f32,
    /// Distortion model.
    pub model: Distortion,
    /// Distortion coefficients.
    pub coeffs: [f32; 5],
}

impl Intrinsics {
    const LEN: usize = 2 + 2 + 4 * 4 + 1 + 5 * 4;

    /// Ideal pinhole intrinsics for a camera of horizontal field of view `hfov_deg`.
    pub fn pinhole(width: u32, height: u32, hfov_deg: f32) -> Intrinsics {
        let f = width as f32 / 2.0 / (hfov_deg.to_radians() / 2.0).tan();
        Intrinsics {
            width,
            height,
            fx: f,
            fy: f,
            ppx: width as f32 / 2.0,
            ppy: height as f32 / 2.0,
            model: Distortion::None,
            coeffs: [0.0; 5],
        }
    }

    /// The same lens at another picture size (focal lengths and principal point scaled).
    pub fn scaled(&self, width: u32, height: u32) -> Intrinsics {
        if self.width == 0 || self.height == 0 {
            return *self;
        }
        let sx = width as f32 / self.width as f32;
        let sy = height as f32 / self.height as f32;
        Intrinsics {
            width,
            height,
            fx: self.fx * sx,
            fy: self.fy * sy,
            ppx: self.ppx * sx,
            ppy: self.ppy * sy,
            ..*self
        }
    }

    /// The 3-D point (metres, camera frame: x right, y down, z forward) seen at pixel
    /// (`u`, `v`) at `depth` metres, ignoring distortion (as librealsense does for
    /// `none` and for the Brown-Conrady models its depth streams report).
    pub fn deproject(&self, u: f32, v: f32, depth: f32) -> [f32; 3] {
        let x = (u - self.ppx) / self.fx;
        let y = (v - self.ppy) / self.fy;
        [depth * x, depth * y, depth]
    }

    fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u16(self.width.min(u32::from(u16::MAX)) as u16);
        buf.put_u16(self.height.min(u32::from(u16::MAX)) as u16);
        for v in [self.fx, self.fy, self.ppx, self.ppy] {
            buf.put_u32(v.to_bits());
        }
        buf.put_u8(self.model as u8);
        for c in self.coeffs {
            buf.put_u32(c.to_bits());
        }
    }

    fn decode(buf: &mut impl Buf) -> Result<Intrinsics, DecodeError> {
        let width = u32::from(get_u16(buf)?);
        let height = u32::from(get_u16(buf)?);
        let mut f = [0f32; 4];
        for v in &mut f {
            *v = f32::from_bits(get_u32(buf)?);
        }
        let model = Distortion::from_u8(get_u8(buf)?).ok_or(DecodeError::Invalid {
            field: "model",
            reason: "unknown distortion model",
        })?;
        let mut coeffs = [0f32; 5];
        for c in &mut coeffs {
            *c = f32::from_bits(get_u32(buf)?);
        }
        Ok(Intrinsics {
            width,
            height,
            fx: f[0],
            fy: f[1],
            ppx: f[2],
            ppy: f[3],
            model,
            coeffs,
        })
    }
}

/// What a depth client needs to turn values into metres and pixels into points.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DepthInfo {
    /// Metres per depth unit (0.001 on a RealSense D4xx: values are millimetres).
    pub scale: f32,
    /// Intrinsics of the depth picture.
    pub depth: Intrinsics,
    /// Intrinsics of the colour picture.
    pub color: Intrinsics,
    /// Device name (`Intel RealSense D435`, `xoq synthetic depth`).
    pub name: String,
    /// Device serial number (empty when unknown).
    pub serial: String,
}

/// One capture: the depth picture and, on [`ALPN_DEPTH_COLOR`], its colour picture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DepthFrame {
    /// Frame number since the capture started (gaps mean frames were skipped).
    pub seq: u64,
    /// Capture time of both pictures, µs since the Unix epoch (robot clock).
    pub timestamp_us: u64,
    /// The depth blob (`xoq_media::depth`).
    pub depth: Bytes,
    /// The colour picture as JPEG, or empty.
    pub color: Bytes,
}

/// A message from a depth server.
#[derive(Debug, Clone, PartialEq)]
pub enum DepthMsg {
    /// Scale, intrinsics and device names (first, and after every mode change).
    Info(DepthInfo),
    /// A captured frame.
    Frame(DepthFrame),
}

impl DepthMsg {
    fn body_len(&self) -> usize {
        1 + match self {
            DepthMsg::Info(i) => {
                4 + 2 * Intrinsics::LEN + string_len(&i.name) + string_len(&i.serial)
            }
            DepthMsg::Frame(f) => {
                varint_len(f.seq)
                    + 8
                    + varint_len(f.depth.len() as u64)
                    + f.depth.len()
                    + f.color.len()
            }
        }
    }

    /// Append the encoded message. A message over [`MAX_MESSAGE`] is refused (every decoder
    /// would reject it).
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), DecodeError> {
        let len = self.body_len();
        if len > MAX_MESSAGE {
            return Err(DecodeError::TooLong {
                len: len as u64,
                max: MAX_MESSAGE as u64,
            });
        }
        put_varint(buf, len as u64);
        match self {
            DepthMsg::Info(i) => {
                buf.put_u8(0);
                buf.put_u32(i.scale.to_bits());
                i.depth.encode(buf);
                i.color.encode(buf);
                put_string(buf, &i.name);
                put_string(buf, &i.serial);
            }
            DepthMsg::Frame(f) => {
                buf.put_u8(1);
                put_varint(buf, f.seq);
                buf.put_u64(f.timestamp_us);
                put_varint(buf, f.depth.len() as u64);
                buf.put_slice(&f.depth);
                buf.put_slice(&f.color);
            }
        }
        Ok(())
    }

    /// Decode one message from the front of `buf`, advancing past it.
    /// [`DecodeError::Short`] (nothing consumed) means: read more and call again.
    pub fn decode(buf: &mut Bytes) -> Result<DepthMsg, DecodeError> {
        let mut peek = &buf[..];
        let len = get_varint(&mut peek)?;
        if len > MAX_MESSAGE as u64 {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_MESSAGE as u64,
            });
        }
        if peek.remaining() < len as usize {
            return Err(DecodeError::Short);
        }
        let prefix = buf.len() - peek.remaining();
        let mut body = buf.slice(prefix..prefix + len as usize);
        buf.advance(prefix + len as usize);
        let msg = Self::decode_body(&mut body);
        finish_exact(body.remaining(), msg)
    }

    /// [`decode`](Self::decode) for a stream reader's buffer, without copying the pictures.
    pub fn decode_from(buf: &mut bytes::BytesMut) -> Result<DepthMsg, DecodeError> {
        let mut peek = &buf[..];
        let len = get_varint(&mut peek)?;
        let prefix = buf.len() - peek.remaining();
        if len <= MAX_MESSAGE as u64 && peek.remaining() < len as usize {
            return Err(DecodeError::Short);
        }
        let take = if len > MAX_MESSAGE as u64 {
            prefix
        } else {
            prefix + len as usize
        };
        let mut whole = buf.split_to(take).freeze();
        if len > MAX_MESSAGE as u64 {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_MESSAGE as u64,
            });
        }
        Self::decode(&mut whole)
    }

    fn decode_body(body: &mut Bytes) -> Result<DepthMsg, DecodeError> {
        match get_u8(body)? {
            0 => {
                let scale = f32::from_bits(get_u32(body)?);
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(DecodeError::Invalid {
                        field: "scale",
                        reason: "not a positive number",
                    });
                }
                let depth = Intrinsics::decode(body)?;
                let color = Intrinsics::decode(body)?;
                let name = get_string(body, "name")?;
                let serial = get_string(body, "serial")?;
                Ok(DepthMsg::Info(DepthInfo {
                    scale,
                    depth,
                    color,
                    name,
                    serial,
                }))
            }
            1 => {
                let seq = get_varint(body)?;
                let timestamp_us = get_u64(body)?;
                let depth_len = get_varint(body)?;
                if depth_len > body.remaining() as u64 {
                    return Err(DecodeError::Invalid {
                        field: "depth_len",
                        reason: "past the end of the frame",
                    });
                }
                let depth = body.split_to(depth_len as usize);
                let color = body.split_to(body.remaining());
                Ok(DepthMsg::Frame(DepthFrame {
                    seq,
                    timestamp_us,
                    depth,
                    color,
                }))
            }
            k => Err(DecodeError::UnknownKind(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info() -> DepthInfo {
        DepthInfo {
            scale: 0.001,
            depth: Intrinsics::pinhole(640, 480, 87.0),
            color: Intrinsics {
                model: Distortion::InverseBrownConrady,
                coeffs: [0.1, -0.2, 0.0, 0.0, 0.01],
                ..Intrinsics::pinhole(640, 480, 69.0)
            },
            name: "xoq synthetic depth".into(),
            serial: "sim".into(),
        }
    }

    #[test]
    fn messages_round_trip_and_split_on_a_stream() {
        let msgs = [
            DepthMsg::Info(info()),
            DepthMsg::Frame(DepthFrame {
                seq: 7,
                timestamp_us: 1_700_000_000_000_000,
                depth: Bytes::from_static(&[2, 0, 1, 0, 1, 9, 9]),
                color: Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xD9]),
            }),
            DepthMsg::Frame(DepthFrame::default()),
        ];
        let mut stream = bytes::BytesMut::new();
        for m in &msgs {
            m.encode(&mut stream).expect("encode");
        }
        let cut = stream.len() - 1;
        let tail = stream.split_off(cut);
        for m in &msgs[..2] {
            assert_eq!(&DepthMsg::decode_from(&mut stream).expect("decode"), m);
        }
        assert_eq!(DepthMsg::decode_from(&mut stream), Err(DecodeError::Short));
        stream.extend_from_slice(&tail);
        assert_eq!(DepthMsg::decode_from(&mut stream).expect("decode"), msgs[2]);
    }

    #[test]
    fn frame_byte_snapshot() {
        let mut b = Vec::new();
        DepthMsg::Frame(DepthFrame {
            seq: 1,
            timestamp_us: 2,
            depth: Bytes::from_static(&[0xAA]),
            color: Bytes::from_static(&[0xBB, 0xCC]),
        })
        .encode(&mut b)
        .expect("encode");
        assert_eq!(b, [14, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0xAA, 0xBB, 0xCC]);
    }

    #[test]
    fn bad_messages_are_refused() {
        // Depth length past the end; a zero scale; an unknown kind; an oversized length.
        let mut b = Bytes::from_static(&[11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert!(matches!(
            DepthMsg::decode(&mut b),
            Err(DecodeError::Invalid { .. })
        ));
        let mut i = info();
        i.scale = 0.0;
        let mut enc = Vec::new();
        DepthMsg::Info(i).encode(&mut enc).expect("encode");
        assert!(DepthMsg::decode(&mut Bytes::from(enc)).is_err());
        assert_eq!(
            DepthMsg::decode(&mut Bytes::from_static(&[1, 9])),
            Err(DecodeError::UnknownKind(9))
        );
        let mut big = Vec::new();
        put_varint(&mut big, MAX_MESSAGE as u64 + 1);
        assert!(matches!(
            DepthMsg::decode_from(&mut bytes::BytesMut::from(&big[..])),
            Err(DecodeError::TooLong { .. })
        ));
    }

    #[test]
    fn distortion_names_round_trip_and_deprojection_is_pinhole() {
        for v in 0..=5 {
            let d = Distortion::from_u8(v).expect("model");
            assert_eq!(Distortion::from_name(d.name()), Some(d));
        }
        let k = Intrinsics::pinhole(640, 480, 90.0);
        assert!((k.fx - 320.0).abs() < 1e-3);
        let p = k.deproject(640.0, 240.0, 2.0);
        assert!((p[0] - 2.0).abs() < 1e-3 && p[1].abs() < 1e-6 && p[2] == 2.0);
        assert_eq!(k.scaled(1280, 960).fx, k.fx * 2.0);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = bytes::BytesMut::from(&b[..]);
            while !buf.is_empty() {
                let before = buf.len();
                match DepthMsg::decode_from(&mut buf) {
                    Ok(_) => prop_assert!(buf.len() < before),
                    Err(DecodeError::Short) => { prop_assert_eq!(buf.len(), before); break; }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn frames_round_trip(seq in 0..crate::coding::VARINT_MAX, ts in any::<u64>(),
                             d in proptest::collection::vec(any::<u8>(), 0..300),
                             c in proptest::collection::vec(any::<u8>(), 0..300)) {
            let m = DepthMsg::Frame(DepthFrame { seq, timestamp_us: ts, depth: Bytes::from(d), color: Bytes::from(c) });
            let mut b = Vec::new();
            m.encode(&mut b).expect("encode");
            prop_assert_eq!(DepthMsg::decode(&mut Bytes::from(b)), Ok(m));
        }
    }
}
