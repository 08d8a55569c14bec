//! `xoq bench camera`: capture → decoded picture latency, frames/s and CPU per resolution,
//! codec and transport, next to the raw codec cost measured in the same run.
//!
//! The test-pattern camera stamps each picture with its capture time, and the server's frame
//! header carries it too; a viewer in this process decodes every frame to packed BGR (what
//! `xoq_cv2` hands to numpy) and notes `now - capture`. Server and viewer share the process,
//! so the CPU figure is their sum. The baseline is the codec alone on the same pictures:
//! encode (server side) plus decode and colour conversion (viewer side), no network.

use std::time::{Duration, Instant};

use xoq_client::camera::{CameraOptions, RemoteCamera};
use xoq_device::camera::TestPattern;
use xoq_media::h264::{H264Config, H264Encoder};
use xoq_media::{ChannelOrder, VideoDecoder};
use xoq_relay::RelayConfig;
use xoq_server::camera::CameraServer;
use xoq_transport::moq::MoqSession;
use xoq_transport::p2p::EndpointBuilder;
use xoq_wire::camera::Codec;

use super::common::{cpu_seconds, parse_size, peak_rss_mib, python_field};

const SCRIPT: &str = include_str!("camera.py");

/// Run the Python client (cv2.VideoCapture through xoq) on `addr`; its printed figures.
async fn python_client(python: &str, addr: &str, seconds: f64) -> anyhow::Result<Run> {
    let out = tokio::process::Command::new(python)
        .args(["-c", SCRIPT, addr, &seconds.to_string()])
        .env("XOQ_OFFLINE", "1")
        .output()
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot run {python}: {e} (pass --python with xoq installed)")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "python client failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| python_field(&text, k);
    Ok(Run {
        p50_ms: field("p50_ms")?,
        p95_ms: field("p95_ms")?,
        fps: field("fps")?,
        cores: field("cores")?,
        server_encode_ms: 0.0,
    })
}

/// The codec alone on `frames` pictures: (encode ms, decode + BGR ms) per frame.
fn raw_codec(codec: Codec, w: u32, h: u32, fps: u32, frames: u64) -> anyhow::Result<(f64, f64)> {
    let pattern = TestPattern::new(w, h)?;
    // A few pictures, cycled: rendering stays out of the timing, and memory stays small.
    let pictures: Vec<Vec<u8>> = (0..8).map(|i| pattern.render(i, i)).collect();
    let picture = |i: u64| &pictures[(i % 8) as usize];
    let mut encoded = Vec::new();
    let t = Instant::now();
    match codec {
        Codec::H264 => {
            let mut enc = H264Encoder::new(H264Config::for_size(w, h, fps))?;
            for i in 0..frames {
                encoded.push(enc.encode_rgb(picture(i), w, h)?.data);
            }
        }
        Codec::Jpeg => {
            for i in 0..frames {
                encoded.push(xoq_media::jpeg::encode(picture(i), w, h, 80)?);
            }
        }
    }
    let enc_ms = t.elapsed().as_secs_f64() * 1e3 / frames as f64;
    let mut dec = match codec {
        Codec::H264 => VideoDecoder::h264(xoq_media::MAX_PIXELS)?,
        Codec::Jpeg => VideoDecoder::jpeg(xoq_media::MAX_PIXELS),
    };
    let mut out = vec![0u8; (w * h * 3) as usize];
    let t = Instant::now();
    for e in &encoded {
        dec.decode_with(e, |p| p.write_packed(ChannelOrder::Bgr, &mut out))?
            .transpose()?;
    }
    let dec_ms = t.elapsed().as_secs_f64() * 1e3 / frames as f64;
    Ok((enc_ms, dec_ms))
}

/// The server's (frames encoded, µs spent encoding) so far.
fn encode_counters(server: &CameraServer) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let st = server.stats();
    (st.encoded.load(Relaxed), st.encode_us.load(Relaxed))
}

/// Mean encode time (ms) since `before` was taken.
fn mean_encode_ms(server: &CameraServer, before: (u64, u64)) -> f64 {
    let (n, us) = encode_counters(server);
    (us - before.1) as f64 / 1e3 / (n - before.0).max(1) as f64
}

fn print_row(size: (u32, u32), codec: &str, link: &str, r: &Run, raw: (f64, f64)) {
    println!(
        "{:<10} {:<5} {:<6} {:>8.1} {:>8.1} {:>7.1} {:>6.2} {:>10.1} {:>9.1} {:>11.1}",
        format!("{}x{}", size.0, size.1),
        codec,
        link,
        r.p50_ms,
        r.p95_ms,
        r.fps,
        r.cores,
        r.server_encode_ms,
        raw.0,
        raw.1
    );
}

struct Run {
    p50_ms: f64,
    p95_ms: f64,
    fps: f64,
    cores: f64,
    server_encode_ms: f64,
}

/// Watch `addr` for `seconds`, decoding every frame to BGR; latency from the capture stamp.
async fn watch(
    addr: &str,
    codec: Codec,
    seconds: f64,
    server: &CameraServer,
) -> anyhow::Result<Run> {
    let mut cam =
        RemoteCamera::connect(addr, CameraOptions::new().offline(true).codecs(&[codec])).await?;
    let mut out = Vec::new();
    // Warm up: the first keyframe, caches, congestion window.
    for _ in 0..10 {
        cam.next_decoded(|_, _| ()).await?;
    }
    let before = encode_counters(server);
    let mut lat = Vec::new();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    while t0.elapsed().as_secs_f64() < seconds {
        let (f, ()) = cam
            .next_decoded(|_, p| {
                out.resize((p.width() * p.height() * 3) as usize, 0);
                let _ = p.write_packed(ChannelOrder::Bgr, &mut out);
            })
            .await?;
        let now = xoq_device::camera::now_us();
        lat.push(now.saturating_sub(f.timestamp_us) as f64 / 1e3);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cores = (cpu_seconds() - cpu0) / wall;
    let server_encode_ms = mean_encode_ms(server, before);
    cam.close().await;
    anyhow::ensure!(!lat.is_empty(), "no frames arrived");
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    Ok(Run {
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        fps: lat.len() as f64 / wall,
        cores,
        server_encode_ms,
    })
}

pub(super) async fn run(
    sizes: &str,
    fps: u32,
    seconds: f64,
    relay_too: bool,
    python: Option<&str>,
) -> anyhow::Result<()> {
    let sizes: Vec<(u32, u32)> = sizes
        .split(',')
        .map(parse_size)
        .collect::<anyhow::Result<_>>()?;
    println!(
        "xoq bench camera: test pattern at {fps} fps, {seconds} s per row, every frame decoded to BGR"
    );
    println!(
        "latency = capture -> decoded picture in the viewer; CPU = server + viewer (one process)"
    );
    println!("raw = the codec alone on the same pictures, no network (encode | decode + BGR)");
    println!();
    println!(
        "{:<10} {:<5} {:<6} {:>8} {:>8} {:>7} {:>6} {:>10} {:>9} {:>11}",
        "size",
        "codec",
        "link",
        "p50 ms",
        "p95 ms",
        "fps",
        "cores",
        "enc ms",
        "raw enc",
        "raw dec+bgr"
    );
    let relay = if relay_too {
        Some(RelayConfig::ephemeral()?.start().await?)
    } else {
        None
    };
    for &(w, h) in &sizes {
        for codec in [Codec::H264, Codec::Jpeg] {
            let (raw_enc, raw_dec) =
                tokio::task::spawn_blocking(move || raw_codec(codec, w, h, fps, 30)).await??;
            let server = CameraServer::test_pattern(w, h)?
                .fps(fps)
                .codecs(&[codec])
                .start()
                .await?;
            let ep = EndpointBuilder::new()
                .offline(true)
                .alpns(vec![codec.alpn().to_vec()])
                .spawn()
                .await?;
            let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
            let router = server.router(ep);
            let mut links = vec![("P2P", addr)];
            let mut publish = None;
            if let (Some(relay), Codec::H264) = (&relay, codec) {
                let root = relay.url().join("anon")?;
                let session = MoqSession::connect(
                    &xoq_transport::RelayUrl::from_url(root.clone()),
                    xoq_transport::moq::Redial::Forever,
                )
                .await?;
                let srv = server.clone();
                publish = Some(tokio::spawn(async move {
                    let _ = srv.serve_moq(&session, "bench-cam").await;
                }));
                links.push((
                    "relay",
                    format!("{}/bench-cam", root.as_str().trim_end_matches('/')),
                ));
            }
            if let (Some(py), Codec::H264) = (python, codec) {
                let (cpu0, t0) = (cpu_seconds(), Instant::now());
                let before = encode_counters(&server);
                let mut r = python_client(py, &links[0].1, seconds).await?;
                // The server's share over the same period (the client's is in its figures).
                r.cores += (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
                r.server_encode_ms = mean_encode_ms(&server, before);
                print_row((w, h), "H264", "python", &r, (raw_enc, raw_dec));
            }
            for (link, addr) in &links {
                let r = tokio::time::timeout(
                    Duration::from_secs_f64(seconds + 30.0),
                    watch(addr, codec, seconds, &server),
                )
                .await
                .map_err(|_| anyhow::anyhow!("{w}x{h} {codec:?} over {link}: timed out"))??;
                print_row((w, h), &format!("{codec:?}"), link, &r, (raw_enc, raw_dec));
            }
            if let Some(p) = publish {
                p.abort();
            }
            let _ = router.shutdown().await;
        }
    }
    if let Some(r) = relay {
        r.shutdown().await;
    }
    println!();
    println!("peak RSS {:.1} MiB", peak_rss_mib());
    Ok(())
}
