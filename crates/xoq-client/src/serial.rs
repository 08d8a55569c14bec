//! Remote serial ports.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq_client::ClientError> {
//! use xoq_client::serial::{RemoteSerial, SerialOptions};
//! let port = RemoteSerial::connect("<endpoint-id>@127.0.0.1:9000", SerialOptions::new(1_000_000)).await?;
//! port.write(b"\xff\xff\x01\x02\x01\xfb").await?;
//! let mut buf = [0u8; 64];
//! let n = port.read(&mut buf).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iroh::SecretKey;
use tokio::sync::oneshot;
use xoq_transport::Address;
use xoq_transport::framed::FramedReader;
use xoq_transport::moq::{MoqSession, TrackWriter};
use xoq_transport::p2p;
use xoq_wire::serial::{
    ALPN, ClearBuffer, ClientMsg, Command, Event, Hello, LineSettings, Request, ServerMsg, VERSION,
};

use crate::ClientError;
use crate::conn::{ConnGuard, handshake_failed};
use crate::rx::RxBuffer;

/// How long a control request may take before the client gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (dial + handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Options for opening a remote port.
#[derive(Debug, Clone)]
#[must_use]
pub struct SerialOptions {
    settings: Option<LineSettings>,
    key: Option<SecretKey>,
    offline: bool,
    client_name: String,
}

impl SerialOptions {
    /// Open at `baud_rate`, 8N1.
    pub fn new(baud_rate: u32) -> Self {
        Self {
            settings: Some(LineSettings::new(baud_rate)),
            key: None,
            offline: xoq_transport::offline_from_env(),
            client_name: "rust".into(),
        }
    }

    /// Keep the port's current settings.
    pub fn keep_settings() -> Self {
        Self {
            settings: None,
            ..Self::new(115_200)
        }
    }

    /// Full line settings to apply on open.
    pub fn settings(mut self, s: LineSettings) -> Self {
        self.settings = Some(s);
        self
    }

    /// Client identity (servers with `--allow` check it). Default: a fresh random identity.
    pub fn key(mut self, key: Option<SecretKey>) -> Self {
        self.key = key;
        self
    }

    /// Offline mode (no discovery); defaults to `XOQ_OFFLINE`.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Name shown in the server's logs.
    pub fn client_name(mut self, name: &str) -> Self {
        self.client_name = name.to_string();
        self
    }
}

// One per open port, created once and never moved on the data path: size does not matter.
#[allow(clippy::large_enum_variant)]
enum Link {
    P2p {
        send: tokio::sync::Mutex<iroh::endpoint::SendStream>,
        pending: Arc<Mutex<HashMap<u32, oneshot::Sender<Option<String>>>>>,
        next_id: AtomicU32,
        guard: ConnGuard,
    },
    Moq {
        c2s: tokio::sync::Mutex<TrackWriter>,
        /// Dropping the broadcast unpublishes it, so the link owns it.
        broadcast: xoq_transport::moq::broadcast::Producer,
        session: MoqSession,
    },
}

/// An open remote serial port (async). Cloning is not needed: share it with `Arc`.
pub struct RemoteSerial {
    link: Link,
    rx: Arc<RxBuffer>,
    settings: Mutex<Option<LineSettings>>,
    port: String,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RemoteSerial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSerial")
            .field("port", &self.port)
            .finish()
    }
}

impl RemoteSerial {
    /// Connect to a remote port by address (`<id>@ip:port`, `<id>`, or `<relay-url>/<path>`).
    pub async fn connect(address: &str, opts: SerialOptions) -> Result<Self, ClientError> {
        let addr: Address = address.parse().map_err(ClientError::from)?;
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_addr(&addr, opts)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Connect(format!(
                "no answer from {addr} within {}s: is the server running and the address right?",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn connect_addr(addr: &Address, opts: SerialOptions) -> Result<Self, ClientError> {
        match addr {
            Address::P2p { .. } => Self::connect_p2p(addr, opts).await,
            // Line settings, identity and client name are P2P handshake fields: a relay carries
            // data only.
            Address::Moq { relay, name } => Self::connect_moq(relay, name).await,
        }
    }

    async fn connect_p2p(addr: &Address, opts: SerialOptions) -> Result<Self, ClientError> {
        let endpoint = p2p::client_endpoint(opts.key.clone(), addr, opts.offline).await?;
        let conn = p2p::connect(&endpoint, addr, ALPN, opts.offline).await?;
        let peer = addr.to_string();
        let handshake = async {
            let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let mut out = BytesMut::new();
            ClientMsg::Hello(Hello {
                version: VERSION,
                settings: opts.settings,
                client: opts.client_name.clone(),
            })
            .encode(&mut out);
            send.write_all(&out).await.map_err(|e| e.to_string())?;
            let mut reader = FramedReader::new(recv);
            let first = reader
                .next(ServerMsg::decode)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((send, reader, first))
        };
        let (send, reader, welcome) = match handshake.await {
            Ok((send, reader, Some(ServerMsg::Welcome(w)))) => (send, reader, w),
            Ok((_, _, Some(ServerMsg::Refused { code, message }))) => {
                conn.close(p2p::CLOSE_NORMAL.into(), b"refused");
                endpoint.close().await;
                return Err(ClientError::Refused { code, message });
            }
            Ok((_, _, Some(other))) => {
                return Err(ClientError::Connect(format!(
                    "{peer}: unexpected first message {other:?}"
                )));
            }
            Ok((_, _, None)) | Err(_) => {
                return Err(handshake_failed(&conn, endpoint, &peer).await);
            }
        };
        let rx = Arc::new(RxBuffer::default());
        let pending: Arc<Mutex<HashMap<u32, oneshot::Sender<Option<String>>>>> = Arc::default();
        let reader_task = tokio::spawn(p2p_reader(
            reader,
            rx.clone(),
            pending.clone(),
            conn.clone(),
            peer.clone(),
        ));
        Ok(Self {
            link: Link::P2p {
                send: tokio::sync::Mutex::new(send),
                pending,
                next_id: AtomicU32::new(1),
                guard: ConnGuard {
                    conn: Some(conn),
                    endpoint: Some(endpoint),
                },
            },
            rx,
            settings: Mutex::new(Some(welcome.settings)),
            port: welcome.port,
            reader: reader_task,
        })
    }

    async fn connect_moq(relay: &url::Url, name: &str) -> Result<Self, ClientError> {
        let session = MoqSession::connect(relay, false).await?;
        let pair = crate::relay::open_pair(&session, name, "c2s", "s2c", || {
            format!(
                "no serial server publishes {name} on {relay}: start one with `xoq serial-server ... --relay {relay} --moq <path>`"
            )
        })
        .await?;
        if pair.skipped > 0 {
            tracing::debug!(
                "discarded {} bytes sent before this client connected",
                pair.skipped
            );
        }
        let (broadcast, c2s, mut s2c) = (pair.broadcast, pair.writer, pair.reader);
        let rx = Arc::new(RxBuffer::default());
        let rx2 = rx.clone();
        let reader = tokio::spawn(async move {
            loop {
                match s2c.next().await {
                    Ok(b) => rx2.push(&b),
                    Err(e) => {
                        rx2.close(e.to_string());
                        return;
                    }
                }
            }
        });
        Ok(Self {
            link: Link::Moq {
                c2s: tokio::sync::Mutex::new(c2s),
                broadcast,
                session,
            },
            rx,
            settings: Mutex::new(None),
            port: name.to_string(),
            reader,
        })
    }

    /// Name of the remote port (device path or `sim:...`).
    pub fn port_name(&self) -> &str {
        &self.port
    }

    /// Current line settings, as confirmed by the server (`None` over a relay).
    pub fn settings(&self) -> Option<LineSettings> {
        self.settings.lock().ok().and_then(|s| *s)
    }

    /// The receive buffer (for blocking readers and `in_waiting`).
    pub fn rx(&self) -> &Arc<RxBuffer> {
        &self.rx
    }

    /// Write all of `data` to the remote port.
    pub async fn write(&self, data: &[u8]) -> Result<(), ClientError> {
        if let Some(r) = self.rx.closed() {
            return Err(ClientError::Closed(r));
        }
        match &self.link {
            Link::P2p { send, .. } => {
                let mut out = BytesMut::with_capacity(data.len() + 8);
                for m in ClientMsg::data_chunks(Bytes::copy_from_slice(data)) {
                    m.encode(&mut out);
                }
                send.lock()
                    .await
                    .write_all(&out)
                    .await
                    .map_err(|e| ClientError::Closed(e.to_string()))
            }
            Link::Moq { c2s, .. } => {
                let mut w = c2s.lock().await;
                for chunk in data.chunks(xoq_wire::serial::MAX_DATA_CHUNK) {
                    w.write(Bytes::copy_from_slice(chunk))
                        .map_err(|e| ClientError::Closed(e.to_string()))?;
                }
                Ok(())
            }
        }
    }

    /// Read at least one byte (waits), at most `buf.len()`.
    pub async fn read(&self, buf: &mut [u8]) -> Result<usize, ClientError> {
        self.rx.read(buf).await.map_err(ClientError::Closed)
    }

    /// Bytes ready to read without waiting.
    pub fn available(&self) -> usize {
        self.rx.available()
    }

    async fn request(&self, command: Command) -> Result<(), ClientError> {
        let Link::P2p {
            send,
            pending,
            next_id,
            ..
        } = &self.link
        else {
            return Err(ClientError::Unsupported(format!(
                "{command:?} is not available through a MoQ relay (the relay carries data only); connect P2P to change line settings or modem lines"
            )));
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = pending.lock() {
            p.insert(id, tx);
        }
        let mut out = BytesMut::new();
        ClientMsg::Request(Request { id, command }).encode(&mut out);
        send.lock()
            .await
            .write_all(&out)
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(e))) => Err(ClientError::Device(e)),
            Ok(Err(_)) => Err(ClientError::Closed(
                self.rx.closed().unwrap_or_else(|| "session ended".into()),
            )),
            Err(_) => {
                if let Ok(mut p) = pending.lock() {
                    p.remove(&id);
                }
                Err(ClientError::Timeout(REQUEST_TIMEOUT))
            }
        }
    }

    /// Change line settings on the real port (baud rate, framing, flow control).
    pub async fn set_settings(&self, s: LineSettings) -> Result<(), ClientError> {
        self.request(Command::SetSettings(s)).await?;
        if let Ok(mut cur) = self.settings.lock() {
            *cur = Some(s);
        }
        Ok(())
    }

    /// Change only the baud rate.
    pub async fn set_baud_rate(&self, baud: u32) -> Result<(), ClientError> {
        let mut s = self.settings().unwrap_or(LineSettings::new(baud));
        s.baud_rate = baud;
        self.set_settings(s).await
    }

    /// Set DTR (fails on devices without modem lines, such as ptys).
    pub async fn set_dtr(&self, on: bool) -> Result<(), ClientError> {
        self.request(Command::SetDtr(on)).await
    }

    /// Set RTS.
    pub async fn set_rts(&self, on: bool) -> Result<(), ClientError> {
        self.request(Command::SetRts(on)).await
    }

    /// Hold a break for `duration`.
    pub async fn send_break(&self, duration: Duration) -> Result<(), ClientError> {
        self.request(Command::Break(duration.as_millis().min(10_000) as u32))
            .await
    }

    /// Discard buffered bytes locally and on the server/device.
    pub async fn clear(&self, which: ClearBuffer) -> Result<(), ClientError> {
        let input = matches!(which, ClearBuffer::Input | ClearBuffer::All);
        if input {
            self.rx.clear();
        }
        match &self.link {
            Link::P2p { .. } => {
                self.request(Command::Clear(which)).await?;
                // The reply travels on the same ordered stream as the data: whatever arrived
                // before it was read from the device before the clear, so it goes too.
                if input {
                    self.rx.clear();
                }
                Ok(())
            }
            // Over a relay only the local buffer exists.
            Link::Moq { .. } => Ok(()),
        }
    }

    /// Wait until everything written so far has been transmitted by the remote device.
    pub async fn drain(&self) -> Result<(), ClientError> {
        match &self.link {
            Link::P2p { .. } => self.request(Command::Drain).await,
            Link::Moq { .. } => Ok(()),
        }
    }

    /// Close the session gracefully.
    pub async fn close(self) {
        self.reader.abort();
        match self.link {
            Link::P2p {
                send, mut guard, ..
            } => {
                let _ = send.lock().await.finish();
                if let Some(conn) = guard.conn.take() {
                    conn.close(p2p::CLOSE_NORMAL.into(), b"bye");
                }
                if let Some(ep) = guard.endpoint.take() {
                    ep.close().await;
                }
            }
            Link::Moq {
                c2s,
                broadcast,
                session,
            } => {
                c2s.into_inner().finish();
                broadcast.close();
                session.close().await;
            }
        }
    }
}

async fn p2p_reader(
    mut reader: FramedReader<iroh::endpoint::RecvStream>,
    rx: Arc<RxBuffer>,
    pending: Arc<Mutex<HashMap<u32, oneshot::Sender<Option<String>>>>>,
    conn: iroh::endpoint::Connection,
    peer: String,
) {
    let reason = loop {
        match reader.next(ServerMsg::decode).await {
            Ok(Some(ServerMsg::Data(d))) => rx.push(&d),
            Ok(Some(ServerMsg::Reply(r))) => {
                let tx = pending.lock().ok().and_then(|mut p| p.remove(&r.id));
                if let Some(tx) = tx {
                    let _ = tx.send(r.error);
                }
            }
            Ok(Some(ServerMsg::Event(e))) => match e {
                Event::Dropped(n) => {
                    tracing::warn!("server dropped {n} bytes: the client reads too slowly")
                }
                Event::DeviceLost(r) => tracing::warn!("remote device lost: {r}"),
                Event::DeviceRestored => tracing::info!("remote device is back"),
                Event::TakenOver(by) => break format!("{by}; this session ended"),
                other => tracing::debug!("event {other:?}"),
            },
            Ok(Some(other)) => tracing::debug!("unexpected message {other:?}"),
            Ok(None) => break format!("{peer} ended the session"),
            Err(_) => {
                let e = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
                break match e {
                    Ok(e) => p2p::closed_error(&peer, &e).to_string(),
                    Err(_) => format!("{peer}: stream failed"),
                };
            }
        }
    };
    rx.close(reason);
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

/// A remote port for synchronous code: `std::io::Read`/`Write` with pyserial-style timeouts.
/// Owns a small runtime for the network task.
pub struct BlockingSerial {
    inner: Option<Arc<RemoteSerial>>,
    rt: tokio::runtime::Runtime,
    /// Read timeout: `None` blocks until at least one byte, `Some(ZERO)` never waits.
    pub read_timeout: Option<Duration>,
}

impl std::fmt::Debug for BlockingSerial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingSerial")
            .field("port", &self.inner)
            .finish()
    }
}

impl BlockingSerial {
    /// Connect (see [`RemoteSerial::connect`]).
    pub fn connect(address: &str, opts: SerialOptions) -> Result<Self, ClientError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("xoq-net")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Connect(format!("cannot start runtime: {e}")))?;
        let inner = rt.block_on(RemoteSerial::connect(address, opts))?;
        Ok(Self {
            inner: Some(Arc::new(inner)),
            rt,
            read_timeout: None,
        })
    }

    fn port(&self) -> Result<&Arc<RemoteSerial>, ClientError> {
        self.inner
            .as_ref()
            .ok_or_else(|| ClientError::Closed("port is closed".into()))
    }

    /// The async port.
    pub fn remote(&self) -> Result<&Arc<RemoteSerial>, ClientError> {
        self.port()
    }

    /// Run an async operation on the port from synchronous code.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Read with an explicit timeout (`None` = wait for at least one byte).
    pub fn read_timeout(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<usize, ClientError> {
        self.port()?
            .rx
            .read_blocking(buf, timeout)
            .map_err(ClientError::Closed)
    }

    /// Write everything.
    pub fn write_all_blocking(&self, data: &[u8]) -> Result<(), ClientError> {
        let p = self.port()?.clone();
        self.rt.block_on(async move { p.write(data).await })
    }

    /// Close the session.
    pub fn close(&mut self) {
        if let Some(p) = self.inner.take()
            && let Ok(p) = Arc::try_unwrap(p)
        {
            self.rt.block_on(p.close());
        }
    }
}

impl Drop for BlockingSerial {
    fn drop(&mut self) {
        self.close();
    }
}

fn io_err(e: ClientError) -> std::io::Error {
    let kind = match e {
        ClientError::Timeout(_) => std::io::ErrorKind::TimedOut,
        ClientError::Closed(_) => std::io::ErrorKind::BrokenPipe,
        ClientError::Unsupported(_) => std::io::ErrorKind::Unsupported,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, e)
}

impl std::io::Read for BlockingSerial {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.read_timeout(buf, self.read_timeout).map_err(io_err)?;
        if n == 0 && !buf.is_empty() && self.read_timeout != Some(Duration::ZERO) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "read timed out",
            ));
        }
        Ok(n)
    }
}

impl std::io::Write for BlockingSerial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all_blocking(buf).map_err(io_err)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let p = self.port().map_err(io_err)?.clone();
        self.rt
            .block_on(async move { p.drain().await })
            .map_err(io_err)
    }
}
