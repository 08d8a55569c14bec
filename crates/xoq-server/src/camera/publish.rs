//! Relay publishing: the camera as a hang broadcast on a MoQ relay (catalog and video
//! tracks), so the stock MoQ web player can watch it without xoq.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast;
use xoq_device::DeviceError;
use xoq_device::camera::Mode;
use xoq_transport::moq::MoqSession;
use xoq_wire::camera::{Codec, VideoFrame};

use super::CameraServer;
use crate::ServerError;

impl CameraServer {
    /// Publish the camera on a relay as a hang broadcast named `name`: a `catalog.json`
    /// track describing the H.264 rendition and a `video` track with one group per GoP,
    /// each frame a varint presentation time in µs followed by the Annex-B access unit
    /// (the "legacy" container the stock MoQ web player reads). Encoding runs only while
    /// someone subscribes to the video. Returns when the session ends.
    pub async fn serve_moq(&self, session: &MoqSession, name: &str) -> Result<(), ServerError> {
        self.serve_moq_with(session, name, &[], &CatalogExtra::default, |_| {
            std::future::pending()
        })
        .await
    }

    /// [`serve_moq`](Self::serve_moq) with more tracks in the same broadcast: `extra_tracks`
    /// are created next to the video, `catalog` adds to every catalog written, and `serve`
    /// gets the extra tracks' writers and runs next to the video until either ends.
    pub(crate) async fn serve_moq_with<F>(
        &self,
        session: &MoqSession,
        name: &str,
        extra_tracks: &[&str],
        catalog: &(dyn Fn() -> CatalogExtra + Sync),
        serve: impl FnOnce(Vec<xoq_transport::moq::TrackWriter>) -> F,
    ) -> Result<(), ServerError>
    where
        F: std::future::Future<Output = Result<(), ServerError>>,
    {
        let mut names = vec!["catalog.json", "video"];
        names.extend_from_slice(extra_tracks);
        let (_bc, mut tracks) = session.publish_tracks(name, &names)?;
        let extra = tracks.split_off(2.min(tracks.len()));
        let (mut video, catalog_writer) = match (tracks.pop(), tracks.pop()) {
            (Some(v), Some(c)) => (v, c),
            _ => {
                return Err(ServerError::Device(DeviceError::Config(
                    "the relay session did not create the camera's tracks".into(),
                )));
            }
        };
        let extra_done = serve(extra);
        tokio::pin!(extra_done);
        // A capture that fails for good ends the broadcast with the reason.
        let mut failed = self.inner.shared.failed.subscribe();
        let gone =
            |why: Option<String>| ServerError::Device(DeviceError::Config(why.unwrap_or_default()));
        if let Some(why) = self.failure() {
            return Err(gone(Some(why)));
        }
        let mut catalog = Catalog {
            writer: catalog_writer,
            described: None,
            epoch: None,
            extra: catalog,
        };
        // The player reads the catalog before it subscribes to the video, so describe the
        // stream up front: encode until the first keyframe gives the codec string.
        {
            let mut rx = self.subscribe(Codec::H264);
            self.request_keyframe();
            loop {
                let f = tokio::select! {
                    f = rx.recv() => f,
                    _ = session.closed() => return Ok(()),
                    Ok(()) = failed.changed() => return Err(gone(self.failure())),
                    r = &mut extra_done => return r,
                };
                match f {
                    Ok(f) if f.keyframe => {
                        if catalog.describe(&f, self.mode())? {
                            break;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        loop {
            tokio::select! {
                r = video.used() => r?,
                _ = session.closed() => return Ok(()),
                Ok(()) = failed.changed() => return Err(gone(self.failure())),
                r = &mut extra_done => return r,
            }
            let mut rx = self.subscribe(Codec::H264);
            self.request_keyframe();
            let mut need_key = true;
            loop {
                let frame = tokio::select! {
                    f = rx.recv() => f,
                    _ = video.unused() => break,
                    _ = session.closed() => return Ok(()),
                    Ok(()) = failed.changed() => return Err(gone(self.failure())),
                    r = &mut extra_done => return r,
                };
                let frame = match frame {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.stats().skipped.fetch_add(n, Ordering::Relaxed);
                        need_key = true;
                        self.request_keyframe();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                };
                if need_key && !frame.keyframe {
                    continue;
                }
                need_key = false;
                if frame.keyframe {
                    // A mode change shows as a keyframe of another size: describe it.
                    catalog.describe(&frame, self.mode())?;
                }
                let pts = catalog.pts(frame.timestamp_us);
                let mut payload = BytesMut::with_capacity(frame.data.len() + 8);
                xoq_wire::coding::put_varint(&mut payload, pts);
                payload.extend_from_slice(&frame.data);
                video.write_grouped(payload.freeze(), frame.keyframe)?;
            }
        }
    }
}

/// What a service adds to its camera's catalog: JSON members for the top level (after the
/// `video` section) and for the `xoq` section, each empty or starting with a comma.
#[derive(Debug, Clone, Default)]
pub(crate) struct CatalogExtra {
    pub(crate) top: String,
    pub(crate) xoq: String,
}

/// The `catalog.json` track of a relay broadcast and what it last said.
struct Catalog<'a> {
    writer: xoq_transport::moq::TrackWriter,
    /// (codec string, width, height) of the rendition described.
    described: Option<(String, u16, u16)>,
    /// Capture time of presentation time 0: the first keyframe described.
    epoch: Option<u64>,
    extra: &'a (dyn Fn() -> CatalogExtra + Sync),
}

impl Catalog<'_> {
    /// Describe the rendition `keyframe` belongs to, if it differs from the one described.
    /// Returns whether the stream is described (false: no SPS in this unit).
    fn describe(&mut self, keyframe: &VideoFrame, mode: Option<Mode>) -> Result<bool, ServerError> {
        let Some(codec) = xoq_media::h264::codec_string(&keyframe.data) else {
            return Ok(self.described.is_some());
        };
        let now = (codec, keyframe.width, keyframe.height);
        if self.described.as_ref() != Some(&now) {
            let start = *self.epoch.get_or_insert(keyframe.timestamp_us);
            let fps = mode.map_or(30, |m| m.fps);
            let mut json = catalog_json(&now.0, now.1, now.2, fps, start);
            let extra = (self.extra)();
            // catalog_json ends with the `xoq` section's and the document's closing braces.
            json.truncate(json.len() - 2);
            json.push_str(&extra.xoq);
            json.push('}');
            json.push_str(&extra.top);
            json.push('}');
            self.writer.write_grouped(Bytes::from(json), true)?;
            self.described = Some(now);
        }
        Ok(true)
    }

    /// A capture time as the broadcast's presentation time (µs since the epoch).
    fn pts(&self, timestamp_us: u64) -> u64 {
        timestamp_us.saturating_sub(self.epoch.unwrap_or(timestamp_us))
    }
}

/// The hang catalog for one H.264 rendition named `video`. The `xoq` section (ignored by
/// players) gives the capture clock of presentation time 0, so relay viewers get capture
/// timestamps end to end like P2P viewers.
pub fn catalog_json(codec: &str, width: u16, height: u16, fps: u32, epoch_us: u64) -> String {
    format!(
        concat!(
            r#"{{"video":{{"renditions":{{"video":{{"codec":"{codec}","container":{{"kind":"legacy"}},"#,
            r#""codedWidth":{w},"codedHeight":{h},"framerate":{fps},"optimizeForLatency":true}}}},"#,
            r#""display":{{"width":{w},"height":{h}}}}},"xoq":{{"epochUs":{epoch}}}}}"#
        ),
        codec = codec,
        w = width,
        h = height,
        fps = fps,
        epoch = epoch_us
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_the_json_the_player_reads() {
        let j = catalog_json("avc1.42c01f", 1280, 720, 30, 17);
        assert_eq!(
            j,
            r#"{"video":{"renditions":{"video":{"codec":"avc1.42c01f","container":{"kind":"legacy"},"codedWidth":1280,"codedHeight":720,"framerate":30,"optimizeForLatency":true}},"display":{"width":1280,"height":720}},"xoq":{"epochUs":17}}"#
        );
    }
}
