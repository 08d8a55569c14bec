//! Shared fixtures for the integration tests: pty echo devices, servers on loopback, relays.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use iroh::SecretKey;
use iroh::protocol::Router;
use serialport::SerialPort;
use xoq::client::serial::{RemoteSerial, SerialOptions};
use xoq::serial::SerialServer;
use xoq::transport::p2p::{Allowlist, EndpointBuilder};
use xoq::wire::serial::{ALPN, LineSettings};

/// A pty whose master echoes every byte back; the slave path is the "device".
pub struct PtyEcho {
    pub path: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _slave: serialport::TTYPort,
}

impl PtyEcho {
    pub fn new() -> Self {
        let (mut master, slave) = serialport::TTYPort::pair().expect("pty pair");
        let path = slave.name().expect("pty name");
        master
            .set_timeout(Duration::from_millis(20))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                match master.read(&mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        if master.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // Dropping the master makes the pty disappear: the "device" is unplugged.
        });
        Self {
            path,
            stop,
            thread: Some(thread),
            _slave: slave,
        }
    }

    /// Unplug: close the master side.
    pub fn unplug(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PtyEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A serial server with a P2P endpoint on loopback.
pub struct TestServer {
    pub server: SerialServer,
    pub router: Router,
    pub addr: String,
}

impl TestServer {
    pub async fn start(device: &str, takeover: bool, allow: Option<Vec<iroh::EndpointId>>) -> Self {
        let backend = xoq::serial::backend(device).expect("backend");
        let server = SerialServer::builder(backend)
            .settings(LineSettings::new(115_200))
            .takeover(takeover)
            .start()
            .await
            .expect("server starts");
        let ep = EndpointBuilder::new()
            .offline(true)
            .alpns(vec![ALPN.to_vec()])
            .allowlist(allow.map(Allowlist::new))
            .spawn()
            .await
            .expect("endpoint");
        let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
        let router = Router::builder(ep).accept(ALPN, server.clone()).spawn();
        Self {
            server,
            router,
            addr,
        }
    }

    pub async fn stop(self) {
        let _ = self.router.shutdown().await;
    }
}

pub fn opts(key: &SecretKey) -> SerialOptions {
    SerialOptions::new(115_200)
        .offline(true)
        .key(key.clone())
        .client_name("test")
}

pub async fn connect(addr: &str, key: &SecretKey) -> RemoteSerial {
    RemoteSerial::connect(addr, opts(key))
        .await
        .expect("client connects")
}

/// Write `data` and read the same number of bytes back, concurrently.
pub async fn echo_exact(port: &Arc<RemoteSerial>, data: Arc<Vec<u8>>) -> Vec<u8> {
    let p = port.clone();
    let d = data.clone();
    let writer = tokio::spawn(async move {
        for c in d.chunks(8 * 1024) {
            p.write(c).await.expect("write");
        }
    });
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < data.len() {
        let n = tokio::time::timeout(Duration::from_secs(20), port.read(&mut buf))
            .await
            .expect("echo did not stall")
            .expect("read");
        got.extend_from_slice(&buf[..n]);
    }
    writer.await.expect("writer");
    got
}

/// Read the termios of a tty path.
pub fn termios_of(path: &str) -> libc::termios {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_noctty()
        .open(path)
        .expect("open tty");
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: valid fd and out-pointer.
    let r = unsafe { libc::tcgetattr(f.as_raw_fd(), t.as_mut_ptr()) };
    assert_eq!(r, 0, "tcgetattr");
    // SAFETY: initialised by tcgetattr.
    unsafe { t.assume_init() }
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
    }
}

/// The output baud rate of a tty as a number. serialport sets rates with termios2 (BOTHER +
/// c_ospeed), so read it the same way: that also covers non-standard rates.
pub fn baud_of(path: &str) -> u32 {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_noctty()
        .open(path)
        .expect("open tty");
    let mut t = std::mem::MaybeUninit::<libc::termios2>::uninit();
    // SAFETY: TCGETS2 fills a termios2 on a valid tty fd.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TCGETS2, t.as_mut_ptr()) };
    assert_eq!(r, 0, "TCGETS2");
    // SAFETY: initialised by the ioctl.
    let t = unsafe { t.assume_init() };
    t.c_ospeed
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

pub fn xoq_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xoq")
}

/// Spawn the xoq CLI with piped stdout, offline, and read lines until `ready`.
pub fn spawn_cli(args: &[&str], home: &std::path::Path) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(xoq_bin())
        .args(args)
        .env("XOQ_OFFLINE", "1")
        .env("XOQ_HOME", home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn xoq");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = std::io::BufReader::new(stdout);
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut l = String::new();
        let n = reader.read_line(&mut l).expect("read banner");
        assert!(n > 0, "xoq {args:?} exited before `ready`: {lines:?}");
        let l = l.trim_end().to_string();
        let done = l == "ready";
        lines.push(l);
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `ready` from xoq {args:?}"
        );
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    (child, lines)
}

pub fn banner_value<'a>(lines: &'a [String], key: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{key}: ")))
        .collect()
}
