//! Relay publishing: depth as a `depth` track in the colour camera's hang broadcast.
//!
//! The catalog lists the track in hang's `binary` section (`mode: "snapshot"`: one frame
//! per group, newest wins) and gives the scale, intrinsics and device names in the `xoq`
//! section. Each frame is `timestamp_us u64 | seq u64 | depth blob` (big-endian), the
//! timestamp the capture time shared with the colour frame of the same capture.

use bytes::{BufMut, BytesMut};
use xoq_transport::moq::MoqSession;
use xoq_wire::depth::{DepthInfo, Intrinsics};

use super::DepthServer;
use crate::ServerError;
use crate::camera::CatalogExtra;

/// MIME type of the depth track's frames.
pub const DEPTH_MIME: &str = "application/x-xoq-depth";

impl DepthServer {
    /// Publish on a relay as a hang broadcast named `name`: the colour `video` track (the
    /// stock web player plays it) and the lossless `depth` track. Depth is encoded only
    /// while someone subscribes to it. Returns when the session ends.
    pub async fn serve_moq(&self, session: &MoqSession, name: &str) -> Result<(), ServerError> {
        let me = self.clone();
        let catalog = || catalog_extra(&me.info());
        let server = self.clone();
        self.camera()
            .serve_moq_with(
                session,
                name,
                &["depth"],
                &catalog,
                |mut tracks| async move {
                    let Some(mut depth) = tracks.pop() else {
                        return Err(ServerError::Config(
                            "the relay session did not create the depth track".into(),
                        ));
                    };
                    loop {
                        depth.used().await?;
                        let mut sub = server.subscribe(false);
                        let mut last = None;
                        loop {
                            let c = tokio::select! {
                                c = sub.next(last) => c,
                                _ = depth.unused() => break,
                            };
                            let Some(c) = c else { return Ok(()) };
                            let mut payload = BytesMut::with_capacity(16 + c.depth.len());
                            payload.put_u64(c.timestamp_us);
                            payload.put_u64(c.seq);
                            payload.extend_from_slice(&c.depth);
                            depth.write_grouped(payload.freeze(), true)?;
                            last = Some(c.seq);
                        }
                    }
                },
            )
            .await
    }
}

fn intrinsics_json(k: &Intrinsics) -> String {
    let num = |v: f32| {
        if v.is_finite() {
            v.to_string()
        } else {
            "0".into()
        }
    };
    let coeffs: Vec<String> = k.coeffs.iter().map(|&c| num(c)).collect();
    format!(
        r#"{{"width":{},"height":{},"fx":{},"fy":{},"ppx":{},"ppy":{},"model":"{}","coeffs":[{}]}}"#,
        k.width,
        k.height,
        num(k.fx),
        num(k.fy),
        num(k.ppx),
        num(k.ppy),
        k.model.name(),
        coeffs.join(",")
    )
}

/// JSON string literal (names come from devices: escape everything JSON requires).
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(super) fn catalog_extra(info: &DepthInfo) -> CatalogExtra {
    CatalogExtra {
        top: format!(
            r#","binary":{{"tracks":{{"depth":{{"mode":"snapshot","mime":"{DEPTH_MIME}"}}}}}}"#
        ),
        xoq: format!(
            r#","depth":{{"scale":{},"name":{},"serial":{},"depthIntrinsics":{},"colorIntrinsics":{}}}"#,
            info.scale,
            json_str(&info.name),
            json_str(&info.serial),
            intrinsics_json(&info.depth),
            intrinsics_json(&info.color)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_extra_is_valid_json_in_the_camera_catalog() {
        let info = DepthInfo {
            scale: 0.001,
            depth: Intrinsics::pinhole(640, 480, 87.0),
            color: Intrinsics::pinhole(640, 480, 87.0),
            name: "cam \"one\"\n".into(),
            serial: "123".into(),
        };
        let e = catalog_extra(&info);
        let mut json = crate::camera::catalog_json("avc1.42c01f", 640, 480, 30, 5);
        json.truncate(json.len() - 2);
        json.push_str(&e.xoq);
        json.push('}');
        json.push_str(&e.top);
        json.push('}');
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["xoq"]["depth"]["scale"], 0.001);
        assert_eq!(v["xoq"]["depth"]["name"], "cam \"one\"\n");
        assert_eq!(v["xoq"]["depth"]["depthIntrinsics"]["width"], 640);
        assert_eq!(v["binary"]["tracks"]["depth"]["mode"], "snapshot");
        assert_eq!(v["video"]["renditions"]["video"]["codedWidth"], 640);
    }
}
