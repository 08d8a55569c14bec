//! End-to-end tests of the CAN bridge: real iroh, the real relay, the in-process virtual bus
//! and the Damiao simulator, offline on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use iroh::SecretKey;
use iroh::protocol::Router;
use xoq::client::can::{CanOptions, RemoteCanBus};
use xoq::device::can::{BusEvent, CanBackend, OpenCan, SimCanBackend, VirtualBackend};
use xoq::relay::RelayConfig;
use xoq::server::can::{CanServer, CanServerBuilder};
use xoq::transport::RelayUrl;
use xoq::transport::moq::{MoqSession, Redial};
use xoq::transport::p2p::{Allowlist, EndpointBuilder};
use xoq::wire::can::{ALPN, CanFrame, ClientMsg, ServerMsg, TimedFrame, VERSION};
use xoq::wire::damiao::{self, CMD_DISABLE, CMD_ENABLE, MotorModel, decode_feedback, encode_mit};

struct Served {
    server: CanServer,
    router: Router,
    addr: String,
}

async fn serve(builder: CanServerBuilder, allow: Option<Vec<iroh::EndpointId>>) -> Served {
    let server = builder.start().await.expect("server");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![ALPN.to_vec()])
        .allowlist(allow.map(Allowlist::new))
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep).accept(ALPN, server.clone()).spawn();
    Served {
        server,
        router,
        addr,
    }
}

fn opts() -> CanOptions {
    CanOptions::new().offline(true).key(SecretKey::generate())
}

/// A node on the virtual bus, as another device would be.
fn node(bus: &str) -> OpenCan {
    VirtualBackend::new(bus).open().expect("node")
}

/// Poll `cond` until it holds; fail after `limit`.
async fn wait_until(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_frame(n: &mut OpenCan) -> TimedFrame {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), n.rx.recv()).await {
            Ok(Some(BusEvent::Frame(f))) => return f,
            Ok(Some(BusEvent::State(_))) => continue,
            other => panic!("no frame on the bus: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_receive_every_frame_in_order() {
    let s = serve(
        CanServer::builder(Box::new(VirtualBackend::new("t-two"))),
        None,
    )
    .await;
    let a = RemoteCanBus::connect(&s.addr, opts()).await.expect("a");
    let b = RemoteCanBus::connect(&s.addr, opts()).await.expect("b");
    let mut dev = node("t-two");
    const N: u32 = 2000;
    for i in 0..N {
        let f = if i % 2 == 0 {
            CanFrame::new(i % 0x7FF, i.to_be_bytes().to_vec()).expect("classic")
        } else {
            CanFrame::new_fd(0x1000_0000 + i, vec![(i % 251) as u8; 64], true).expect("fd")
        };
        dev.tx.send(&f).await.expect("bus send");
    }
    for (name, bus) in [("a", &a), ("b", &b)] {
        for i in 0..N {
            let f = bus
                .recv_timeout(Duration::from_secs(10))
                .await
                .expect("recv")
                .unwrap_or_else(|| panic!("{name} missed frame {i}"));
            if i % 2 == 0 {
                assert_eq!(f.frame.data[..], i.to_be_bytes(), "{name}: order at {i}");
            } else {
                assert!(
                    f.frame.fd && f.frame.brs && f.frame.extended,
                    "{name}: FD flags kept"
                );
                assert_eq!(f.frame.id, 0x1000_0000 + i);
            }
            assert!(f.timestamp_us > 0, "receive timestamps travel with frames");
        }
    }
    // A client's frame reaches the bus and the other client, not itself.
    let cmd = CanFrame::new(0x321, vec![9, 9]).expect("cmd");
    a.send(&cmd).await.expect("send");
    assert_eq!(next_frame(&mut dev).await.frame, cmd);
    let got = b
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("recv")
        .expect("b sees a's frame");
    assert_eq!(got.frame, cmd);
    assert!(
        a.recv_timeout(Duration::from_millis(200))
            .await
            .expect("recv")
            .is_none(),
        "no echo of own frames by default"
    );
    let _ = s.router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_own_and_filters() {
    let s = serve(
        CanServer::builder(Box::new(VirtualBackend::new("t-own"))),
        None,
    )
    .await;
    let filtered = xoq::wire::can::Filter {
        id: 0x100,
        mask: 0x700,
        extended: false,
    };
    let a = RemoteCanBus::connect(&s.addr, opts().receive_own(true).filters(vec![filtered]))
        .await
        .expect("a");
    let mut dev = node("t-own");
    dev.tx
        .send(&CanFrame::new(0x200, vec![1]).expect("f"))
        .await
        .expect("send");
    dev.tx
        .send(&CanFrame::new(0x123, vec![2]).expect("f"))
        .await
        .expect("send");
    let f = a
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("recv")
        .expect("frame");
    assert_eq!(f.frame.id, 0x123, "0x200 is filtered out on the server");
    a.send(&CanFrame::new(0x1AA, vec![3]).expect("f"))
        .await
        .expect("send");
    let own = a
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("recv")
        .expect("own frame");
    assert_eq!(own.frame.id, 0x1AA);
    let _ = s.router.shutdown().await;
}

/// A relay, and a CAN server on virtual bus `bus` publishing broadcast `path` through it.
struct RelayBridge {
    relay: xoq::relay::RelayHandle,
    root: url::Url,
    server: CanServer,
    bridge: tokio::task::JoinHandle<()>,
    addr: String,
}

async fn relay_bridge(bus: &str, path: &str) -> RelayBridge {
    let relay = RelayConfig::ephemeral()
        .expect("port")
        .start()
        .await
        .expect("relay");
    let root = relay.url().join("anon").expect("url");
    let server = CanServer::builder(Box::new(VirtualBackend::new(bus)))
        .relay_writes(true)
        .start()
        .await
        .expect("server");
    let session = MoqSession::connect(&RelayUrl::from_url(root.clone()), Redial::Forever)
        .await
        .expect("session");
    let srv = server.clone();
    let name = path.to_string();
    let bridge = tokio::spawn(async move {
        let _ = srv.serve_moq(&session, &name).await;
    });
    let addr = format!("{}/{path}", root.as_str().trim_end_matches('/'));
    RelayBridge {
        relay,
        root,
        server,
        bridge,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_state_and_cmd_through_the_relay() {
    let RelayBridge {
        relay,
        bridge,
        addr,
        ..
    } = relay_bridge("t-moq", "xoq-can-t").await;
    let bus = RemoteCanBus::connect(&addr, CanOptions::new())
        .await
        .expect("MoQ client");
    let mut dev = node("t-moq");
    let f = CanFrame::new(0x42, vec![1, 2, 3, 4]).expect("f");
    dev.tx.send(&f).await.expect("send");
    let got = bus
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("recv")
        .expect("state frame");
    assert_eq!(got.frame, f);
    let cmd = CanFrame::new_fd(0x43, vec![5; 12], false).expect("fd cmd");
    bus.send(&cmd).await.expect("cmd");
    assert_eq!(
        next_frame(&mut dev).await.frame,
        cmd,
        "MoQ cmd reached the bus"
    );
    bus.close().await;
    bridge.abort();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_moq_writer_is_read_at_once() {
    let RelayBridge {
        relay,
        root,
        server,
        bridge,
        addr,
    } = relay_bridge("t-writers", "xoq-can-w").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            RemoteCanBus::connect(&addr, CanOptions::new())
                .await
                .expect("MoQ client"),
        );
    }
    // A raw writer that never answers the server's sync: nothing it writes is forwarded
    // (it could be a replay of old commands).
    let raw = MoqSession::connect(&RelayUrl::from_url(root.clone()), Redial::Never)
        .await
        .expect("raw");
    let (_bc, mut w) = raw
        .publish_tracks("xoq-can-w/cmd/rawwriter", &["data"])
        .expect("raw cmd");
    let mut raw_cmd = w.pop().expect("track");
    assert!(raw_cmd.wait_subscribed(Duration::from_secs(5)).await);

    let mut dev = node("t-writers");
    for round in 0..10u8 {
        for (i, c) in clients.iter().enumerate() {
            let f = CanFrame::new(0x100 + i as u32, vec![round]).expect("frame");
            c.send(&f).await.expect("send");
        }
        let mut batch = BytesMut::from(&[0u8][..]);
        xoq::wire::can::encode_track_frame(
            &[TimedFrame {
                frame: CanFrame::new(0x1FF, vec![round]).expect("frame"),
                timestamp_us: 0,
            }],
            &mut batch,
        );
        raw_cmd.write(batch.freeze()).expect("raw write");
    }
    let mut seen: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    for _ in 0..30 {
        let f = next_frame(&mut dev).await.frame;
        seen.entry(f.id).or_default().push(f.data[0]);
    }
    // The server read every frame of the writer that never synced, and dropped each one
    // (counted, never submitted to the bus).
    let replay_dropped = || {
        server
            .relay_stats()
            .replay_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_until(
        Duration::from_secs(10),
        "the unsynced writer's frames to be read",
        || replay_dropped() >= 10,
    )
    .await;
    assert_eq!(
        replay_dropped(),
        10,
        "nothing from the writer that never synced"
    );
    for id in [0x100, 0x101, 0x102] {
        assert_eq!(
            seen.get(&id).cloned().unwrap_or_default(),
            (0..10).collect::<Vec<u8>>(),
            "every frame of writer {id:#x}, in order"
        );
    }

    // A writer leaving does not disturb the others. Its frame is also the next one on the
    // bus: nothing of the unsynced writer is queued before it.
    let first = clients.remove(0);
    first.close().await;
    let f = CanFrame::new(0x101, vec![99]).expect("frame");
    clients[0].send(&f).await.expect("send");
    assert_eq!(next_frame(&mut dev).await.frame, f);
    for c in clients {
        c.close().await;
    }
    raw.close().await;
    bridge.abort();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_writers_per_path_are_bounded() {
    use xoq::transport::moq::MAX_WRITERS;
    let RelayBridge {
        relay,
        root,
        bridge,
        ..
    } = relay_bridge("t-cap", "xoq-can-cap").await;
    // One client announcing more writer names than the server reads.
    let greedy = MoqSession::connect(&RelayUrl::from_url(root.clone()), Redial::Never)
        .await
        .expect("client");
    let mut writers = Vec::new();
    for i in 0..MAX_WRITERS + 6 {
        let (bc, mut w) = greedy
            .publish_tracks(&format!("xoq-can-cap/cmd/w{i}"), &["data"])
            .expect("publish");
        writers.push((bc, w.pop().expect("track")));
    }
    let mut subscribed = 0;
    for (_, w) in &writers {
        if w.wait_subscribed(Duration::from_millis(1500)).await {
            subscribed += 1;
        }
    }
    assert_eq!(
        subscribed, MAX_WRITERS,
        "the server reads at most MAX_WRITERS writers"
    );
    greedy.close().await;
    bridge.abort();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damiao_motor_follows_mit_commands_through_the_bridge() {
    let sim = SimCanBackend::openarm("sim:openarm");
    let motors = sim.bus();
    let s = serve(CanServer::builder(Box::new(sim)), None).await;
    let bus = RemoteCanBus::connect(&s.addr, opts()).await.expect("bus");
    let model = MotorModel::DM4310;
    let feedback = |f: &TimedFrame| decode_feedback(model, &f.frame.data).expect("feedback");
    // Motor 7 is a DM4310 on the OpenArm.
    bus.send(&CanFrame::new(0x07, CMD_ENABLE.to_vec()).expect("f"))
        .await
        .expect("enable");
    let f = bus
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("recv")
        .expect("reply");
    assert_eq!(f.frame.id, 0x17);
    assert_eq!(feedback(&f).state, damiao::STATE_ENABLED);
    let mut last = 0.0f32;
    for _ in 0..500 {
        bus.send(
            &CanFrame::new(0x07, encode_mit(model, 1.0, 0.0, 30.0, 1.0, 0.0).to_vec())
                .expect("mit"),
        )
        .await
        .expect("mit");
        let f = bus
            .recv_timeout(Duration::from_secs(5))
            .await
            .expect("recv")
            .expect("reply");
        last = feedback(&f).position;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        (last - 1.0).abs() < 0.05,
        "position converged to the target: {last}"
    );
    bus.send(&CanFrame::new(0x07, CMD_DISABLE.to_vec()).expect("f"))
        .await
        .expect("disable");
    let f = bus
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("recv")
        .expect("reply");
    assert_eq!(feedback(&f).state, damiao::STATE_DISABLED);
    // Disabled: a new target is answered but not followed.
    for _ in 0..50 {
        bus.send(
            &CanFrame::new(0x07, encode_mit(model, -1.0, 0.0, 30.0, 1.0, 0.0).to_vec())
                .expect("mit"),
        )
        .await
        .expect("mit");
        let _ = bus
            .recv_timeout(Duration::from_secs(5))
            .await
            .expect("recv")
            .expect("reply");
    }
    let state = motors.lock().expect("lock").motor(0x07).expect("motor");
    assert!(
        state.position > 0.5,
        "a disabled motor does not track: {}",
        state.position
    );
    // Malformed frames are ignored and counted, never answered.
    let before = motors.lock().expect("lock").stats().malformed;
    bus.send(&CanFrame::new(0x07, vec![1, 2, 3]).expect("short"))
        .await
        .expect("send");
    assert!(
        bus.recv_timeout(Duration::from_millis(300))
            .await
            .expect("recv")
            .is_none()
    );
    assert_eq!(motors.lock().expect("lock").stats().malformed, before + 1);
    let _ = s.router.shutdown().await;
}

fn disable_all() -> Vec<CanFrame> {
    (1..=8u32)
        .map(|id| CanFrame::new(id, CMD_DISABLE.to_vec()).expect("disable"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_client_leaving_sends_the_on_disconnect_frames() {
    let s = serve(
        CanServer::builder(Box::new(VirtualBackend::new("t-leave"))).on_disconnect(disable_all()),
        None,
    )
    .await;
    let mut dev = node("t-leave");
    let bus = RemoteCanBus::connect(&s.addr, opts()).await.expect("bus");
    let cmd = CanFrame::new(
        0x01,
        encode_mit(MotorModel::DM8009, 0.5, 0.0, 10.0, 1.0, 0.0).to_vec(),
    )
    .expect("mit");
    bus.send(&cmd).await.expect("send");
    assert_eq!(next_frame(&mut dev).await.frame, cmd);
    bus.close().await;
    for id in 1..=8u32 {
        let f = next_frame(&mut dev).await;
        assert_eq!(
            (f.frame.id, &f.frame.data[..]),
            (id, &CMD_DISABLE[..]),
            "disable motor {id}"
        );
    }
    assert_eq!(
        s.server
            .stats()
            .safety_trips
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let _ = s.router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadman_trips_when_the_controlling_client_is_killed() {
    let home = tempfile::tempdir().expect("home");
    let s = serve(
        CanServer::builder(Box::new(VirtualBackend::new("t-kill")))
            .on_disconnect(disable_all())
            .deadman(Some(Duration::from_millis(200))),
        None,
    )
    .await;
    let mut dev = node("t-kill");
    let mut child = std::process::Command::new(common::xoq_bin())
        .args(["can-client", &s.addr, "--send", "001#0102030405060708"])
        .env("XOQ_OFFLINE", "1")
        .env("XOQ_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn can-client");
    let f = next_frame(&mut dev).await;
    assert_eq!(f.frame.data[..], [1, 2, 3, 4, 5, 6, 7, 8]);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // The link is silent, not closed: only the deadman can notice, well before QUIC's idle
    // timeout (6 s).
    let start = std::time::Instant::now();
    let f = next_frame(&mut dev).await;
    assert_eq!((f.frame.id, &f.frame.data[..]), (1, &CMD_DISABLE[..]));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "deadman, not the idle timeout: {:?}",
        start.elapsed()
    );
    let _ = s.router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_commands_are_dropped_not_sent_late() {
    let s = serve(
        CanServer::builder(Box::new(VirtualBackend::new("t-stale")))
            .max_cmd_age(Some(Duration::from_millis(50))),
        None,
    )
    .await;
    let mut dev = node("t-stale");
    // A raw client, to put a one-second-old send time on a command.
    let addr: xoq::transport::Address = s.addr.parse().expect("addr");
    let ep = xoq::transport::p2p::client_endpoint(None, &addr, true)
        .await
        .expect("ep");
    let conn = xoq::transport::p2p::connect(&ep, &addr, ALPN, true)
        .await
        .expect("conn");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let mut reader = xoq::transport::framed::FramedReader::new(recv);
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
    assert!(matches!(
        reader.next(ServerMsg::decode).await,
        Ok(Some(ServerMsg::Welcome { .. }))
    ));
    let now = xoq::device::can::now_us();
    let stale = TimedFrame {
        frame: CanFrame::new(0x01, vec![0xAA]).expect("f"),
        timestamp_us: now - 1_000_000,
    };
    let fresh = TimedFrame {
        frame: CanFrame::new(0x01, vec![0xBB]).expect("f"),
        timestamp_us: now,
    };
    out.clear();
    ClientMsg::Send(vec![stale, fresh]).encode(&mut out);
    send.write_all(&out).await.expect("send");
    let f = next_frame(&mut dev).await;
    assert_eq!(
        f.frame.data[..],
        [0xBB],
        "only the fresh command reaches the bus"
    );
    assert_eq!(
        s.server
            .stats()
            .stale_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    conn.close(0u32.into(), b"done");
    ep.close().await;
    let _ = s.router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_refuses_an_unlisted_can_client() {
    let allowed = SecretKey::generate();
    let s = serve(
        CanServer::builder(Box::new(VirtualBackend::new("t-allow"))),
        Some(vec![allowed.public()]),
    )
    .await;
    let err = RemoteCanBus::connect(&s.addr, opts())
        .await
        .expect_err("unlisted");
    assert!(err.to_string().contains("not allowed"), "{err}");
    let ok = RemoteCanBus::connect(&s.addr, CanOptions::new().offline(true).key(allowed))
        .await
        .expect("listed client connects");
    ok.close().await;
    let _ = s.router.shutdown().await;
}

#[test]
fn can_client_cli_prints_candump_lines_from_the_fake_server() {
    let home = tempfile::tempdir().expect("home");
    let (mut server, lines) = common::spawn_cli(&["fake-can-server", "--offline"], home.path());
    let addr = common::banner_value(&lines, "address")
        .into_iter()
        .find(|a| a.contains("@127.0.0.1:"))
        .expect("address")
        .to_string();
    let out = std::process::Command::new(common::xoq_bin())
        .args([
            "can-client",
            &addr,
            "--send",
            "001#FFFFFFFFFFFFFFFC",
            "--count",
            "1",
            "--timeout",
            "5",
        ])
        .env("XOQ_OFFLINE", "1")
        .env("XOQ_HOME", home.path())
        .output()
        .expect("can-client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(" sim:openarm 011#"),
        "feedback from motor 1 printed candump-style: {stdout}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[allow(dead_code)]
fn _assert_send(_: Arc<RemoteCanBus>) {}

/// `xoq can-bridge` against a real SocketCAN interface. Needs root and the vcan kernel
/// module, which these machines lack (`cargo test -- --ignored` where they have it; the
/// SocketCAN frame conversion is unit-tested in xoq-device).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the vcan kernel module (modprobe vcan) and root"]
async fn can_bridge_to_vcan() {
    let made = std::process::Command::new("ip")
        .args(["link", "add", "dev", "xoqvcan0", "type", "vcan"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        made || std::path::Path::new("/sys/class/net/xoqvcan0").exists(),
        "cannot create a vcan interface: modprobe vcan, and run as root"
    );
    let _ = std::process::Command::new("ip")
        .args(["link", "set", "up", "xoqvcan0"])
        .status();
    let home = tempfile::tempdir().expect("home");
    let s = serve(
        CanServer::builder(Box::new(VirtualBackend::new("t-vcan"))),
        None,
    )
    .await;
    let mut dev = node("t-vcan");
    let (mut bridge, _) =
        common::spawn_cli(&["can-bridge", &s.addr, "--to", "xoqvcan0"], home.path());
    // Local program -> remote bus.
    let mut local = xoq::device::can::backend("xoqvcan0")
        .expect("backend")
        .open()
        .expect("vcan");
    let f = CanFrame::new(0x55, vec![1, 2]).expect("f");
    local.tx.send(&f).await.expect("local send");
    assert_eq!(next_frame(&mut dev).await.frame, f);
    // Remote bus -> local program.
    let g = CanFrame::new(0x56, vec![3]).expect("g");
    dev.tx.send(&g).await.expect("remote send");
    assert_eq!(next_frame(&mut local).await.frame, g);
    let _ = bridge.kill();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "xoqvcan0"])
        .status();
    let _ = s.router.shutdown().await;
}
