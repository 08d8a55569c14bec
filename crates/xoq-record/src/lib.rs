//! Recordings of xoq devices: MCAP files that Foxglove, Lichtblick and Rerun open, on the
//! robot's capture clock.
//!
//! [`McapRecorder`] takes what clients receive — H.264 access units, CAN frames, joint
//! samples — each with its capture time on the robot, and writes:
//! * cameras as `foxglove.CompressedVideo` (protobuf; Annex B, one access unit per message,
//!   never re-encoded);
//! * CAN frames as `xoq_msgs/msg/CanFrame` and joint samples as `sensor_msgs/msg/JointState`
//!   (ROS 2 CDR; see [`ros2`]).
//!
//! Every message's `log_time` is its capture time (ns since the Unix epoch, robot clock), so
//! players line streams up by when things happened, not by when they arrived;
//! `publish_time` is when the recorder received it. Chunks are closed every
//! [`FLUSH_EVERY`] (and on [`McapRecorder::flush`]), so a recorder killed outright loses at
//! most the open chunk: the file stays readable up to the last closed one.
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod damiao;
pub mod feetech;
pub mod lerobot;
pub mod mp4;
pub mod read;
pub mod ros2;
pub mod serial;
pub mod table;

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::time::{Duration, Instant};

use foxglove::Encode;
use foxglove::schemas::{CompressedVideo, Timestamp};

/// Schema name of episode marks (JSON messages on [`EPISODE_TOPIC`]): where a new
/// episode begins; `xoq export` splits the recording there.
pub const EPISODE_MARK: &str = "xoq_msgs/EpisodeMark";
/// Topic of episode marks.
pub const EPISODE_TOPIC: &str = "/xoq/episode";
/// JSON schema of an episode mark.
const EPISODE_MARK_SCHEMA: &str = r#"{"type":"object","properties":{"episode":{"type":"integer","description":"number of the episode that begins here (the recording starts episode 0)"},"reason":{"type":"string","description":"what marked it (enter, signal)"}}}"#;

/// Longest time a message waits in an open chunk.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Why a recording could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The MCAP writer failed (disk full, closed file).
    #[error("cannot write the recording: {0}")]
    Mcap(#[from] mcap::McapError),
    /// A message could not be encoded.
    #[error("cannot encode a {what} message: {reason}")]
    Encode {
        /// Message kind.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Counters of one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Messages written.
    pub messages: u64,
    /// Payload bytes written.
    pub bytes: u64,
}

/// An MCAP file being written.
pub struct McapRecorder<W: Write + Seek> {
    writer: mcap::Writer<W>,
    /// Schema id by schema name, added on first use.
    schemas: BTreeMap<&'static str, u16>,
    /// Channel id and sequence counter per topic.
    channels: BTreeMap<String, (u16, u32)>,
    stats: BTreeMap<String, TopicStats>,
    last_flush: Instant,
}

impl<W: Write + Seek> std::fmt::Debug for McapRecorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McapRecorder")
            .field("topics", &self.stats)
            .finish()
    }
}

/// ns since the Unix epoch of a µs timestamp.
pub fn ns(us: u64) -> u64 {
    us.saturating_mul(1000)
}

impl<W: Write + Seek> McapRecorder<W> {
    /// Start a recording on `w` (zstd chunks; `profile` empty: not a ROS bag).
    pub fn new(w: W) -> Result<Self, RecordError> {
        // Chunks are built in memory and written whole when they close (no length patched in
        // afterwards), so a killed recorder leaves a file that ends at a chunk boundary.
        let writer = mcap::WriteOptions::new()
            .disable_seeking(true)
            .compression(Some(mcap::Compression::Zstd))
            .profile("")
            .library(format!("xoq-record {}", env!("CARGO_PKG_VERSION")))
            .create(w)?;
        Ok(Self {
            writer,
            schemas: BTreeMap::new(),
            channels: BTreeMap::new(),
            stats: BTreeMap::new(),
            last_flush: Instant::now(),
        })
    }

    /// The id of schema `name`, added to the file on first use.
    fn schema(
        &mut self,
        name: &'static str,
        encoding: &str,
        data: &[u8],
    ) -> Result<u16, RecordError> {
        if let Some(&id) = self.schemas.get(name) {
            return Ok(id);
        }
        let id = self.writer.add_schema(name, encoding, data)?;
        self.schemas.insert(name, id);
        Ok(id)
    }

    fn channel(
        &mut self,
        topic: &str,
        schema: u16,
        encoding: &str,
    ) -> Result<(u16, u32), RecordError> {
        if let Some((id, seq)) = self.channels.get_mut(topic) {
            *seq = seq.wrapping_add(1);
            return Ok((*id, *seq));
        }
        let id = self
            .writer
            .add_channel(schema, topic, encoding, &BTreeMap::new())?;
        self.channels.insert(topic.to_string(), (id, 0));
        Ok((id, 0))
    }

    fn write(
        &mut self,
        topic: &str,
        schema: u16,
        encoding: &str,
        log_ns: u64,
        publish_ns: u64,
        data: &[u8],
    ) -> Result<(), RecordError> {
        let (channel_id, sequence) = self.channel(topic, schema, encoding)?;
        self.writer.write_to_known_channel(
            &mcap::records::MessageHeader {
                channel_id,
                sequence,
                log_time: log_ns,
                publish_time: publish_ns,
            },
            data,
        )?;
        let st = self.stats.entry(topic.to_string()).or_default();
        st.messages += 1;
        st.bytes += data.len() as u64;
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// One H.264 access unit (Annex B) of camera `topic`, captured at `capture_ns`.
    pub fn video(
        &mut self,
        topic: &str,
        frame_id: &str,
        capture_ns: u64,
        receive_ns: u64,
        annex_b: &[u8],
    ) -> Result<(), RecordError> {
        let schema = match self.schemas.get("foxglove.CompressedVideo") {
            Some(&s) => s,
            None => {
                let s = CompressedVideo::get_schema().ok_or_else(|| RecordError::Encode {
                    what: "video",
                    reason: "no CompressedVideo schema".into(),
                })?;
                self.schema("foxglove.CompressedVideo", &s.encoding, &s.data)?
            }
        };
        let msg = CompressedVideo {
            timestamp: Some(Timestamp::new(
                (capture_ns / 1_000_000_000).min(u64::from(u32::MAX)) as u32,
                (capture_ns % 1_000_000_000) as u32,
            )),
            frame_id: frame_id.to_string(),
            data: bytes::Bytes::copy_from_slice(annex_b),
            format: "h264".into(),
        };
        let mut buf = Vec::with_capacity(annex_b.len() + 64);
        msg.encode(&mut buf).map_err(|e| RecordError::Encode {
            what: "video",
            reason: e.to_string(),
        })?;
        self.write(topic, schema, "protobuf", capture_ns, receive_ns, &buf)
    }

    /// One CAN frame of bus `topic`, captured at `capture_ns`.
    pub fn can_frame(
        &mut self,
        topic: &str,
        capture_ns: u64,
        receive_ns: u64,
        frame: &xoq_wire::can::CanFrame,
    ) -> Result<(), RecordError> {
        let schema = self.schema(
            ros2::CAN_FRAME,
            "ros2msg",
            ros2::CAN_FRAME_SCHEMA.as_bytes(),
        )?;
        let data = ros2::encode_can_frame(capture_ns, frame);
        self.write(topic, schema, "cdr", capture_ns, receive_ns, &data)
    }

    /// One joint sample on `topic` (its `stamp_ns` is the log time).
    pub fn joints(
        &mut self,
        topic: &str,
        receive_ns: u64,
        js: &ros2::JointState,
    ) -> Result<(), RecordError> {
        let schema = self.schema(
            ros2::JOINT_STATE,
            "ros2msg",
            ros2::JOINT_STATE_SCHEMA.as_bytes(),
        )?;
        self.write(topic, schema, "cdr", js.stamp_ns, receive_ns, &js.encode())
    }

    /// Mark the start of episode `episode` at `stamp_ns` (the robot clock, as the recorder
    /// estimates it); `reason` says what marked it. Written at once (the chunk is flushed).
    pub fn episode_mark(
        &mut self,
        stamp_ns: u64,
        receive_ns: u64,
        episode: u32,
        reason: &str,
    ) -> Result<(), RecordError> {
        let schema = self.schema(EPISODE_MARK, "jsonschema", EPISODE_MARK_SCHEMA.as_bytes())?;
        let reason: String = reason
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == ' ' || *c == '-')
            .collect();
        let body = format!("{{\"episode\":{episode},\"reason\":\"{reason}\"}}");
        self.write(
            EPISODE_TOPIC,
            schema,
            "json",
            stamp_ns,
            receive_ns,
            body.as_bytes(),
        )?;
        self.flush()
    }

    /// Attach a file (the robot's URDF, a calibration) as `name` of `media_type`, at
    /// `log_ns`. Attachments sit between chunks; the open chunk is closed first.
    pub fn attach(
        &mut self,
        name: &str,
        media_type: &str,
        log_ns: u64,
        data: &[u8],
    ) -> Result<(), RecordError> {
        self.flush()?;
        self.writer.attach(&mcap::Attachment {
            log_time: log_ns,
            create_time: log_ns,
            name: name.to_string(),
            media_type: media_type.to_string(),
            data: std::borrow::Cow::Borrowed(data),
        })?;
        Ok(())
    }

    /// A metadata record (`foxglove` with `deviceName` lets Foxglove catalogue the file).
    pub fn metadata(&mut self, name: &str, fields: &[(&str, &str)]) -> Result<(), RecordError> {
        self.writer.write_metadata(&mcap::records::Metadata {
            name: name.to_string(),
            metadata: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })?;
        Ok(())
    }

    /// Close the open chunk and flush it to the file.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.writer.flush()?;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Counters per topic.
    pub fn stats(&self) -> &BTreeMap<String, TopicStats> {
        &self.stats
    }

    /// Write the summary and footer: the file is complete.
    pub fn finish(mut self) -> Result<(), RecordError> {
        self.writer.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_reads_back_with_its_channels_and_times() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.mcap");
        let mut r = McapRecorder::new(std::io::BufWriter::new(
            std::fs::File::create(&path).expect("f"),
        ))
        .expect("recorder");
        r.metadata("foxglove", &[("deviceName", "robot")])
            .expect("meta");
        r.video("/cam/video", "cam", 5_000, 6_000, &[0, 0, 0, 1, 0x65, 1])
            .expect("video");
        let f = xoq_wire::can::CanFrame::new(0x11, vec![1, 2]).expect("frame");
        r.can_frame("/arm/frames", 7_000, 8_000, &f).expect("can");
        r.can_frame("/arm/frames", 9_000, 10_000, &f).expect("can");
        assert_eq!(r.stats()["/arm/frames"].messages, 2);
        r.finish().expect("finish");
        let bytes = std::fs::read(&path).expect("read");
        let msgs: Vec<_> = mcap::MessageStream::new(&bytes)
            .expect("stream")
            .collect::<Result<_, _>>()
            .expect("messages");
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].channel.topic, "/cam/video");
        assert_eq!(
            msgs[0].channel.schema.as_ref().map(|s| s.name.as_str()),
            Some("foxglove.CompressedVideo")
        );
        assert_eq!((msgs[1].log_time, msgs[1].publish_time), (7_000, 8_000));
        assert_eq!(msgs[2].sequence, 1);
    }
}
