//! Pieces every server shares: its device tasks' lifetime, and the end of a P2P session.

use iroh::endpoint::SendStream;

/// Send a service's final message (a refusal) and finish the stream: the client reads the
/// reason before the stream ends, instead of a bare reset.
pub(crate) async fn send_final(send: &mut SendStream, encoded: &[u8]) {
    let _ = send.write_all(encoded).await;
    let _ = send.finish();
}

/// A server's device tasks: aborted when the last clone of the server drops, so a server
/// dropped without `stop()` does not leave its device driven.
pub(crate) struct Tasks(pub(crate) Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Encode a service's refusal with `encode` and send it as the session's last message.
pub(crate) async fn refuse(send: &mut SendStream, encode: impl FnOnce(&mut bytes::BytesMut)) {
    let mut out = bytes::BytesMut::new();
    encode(&mut out);
    send_final(send, &out).await;
}

/// Refuse an observer session (the same refusal for every service's observer ALPN).
pub(crate) async fn refuse_observer(
    send: &mut SendStream,
    code: xoq_wire::refuse::RefuseCode,
    message: String,
) {
    refuse(send, |out| {
        xoq_wire::observe::ServerMsg::Refused { code, message }.encode(out)
    })
    .await;
}

/// After a session ends, keep the connection until the peer closes it (at most 2 s), so its
/// last messages (a refusal) reach the client before the connection goes.
pub(crate) async fn linger(conn: &iroh::endpoint::Connection) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
}
