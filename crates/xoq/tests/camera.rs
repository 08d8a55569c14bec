//! The camera slice end to end: the test-pattern camera as JPEG over real iroh, offline on
//! loopback.

use std::sync::atomic::Ordering;

use iroh::protocol::Router;
use xoq::client::camera::{CameraOptions, RemoteCamera};
use xoq::device::camera::{TestPattern, read_stamp};
use xoq::server::camera::CameraServer;
use xoq::transport::p2p::EndpointBuilder;
use xoq::wire::camera::ALPN_JPEG;

async fn serve(w: u32, h: u32, fps: u32) -> (CameraServer, Router, String) {
    let server = CameraServer::test_pattern(w, h)
        .expect("size")
        .fps(fps)
        .start()
        .await
        .expect("camera");
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![ALPN_JPEG.to_vec()])
        .spawn()
        .await
        .expect("endpoint");
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep)
        .accept(ALPN_JPEG, server.clone())
        .spawn();
    (server, router, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pattern_frames_arrive_in_order_with_the_right_picture() {
    let (_server, router, addr) = serve(640, 480, 30).await;
    let mut cam = RemoteCamera::connect(&addr, CameraOptions::new().offline(true))
        .await
        .expect("connect");
    let pattern = TestPattern::new(640, 480).expect("size");
    let mut last = None;
    for _ in 0..10 {
        let (f, img) = cam.next_rgb().await.expect("frame");
        assert!(f.keyframe);
        assert_eq!(
            (img.width, img.height, f.width, f.height),
            (640, 480, 640, 480)
        );
        // The picture carries the frame number and capture time the header says.
        assert_eq!(
            read_stamp(&img.data, 640, 480),
            Some((f.seq, f.timestamp_us))
        );
        if let Some(prev) = last {
            assert!(f.seq > prev, "frames in order: {prev} then {}", f.seq);
        }
        last = Some(f.seq);
        let want = pattern.render(f.seq, f.timestamp_us);
        let mae = want
            .iter()
            .zip(&img.data)
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / want.len() as f64;
        assert!(mae < 8.0, "picture within JPEG tolerance: mean error {mae}");
    }
    cam.close().await;
    let _ = router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_does_not_stall_the_other() {
    let (server, router, addr) = serve(1280, 720, 30).await;
    let opts = CameraOptions::new().offline(true);
    let mut slow = RemoteCamera::connect(&addr, opts.clone())
        .await
        .expect("slow viewer");
    let mut fast = RemoteCamera::connect(&addr, opts)
        .await
        .expect("fast viewer");
    let first = slow.next_frame().await.expect("slow first frame").seq;
    // The slow viewer stops reading while the camera captures 20 more frames (counted, not
    // timed). The other viewer keeps up with the capture all along.
    let mut newest = fast.next_frame().await.expect("fast frame").seq;
    let mut got = 0u32;
    while newest < first + 20 {
        let f = fast.next_frame().await.expect("fast frame");
        assert!(f.seq > newest, "newer frames only");
        newest = f.seq;
        let captured = server.stats().frames.load(Ordering::Relaxed);
        assert!(
            f.seq + 3 >= captured,
            "the fast viewer keeps up with the capture ({} vs {captured} captured)",
            f.seq
        );
        got += 1;
    }
    assert!(got >= 10);
    // The slow viewer resumes: at most the frames it had granted credit for are old
    // (INITIAL_CREDIT), then it gets the newest frame, never a backlog of all it missed.
    let mut seqs = Vec::new();
    for _ in 0..=xoq::wire::camera::INITIAL_CREDIT {
        seqs.push(slow.next_frame().await.expect("slow resumes").seq);
    }
    let last = *seqs.last().expect("frames");
    assert!(
        last >= newest,
        "the slow viewer jumped to the newest frames: {seqs:?} vs {newest}"
    );
    assert!(
        server.stats().skipped.load(Ordering::Relaxed) > 0,
        "frames were skipped for the slow viewer, not queued"
    );
    slow.close().await;
    fast.close().await;
    let _ = router.shutdown().await;
}
