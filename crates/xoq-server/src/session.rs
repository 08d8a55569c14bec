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

/// What an observer of `device` sent that it may not, in words for the observer and the log;
/// `instead` says how to do it as a controller.
pub(crate) fn observer_violation(e: &xoq_wire::DecodeError, device: &str, instead: &str) -> String {
    match e {
        xoq_wire::DecodeError::UnknownKind(k) => format!(
            "this is a read-only observer session of {device}: it may send only Ping (it sent message kind 0x{k:02x}); {instead}"
        ),
        e => format!("observer protocol error: {e}"),
    }
}

/// How an observer's handshake ended when it did not give a client name.
#[derive(Debug)]
pub(crate) enum ObserverHandshake {
    /// No Hello within the handshake time.
    Timeout,
    /// The stream ended before a Hello.
    Ended,
    /// The first message was another allowed one (not Hello).
    NotHello,
    /// Another protocol version: refused (the observer was told why).
    Version,
    /// Something an observer may not send: refused, with this message.
    Violation(String),
    /// The stream failed.
    Stream(xoq_transport::framed::FramedError),
}

/// Read an observer's Hello (within 10 s) on behalf of `device`, refusing another version or
/// anything an observer may not send (`instead`: see [`observer_violation`]); the client's
/// name when it is welcome.
pub(crate) async fn observer_hello(
    reader: &mut xoq_transport::framed::FramedReader<iroh::endpoint::RecvStream>,
    send: &mut SendStream,
    device: &str,
    instead: &str,
) -> Result<String, ObserverHandshake> {
    use xoq_wire::observe::{ClientMsg, VERSION};
    use xoq_wire::refuse::RefuseCode;
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.next(ClientMsg::decode),
    );
    match first.await {
        Err(_) => Err(ObserverHandshake::Timeout),
        Ok(Ok(None)) => Err(ObserverHandshake::Ended),
        Ok(Ok(Some(ClientMsg::Hello { version, client }))) => {
            if version != VERSION {
                let why = format!(
                    "observer protocol version {version} not supported (server speaks {VERSION}); upgrade the older side"
                );
                refuse_observer(send, RefuseCode::Version, why).await;
                return Err(ObserverHandshake::Version);
            }
            Ok(client)
        }
        Ok(Ok(Some(_))) => Err(ObserverHandshake::NotHello),
        Ok(Err(xoq_transport::framed::FramedError::Decode(e))) => {
            let why = observer_violation(&e, device, instead);
            refuse_observer(send, RefuseCode::WritesOff, why.clone()).await;
            Err(ObserverHandshake::Violation(why))
        }
        Ok(Err(e)) => Err(ObserverHandshake::Stream(e)),
    }
}

/// After a session ends, keep the connection until the peer closes it (at most 2 s), so its
/// last messages (a refusal) reach the client before the connection goes.
pub(crate) async fn linger(conn: &iroh::endpoint::Connection) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
}
