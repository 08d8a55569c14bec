//! Reading a recording back: the camera and joint streams of an MCAP file `xoq record`
//! wrote, each sorted by capture time (the messages' `log_time`).
//!
//! A file whose recorder was killed has no summary or footer; it is read up to its last
//! complete chunk, and [`Recording::truncated`] says so.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;

use crate::ros2::{JOINT_STATE, JointState};

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Not an MCAP file (or not even its start).
    #[error("not an MCAP recording: {0}")]
    Mcap(#[from] mcap::McapError),
    /// A message of a known schema does not decode.
    #[error("{topic}: message {index} does not decode: {reason}")]
    Message {
        /// Its topic.
        topic: String,
        /// Its position on the topic.
        index: usize,
        /// What was wrong.
        reason: String,
    },
}

/// One camera frame.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// Capture time on the robot, ns since the Unix epoch.
    pub capture_ns: u64,
    /// The H.264 access unit (Annex B).
    pub data: Bytes,
    /// An IDR: decoding can start here.
    pub keyframe: bool,
}

/// The streams of a recording.
#[derive(Debug, Default)]
pub struct Recording {
    /// Camera topic → frames in capture order (`foxglove.CompressedVideo`, H.264).
    pub videos: BTreeMap<String, Vec<VideoFrame>>,
    /// Joint topic → samples in capture order (`sensor_msgs/msg/JointState`).
    pub joints: BTreeMap<String, Vec<JointState>>,
    /// Metadata records, by name.
    pub metadata: BTreeMap<String, BTreeMap<String, String>>,
    /// Episode boundaries marked while recording (capture-clock ns), in order.
    pub episode_marks: Vec<u64>,
    /// The file ended before its footer (a recorder that did not finish): what was read is
    /// everything up to the last complete chunk.
    pub truncated: bool,
}

impl Recording {
    /// Read the camera and joint streams of an MCAP file's bytes; other topics (raw CAN,
    /// serial) are skipped.
    pub fn read(buf: &[u8]) -> Result<Self, ReadError> {
        let mut rec = Recording::default();
        let opts = mcap::read::Options::IgnoreEndMagic.into();
        let stream = mcap::MessageStream::new_with_options(buf, opts)?;
        for msg in stream {
            let msg = match msg {
                Ok(m) => m,
                // The open chunk of a killed recorder: keep what came before it.
                Err(_) => {
                    rec.truncated = true;
                    break;
                }
            };
            let schema = msg.channel.schema.as_ref().map(|s| s.name.as_str());
            let topic = &msg.channel.topic;
            match (schema, msg.channel.message_encoding.as_str()) {
                (Some("foxglove.CompressedVideo"), "protobuf") => {
                    let frames = rec.videos.entry(topic.clone()).or_default();
                    let v =
                        foxglove::schemas::CompressedVideo::decode(&*msg.data).map_err(|e| {
                            ReadError::Message {
                                topic: topic.clone(),
                                index: frames.len(),
                                reason: e.to_string(),
                            }
                        })?;
                    if v.format != "h264" {
                        return Err(ReadError::Message {
                            topic: topic.clone(),
                            index: frames.len(),
                            reason: format!("video format {:?}; only h264 is exported", v.format),
                        });
                    }
                    frames.push(VideoFrame {
                        capture_ns: msg.log_time,
                        keyframe: xoq_media::h264::is_keyframe(&v.data),
                        data: v.data,
                    });
                }
                (Some(crate::EPISODE_MARK), "json") => rec.episode_marks.push(msg.log_time),
                (Some(JOINT_STATE), "cdr") => {
                    let samples = rec.joints.entry(topic.clone()).or_default();
                    let mut js = JointState::decode(&msg.data).map_err(|e| ReadError::Message {
                        topic: topic.clone(),
                        index: samples.len(),
                        reason: e.to_string(),
                    })?;
                    // The log time is the capture time; the header stamp should be the same.
                    js.stamp_ns = msg.log_time;
                    samples.push(js);
                }
                _ => {}
            }
        }
        if !rec.truncated {
            rec.metadata = read_metadata(buf);
        }
        // The recorder writes in arrival order; capture order can differ across sources.
        for frames in rec.videos.values_mut() {
            frames.sort_by_key(|f| f.capture_ns);
        }
        for samples in rec.joints.values_mut() {
            samples.sort_by_key(|s| s.stamp_ns);
        }
        rec.episode_marks.sort_unstable();
        Ok(rec)
    }
}

/// Metadata records, through the summary's index (none when there is no summary).
fn read_metadata(buf: &[u8]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Ok(Some(summary)) = mcap::Summary::read(buf) else {
        return out;
    };
    for idx in &summary.metadata_indexes {
        if let Ok(m) = mcap::read::metadata(buf, idx) {
            out.insert(m.name, m.metadata);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::McapRecorder;

    fn write_file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.mcap");
        let f = std::fs::File::create(&path).expect("file");
        let mut r = McapRecorder::new(std::io::BufWriter::new(f)).expect("recorder");
        r.metadata("xoq", &[("robot", "r1")]).expect("meta");
        let js = |t: u64, p: f64| JointState {
            stamp_ns: t,
            frame_id: "arm".into(),
            name: vec!["j1".into()],
            position: vec![p],
            ..Default::default()
        };
        r.joints("/arm/joint_states", 10, &js(2_000, 2.0))
            .expect("js");
        r.joints("/arm/joint_states", 11, &js(1_000, 1.0))
            .expect("js");
        r.video("/cam/video", "cam", 1_500, 12, &[0, 0, 0, 1, 0x65, 0x88])
            .expect("video");
        r.video("/cam/video", "cam", 2_500, 13, &[0, 0, 0, 1, 0x41, 0x9a])
            .expect("video");
        r.finish().expect("finish");
        (dir, path)
    }

    #[test]
    fn streams_come_back_in_capture_order_with_metadata() {
        let (_dir, path) = write_file();
        let bytes = std::fs::read(&path).expect("read");
        let rec = Recording::read(&bytes).expect("recording");
        assert!(!rec.truncated);
        let j = &rec.joints["/arm/joint_states"];
        assert_eq!(
            j.iter()
                .map(|s| (s.stamp_ns, s.position[0]))
                .collect::<Vec<_>>(),
            [(1_000, 1.0), (2_000, 2.0)]
        );
        let v = &rec.videos["/cam/video"];
        assert_eq!(
            v.iter()
                .map(|f| (f.capture_ns, f.keyframe))
                .collect::<Vec<_>>(),
            [(1_500, true), (2_500, false)]
        );
        assert_eq!(rec.metadata["xoq"]["robot"], "r1");

        // Cut inside the file: what is readable is still read, and flagged.
        let cut = Recording::read(&bytes[..bytes.len() - 40]).expect("cut");
        assert!(cut.truncated || cut.metadata.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn reading_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut b = b"\x89MCAP0\r\n".to_vec();
            b.extend_from_slice(&bytes);
            let _ = Recording::read(&b);
            let _ = Recording::read(&bytes);
        }
    }
}
