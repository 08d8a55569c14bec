//! The client side of a relay bridge, shared by the serial and CAN clients: this client's own
//! writer broadcast toward the device, and the server's track from the device.

use std::time::Duration;

use xoq_transport::moq::{DATA_TRACK, MoqSession, TrackReader, TrackWriter, broadcast};

use crate::ClientError;

/// How long a relay client waits for the server to subscribe to its writer broadcast.
/// A server that never reads (`--moq-cmd off`) costs a connect this long.
const WRITER_SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);
/// How long a client waits for the server's broadcast to be announced.
const SERVER_WAIT: Duration = Duration::from_secs(5);

/// Both directions of one bridged device through a relay.
pub(crate) struct RelayPair {
    /// Dropping it unpublishes the writer, so the client keeps it.
    pub(crate) broadcast: broadcast::Producer,
    /// Toward the device: `{name}/{to_device}/<writer id>`.
    pub(crate) writer: TrackWriter,
    /// From the device: `{name}/{from_device}`, past the backlog the relay replays.
    pub(crate) reader: TrackReader,
    /// Bytes of that backlog dropped.
    pub(crate) skipped: usize,
}

/// A fresh name for this client's own writer broadcast (`{path}/cmd/<id>`, `{path}/c2s/<id>`):
/// every writer gets its own, so the server reads all of them at once.
fn writer_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Publish this client's writer under `{name}/{to_device}` and open the server's
/// `{name}/{from_device}`. `missing` is the error message when no server publishes `name`.
pub(crate) async fn open_pair(
    session: &MoqSession,
    name: &str,
    to_device: &str,
    from_device: &str,
    missing: impl FnOnce() -> String,
) -> Result<RelayPair, ClientError> {
    let (broadcast, mut writers) = session.publish_tracks(
        &format!("{name}/{to_device}/{}", writer_id()),
        &[DATA_TRACK],
    )?;
    let writer = writers
        .pop()
        .ok_or_else(|| ClientError::Connect(format!("no {to_device} track")))?;
    // The server subscribes once it sees our writer announced; what is written before that
    // would be lost.
    if !writer.wait_subscribed(WRITER_SUBSCRIBE_WAIT).await {
        tracing::debug!("no subscriber for this client's writer yet; sending anyway");
    }
    let mut reader = session.read_track(&format!("{name}/{from_device}"), DATA_TRACK);
    // A missing server is an error at connect time, not a silent hang on the first read.
    tokio::time::timeout(SERVER_WAIT, reader.ready())
        .await
        .map_err(|_| ClientError::Connect(missing()))??;
    // What the device sent before this client connected is history: drop the backlog the
    // relay replays on subscribe.
    let skipped = reader.skip_backlog().await?;
    Ok(RelayPair {
        broadcast,
        writer,
        reader,
        skipped,
    })
}
