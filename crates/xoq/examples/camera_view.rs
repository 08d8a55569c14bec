//! Serve the test-pattern camera and watch it, both sides in one process, offline on
//! loopback: H.264 is negotiated, every picture is decoded, and the capture time written
//! into its pixels gives the end-to-end latency.
//!
//! ```sh
//! cargo run --example camera_view
//! ```

use xoq::camera::{CameraOptions, CameraServer, RemoteCamera, read_stamp};
use xoq::transport::p2p::EndpointBuilder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The robot side: a 640x480 camera offering H.264 and JPEG.
    let server = CameraServer::test_pattern(640, 480)?
        .fps(30)
        .start()
        .await?;
    let alpns = server.alpns();
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(alpns)
        .spawn()
        .await?;
    let address = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = server.router(ep);

    // 2. The viewer: 30 pictures, each checked against the stamp in its pixels.
    let mut cam = RemoteCamera::connect(&address, CameraOptions::new().offline(true)).await?;
    println!("watching {address} as {:?}", cam.codec());
    let mut worst_ms: f64 = 0.0;
    for _ in 0..30 {
        let (frame, picture) = cam.next_rgb().await?;
        let stamp = read_stamp(&picture.data, picture.width, picture.height);
        anyhow::ensure!(
            stamp == Some((frame.seq, frame.timestamp_us)),
            "picture {} does not carry its own stamp",
            frame.seq
        );
        let ms = (xoq::device::camera::now_us() - frame.timestamp_us) as f64 / 1e3;
        worst_ms = worst_ms.max(ms);
    }
    println!("30 pictures decoded, stamps intact, worst capture-to-picture {worst_ms:.1} ms");
    cam.close().await;
    router.shutdown().await?;
    Ok(())
}
