//! The capture thread: the one loop that owns the camera, applies mode requests, and
//! encodes each frame once per watched codec into the channels viewers read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use xoq_device::camera::CameraSource;
use xoq_wire::camera::{Codec, VideoFrame};

use super::encode::{EncodeSettings, Encoders};
use super::{IDR_MIN_INTERVAL, Shared};

/// Consecutive capture errors after which the server stops (the camera is gone).
pub(crate) const MAX_CAPTURE_ERRORS: u32 = 50;

/// Capture and encode until the server is dropped or the camera fails for good.
pub(super) fn capture_loop(
    mut source: Box<dyn CameraSource>,
    settings: EncodeSettings,
    sh: &Shared,
) {
    let mut enc = Encoders::new(settings);
    let mut errors = 0u32;
    let mut seq = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        let request = sh.mode_request.lock().ok().and_then(|mut r| r.take());
        if let Some(req) = request {
            match source.set_mode(req) {
                Ok(m) => {
                    tracing::info!("camera mode now {m}");
                    if let Ok(mut mode) = sh.mode.lock() {
                        *mode = m;
                    }
                }
                Err(e) => tracing::warn!("mode change refused: {e}"),
            }
        }
        let raw = match source.capture() {
            Ok(f) => {
                errors = 0;
                f
            }
            // Stopping: a source that ends with the server is not a camera error.
            Err(_) if sh.stop.load(Ordering::Relaxed) => return,
            Err(e) => {
                sh.stats.errors.fetch_add(1, Ordering::Relaxed);
                errors += 1;
                if errors >= MAX_CAPTURE_ERRORS {
                    let why = format!("the camera stopped after {errors} capture errors: {e}");
                    tracing::error!("{why}");
                    sh.failed.send_replace(Some(why));
                    return;
                }
                tracing::warn!("capture failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let this = seq;
        seq += 1;
        sh.stats.captured.fetch_add(1, Ordering::Relaxed);
        let mode = source.mode();
        for &codec in &sh.codecs {
            let tx = sh.channel(codec);
            // Nobody watching this codec: no encode (the capture still runs, so the next
            // viewer gets a fresh frame, not one a driver held for minutes).
            if tx.receiver_count() == 0 {
                continue;
            }
            let started = Instant::now();
            let out = match codec {
                Codec::Jpeg => enc.jpeg(&raw).map(|d| (d, true)),
                Codec::H264 => {
                    let due = enc.last_idr.is_none_or(|t| t.elapsed() >= IDR_MIN_INTERVAL);
                    let idr = due && sh.want_idr.swap(false, Ordering::Relaxed);
                    if idr {
                        sh.stats.forced_keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                    enc.h264(&raw, mode, idr)
                }
            };
            match out {
                Ok((data, keyframe)) => {
                    sh.stats.encoded.fetch_add(1, Ordering::Relaxed);
                    sh.stats
                        .encode_us
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    let frame = VideoFrame {
                        seq: this,
                        timestamp_us: raw.timestamp_us,
                        width: raw.width.min(u32::from(u16::MAX)) as u16,
                        height: raw.height.min(u32::from(u16::MAX)) as u16,
                        keyframe,
                        data: Bytes::from(data),
                    };
                    let _ = tx.send(Arc::new(frame));
                }
                Err(e) => {
                    sh.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("{codec:?} encode failed: {e}");
                }
            }
        }
    }
}
