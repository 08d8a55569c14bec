//! The relay path is as guarded as P2P: writes off by default (and refused by the server, not
//! only by polite clients), tokens checked by the relay, no replay of old commands after a
//! server restart, every writer counted for motor safety, safety frames on a clean stop,
//! future-dated commands dropped, CAN FD on a classic bus handled. Real relay, real iroh,
//! loopback, offline.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use iroh::SecretKey;
use iroh::protocol::Router;
use xoq::client::ClientError;
use xoq::client::can::{CanOptions, RemoteCanBus};
use xoq::client::serial::{RemoteSerial, SerialOptions};
use xoq::device::can::{BusEvent, CanBackend, OpenCan, SimCanBackend, VirtualBackend};
use xoq::relay::auth;
use xoq::relay::{RelayConfig, RelayHandle};
use xoq::server::can::CanServer;
use xoq::transport::RelayUrl;
use xoq::transport::moq::{DATA_TRACK, MoqSession, ReaderEvent, Redial};
use xoq::transport::p2p::EndpointBuilder;
use xoq::wire::can::{CanFrame, TimedFrame, encode_track_frame};
use xoq::wire::damiao::{CMD_DISABLE, CMD_ENABLE, STATE_DISABLED, decode_feedback};
use xoq::wire::feetech;
use xoq::wire::relay::{CTL_TRACK, Ctl, WriterMsg};

async fn relay(auth_key: Option<&std::path::Path>) -> RelayHandle {
    let mut cfg = RelayConfig::ephemeral().expect("port");
    if let Some(k) = auth_key {
        cfg = cfg.auth_key(k.to_path_buf());
    }
    cfg.start().await.expect("relay")
}

/// The relay URL at auth root `anon`, with an optional token.
fn root(relay: &RelayHandle, token: Option<&str>) -> RelayUrl {
    let mut url = relay.url().join("anon").expect("url");
    if let Some(t) = token {
        url.query_pairs_mut().append_pair("jwt", t);
    }
    RelayUrl::from_url(url)
}

fn address(root: &RelayUrl, path: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("{root}/{path}?jwt={t}"),
        None => format!("{root}/{path}"),
    }
}

/// A bridge task serving `serve` on a relay session until dropped.
struct Bridge(tokio::task::JoinHandle<()>);
impl Drop for Bridge {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serial_bridge(server: &xoq::serial::SerialServer, root: &RelayUrl, path: &str) -> Bridge {
    let session = MoqSession::connect(root, Redial::Forever)
        .await
        .expect("server session");
    let srv = server.clone();
    let path = path.to_string();
    Bridge(tokio::spawn(async move {
        let _ = srv.serve_moq(&session, &path).await;
    }))
}

async fn can_bridge(server: &CanServer, root: &RelayUrl, path: &str) -> Bridge {
    let session = MoqSession::connect(root, Redial::Forever)
        .await
        .expect("server session");
    let srv = server.clone();
    let path = path.to_string();
    Bridge(tokio::spawn(async move {
        let _ = srv.serve_moq(&session, &path).await;
    }))
}

/// A relay writer that speaks the protocol correctly but ignores what the server says about
/// writes: what a hostile or buggy client can do. Returns once the server synced it.
struct RawWriter {
    _session: MoqSession,
    _bc: xoq::transport::moq::broadcast::Producer,
    writer: xoq::transport::moq::TrackWriter,
    synced_writes: bool,
}

impl RawWriter {
    async fn open(root: &RelayUrl, path: &str, up: &str, down: &str) -> Self {
        let session = MoqSession::connect(root, Redial::Never)
            .await
            .expect("writer session");
        let name = "feedfacefeedface";
        let (bc, mut w) = session
            .publish_tracks(&format!("{path}/{up}/{name}"), &[DATA_TRACK])
            .expect("publish");
        let mut writer = w.pop().expect("track");
        let mut ctl = session.read_track(&format!("{path}/{down}"), CTL_TRACK);
        let writes = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let Ok(ReaderEvent::Frame { payload, .. }) = ctl.next_event().await else {
                    continue;
                };
                match Ctl::decode(&payload) {
                    Ok(Ctl::Hello {
                        writer: w,
                        nonce,
                        writes,
                        ..
                    }) if w == name => {
                        let mut b = Vec::new();
                        WriterMsg::Sync { nonce }.encode(&mut b);
                        writer.write_grouped(Bytes::from(b), true).expect("sync");
                        loop {
                            let Ok(ReaderEvent::Frame { payload, .. }) = ctl.next_event().await
                            else {
                                continue;
                            };
                            if let Ok(Ctl::Synced { writer: w, .. }) = Ctl::decode(&payload)
                                && w == name
                            {
                                return writes;
                            }
                        }
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("the server synced the raw writer");
        Self {
            _session: session,
            _bc: bc,
            writer,
            synced_writes: writes,
        }
    }

    fn data(&mut self, payload: &[u8]) {
        self.writer
            .write(WriterMsg::data_frame(payload))
            .expect("write");
    }
}

fn batch(frames: &[CanFrame]) -> Vec<u8> {
    let timed: Vec<TimedFrame> = frames
        .iter()
        .map(|f| TimedFrame {
            frame: f.clone(),
            timestamp_us: 0,
        })
        .collect();
    let mut b = BytesMut::new();
    encode_track_frame(&timed, &mut b);
    b.to_vec()
}

async fn read_goal(port: &RemoteSerial, id: u8) -> u16 {
    let mut acc = Vec::new();
    port.write(&feetech::instruction(
        id,
        feetech::READ,
        &[feetech::GOAL_POSITION, 2],
    ))
    .await
    .expect("write");
    let mut buf = [0u8; 64];
    loop {
        if let Ok((s, _)) = feetech::decode_status(&acc) {
            return u16::from_le_bytes([s.params[0], s.params[1]]);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), port.read(&mut buf))
            .await
            .expect("status in time")
            .expect("read");
        acc.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_servers_refuse_anonymous_relay_writes() {
    let relay = relay(None).await;
    let root = root(&relay, None);

    // Serial: the SO-101 simulator, relay writes at their default (off).
    let so101 = xoq::serial::SerialServer::builder(xoq::serial::backend("sim:so101").expect("b"))
        .settings(xoq::serial::LineSettings::new(1_000_000))
        .start()
        .await
        .expect("serial server");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![xoq::wire::serial::ALPN.to_vec()])
        .spawn()
        .await
        .expect("endpoint");
    let p2p_addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep)
        .accept(xoq::wire::serial::ALPN, so101.clone())
        .spawn();
    let _b1 = serial_bridge(&so101, &root, "arm").await;
    let observer = RemoteSerial::connect(
        &p2p_addr,
        SerialOptions::new(1_000_000).offline(true).ephemeral(),
    )
    .await
    .expect("P2P observer");
    let before = read_goal(&observer, 1).await;
    let goal = before.wrapping_add(500) & 0x0FFF;
    let write_goal = feetech::instruction(
        1,
        feetech::WRITE,
        &[feetech::GOAL_POSITION, goal as u8, (goal >> 8) as u8],
    );

    // A well-behaved relay client is told at once, clearly.
    let client =
        RemoteSerial::connect(&address(&root, "arm", None), SerialOptions::keep_settings())
            .await
            .expect("relay client");
    let err = client
        .write(&write_goal)
        .await
        .expect_err("relay writes are off");
    assert!(err.to_string().contains("--moq-writes"), "{err}");
    client.close().await;
    // A client that writes anyway is refused by the server, and counted.
    let mut raw = RawWriter::open(&root, "arm", "c2s", "s2c").await;
    assert!(!raw.synced_writes, "the server announced writes off");
    raw.data(&write_goal);
    wait_until(Duration::from_secs(5), || {
        so101.relay_stats().writes_refused.load(Ordering::Relaxed) > 0
    })
    .await;
    assert_eq!(
        read_goal(&observer, 1).await,
        before,
        "the servo goal is unchanged"
    );

    // CAN: the OpenArm simulator, relay writes off.
    let sim = SimCanBackend::openarm("sim:openarm");
    let motors = sim.bus();
    let arm = CanServer::builder(Box::new(sim))
        .start()
        .await
        .expect("can server");
    let _b2 = can_bridge(&arm, &root, "openarm").await;
    let bus = RemoteCanBus::connect(&address(&root, "openarm", None), CanOptions::new())
        .await
        .expect("relay CAN client");
    let enable = CanFrame::new(1, CMD_ENABLE.to_vec()).expect("frame");
    let err = bus.send(&enable).await.expect_err("relay writes are off");
    assert!(matches!(err, ClientError::Refused { .. }), "{err}");
    bus.close().await;
    let mut raw = RawWriter::open(&root, "openarm", "cmd", "state").await;
    raw.data(&batch(&[enable]));
    wait_until(Duration::from_secs(5), || {
        arm.relay_stats().writes_refused.load(Ordering::Relaxed) > 0
            || arm.stats().tx_frames.load(Ordering::Relaxed) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        arm.stats().tx_frames.load(Ordering::Relaxed),
        0,
        "nothing reached the bus"
    );
    let m = motors.lock().expect("bus").motor(1).expect("motor 1");
    assert!(!m.enabled, "the motor was not enabled through the relay");

    observer.close().await;
    let _ = router.shutdown().await;
    drop((_b1, _b2));
    relay.shutdown().await;
}

async fn wait_until(limit: Duration, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_an_auth_key_admits_only_valid_tokens_for_the_path() {
    let dir = tempfile::tempdir().expect("dir");
    let key_path = dir.path().join("relay.jwk");
    let relay = relay(Some(&key_path)).await;
    let key = auth::load_or_create_key(&key_path).expect("key");
    let grant = |paths: &[&str], exp: Option<Duration>| {
        let p: Vec<String> = paths.iter().map(|s| s.to_string()).collect();
        auth::mint(&key, &p, &p, exp).expect("mint")
    };
    let server_token = grant(&["anon/echo"], None);
    let echo = xoq::serial::SerialServer::builder(xoq::serial::backend("sim:echo").expect("b"))
        .relay_writes(true)
        .start()
        .await
        .expect("server");
    let _bridge = serial_bridge(&echo, &root(&relay, Some(&server_token)), "echo").await;
    let base = root(&relay, None);
    let open = |token: Option<String>| {
        let addr = address(&base, "echo", token.as_deref());
        async move { RemoteSerial::connect(&addr, SerialOptions::keep_settings()).await }
    };

    // No token: the relay refuses the session (nothing is public with an auth key).
    let err = open(None).await.expect_err("no token");
    assert!(err.to_string().contains("credentials"), "{err}");
    // A token for another path sees nothing there.
    let err = open(Some(grant(&["anon/other"], None)))
        .await
        .expect_err("token for another path");
    assert!(matches!(err, ClientError::Connect(_)), "{err}");
    // An expired token is refused.
    let short = grant(&["anon/echo"], Some(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = open(Some(short)).await.expect_err("expired token");
    assert!(err.to_string().contains("credentials"), "{err}");
    // A token for the right path signed by another key (a forgery) is refused.
    let other = auth::load_or_create_key(&dir.path().join("other.jwk")).expect("other key");
    let p = vec!["anon/echo".to_string()];
    let forged = auth::mint(&other, &p, &p, None).expect("mint");
    let err = open(Some(forged))
        .await
        .expect_err("token signed by another key");
    assert!(err.to_string().contains("credentials"), "{err}");
    // A token minted by the CLI for this path works end to end.
    let out = std::process::Command::new(xoq_bin())
        .args([
            "token",
            "--key",
            key_path.to_str().expect("utf8"),
            "--publish",
            "anon/echo",
            "--subscribe",
            "anon/echo",
            "--expires",
            "1h",
        ])
        .output()
        .expect("xoq token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let port = Arc::new(open(Some(token.clone())).await.expect("valid token"));
    assert_eq!(
        echo_exact(&port, Arc::new(b"with a token".to_vec())).await,
        b"with a token"
    );
    // The token never shows in what the client prints about itself.
    assert!(!format!("{port:?}").contains(&token));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_only_token_reads_but_cannot_write() {
    let dir = tempfile::tempdir().expect("dir");
    let key_path = dir.path().join("relay.jwk");
    let relay = relay(Some(&key_path)).await;
    let key = auth::load_or_create_key(&key_path).expect("key");
    let both = ["anon/ro".to_string()];
    let server_token = auth::mint(&key, &both, &both, None).expect("mint");
    let viewer_token = auth::mint(&key, &[], &both, None).expect("mint");
    let echo = xoq::serial::SerialServer::builder(xoq::serial::backend("sim:echo").expect("b"))
        .relay_writes(true)
        .start()
        .await
        .expect("server");
    let _bridge = serial_bridge(&echo, &root(&relay, Some(&server_token)), "ro").await;
    let port = RemoteSerial::connect(
        &address(&root(&relay, None), "ro", Some(&viewer_token)),
        SerialOptions::keep_settings(),
    )
    .await
    .unwrap_or_else(|e| panic!("a viewer connects: {e}"));
    let err = port.write(b"x").await.expect_err("cannot write");
    assert!(err.to_string().contains("--publish"), "{err}");
    assert_eq!(echo.stats().tx_bytes.load(Ordering::Relaxed), 0);
    relay.shutdown().await;
}

/// A node on a virtual bus that collects frames in the background.
fn collector(
    bus: &str,
) -> (
    Arc<std::sync::Mutex<Vec<TimedFrame>>>,
    tokio::task::JoinHandle<()>,
) {
    // The transmitter is kept: a node whose transmitter is dropped leaves the bus.
    let OpenCan { mut rx, tx, .. } = VirtualBackend::new(bus).open().expect("node");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let t = tokio::spawn(async move {
        let _tx = tx;
        while let Some(ev) = rx.recv().await {
            if let BusEvent::Frame(f) = ev
                && let Ok(mut v) = s.lock()
            {
                v.push(f);
            }
        }
    });
    (seen, t)
}

fn has_frame(seen: &std::sync::Mutex<Vec<TimedFrame>>, f: &CanFrame) -> bool {
    seen.lock()
        .map(|v| v.iter().any(|t| &t.frame == f))
        .unwrap_or(false)
}

fn write_frames(dir: &std::path::Path, frames: &str) -> String {
    let p = dir.join("off.txt");
    std::fs::write(&p, frames).expect("write");
    p.to_str().expect("utf8").to_string()
}

/// Spawn a `xoq can-client` that keeps sending `frame` every 20 ms.
fn commander(addr: &str, frame: &str, home: &std::path::Path) -> std::process::Child {
    std::process::Command::new(xoq_bin())
        .args([
            "can-client",
            addr,
            "--send",
            frame,
            "--every",
            "20",
            "--timeout",
            "600",
        ])
        .env("XOQ_OFFLINE", "1")
        .env("XOQ_HOME", home)
        .env(
            "XOQ_KEY",
            home.join(format!("{}.key", frame.replace('#', "_"))),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn can-client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_relay_writer_and_the_p2p_controller_trips_the_on_disconnect_frames() {
    let home = tempfile::tempdir().expect("home");
    let relay = relay(None).await;
    let root = root(&relay, None);
    let safe = CanFrame::from_candump("7FF#DEAD").expect("frame");
    let server = CanServer::builder(Box::new(VirtualBackend::new("t-kill-both")))
        .on_disconnect(vec![safe.clone()])
        .relay_writes(true)
        .start()
        .await
        .expect("server");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![xoq::wire::can::ALPN.to_vec()])
        .spawn()
        .await
        .expect("endpoint");
    let p2p = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep)
        .accept(xoq::wire::can::ALPN, server.clone())
        .spawn();
    let _bridge = can_bridge(&server, &root, "arm").await;
    let (seen, _t) = collector("t-kill-both");
    let mut relay_cmd = commander(&address(&root, "arm", None), "101#01", home.path());
    let mut p2p_cmd = commander(&p2p, "102#02", home.path());
    wait_until(Duration::from_secs(20), || server.controllers() == 2).await;
    relay_cmd.kill().expect("kill -9 the relay writer");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !has_frame(&seen, &safe),
        "the P2P controller is still there: no trip yet"
    );
    p2p_cmd.kill().expect("kill -9 the P2P controller");
    let killed = tokio::time::Instant::now();
    let _ = relay_cmd.wait();
    let _ = p2p_cmd.wait();
    // Both are gone once QUIC notices (6 s idle) and the relay writer falls silent (3 s).
    wait_until(Duration::from_secs(15), || has_frame(&seen, &safe)).await;
    assert!(
        killed.elapsed() >= Duration::from_secs(1),
        "not before the link was given up"
    );
    assert_eq!(server.stats().safety_trips.load(Ordering::Relaxed), 1);
    let _ = router.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_only_commander_trips_the_deadman() {
    let home = tempfile::tempdir().expect("home");
    let relay = relay(None).await;
    let root = root(&relay, None);
    let safe = CanFrame::from_candump("7FF#BEEF").expect("frame");
    let server = CanServer::builder(Box::new(VirtualBackend::new("t-kill-relay")))
        .on_disconnect(vec![safe.clone()])
        .deadman(Some(Duration::from_millis(300)))
        .relay_writes(true)
        .start()
        .await
        .expect("server");
    let _bridge = can_bridge(&server, &root, "arm").await;
    let (seen, _t) = collector("t-kill-relay");
    let mut cmd = commander(&address(&root, "arm", None), "101#01", home.path());
    wait_until(Duration::from_secs(20), || server.controllers() == 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !has_frame(&seen, &safe),
        "a live commander keeps the deadman fed"
    );
    cmd.kill().expect("kill -9");
    let _ = cmd.wait();
    // The relay keeps the dead client's broadcast for its own idle timeout (many seconds);
    // the deadman does not wait for it.
    wait_until(Duration::from_secs(3), || has_frame(&seen, &safe)).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_before_a_server_restart_never_reach_the_bus() {
    let home = tempfile::tempdir().expect("home");
    let relay = relay(None).await;
    let root = root(&relay, None);
    let key = home.path().join("server.key");
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        s.local_addr().expect("addr").port()
    };
    let relay_arg = relay.url().as_str().trim_end_matches('/').to_string();
    let start = || {
        spawn_cli(
            &[
                "can-server",
                "virtual:restart",
                "--offline",
                "--key",
                key.to_str().expect("utf8"),
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--relay",
                &relay_arg,
                "--moq",
                "anon/restart",
                "--moq-writes",
                "on",
            ],
            home.path(),
        )
    };
    let (mut server, lines) = start();
    let p2p = banner_value(&lines, "address")
        .into_iter()
        .find(|a| a.contains('@'))
        .expect("p2p address")
        .to_string();
    // The writer stays connected across the server's restart.
    let writer = RemoteCanBus::connect(&address(&root, "restart", None), CanOptions::new())
        .await
        .expect("relay writer");
    let observer = RemoteCanBus::connect(&p2p, CanOptions::new().ephemeral())
        .await
        .expect("P2P observer");
    for i in 0..50u8 {
        writer
            .send(&CanFrame::new(0x100, vec![1, i]).expect("frame"))
            .await
            .expect("send");
    }
    let mut before = 0;
    while let Ok(Some(f)) = observer.recv_timeout(Duration::from_millis(500)).await {
        if f.frame.data.first() == Some(&1) {
            before += 1;
        }
    }
    assert_eq!(
        before, 50,
        "the writer's commands reach the bus before the restart"
    );
    server.kill().expect("kill -9 the server");
    let _ = server.wait();
    let (mut server, _) = start();
    // The observer reconnects by itself (same address); the writer re-syncs with the new
    // server. Wait until a fresh command goes through.
    let fresh = CanFrame::new(0x100, vec![2, 0]).expect("frame");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut after = Vec::new();
    'outer: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fresh command after the restart"
        );
        let _ = writer.send(&fresh).await;
        while let Ok(Some(f)) = observer.recv_timeout(Duration::from_millis(200)).await {
            after.push(f.frame.clone());
            if f.frame == fresh {
                break 'outer;
            }
        }
    }
    // Drain a little more: nothing old may come late either.
    while let Ok(Some(f)) = observer.recv_timeout(Duration::from_millis(500)).await {
        after.push(f.frame);
    }
    assert!(
        after.iter().all(|f| f.data.first() != Some(&1)),
        "a command from before the restart reached the bus: {after:?}"
    );
    let _ = server.kill();
    let _ = server.wait();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_the_disable_frames_and_observers_see_the_motors_disabled() {
    let home = tempfile::tempdir().expect("home");
    let mut disable = String::new();
    for id in 1..=8 {
        disable.push_str(&format!("{id:03X}#FFFFFFFFFFFFFFFD\n"));
    }
    let file = write_frames(home.path(), &disable);
    let (mut server, lines) = spawn_cli(
        &[
            "can-server",
            "sim:openarm",
            "--offline",
            "--on-disconnect",
            &file,
        ],
        home.path(),
    );
    let addr = banner_value(&lines, "address")
        .into_iter()
        .find(|a| a.contains('@'))
        .expect("address")
        .to_string();
    let bus = RemoteCanBus::connect(
        &addr,
        CanOptions::new().reconnect(xoq::client::Reconnect {
            enabled: false,
            ..Default::default()
        }),
    )
    .await
    .expect("client");
    for id in 1..=8u32 {
        bus.send(&CanFrame::new(id, CMD_ENABLE.to_vec()).expect("frame"))
            .await
            .expect("enable");
    }
    let mut enabled = std::collections::HashSet::new();
    while enabled.len() < 8 {
        let f = bus
            .recv_timeout(Duration::from_secs(5))
            .await
            .expect("recv")
            .expect("enable replies");
        if (0x11..=0x18).contains(&f.frame.id) {
            enabled.insert(f.frame.id);
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let mut disabled = std::collections::HashSet::new();
    loop {
        match bus.recv_timeout(Duration::from_secs(5)).await {
            Ok(Some(f)) if (0x11..=0x18).contains(&f.frame.id) => {
                let model = xoq::wire::damiao::OPENARM_MOTORS[(f.frame.id - 0x11) as usize].2;
                let fb = decode_feedback(model, &f.frame.data).expect("feedback");
                if fb.state == STATE_DISABLED {
                    disabled.insert(f.frame.id);
                }
            }
            Ok(Some(_)) => {}
            // The stream ends after the replies.
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(
        disabled.len(),
        8,
        "every motor answered disabled before the stream ended"
    );
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        status.success(),
        "the server exits cleanly after a SIGTERM: {status}"
    );
    let _ = CMD_DISABLE;
}

/// A relay client learns that the server stopped from the server itself (`Ctl::Bye`), not
/// only later from the retracted broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_says_goodbye_to_relay_clients() {
    let relay = relay(None).await;
    let root = root(&relay, None);
    let server = CanServer::builder(Box::new(VirtualBackend::new("t-bye")))
        .on_disconnect(vec![CanFrame::new(0x1, vec![0]).expect("frame")])
        .start()
        .await
        .expect("server");
    let _bridge = can_bridge(&server, &root, "xoq-can-bye").await;
    let bus = RemoteCanBus::connect(
        &address(&root, "xoq-can-bye", None),
        CanOptions::new().ephemeral(),
    )
    .await
    .expect("client");
    assert!(bus.link().is_up());
    let mut link = bus.link().watch();
    server.stop(Duration::from_secs(1)).await;
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let xoq::client::LinkState::Reconnecting { reason, .. }
            | xoq::client::LinkState::Closed(reason) = &*link.borrow_and_update()
            {
                return reason.clone();
            }
            link.changed().await.expect("link watch");
        }
    })
    .await
    .expect("the client noticed the server stopping");
    assert!(reason.contains("stopping"), "told by the server: {reason}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_dated_commands_are_dropped_and_counted() {
    use xoq::wire::can::{ClientMsg, ServerMsg, VERSION};
    let server = CanServer::builder(Box::new(VirtualBackend::new("t-future")))
        .max_cmd_age(Some(Duration::from_millis(100)))
        .start()
        .await
        .expect("server");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![xoq::wire::can::ALPN.to_vec()])
        .spawn()
        .await
        .expect("endpoint");
    let addr: xoq::transport::Address = format!("{}@{}", ep.id(), ep.bound_sockets()[0])
        .parse()
        .expect("addr");
    let router = Router::builder(ep)
        .accept(xoq::wire::can::ALPN, server.clone())
        .spawn();
    let (seen, _t) = collector("t-future");
    // A raw client whose clock is 5 s ahead and who does not correct for it.
    let client = EndpointBuilder::new()
        .offline(true)
        .spawn()
        .await
        .expect("ep");
    let conn = xoq::transport::p2p::connect(&client, &addr, xoq::wire::can::ALPN, true)
        .await
        .expect("connect");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let mut out = BytesMut::new();
    ClientMsg::Hello {
        version: VERSION,
        interface: String::new(),
        receive_own: false,
        fd: true,
        filters: vec![],
    }
    .encode(&mut out);
    send.write_all(&out).await.expect("hello");
    let mut reader = xoq::transport::framed::FramedReader::new(recv);
    assert!(matches!(
        reader.next(ServerMsg::decode).await,
        Ok(Some(ServerMsg::Welcome { .. }))
    ));
    let now = xoq::device::can::now_us();
    let ahead = CanFrame::new(0x10, vec![1]).expect("f");
    let on_time = CanFrame::new(0x10, vec![2]).expect("f");
    out.clear();
    ClientMsg::Send(vec![
        TimedFrame {
            frame: ahead.clone(),
            timestamp_us: now + 5_000_000,
        },
        TimedFrame {
            frame: on_time.clone(),
            timestamp_us: now,
        },
    ])
    .encode(&mut out);
    send.write_all(&out).await.expect("send");
    wait_until(Duration::from_secs(5), || has_frame(&seen, &on_time)).await;
    assert!(
        !has_frame(&seen, &ahead),
        "a command dated 5 s ahead is not sent"
    );
    assert_eq!(server.stats().future_dropped.load(Ordering::Relaxed), 1);
    assert_eq!(server.stats().stale_dropped.load(Ordering::Relaxed), 0);
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_client_clock_is_corrected_for_the_age_check() {
    // The seam shifts the client's clock; its estimate of the server's clock makes the
    // commands it stamps come out right anyway.
    let home = tempfile::tempdir().expect("home");
    let server = CanServer::builder(Box::new(VirtualBackend::new("t-skew")))
        .max_cmd_age(Some(Duration::from_millis(200)))
        .start()
        .await
        .expect("server");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![xoq::wire::can::ALPN.to_vec()])
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep)
        .accept(xoq::wire::can::ALPN, server.clone())
        .spawn();
    let (seen, _t) = collector("t-skew");
    for skew in ["-5000000", "7000000"] {
        let out = std::process::Command::new(xoq_bin())
            .args(["can-client", &addr, "--send", "123#0102", "--count", "0"])
            .env("XOQ_OFFLINE", "1")
            .env("XOQ_HOME", home.path())
            .env("XOQ_CLOCK_SKEW_US", skew)
            .output()
            .expect("can-client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let want = CanFrame::from_candump("123#0102").expect("f");
    wait_until(Duration::from_secs(5), || {
        seen.lock()
            .map(|v| v.iter().filter(|t| t.frame == want).count())
            .unwrap_or(0)
            == 2
    })
    .await;
    let s = server.stats();
    assert_eq!(s.stale_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(s.future_dropped.load(Ordering::Relaxed), 0);
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_frames_on_a_classic_interface_go_as_classic_or_are_refused() {
    use xoq::wire::can::{ClientMsg, RefuseCode, ServerMsg, VERSION};
    let server = CanServer::builder(Box::new(VirtualBackend::classic("t-classic")))
        .start()
        .await
        .expect("server");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![xoq::wire::can::ALPN.to_vec()])
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep)
        .accept(xoq::wire::can::ALPN, server.clone())
        .spawn();
    let (seen, _t) = collector("t-classic");
    let bus = RemoteCanBus::connect(&addr, CanOptions::new().ephemeral())
        .await
        .expect("client");
    assert!(!bus.is_fd());
    let small = CanFrame::new_fd(0x22, vec![1, 2, 3], false).expect("fd");
    bus.send(&small).await.expect("a small FD frame is sent");
    let classic = CanFrame::new(0x22, vec![1, 2, 3]).expect("classic");
    wait_until(Duration::from_secs(5), || has_frame(&seen, &classic)).await;
    let big = CanFrame::new_fd(0x23, vec![7; 64], true).expect("fd 64");
    let err = bus
        .send(&big)
        .await
        .expect_err("a 64-byte FD frame cannot go");
    assert!(matches!(err, ClientError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("classic"), "{err}");
    bus.close().await;

    // The server refuses it too (a client that does not check), with the code for it.
    let client = EndpointBuilder::new()
        .offline(true)
        .spawn()
        .await
        .expect("ep");
    let a: xoq::transport::Address = addr.parse().expect("addr");
    let conn = xoq::transport::p2p::connect(&client, &a, xoq::wire::can::ALPN, true)
        .await
        .expect("connect");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let mut out = BytesMut::new();
    ClientMsg::Hello {
        version: VERSION,
        interface: String::new(),
        receive_own: false,
        fd: true,
        filters: vec![],
    }
    .encode(&mut out);
    ClientMsg::Send(vec![TimedFrame {
        frame: big.clone(),
        timestamp_us: 0,
    }])
    .encode(&mut out);
    send.write_all(&out).await.expect("send");
    let mut reader = xoq::transport::framed::FramedReader::new(recv);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), reader.next(ServerMsg::decode))
            .await
            .expect("a reply in time")
        {
            Ok(Some(ServerMsg::Error {
                code,
                count,
                message,
            })) => {
                assert_eq!((code, count), (RefuseCode::Unsupported.to_code(), 1));
                assert!(message.contains("classic"), "{message}");
                break;
            }
            Ok(Some(_)) => continue,
            other => panic!("no error message: {other:?}"),
        }
    }
    assert_eq!(server.stats().fd_refused.load(Ordering::Relaxed), 1);
    // (The client sent the small FD frame as classic itself; the server would have too.)
    assert!(
        !seen
            .lock()
            .expect("seen")
            .iter()
            .any(|t| t.frame.id == 0x23)
    );
    let _ = router.shutdown().await;
    let _ = SecretKey::generate();
}

/// The CAN server above a SocketCAN interface that misbehaves, through the backend's
/// error-injection seam (a fake kernel on a socketpair: this machine has no SocketCAN).
#[cfg(target_os = "linux")]
mod socketcan_faults {
    use super::*;
    use xoq::device::can::socketcan::fake::FakeKernel;
    use xoq::device::can::socketcan::{FaultPlan, SocketCanBackend};
    use xoq::wire::can::BusState;

    async fn served(
        kernel: &Arc<FakeKernel>,
        plan: &Arc<FaultPlan>,
        max_age: Option<Duration>,
        safe: &CanFrame,
    ) -> (CanServer, Router, String) {
        let backend = SocketCanBackend::new("can9", false)
            .with_opener(kernel.clone())
            .with_faults(plan.clone());
        let server = CanServer::builder(Box::new(backend))
            .on_disconnect(vec![safe.clone()])
            .max_cmd_age(max_age)
            .start()
            .await
            .expect("server");
        let ep = EndpointBuilder::new()
            .offline(true)
            .alpns(vec![xoq::wire::can::ALPN.to_vec()])
            .spawn()
            .await
            .expect("endpoint");
        let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
        let router = Router::builder(ep)
            .accept(xoq::wire::can::ALPN, server.clone())
            .spawn();
        (server, router, addr)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bus_nobody_acks_is_retried_without_spinning_and_safety_frames_go_first() {
        let kernel = FakeKernel::new();
        let plan = FaultPlan::new();
        let safe = CanFrame::from_candump("001#FFFFFFFFFFFFFFFD").expect("frame");
        let (server, router, addr) =
            served(&kernel, &plan, Some(Duration::from_millis(300)), &safe).await;
        let bus = RemoteCanBus::connect(&addr, CanOptions::new().ephemeral())
            .await
            .expect("client");
        // No node acknowledges: every write fails with ENOBUFS for a while.
        plan.fail_writes(12, libc::ENOBUFS);
        let cmd = CanFrame::new(0x101, vec![1]).expect("frame");
        bus.send(&cmd).await.expect("queued");
        // The client leaves while its command is stuck: the safety frame goes next, the stuck
        // command (stale by then) never does.
        bus.close().await;
        let first = tokio::time::timeout(Duration::from_secs(10), kernel.read_frame())
            .await
            .expect("a frame reached the bus")
            .expect("read");
        assert_eq!(first, safe, "the safety frame jumped the queue");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = server.stats();
        assert!(
            s.tx_busy.load(Ordering::Relaxed) >= 1,
            "busy sends were retried"
        );
        // Back-off steps, not a spin: a handful of attempts over the whole episode.
        assert!(
            plan.write_attempts() <= 30,
            "{} write attempts",
            plan.write_attempts()
        );
        assert_eq!(
            s.tx_frames.load(Ordering::Relaxed),
            1,
            "only the safety frame went out"
        );
        let _ = router.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_error_is_reported_and_the_interface_comes_back() {
        let kernel = FakeKernel::new();
        let plan = FaultPlan::new();
        let safe = CanFrame::from_candump("001#FFFFFFFFFFFFFFFD").expect("frame");
        let (_server, router, addr) = served(&kernel, &plan, None, &safe).await;
        let bus = RemoteCanBus::connect(&addr, CanOptions::new().ephemeral())
            .await
            .expect("client");
        // The interface goes away (bus-off needing a restart, `ip link set down`).
        plan.fail_reads(1, libc::ENETDOWN);
        kernel
            .deliver(&CanFrame::new(0x5, vec![1]).expect("f"))
            .await
            .expect("deliver");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while bus.state() != BusState::Down {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the client was not told"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Reopened with back-off; frames flow again both ways.
        kernel.wait_opens(2).await;
        while bus.state() != BusState::ErrorActive {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the interface did not come back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let f = CanFrame::new(0x6, vec![2]).expect("f");
        kernel.deliver(&f).await.expect("deliver");
        let got = bus
            .recv_timeout(Duration::from_secs(5))
            .await
            .expect("recv")
            .expect("a frame after the reopen");
        assert_eq!(got.frame, f);
        let out = CanFrame::new(0x7, vec![3]).expect("f");
        bus.send(&out).await.expect("send");
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), kernel.read_frame())
                .await
                .expect("sent in time")
                .expect("read"),
            out
        );
        let _ = router.shutdown().await;
    }
}

/// A deadman with nothing to send when it trips would protect nothing: refused at start.
#[tokio::test]
async fn a_deadman_without_on_disconnect_frames_is_refused() {
    let started = CanServer::builder(Box::new(VirtualBackend::new("t-deadman-cfg")))
        .deadman(Some(Duration::from_millis(100)))
        .start()
        .await;
    let Err(err) = started else {
        panic!("a deadman alone is a configuration error");
    };
    assert!(err.to_string().contains("on-disconnect"), "{err}");
}

/// The old cleartext relay write token is refused with a pointer to relay tokens, instead of
/// being accepted and ignored.
#[test]
fn the_cleartext_moq_cmd_token_is_refused() {
    let home = tempfile::tempdir().expect("home");
    let out = std::process::Command::new(xoq_bin())
        .args([
            "can-server",
            "virtual:t-token",
            "--offline",
            "--moq-cmd-token",
            "secret",
        ])
        .env("XOQ_HOME", home.path())
        .output()
        .expect("run xoq");
    assert!(!out.status.success(), "the server must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth-key"), "points to relay tokens: {err}");
    assert!(!err.contains("secret"), "the token is not echoed: {err}");
}
