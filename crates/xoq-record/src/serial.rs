//! Serial traffic in a recording: every chunk of both directions as
//! `xoq_msgs/msg/SerialChunk` (see [`ros2::SERIAL_CHUNK_SCHEMA`]), so the exact bytes can be
//! replayed or decoded later; [`crate::feetech`] turns a Feetech bus's bytes into joints.

use std::io::{Seek, Write};

use crate::{McapRecorder, RecordError, ros2};

impl<W: Write + Seek> McapRecorder<W> {
    /// One chunk of serial bytes on `topic` that went `direction` ([`ros2::FROM_DEVICE`] or
    /// [`ros2::TO_DEVICE`]), captured at `capture_ns`.
    pub fn serial_chunk(
        &mut self,
        topic: &str,
        capture_ns: u64,
        receive_ns: u64,
        direction: u8,
        data: &[u8],
    ) -> Result<(), RecordError> {
        let schema = self.schema(
            ros2::SERIAL_CHUNK,
            "ros2msg",
            ros2::SERIAL_CHUNK_SCHEMA.as_bytes(),
        )?;
        let msg = ros2::encode_serial_chunk(capture_ns, direction, data);
        self.write(topic, schema, "cdr", capture_ns, receive_ns, &msg)
    }
}

#[cfg(test)]
mod tests {
    use crate::McapRecorder;
    use crate::ros2::{FROM_DEVICE, TO_DEVICE};

    #[test]
    fn serial_chunks_read_back_with_their_schema_and_times() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.mcap");
        let mut r = McapRecorder::new(std::io::BufWriter::new(
            std::fs::File::create(&path).expect("f"),
        ))
        .expect("recorder");
        r.serial_chunk("/arm/serial", 1_000, 2_000, TO_DEVICE, &[0xFF, 0xFF])
            .expect("chunk");
        r.serial_chunk("/arm/serial", 3_000, 4_000, FROM_DEVICE, &[1, 2, 3])
            .expect("chunk");
        r.finish().expect("finish");
        let bytes = std::fs::read(&path).expect("read");
        let msgs: Vec<_> = mcap::MessageStream::new(&bytes)
            .expect("stream")
            .collect::<Result<_, _>>()
            .expect("messages");
        assert_eq!(msgs.len(), 2);
        let schema = msgs[0].channel.schema.as_ref().expect("schema");
        assert_eq!(
            (schema.name.as_str(), schema.encoding.as_str()),
            ("xoq_msgs/msg/SerialChunk", "ros2msg")
        );
        assert_eq!(msgs[1].channel.message_encoding, "cdr");
        assert_eq!((msgs[1].log_time, msgs[1].publish_time), (3_000, 4_000));
        assert_eq!(msgs[1].data[12], FROM_DEVICE, "direction");
        assert_eq!(
            &msgs[1].data[16..],
            &[3, 0, 0, 0, 1, 2, 3],
            "count, then the bytes"
        );
    }
}
