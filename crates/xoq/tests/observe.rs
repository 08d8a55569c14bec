//! Read-only observers of serial ports and CAN buses, end to end: real iroh (and the real
//! relay), the simulated SO-101 bus, the echo device and the in-process CAN bus, offline on
//! loopback. An observer sees both directions with capture stamps, can never write, never
//! counts as owner or controller, is refused by the allowlist like anyone, and loses its own
//! oldest data (counted) rather than slowing the device or the controller.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use iroh::protocol::Router;
use iroh::{EndpointId, SecretKey};
use xoq::can::{CanObserver, CanOptions, CanServer, CanServerBuilder, RemoteCanBus};
use xoq::client::ClientError;
use xoq::device::can::{BusEvent, CanBackend, OpenCan, VirtualBackend, now_us};
use xoq::relay::RelayConfig;
use xoq::serial::{
    Direction, ObserveOptions, RemoteSerial, SerialObserver, SerialOptions, SerialServer,
};
use xoq::transport::RelayUrl;
use xoq::transport::framed::FramedReader;
use xoq::transport::moq::{MoqSession, Redial};
use xoq::transport::p2p::{self, Allowlist, EndpointBuilder};
use xoq::wire::can::{CanFrame, TimedFrame};
use xoq::wire::observe::{self, ClientMsg, ServerMsg};
use xoq::wire::{RefuseCode, feetech};

const PATIENCE: Duration = Duration::from_secs(10);

async fn endpoint(alpns: Vec<Vec<u8>>, allow: Option<Vec<EndpointId>>) -> iroh::Endpoint {
    EndpointBuilder::new()
        .offline(true)
        .alpns(alpns)
        .allowlist(allow.map(Allowlist::new))
        .spawn()
        .await
        .expect("endpoint")
}

fn address(ep: &iroh::Endpoint) -> String {
    format!("{}@{}", ep.id(), ep.bound_sockets()[0])
}

async fn serve_serial(
    device: &str,
    allow: Option<Vec<EndpointId>>,
) -> (SerialServer, Router, String) {
    let server = SerialServer::builder(xoq::serial::backend(device).expect("backend"))
        .start()
        .await
        .expect("server");
    let alpn = xoq::wire::serial::ALPN;
    let ep = endpoint(vec![alpn.to_vec(), observe::SERIAL_ALPN.to_vec()], allow).await;
    let addr = address(&ep);
    let router = Router::builder(ep)
        .accept(alpn, server.clone())
        .accept(observe::SERIAL_ALPN, server.clone())
        .spawn();
    (server, router, addr)
}

async fn serve_can(
    builder: CanServerBuilder,
    allow: Option<Vec<EndpointId>>,
) -> (CanServer, Router, String) {
    let server = builder.start().await.expect("server");
    let alpn = xoq::wire::can::ALPN;
    let ep = endpoint(vec![alpn.to_vec(), observe::CAN_ALPN.to_vec()], allow).await;
    let addr = address(&ep);
    let router = Router::builder(ep)
        .accept(alpn, server.clone())
        .accept(observe::CAN_ALPN, server.clone())
        .spawn();
    (server, router, addr)
}

fn observer_opts(key: &SecretKey) -> ObserveOptions {
    ObserveOptions::new()
        .offline(true)
        .key(key.clone())
        .client_name("test")
}

fn controller_opts(key: &SecretKey) -> SerialOptions {
    SerialOptions::new(1_000_000)
        .offline(true)
        .key(key.clone())
        .client_name("test")
}

/// Read observations until both directions hold at least the given byte counts; returns the
/// bytes and stamps of each direction.
async fn collect(
    obs: &mut SerialObserver,
    to_device: usize,
    from_device: usize,
) -> ((Vec<u8>, Vec<u64>), (Vec<u8>, Vec<u64>)) {
    let (mut tx, mut rx) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    while tx.0.len() < to_device || rx.0.len() < from_device {
        let o = tokio::time::timeout(PATIENCE, obs.next())
            .await
            .expect("observations keep coming")
            .expect("observation");
        let side = match o.direction {
            Direction::ToDevice => &mut tx,
            Direction::FromDevice => &mut rx,
        };
        side.0.extend_from_slice(&o.data);
        side.1.push(o.stamp_us);
    }
    (tx, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_observer_sees_both_directions_stamped_and_never_owns_the_port() {
    let (server, router, addr) = serve_serial("sim:so101", None).await;
    let mut obs = SerialObserver::connect(&addr, observer_opts(&SecretKey::generate()))
        .await
        .expect("observer");
    assert_eq!(obs.device(), "sim:so101");
    assert_eq!(
        (server.observers(), server.controller()),
        (1, None),
        "an observer owns nothing"
    );

    // A controller connects while the observer is there; a second one is still refused.
    let owner = SecretKey::generate();
    let port = RemoteSerial::connect(&addr, controller_opts(&owner))
        .await
        .expect("a controller connects beside an observer");
    assert_eq!(server.controller(), Some(owner.public()));
    let err = RemoteSerial::connect(&addr, controller_opts(&SecretKey::generate()))
        .await
        .expect_err("a second controller");
    assert!(
        matches!(
            err,
            ClientError::Refused {
                code: RefuseCode::Busy,
                ..
            }
        ),
        "{err}"
    );

    // One transaction: a PING of servo 1, and its status packet.
    let ping = feetech::instruction(1, feetech::PING, &[]);
    let t0 = now_us();
    port.write(&ping).await.expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    while reply.len() < 6 {
        let n = tokio::time::timeout(PATIENCE, port.read(&mut buf))
            .await
            .expect("reply")
            .expect("read");
        reply.extend_from_slice(&buf[..n]);
    }
    let t1 = now_us();
    assert_eq!(reply, [0xFF, 0xFF, 0x01, 0x02, 0x00, 0xFC]);

    let ((sent, sent_at), (got, got_at)) = collect(&mut obs, ping.len(), reply.len()).await;
    assert_eq!(sent, ping, "host to device, exactly");
    assert_eq!(got, reply, "device to host, exactly");
    for t in sent_at.iter().chain(&got_at) {
        assert!(
            (t0..=t1).contains(t),
            "stamp {t} within the transaction [{t0}, {t1}]"
        );
    }
    assert!(
        sent_at.last() <= got_at.first(),
        "the request went out before the answer came"
    );
    assert_eq!(obs.dropped(), 0);

    // The controller leaves; the port is free again though the observer stays.
    port.close().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.controller().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the port was released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.observers(), 1);
    let again = RemoteSerial::connect(&addr, controller_opts(&SecretKey::generate()))
        .await
        .expect("a new controller takes the free port");
    again.close().await;
    obs.close().await;
    let _ = router.shutdown().await;
}

/// A raw observer session: dial, hello, welcome.
async fn raw_observer(
    addr: &str,
    alpn: &[u8],
) -> (
    iroh::Endpoint,
    iroh::endpoint::Connection,
    iroh::endpoint::SendStream,
    FramedReader<iroh::endpoint::RecvStream>,
) {
    let a: xoq::transport::Address = addr.parse().expect("address");
    let ep = p2p::client_endpoint(None, &a, true).await.expect("ep");
    let conn = p2p::connect(&ep, &a, alpn, true).await.expect("conn");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    let mut out = BytesMut::new();
    ClientMsg::Hello {
        version: observe::VERSION,
        client: "raw".into(),
    }
    .encode(&mut out);
    send.write_all(&out).await.expect("hello");
    let mut reader = FramedReader::new(recv);
    let welcome = reader.next(ServerMsg::decode).await.expect("welcome");
    assert!(
        matches!(welcome, Some(ServerMsg::Welcome { .. })),
        "{welcome:?}"
    );
    (ep, conn, send, reader)
}

/// After a forbidden message, the server's last word is a refusal saying why; then the
/// stream ends.
async fn expect_read_only_refusal(reader: &mut FramedReader<iroh::endpoint::RecvStream>) {
    loop {
        match tokio::time::timeout(PATIENCE, reader.next(ServerMsg::decode))
            .await
            .expect("the server answers")
        {
            Ok(Some(ServerMsg::Refused { code, message })) => {
                assert_eq!(code, RefuseCode::WritesOff);
                assert!(message.contains("read-only observer"), "{message}");
                break;
            }
            Ok(Some(ServerMsg::Bytes { .. } | ServerMsg::Frames { .. })) => continue,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let end = tokio::time::timeout(PATIENCE, reader.next(ServerMsg::decode))
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_observer_cannot_write() {
    let (server, router, addr) = serve_serial("sim:so101", None).await;
    let (ep, conn, mut send, mut reader) = raw_observer(&addr, observe::SERIAL_ALPN).await;
    // A ping is fine.
    let mut out = BytesMut::new();
    ClientMsg::Ping {
        id: 7,
        client_us: 1,
    }
    .encode(&mut out);
    send.write_all(&out).await.expect("ping");
    let pong = tokio::time::timeout(PATIENCE, reader.next(ServerMsg::decode))
        .await
        .expect("pong");
    assert!(
        matches!(
            pong,
            Ok(Some(ServerMsg::Pong {
                id: 7,
                client_us: 1,
                ..
            }))
        ),
        "{pong:?}"
    );
    // Data of the controller protocol: a PING packet for servo 1. Refused, never written.
    out.clear();
    xoq::wire::serial::ClientMsg::Data(feetech::instruction(1, feetech::PING, &[]).into())
        .encode(&mut out);
    send.write_all(&out).await.expect("data");
    expect_read_only_refusal(&mut reader).await;
    let stats = server.stats();
    assert_eq!(
        stats.tx_bytes.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing reached the device"
    );
    conn.close(0u32.into(), b"done");
    ep.close().await;

    // The same as a first message (no hello): refused at once.
    let a: xoq::transport::Address = addr.parse().expect("address");
    let ep = p2p::client_endpoint(None, &a, true).await.expect("ep");
    let conn = p2p::connect(&ep, &a, observe::SERIAL_ALPN, true)
        .await
        .expect("conn");
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    send.write_all(&out).await.expect("data");
    expect_read_only_refusal(&mut FramedReader::new(recv)).await;
    assert_eq!(
        server
            .stats()
            .tx_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(server.observers(), 0);
    conn.close(0u32.into(), b"done");
    ep.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_refuses_an_unlisted_observer() {
    let listed = SecretKey::generate();
    let (_server, router, addr) = serve_serial("sim:so101", Some(vec![listed.public()])).await;
    let err = SerialObserver::connect(&addr, observer_opts(&SecretKey::generate()))
        .await
        .expect_err("unlisted");
    assert!(err.to_string().contains("not allowed"), "{err}");
    let ok = SerialObserver::connect(&addr, observer_opts(&listed))
        .await
        .expect("a listed observer connects");
    ok.close().await;
    let _ = router.shutdown().await;

    let (_can, router, addr) = serve_can(
        CanServer::builder(Box::new(VirtualBackend::new("o-allow"))),
        Some(vec![listed.public()]),
    )
    .await;
    let err = CanObserver::connect(&addr, observer_opts(&SecretKey::generate()))
        .await
        .expect_err("unlisted");
    assert!(err.to_string().contains("not allowed"), "{err}");
    CanObserver::connect(&addr, observer_opts(&listed))
        .await
        .expect("a listed observer connects")
        .close()
        .await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_observer_loses_its_oldest_bytes_counted_and_never_slows_the_controller() {
    let (server, router, addr) = serve_serial("sim:echo", None).await;
    // Connected, but not reading while the controller works.
    let mut obs = SerialObserver::connect(&addr, observer_opts(&SecretKey::generate()))
        .await
        .expect("observer");
    let port = Arc::new(
        RemoteSerial::connect(&addr, controller_opts(&SecretKey::generate()))
            .await
            .expect("controller"),
    );
    // Far more than the observer's queue and its stream's buffers hold.
    const N: usize = 8 << 20;
    let data: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
    let writer = {
        let port = port.clone();
        let data = data.clone();
        tokio::spawn(async move {
            for c in data.chunks(16 * 1024) {
                port.write(c).await.expect("write");
            }
        })
    };
    let mut echoed = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while echoed < N {
        let n = tokio::time::timeout(Duration::from_secs(60), port.read(&mut buf))
            .await
            .expect("the echo never stalls on an observer that does not read")
            .expect("read");
        assert_eq!(&buf[..n], &data[echoed..echoed + n]);
        echoed += n;
    }
    writer.await.expect("writer");

    // Now the observer reads: everything it gets is in order per direction, and what it
    // did not get is exactly what it was told it lost.
    let mut got = 0u64;
    let mut dropped = 0u64;
    while got + dropped < 2 * N as u64 {
        let o = tokio::time::timeout(PATIENCE, obs.next())
            .await
            .expect("the rest of the observations")
            .expect("observation");
        got += o.data.len() as u64;
        dropped += o.dropped;
    }
    assert_eq!(
        got + dropped,
        2 * N as u64,
        "every byte delivered or counted"
    );
    assert!(dropped > 0, "the observer's queue overflowed");
    assert_eq!(obs.dropped(), dropped);
    assert_eq!(
        server
            .stats()
            .tx_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        N as u64
    );
    obs.close().await;
    if let Ok(p) = Arc::try_unwrap(port) {
        p.close().await;
    }
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_observer_through_the_relay_sees_both_directions() {
    let relay = RelayConfig::ephemeral()
        .expect("port")
        .start()
        .await
        .expect("relay");
    let root = relay.url().join("anon").expect("url");
    let (server, router, addr) = serve_serial("sim:so101", None).await;
    let session = MoqSession::connect(&RelayUrl::from_url(root.clone()), Redial::Forever)
        .await
        .expect("session");
    let srv = server.clone();
    let bridge = tokio::spawn(async move {
        let _ = srv.serve_moq(&session, "arm").await;
    });
    let relay_addr = format!("{}/arm", root.as_str().trim_end_matches('/'));
    let mut obs = SerialObserver::connect(&relay_addr, ObserveOptions::new())
        .await
        .expect("relay observer");
    // The bridge observes from the start; the relay observer is not a controller.
    assert_eq!((server.observers(), server.controller()), (1, None));
    let port = RemoteSerial::connect(&addr, controller_opts(&SecretKey::generate()))
        .await
        .expect("controller");
    let read = feetech::instruction(2, feetech::READ, &[feetech::MODEL_NUMBER, 2]);
    port.write(&read).await.expect("write");
    let ((sent, _), (got, got_at)) = collect(&mut obs, read.len(), 8).await;
    assert_eq!(sent, read);
    // STS3215 answers its model number, 777.
    assert_eq!(got, [0xFF, 0xFF, 0x02, 0x04, 0x00, 0x09, 0x03, 0xED]);
    assert!(got_at.iter().all(|t| *t > 0));
    port.close().await;
    obs.close().await;
    bridge.abort();
    let _ = router.shutdown().await;
    relay.shutdown().await;
}

fn node(bus: &str) -> OpenCan {
    VirtualBackend::new(bus).open().expect("node")
}

async fn next_frame(n: &mut OpenCan) -> TimedFrame {
    loop {
        match tokio::time::timeout(PATIENCE, n.rx.recv()).await {
            Ok(Some(BusEvent::Frame(f))) => return f,
            Ok(Some(_)) => continue,
            other => panic!("no frame on the bus: {other:?}"),
        }
    }
}

fn disable(ids: &[u32]) -> Vec<CanFrame> {
    ids.iter()
        .map(|id| CanFrame::new(*id, xoq::wire::damiao::CMD_DISABLE.to_vec()).expect("disable"))
        .collect()
}

async fn next_observed(obs: &mut CanObserver) -> xoq::can::CanObservation {
    tokio::time::timeout(PATIENCE, obs.next())
        .await
        .expect("an observation")
        .expect("observation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_can_observer_sees_both_directions_and_never_holds_off_the_safety_frames() {
    let (server, router, addr) = serve_can(
        CanServer::builder(Box::new(VirtualBackend::new("o-can"))).on_disconnect(disable(&[1, 2])),
        None,
    )
    .await;
    let mut dev = node("o-can");
    let mut obs = CanObserver::connect(&addr, observer_opts(&SecretKey::generate()))
        .await
        .expect("observer");
    assert_eq!((server.observers(), server.controllers()), (1, 0));

    let bus = RemoteCanBus::connect(
        &addr,
        CanOptions::new().offline(true).key(SecretKey::generate()),
    )
    .await
    .expect("a controller connects beside an observer");
    let t0 = now_us();
    let cmd = CanFrame::new(0x01, vec![1, 2, 3]).expect("cmd");
    bus.send(&cmd).await.expect("send");
    assert_eq!(next_frame(&mut dev).await.frame, cmd);
    let answer = CanFrame::new(0x11, vec![9, 8]).expect("answer");
    dev.tx.send(&answer).await.expect("device answers");
    // The two may be observed in either order (the transmit and receive paths are separate
    // tasks); each carries its direction and a stamp within the exchange.
    let mut seen = vec![next_observed(&mut obs).await, next_observed(&mut obs).await];
    seen.sort_by_key(|o| o.direction == Direction::FromDevice);
    let t1 = now_us();
    assert_eq!(
        (seen[0].direction, &seen[0].frame),
        (Direction::ToDevice, &cmd)
    );
    assert_eq!(
        (seen[1].direction, &seen[1].frame),
        (Direction::FromDevice, &answer)
    );
    for o in &seen {
        assert!((t0..=t1).contains(&o.stamp_us), "{t0} {} {t1}", o.stamp_us);
    }
    assert_eq!(server.controllers(), 1, "the client, not the observer");

    // The last controller leaves with the observer still there: the safety frames go out,
    // and the observer sees them go.
    bus.close().await;
    for id in [1u32, 2] {
        let f = next_frame(&mut dev).await;
        assert_eq!(
            (f.frame.id, &f.frame.data[..]),
            (id, &xoq::wire::damiao::CMD_DISABLE[..])
        );
        let o = next_observed(&mut obs).await;
        assert_eq!((o.direction, o.frame.id), (Direction::ToDevice, id));
    }
    assert_eq!(
        server
            .stats()
            .safety_trips
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(server.controllers(), 0);
    assert_eq!(obs.dropped(), 0);
    obs.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadman_trips_while_an_observer_keeps_pinging() {
    let (server, router, addr) = serve_can(
        CanServer::builder(Box::new(VirtualBackend::new("o-dead")))
            .on_disconnect(disable(&[1]))
            .deadman(Some(Duration::from_millis(200))),
        None,
    )
    .await;
    let mut dev = node("o-dead");
    let mut obs = CanObserver::connect(&addr, observer_opts(&SecretKey::generate()))
        .await
        .expect("observer");
    let bus = RemoteCanBus::connect(
        &addr,
        CanOptions::new().offline(true).key(SecretKey::generate()),
    )
    .await
    .expect("controller");
    let cmd = CanFrame::new(0x01, vec![1]).expect("cmd");
    bus.send(&cmd).await.expect("send");
    assert_eq!(next_frame(&mut dev).await.frame, cmd);
    // The controller falls silent (still connected); the observer keeps talking.
    let pinger = tokio::spawn(async move {
        loop {
            if obs.ping().await.is_err() {
                return obs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let start = std::time::Instant::now();
    let f = next_frame(&mut dev).await;
    assert_eq!(
        (f.frame.id, &f.frame.data[..]),
        (1, &xoq::wire::damiao::CMD_DISABLE[..])
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the deadman, {:?}",
        start.elapsed()
    );
    assert_eq!(
        server
            .stats()
            .safety_trips
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    pinger.abort();
    bus.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_can_observer_cannot_send() {
    let (server, router, addr) = serve_can(
        CanServer::builder(Box::new(VirtualBackend::new("o-send"))),
        None,
    )
    .await;
    let mut dev = node("o-send");
    let (ep, conn, mut send, mut reader) = raw_observer(&addr, observe::CAN_ALPN).await;
    let mut out = BytesMut::new();
    xoq::wire::can::ClientMsg::Send(vec![TimedFrame {
        frame: CanFrame::new(0x01, vec![0xAA]).expect("f"),
        timestamp_us: now_us(),
    }])
    .encode(&mut out);
    send.write_all(&out).await.expect("send");
    expect_read_only_refusal(&mut reader).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), dev.rx.recv())
            .await
            .is_err(),
        "nothing reached the bus"
    );
    assert_eq!(
        server
            .stats()
            .tx_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(server.controllers(), 0);
    conn.close(0u32.into(), b"done");
    ep.close().await;
    // Through a relay a CAN observer is not offered: the state track already is one.
    let err = CanObserver::connect("http://127.0.0.1:9/anon/arm", ObserveOptions::new())
        .await
        .expect_err("relay");
    assert!(err.to_string().contains("state"), "{err}");
    let _ = router.shutdown().await;
}
