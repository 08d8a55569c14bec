//! Depth cameras end to end: the synthetic scene over real iroh (offline, loopback) and
//! through a real relay. The scene is deterministic for a given frame number and capture
//! time, so every received depth picture is compared bit for bit with the scene rendered
//! again here. Frame counts, never wall-clock timings, decide pass or fail.

use std::sync::atomic::Ordering;

use iroh::protocol::Router;
use xoq::depth::{
    DepthOptions, DepthServer, DepthServerBuilder, RemoteDepthCamera, SceneSource, read_depth_stamp,
};
use xoq::device::camera::read_stamp;
use xoq::transport::p2p::EndpointBuilder;

async fn serve_with(builder: DepthServerBuilder) -> (DepthServer, Router, String) {
    let server = builder.start().await.expect("depth server");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(server.alpns())
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = server.router(ep);
    (server, router, addr)
}

fn opts() -> DepthOptions {
    DepthOptions::new().offline(true)
}

/// Check one received capture against the scene: depth bit-exact, colour stamped with the
/// same capture.
fn check_capture(scene: &SceneSource, set: &xoq::depth::DepthFrameset, color: bool) {
    let d = &set.depth;
    let (seq, ts) = read_depth_stamp(&d.data).expect("depth stamp");
    assert_eq!(
        (seq, ts),
        (set.seq, set.timestamp_us),
        "the depth picture is the capture the header names"
    );
    let expected = scene.render(seq, ts);
    assert!(
        d.data == expected.depth,
        "depth of frame {seq} is not bit-exact"
    );
    match (&set.color, color) {
        (Some(c), true) => assert_eq!(
            read_stamp(&c.data, c.width, c.height),
            Some((seq, ts)),
            "colour of frame {seq} is from the same capture"
        ),
        (None, false) => {}
        (c, _) => panic!(
            "colour {:?} when asked {color}",
            c.as_ref().map(|c| c.width)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_frames_arrive_bit_exact_with_their_colour_picture() {
    let (server, router, addr) = serve_with(DepthServer::synthetic(320, 240).expect("scene")).await;
    let scene = SceneSource::new(320, 240, 30).expect("scene");
    let mut cam = RemoteDepthCamera::connect(&addr, opts())
        .await
        .expect("connect");
    let info = cam.info().clone();
    assert_eq!(info.scale, 0.001);
    assert_eq!(info.depth, scene.intrinsics());
    assert_eq!(info.name, "xoq synthetic depth");
    let mut last = None;
    for _ in 0..100 {
        let set = cam.next().await.expect("frame");
        check_capture(&scene, &set, true);
        if let Some(prev) = last {
            assert!(set.seq > prev, "in order");
        }
        last = Some(set.seq);
    }
    // The board at the principal point is 1 m away, within the scene's stereo error at this
    // width: (0.1 px + half a 1/32 px) over f·B = 14 mm at 320 pixels.
    let set = cam.next().await.expect("frame");
    let centre = set.depth.data[120 * 320 + 160];
    assert!((f32::from(centre) * info.scale - 1.0).abs() < 0.015);
    let st = server.stats();
    assert!(st.depth_coded_bytes.load(Ordering::Relaxed) > 0);
    assert!(
        st.depth_coded_bytes.load(Ordering::Relaxed) * 2
            < st.depth_raw_bytes.load(Ordering::Relaxed),
        "lossless coding at least halves the synthetic depth"
    );
    cam.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_only_viewers_get_no_colour_and_camera_viewers_share_the_capture() {
    let (_server, router, addr) =
        serve_with(DepthServer::synthetic(320, 240).expect("scene")).await;
    let scene = SceneSource::new(320, 240, 30).expect("scene");
    let mut cam = RemoteDepthCamera::connect(&addr, opts().color(false))
        .await
        .expect("connect");
    for _ in 0..5 {
        check_capture(&scene, &cam.next().await.expect("frame"), false);
    }
    // The same endpoint is an ordinary camera for colour viewers (H.264 here).
    let mut video =
        xoq::camera::RemoteCamera::connect(&addr, xoq::camera::CameraOptions::new().offline(true))
            .await
            .expect("camera viewer");
    let (f, img) = video.next_rgb().await.expect("colour");
    assert_eq!(
        read_stamp(&img.data, 320, 240).map(|s| s.1),
        Some(f.timestamp_us)
    );
    video.close().await;
    cam.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_viewer_does_not_stall_another_and_gets_the_newest_capture() {
    let (server, router, addr) = serve_with(DepthServer::synthetic(640, 480).expect("scene")).await;
    let mut slow = RemoteDepthCamera::connect(&addr, opts())
        .await
        .expect("slow viewer");
    let mut fast = RemoteDepthCamera::connect(&addr, opts())
        .await
        .expect("fast viewer");
    let first = slow.next().await.expect("slow first").seq;
    // The slow viewer stops reading while the camera captures 30 more frames (counted).
    let mut newest = fast.next().await.expect("fast").seq;
    let mut got = 0;
    while newest < first + 30 {
        let set = fast.next().await.expect("fast");
        assert!(set.seq > newest);
        newest = set.seq;
        got += 1;
    }
    assert!(got >= 15, "the other viewer kept receiving: {got} of 30");
    // The slow viewer resumes: what it had credit for, then the present — no backlog.
    let mut seqs = Vec::new();
    loop {
        let s = slow.next().await.expect("slow resumes").seq;
        seqs.push(s);
        if s >= newest {
            break;
        }
        assert!(
            seqs.len() <= 3,
            "a backlog reached the slow viewer: {seqs:?}"
        );
    }
    assert!(server.stats().skipped.load(Ordering::Relaxed) > 0);
    slow.close().await;
    fast.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_intrinsics_overrides_reach_the_client_and_follow_the_mode() {
    let k = xoq::depth::Intrinsics {
        fx: 600.0,
        fy: 601.0,
        ppx: 321.0,
        ppy: 239.0,
        ..xoq::depth::Intrinsics::pinhole(640, 480, 90.0)
    };
    let (_server, router, addr) = serve_with(
        DepthServer::synthetic(640, 480)
            .expect("scene")
            .scale(0.0001)
            .intrinsics(k),
    )
    .await;
    let mut cam = RemoteDepthCamera::connect(&addr, opts())
        .await
        .expect("connect");
    assert_eq!(cam.info().scale, 0.0001);
    assert_eq!(cam.info().depth, k);
    cam.set_mode(320, 240, 0).await.expect("mode");
    let set = loop {
        let set = cam.next().await.expect("frame");
        if set.depth.width == 320 {
            break set;
        }
    };
    assert_eq!(set.depth.height, 240);
    assert_eq!(
        set.color.as_ref().map(|c| (c.width, c.height)),
        Some((320, 240))
    );
    // The intrinsics given for 640x480, scaled to the new size.
    assert_eq!(cam.info().depth.fx, 300.0);
    assert_eq!(cam.info().depth.width, 320);
    cam.close().await;
    let _ = router.shutdown().await;
    assert!(
        DepthServer::synthetic(64, 48).is_err(),
        "sizes the scene cannot stamp are refused"
    );
    assert!(
        DepthServer::synthetic(320, 240)
            .expect("scene")
            .scale(-1.0)
            .start()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_viewer_is_refused() {
    use iroh::SecretKey;
    use xoq::transport::p2p::Allowlist;
    let allowed = SecretKey::generate();
    let server = DepthServer::synthetic(320, 240)
        .expect("scene")
        .start()
        .await
        .expect("server");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(server.alpns())
        .allowlist(Some(Allowlist::new(vec![allowed.public()])))
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = server.router(ep);
    let err = RemoteDepthCamera::connect(&addr, opts().key(SecretKey::generate()))
        .await
        .expect_err("an unlisted viewer must be refused");
    assert!(err.to_string().contains("not allowed"), "{err}");
    let mut cam = RemoteDepthCamera::connect(&addr, opts().key(allowed))
        .await
        .expect("listed viewer");
    cam.next().await.expect("a capture for the listed viewer");
    cam.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_broadcast_carries_lossless_depth_paired_with_the_video() {
    use xoq::relay::RelayConfig;
    use xoq::transport::moq::MoqSession;
    let relay = RelayConfig::ephemeral()
        .expect("port")
        .start()
        .await
        .expect("relay");
    let root = relay.url().join("anon").expect("url");
    let server = DepthServer::synthetic(320, 240)
        .expect("scene")
        .start()
        .await
        .expect("server");
    let scene = SceneSource::new(320, 240, 30).expect("scene");
    let session = MoqSession::connect(
        &xoq::transport::RelayUrl::from_url(root.clone()),
        xoq::transport::moq::Redial::Forever,
    )
    .await
    .expect("session");
    let srv = server.clone();
    let publish = tokio::spawn(async move {
        let _ = srv.serve_moq(&session, "depth").await;
    });
    // The catalog the stock player reads still describes the video; depth sits in `binary`.
    let sub = MoqSession::connect(
        &xoq::transport::RelayUrl::from_url(root.clone()),
        xoq::transport::moq::Redial::Never,
    )
    .await
    .expect("session");
    let json = sub
        .read_track("depth", "catalog.json")
        .next()
        .await
        .expect("catalog");
    let catalog: serde_json::Value = serde_json::from_slice(&json).expect("json");
    assert_eq!(catalog["video"]["renditions"]["video"]["codedWidth"], 320);
    assert_eq!(catalog["binary"]["tracks"]["depth"]["mode"], "snapshot");
    assert_eq!(catalog["xoq"]["depth"]["scale"], 0.001);
    sub.close().await;
    let addr = format!("{}/depth", root.as_str().trim_end_matches('/'));
    let mut cam = RemoteDepthCamera::connect(&addr, opts())
        .await
        .expect("relay viewer");
    assert_eq!(cam.info().depth, scene.intrinsics());
    let mut paired = 0;
    let mut last = None;
    for _ in 0..60 {
        let set = cam.next().await.expect("frame");
        let (seq, ts) = read_depth_stamp(&set.depth.data).expect("stamp");
        assert_eq!((seq, ts), (set.seq, set.timestamp_us));
        assert!(set.depth.data == scene.render(seq, ts).depth, "bit-exact");
        if let Some(c) = &set.color {
            // H.264 through the relay: the stamp survives the lossy codec.
            assert_eq!(read_stamp(&c.data, 320, 240), Some((seq, ts)));
            paired += 1;
        }
        if let Some(prev) = last {
            assert!(seq > prev);
        }
        last = Some(seq);
    }
    assert!(
        paired >= 45,
        "{paired} of 60 depth frames found their colour picture"
    );
    assert!(
        cam.set_mode(160, 120, 0).await.is_err(),
        "relay viewers are view-only"
    );
    cam.close().await;
    publish.abort();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_captured_for_nobody_and_a_colour_viewer_alone_wakes_the_capture() {
    let (server, router, addr) = serve_with(DepthServer::synthetic(320, 240).expect("scene")).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        server.stats().captured.load(Ordering::Relaxed),
        0,
        "no viewer: the scene is not rendered"
    );
    // Only the colour camera is watched (no depth viewer): captures run for it.
    let mut video =
        xoq::camera::RemoteCamera::connect(&addr, xoq::camera::CameraOptions::new().offline(true))
            .await
            .expect("camera viewer");
    for _ in 0..5 {
        let (f, img) = video.next_rgb().await.expect("colour");
        assert_eq!(
            read_stamp(&img.data, 320, 240).map(|s| s.1),
            Some(f.timestamp_us)
        );
    }
    assert!(server.stats().captured.load(Ordering::Relaxed) >= 5);
    video.close().await;
    let _ = router.shutdown().await;
}
