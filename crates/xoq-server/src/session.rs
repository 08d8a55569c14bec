//! Pieces every P2P session of every service shares.

use iroh::endpoint::SendStream;

/// Send a service's final message (a refusal) and finish the stream: the client reads the
/// reason before the stream ends, instead of a bare reset.
pub(crate) async fn send_final(send: &mut SendStream, encoded: &[u8]) {
    let _ = send.write_all(encoded).await;
    let _ = send.finish();
}
