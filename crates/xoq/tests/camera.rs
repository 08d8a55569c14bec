//! Cameras end to end: the test-pattern camera over real iroh, offline on loopback, in both
//! codecs; ALPN negotiation; viewers that stall or join late; damaged frames; mode changes.
//! Frame counts, never wall-clock timings, decide pass or fail.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use xoq::client::camera::{CameraOptions, RemoteCamera};
use xoq::device::camera::{TestPattern, read_stamp};
use xoq::server::camera::{CameraServer, CameraServerBuilder};
use xoq::transport::p2p::EndpointBuilder;
use xoq::wire::camera::{ALPN_H264, Codec, VideoFrame};

async fn serve_with(builder: CameraServerBuilder) -> (CameraServer, Router, String) {
    let server = builder.start().await.expect("camera");
    let alpns = server.alpns();
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(alpns)
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = server.router(ep);
    (server, router, addr)
}

async fn serve(w: u32, h: u32, codecs: &[Codec]) -> (CameraServer, Router, String) {
    serve_with(
        CameraServer::test_pattern(w, h)
            .expect("size")
            .codecs(codecs),
    )
    .await
}

fn opts(codecs: &[Codec]) -> CameraOptions {
    CameraOptions::new().offline(true).codecs(codecs)
}

fn mean_error(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x.abs_diff(*y)))
        .sum::<f64>()
        / a.len() as f64
}

async fn frames_in_order_with_the_right_picture(codec: Codec, tolerance: f64) {
    let (_server, router, addr) = serve(640, 480, &[codec]).await;
    let mut cam = RemoteCamera::connect(&addr, opts(&[codec]))
        .await
        .expect("connect");
    assert_eq!(cam.codec(), codec);
    let pattern = TestPattern::new(640, 480).expect("size");
    let mut last = None;
    for i in 0..15 {
        let (f, img) = cam.next_rgb().await.expect("frame");
        if i == 0 {
            assert!(f.keyframe, "a viewer starts on a keyframe");
        }
        assert_eq!(
            (img.width, img.height, f.width, f.height),
            (640, 480, 640, 480)
        );
        // The picture carries the frame number and capture time the header says.
        assert_eq!(
            read_stamp(&img.data, 640, 480),
            Some((f.seq, f.timestamp_us)),
            "{codec:?} frame {i}"
        );
        if let Some(prev) = last {
            assert!(f.seq > prev, "frames in order: {prev} then {}", f.seq);
        }
        last = Some(f.seq);
        let mae = mean_error(&pattern.render(f.seq, f.timestamp_us), &img.data);
        assert!(
            mae < tolerance,
            "{codec:?} within tolerance: mean error {mae}"
        );
    }
    cam.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_frames_arrive_in_order_with_the_right_picture() {
    frames_in_order_with_the_right_picture(Codec::Jpeg, 8.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_frames_arrive_in_order_with_the_right_picture() {
    frames_in_order_with_the_right_picture(Codec::H264, 12.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_picks_h264_when_both_sides_have_it_and_falls_back_to_jpeg() {
    let both = [Codec::H264, Codec::Jpeg];
    let (_s, r1, both_addr) = serve(320, 240, &both).await;
    let (_s2, r2, jpeg_addr) = serve(320, 240, &[Codec::Jpeg]).await;
    let cases = [
        (&both_addr, &both[..], Codec::H264),
        (&both_addr, &[Codec::Jpeg, Codec::H264][..], Codec::H264),
        (&both_addr, &[Codec::Jpeg][..], Codec::Jpeg),
        (&jpeg_addr, &both[..], Codec::Jpeg),
    ];
    for (addr, client, want) in cases {
        let mut cam = RemoteCamera::connect(addr, opts(client))
            .await
            .expect("connect");
        assert_eq!(cam.codec(), want, "client {client:?}");
        let (f, img) = cam.next_rgb().await.expect("a picture");
        assert_eq!((img.width, f.width), (320, 320));
        cam.close().await;
    }
    let err = RemoteCamera::connect(&jpeg_addr, opts(&[Codec::H264]))
        .await
        .expect_err("no common codec");
    assert!(!err.to_string().is_empty());
    let _ = r1.shutdown().await;
    let _ = r2.shutdown().await;
}

async fn stalled_viewer_does_not_stall_the_other(codec: Codec) {
    let (server, router, addr) = serve(1280, 720, &[codec]).await;
    let mut slow = RemoteCamera::connect(&addr, opts(&[codec]))
        .await
        .expect("slow viewer");
    let mut fast = RemoteCamera::connect(&addr, opts(&[codec]))
        .await
        .expect("fast viewer");
    let first = slow.next_frame().await.expect("slow first frame").seq;
    // The slow viewer stops reading while the camera captures 30 more frames (counted, not
    // timed). The other viewer goes on decoding them, in order.
    let mut newest = fast.next_rgb().await.expect("fast frame").0.seq;
    let mut got = 0;
    while newest < first + 30 {
        let (f, img) = fast.next_rgb().await.expect("fast frame");
        assert!(f.seq > newest, "newer frames only");
        assert_eq!(
            read_stamp(&img.data, 1280, 720),
            Some((f.seq, f.timestamp_us))
        );
        newest = f.seq;
        got += 1;
    }
    assert!(
        got >= 15,
        "the other viewer kept receiving: {got} of 30 frames"
    );
    // The slow viewer resumes: the frames it had credit for, then a keyframe from the
    // present (no backlog of everything it missed), and it decodes from there.
    let mut seqs = Vec::new();
    let resumed = loop {
        let f = slow.next_frame().await.expect("slow resumes");
        seqs.push(f.seq);
        if f.seq >= newest {
            break f;
        }
        assert!(
            seqs.len() <= 10,
            "a backlog reached the slow viewer: {seqs:?}"
        );
    };
    assert!(resumed.keyframe, "it resumes on a keyframe: {seqs:?}");
    assert!(
        server.stats().skipped.load(Ordering::Relaxed) > 0,
        "frames were skipped for the slow viewer, not queued"
    );
    let (f, img) = slow.next_rgb().await.expect("decodes after resuming");
    assert_eq!(
        read_stamp(&img.data, 1280, 720),
        Some((f.seq, f.timestamp_us))
    );
    slow.close().await;
    fast.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jpeg_viewer_that_stops_reading_does_not_stall_the_other() {
    stalled_viewer_does_not_stall_the_other(Codec::Jpeg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_viewer_that_stops_reading_does_not_stall_the_other() {
    stalled_viewer_does_not_stall_the_other(Codec::H264).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_viewer_gets_a_picture_long_before_the_gop_ends() {
    // A ten-second GoP: waiting it out would take up to 300 frames.
    let (server, router, addr) = serve_with(
        CameraServer::test_pattern(640, 480)
            .expect("size")
            .codecs(&[Codec::H264])
            .gop(300),
    )
    .await;
    let mut early = RemoteCamera::connect(&addr, opts(&[Codec::H264]))
        .await
        .expect("early viewer");
    for _ in 0..20 {
        early.next_rgb().await.expect("early frames");
    }
    let captured_at_join = server.stats().captured.load(Ordering::Relaxed);
    let mut late = RemoteCamera::connect(&addr, opts(&[Codec::H264]))
        .await
        .expect("late viewer");
    let (f, img) = late.next_rgb().await.expect("late picture");
    assert!(f.keyframe);
    assert!(
        f.seq < captured_at_join + 30,
        "a keyframe was made for the late viewer: frame {} vs {captured_at_join} at join",
        f.seq
    );
    assert_eq!(
        read_stamp(&img.data, 640, 480),
        Some((f.seq, f.timestamp_us))
    );
    // The early viewer is not disturbed: it goes on, in order, decoding every frame.
    let mut prev = early.next_rgb().await.expect("early").0.seq;
    for _ in 0..10 {
        let (g, _) = early.next_rgb().await.expect("early");
        assert_eq!(g.seq, prev + 1);
        prev = g.seq;
    }
    early.close().await;
    late.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_mode_changes_the_delivered_size() {
    let (server, router, addr) = serve(640, 480, &[Codec::H264, Codec::Jpeg]).await;
    for codec in [Codec::H264, Codec::Jpeg] {
        let mut cam = RemoteCamera::connect(&addr, opts(&[codec]))
            .await
            .expect("connect");
        let (f, _) = cam.next_rgb().await.expect("frame");
        let (w, h) = if f.width == 640 {
            (320, 240)
        } else {
            (640, 480)
        };
        cam.set_mode(w, h, 0).await.expect("set mode");
        let mut seen = 0;
        let img = loop {
            let (f, img) = cam.next_rgb().await.expect("frame");
            if (f.width, f.height) == (w as u16, h as u16) {
                break img;
            }
            seen += 1;
            assert!(seen < 60, "{codec:?}: the size never changed");
        };
        assert_eq!((img.width, img.height), (w, h));
        assert_eq!(server.mode().map(|m| (m.width, m.height)), Some((w, h)));
        cam.close().await;
    }
    let _ = router.shutdown().await;
}

/// A server that sends a scripted H.264 stream: real frames, one of them damaged.
#[derive(Debug, Clone)]
struct Scripted(Vec<VideoFrame>);

impl ProtocolHandler for Scripted {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let Ok((mut send, _recv)) = conn.accept_bi().await else {
            return Ok(());
        };
        for f in &self.0 {
            let mut buf = Vec::new();
            f.encode(&mut buf).expect("encode");
            if send.write_all(&buf).await.is_err() {
                return Ok(());
            }
        }
        let _ = send.finish();
        conn.closed().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_frames_are_reported_and_the_stream_recovers_at_the_next_keyframe() {
    use xoq_media::h264::{H264Config, H264Encoder};
    let pattern = TestPattern::new(320, 240).expect("size");
    let mut cfg = H264Config::for_size(320, 240, 30);
    cfg.gop = 5;
    let mut enc = H264Encoder::new(cfg).expect("encoder");
    let mut frames: Vec<VideoFrame> = (0..12u64)
        .map(|seq| {
            let u = enc
                .encode_rgb(&pattern.render(seq, 1_000 + seq), 320, 240)
                .expect("encode");
            VideoFrame {
                seq,
                timestamp_us: 1_000 + seq,
                width: 320,
                height: 240,
                keyframe: u.keyframe,
                data: Bytes::from(u.data),
            }
        })
        .collect();
    assert!(frames[5].keyframe && frames[10].keyframe);
    // Frame 2 is cut short and frame 6 is garbage after its start code.
    let cut = frames[2].data.slice(..frames[2].data.len() / 3);
    frames[2].data = cut;
    let mut junk = vec![0, 0, 0, 1, 0x41];
    junk.extend(std::iter::repeat_n(0x5A, 200));
    frames[6].data = Bytes::from(junk);
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![ALPN_H264.to_vec()])
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep)
        .accept(ALPN_H264, Scripted(frames))
        .spawn();
    let mut cam = RemoteCamera::connect(&addr, opts(&[Codec::H264]))
        .await
        .expect("connect");
    let mut shown = Vec::new();
    let mut errors = 0;
    loop {
        match cam.next_rgb().await {
            Ok((f, img)) => {
                assert_eq!(
                    read_stamp(&img.data, 320, 240),
                    Some((f.seq, f.timestamp_us))
                );
                shown.push(f.seq);
            }
            Err(xoq::client::ClientError::Device(msg)) => {
                assert!(msg.contains("did not decode"), "{msg}");
                errors += 1;
            }
            Err(_) => break, // the scripted stream ended
        }
    }
    assert!(errors >= 1, "damage is reported");
    // Every picture shown is a correct one; after each damaged frame the stream picks up
    // again at the next keyframe at the latest.
    assert!(shown.starts_with(&[0, 1]), "{shown:?}");
    assert!(shown.contains(&5) && shown.contains(&10), "{shown:?}");
    assert_eq!(shown.last(), Some(&11), "{shown:?}");
    assert_eq!(cam.counters().1, errors);
    cam.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_broadcast_is_hang_h264_that_a_relay_viewer_decodes() {
    use xoq::relay::RelayConfig;
    use xoq::transport::moq::MoqSession;
    let relay = RelayConfig::ephemeral()
        .expect("port")
        .start()
        .await
        .expect("relay");
    let root = relay.url().join("anon").expect("url");
    let server = CameraServer::test_pattern(640, 480)
        .expect("size")
        .start()
        .await
        .expect("camera");
    let session = MoqSession::connect(
        &xoq::transport::RelayUrl::from_url(root.clone()),
        xoq::transport::moq::Redial::Forever,
    )
    .await
    .expect("session");
    let srv = server.clone();
    let publish = tokio::spawn(async move {
        let _ = srv.serve_moq(&session, "cam").await;
    });
    // What the stock web player reads: the catalog, then legacy frames on the track it names.
    let sub = MoqSession::connect(
        &xoq::transport::RelayUrl::from_url(root.clone()),
        xoq::transport::moq::Redial::Never,
    )
    .await
    .expect("session");
    let json = sub
        .read_track("cam", "catalog.json")
        .next()
        .await
        .expect("catalog");
    let catalog: serde_json::Value = serde_json::from_slice(&json).expect("json");
    let rendition = &catalog["video"]["renditions"]["video"];
    assert!(
        rendition["codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("avc1.42"))
    );
    assert_eq!(rendition["container"]["kind"], "legacy");
    assert_eq!(
        (
            rendition["codedWidth"].as_u64(),
            rendition["codedHeight"].as_u64()
        ),
        (Some(640), Some(480))
    );
    sub.close().await;
    // A Rust viewer through the relay: pictures in order, stamps intact, capture times
    // carried through the catalog's epoch.
    let addr = format!("{}/cam", root.as_str().trim_end_matches('/'));
    let mut cam = RemoteCamera::connect(&addr, opts(&[Codec::H264]))
        .await
        .expect("relay viewer");
    let mut last = None;
    for _ in 0..10 {
        let (f, img) = cam.next_rgb().await.expect("picture");
        let (seq, ts) = read_stamp(&img.data, 640, 480).expect("stamp");
        assert_eq!(ts, f.timestamp_us, "capture time end to end");
        assert_eq!((f.width, f.height), (640, 480));
        if let Some(prev) = last {
            assert!(seq > prev);
        }
        last = Some(seq);
    }
    let refused = cam.set_mode(320, 240, 0).await;
    assert!(matches!(
        refused,
        Err(xoq::client::ClientError::Unsupported(_))
    ));
    cam.close().await;
    publish.abort();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_viewer_is_refused() {
    use iroh::SecretKey;
    use xoq::transport::p2p::Allowlist;
    let allowed = SecretKey::generate();
    let server = CameraServer::test_pattern(320, 240)
        .expect("size")
        .start()
        .await
        .expect("camera");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(server.alpns())
        .allowlist(Some(Allowlist::new(vec![allowed.public()])))
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = server.router(ep);
    let err = RemoteCamera::connect(&addr, opts(&[Codec::H264]).key(SecretKey::generate()))
        .await
        .expect_err("an unlisted viewer must be refused");
    assert!(err.to_string().contains("not allowed"), "{err}");
    let mut cam = RemoteCamera::connect(&addr, opts(&[Codec::H264]).key(allowed))
        .await
        .expect("listed viewer");
    cam.next_rgb()
        .await
        .expect("a picture for the listed viewer");
    cam.close().await;
    let _ = router.shutdown().await;
}

/// A camera that works for a few frames, then fails every capture (unplugged).
struct Unplugged {
    inner: xoq::camera::PatternSource,
    frames_left: u32,
}

impl xoq::camera::CameraSource for Unplugged {
    fn mode(&self) -> xoq::camera::Mode {
        self.inner.mode()
    }
    fn capture(&mut self) -> Result<xoq::camera::RawFrame, xoq::device::DeviceError> {
        if self.frames_left == 0 {
            return Err(xoq::device::DeviceError::Io {
                operation: "capture",
                device: "test camera".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotConnected),
            });
        }
        self.frames_left -= 1;
        self.inner.capture()
    }
    fn set_mode(
        &mut self,
        req: xoq::camera::ModeRequest,
    ) -> Result<xoq::camera::Mode, xoq::device::DeviceError> {
        self.inner.set_mode(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_dies_closes_its_viewers_with_the_reason() {
    let source = Unplugged {
        inner: xoq::camera::PatternSource::new(320, 240, 60).expect("pattern"),
        frames_left: 20,
    };
    let (server, router, addr) = serve_with(CameraServer::builder(Box::new(source))).await;
    let mut cam = RemoteCamera::connect(&addr, opts(&[Codec::Jpeg]))
        .await
        .expect("connect");
    let err = loop {
        match cam.next_frame().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("capture errors"), "{err}");
    assert!(server.failure().is_some());
    // A viewer arriving afterwards is told at once.
    let late = RemoteCamera::connect(&addr, opts(&[Codec::Jpeg])).await;
    assert!(late.is_err());
    let _ = router.shutdown().await;
}
