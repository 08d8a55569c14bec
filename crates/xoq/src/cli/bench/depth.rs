//! `xoq bench depth`: the lossless depth codec against the alternatives, and capture →
//! decoded arrays over P2P, per size.
//!
//! Codec rows run on the same pictures of the synthetic scene (rendered before timing): our
//! RVL + deflate and RVL alone, against zstd alone and PNG-16 (what ROS's
//! `compressed_depth_image_transport` sends by default), each checked bit-exact after
//! decoding, and against raw Z16 (the bandwidth without coding). The scene's error is a
//! stereo camera's (see `xoq_device::depth::scene`), but a real camera's texture, holes and
//! noise differ: ratios are for this scene, timings and the ranking are what carry over.
//!
//! Stream rows: a depth server and a client in this process; the client decodes every capture
//! (depth and its JPEG colour picture) and notes `now - capture` (same clock).

use std::time::Instant;

use xoq_client::depth::{DepthOptions, RemoteDepthCamera};
use xoq_device::depth::SceneSource;
use xoq_media::depth::{self, DepthCodec};
use xoq_server::depth::DepthServer;
use xoq_transport::p2p::EndpointBuilder;

use super::common::{cpu_seconds, parse_size, print_process_figures, python_field};

const SCRIPT: &str = include_str!("depth.py");

/// Pictures per codec measurement.
const FRAMES: u64 = 30;

struct CodecRow {
    name: &'static str,
    bytes: usize,
    enc_ms: f64,
    dec_ms: f64,
}

fn png16_encode(w: u32, h: u32, data: &[u16]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Sixteen);
    enc.set_compression(png::Compression::Fast);
    let mut writer = enc.write_header()?;
    let be: Vec<u8> = data.iter().flat_map(|v| v.to_be_bytes()).collect();
    writer.write_image_data(&be)?;
    writer.finish()?;
    Ok(out)
}

fn png16_decode(bytes: &[u8]) -> anyhow::Result<Vec<u16>> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info()?;
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buf)?;
    Ok(buf[..info.buffer_size()]
        .chunks_exact(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect())
}

/// Encode and decode every picture with one codec; checks the round trip is bit-exact.
fn measure<E, D>(
    name: &'static str,
    pictures: &[Vec<u16>],
    mut encode: E,
    mut decode: D,
) -> anyhow::Result<CodecRow>
where
    E: FnMut(&[u16]) -> anyhow::Result<Vec<u8>>,
    D: FnMut(&[u8]) -> anyhow::Result<Vec<u16>>,
{
    let t = Instant::now();
    let coded: Vec<Vec<u8>> = pictures
        .iter()
        .map(|p| encode(p))
        .collect::<anyhow::Result<_>>()?;
    let enc_ms = t.elapsed().as_secs_f64() * 1e3 / pictures.len() as f64;
    let t = Instant::now();
    let decoded: Vec<Vec<u16>> = coded
        .iter()
        .map(|c| decode(c))
        .collect::<anyhow::Result<_>>()?;
    let dec_ms = t.elapsed().as_secs_f64() * 1e3 / pictures.len() as f64;
    for (a, b) in pictures.iter().zip(&decoded) {
        anyhow::ensure!(a == b, "{name} did not round-trip bit-exact");
    }
    Ok(CodecRow {
        name,
        bytes: coded.iter().map(Vec::len).sum::<usize>() / coded.len(),
        enc_ms,
        dec_ms,
    })
}

fn codec_rows(w: u32, h: u32) -> anyhow::Result<Vec<CodecRow>> {
    let scene = SceneSource::new(w, h, 30)?;
    let pictures: Vec<Vec<u16>> = (0..FRAMES)
        .map(|i| scene.render(i * 7, 1_700_000_000_000_000 + i).depth)
        .collect();
    let ours = |codec: DepthCodec| move |p: &[u16]| Ok(depth::encode(codec, w, h, p, 1)?);
    let dec = |b: &[u8]| Ok(depth::decode(b, depth::MAX_DEPTH_PIXELS)?.data);
    Ok(vec![
        measure("raw Z16", &pictures, ours(DepthCodec::Raw), dec)?,
        measure("RVL+deflate", &pictures, ours(DepthCodec::RvlDeflate), dec)?,
        measure("RVL", &pictures, ours(DepthCodec::Rvl), dec)?,
        measure(
            "zstd-1",
            &pictures,
            |p| {
                let le: Vec<u8> = p.iter().flat_map(|v| v.to_le_bytes()).collect();
                Ok(zstd::bulk::compress(&le, 1)?)
            },
            |b| {
                let le = zstd::bulk::decompress(b, (w * h * 2) as usize)?;
                Ok(le
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect())
            },
        )?,
        measure("PNG-16", &pictures, |p| png16_encode(w, h, p), png16_decode)?,
    ])
}

struct StreamRow {
    /// Rendering one capture of the synthetic scene (the simulated sensor), ms: part of the
    /// server's CPU, not of the latency.
    scene_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    fps: f64,
    cores: f64,
    coded_mbit: f64,
}

/// Run the LeRobot-style xoq.realsense loop on `addr`; (p50 ms, p95 ms, fps, cores).
async fn python_row(
    python: &str,
    addr: &str,
    seconds: f64,
    (w, h): (u32, u32),
    (cw, ch): (u32, u32),
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let out = tokio::process::Command::new(python)
        .args([
            "-c",
            SCRIPT,
            addr,
            &seconds.to_string(),
            &w.to_string(),
            &h.to_string(),
            &cw.to_string(),
            &ch.to_string(),
        ])
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
    Ok((
        python_field(&text, "p50_ms")?,
        python_field(&text, "p95_ms")?,
        python_field(&text, "fps")?,
        python_field(&text, "cores")?,
    ))
}

async fn stream_row(
    (w, h): (u32, u32),
    color: Option<(u32, u32)>,
    fps: u32,
    seconds: f64,
    python: Option<&str>,
) -> anyhow::Result<(StreamRow, Option<(f64, f64, f64, f64)>)> {
    let make = || -> anyhow::Result<SceneSource> {
        let mut scene = SceneSource::new(w, h, fps)?;
        if let Some((cw, ch)) = color {
            scene = scene.with_color_size(cw, ch)?;
        }
        Ok(scene)
    };
    let scene = make()?;
    let scene_ms = {
        let s = make()?;
        let t = Instant::now();
        for i in 0..10 {
            std::hint::black_box(s.render(i, i));
        }
        t.elapsed().as_secs_f64() * 1e3 / 10.0
    };
    let server = DepthServer::builder(Box::new(scene)).start().await?;
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(server.alpns())
        .spawn()
        .await?;
    let addr = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = server.router(ep);
    let mut cam = RemoteDepthCamera::connect(&addr, DepthOptions::new().offline(true)).await?;
    for _ in 0..5 {
        cam.next().await?;
    }
    use std::sync::atomic::Ordering::Relaxed;
    let coded0 = server.stats().depth_coded_bytes.load(Relaxed);
    let mut lat = Vec::new();
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    while t0.elapsed().as_secs_f64() < seconds {
        let set = cam.next().await?;
        anyhow::ensure!(set.color.is_some(), "a capture came without colour");
        lat.push(xoq_device::now_us().saturating_sub(set.timestamp_us) as f64 / 1e3);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cores = (cpu_seconds() - cpu0) / wall;
    let coded = server.stats().depth_coded_bytes.load(Relaxed) - coded0;
    cam.close().await;
    let py = match python {
        Some(p) => Some(python_row(p, &addr, seconds, (w, h), color.unwrap_or((w, h))).await?),
        None => None,
    };
    let _ = router.shutdown().await;
    anyhow::ensure!(!lat.is_empty(), "no captures arrived");
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    Ok((
        StreamRow {
            scene_ms,
            p50_ms: at(0.5),
            p95_ms: at(0.95),
            fps: lat.len() as f64 / wall,
            cores,
            coded_mbit: coded as f64 * 8.0 / 1e6 / wall,
        },
        py,
    ))
}

pub(super) async fn run(
    sizes: &str,
    color: Option<&str>,
    fps: u32,
    seconds: f64,
    python: Option<&str>,
) -> anyhow::Result<()> {
    let color = color.map(parse_size).transpose()?;
    let sizes: Vec<(u32, u32)> = sizes
        .split(',')
        .map(parse_size)
        .collect::<anyhow::Result<_>>()?;
    println!(
        "xoq bench depth: synthetic scene with stereo-like error (ratios depend on a real camera's noise)"
    );
    println!("codec rows: {FRAMES} pictures, bit-exact round trip checked; ratio against raw Z16");
    println!();
    println!(
        "{:<10} {:<12} {:>10} {:>7} {:>10} {:>10}",
        "size", "codec", "bytes", "ratio", "encode ms", "decode ms"
    );
    for &(w, h) in &sizes {
        let rows = codec_rows(w, h)?;
        let raw = rows.first().map_or(1, |r| r.bytes).max(1);
        for r in &rows {
            println!(
                "{:<10} {:<12} {:>10} {:>6.2}x {:>10.2} {:>10.2}",
                format!("{w}x{h}"),
                r.name,
                r.bytes,
                raw as f64 / r.bytes.max(1) as f64,
                r.enc_ms,
                r.dec_ms
            );
        }
    }
    println!();
    println!(
        "stream rows: P2P on loopback at {fps} fps, {seconds} s each; latency = capture -> depth and colour decoded in the client"
    );
    println!("CPU = server (capture, RVL+deflate, JPEG) + client (decode) in one process");
    if let Some((cw, ch)) = color {
        println!("colour {cw}x{ch} with every depth size");
    }
    println!();
    println!(
        "scene ms = rendering one capture of the synthetic scene (the simulated sensor, inside 'cores')"
    );
    println!(
        "{:<10} {:>8} {:>8} {:>7} {:>6} {:>11} {:>11} {:>9}",
        "size", "p50 ms", "p95 ms", "fps", "cores", "coded Mb/s", "raw Mb/s", "scene ms"
    );
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    for &(w, h) in &sizes {
        let (r, py) = stream_row((w, h), color, fps, seconds, python).await?;
        let raw_mbit = f64::from(w * h * 2 * fps) * 8.0 / 1e6;
        println!(
            "{:<10} {:>8.1} {:>8.1} {:>7.1} {:>6.2} {:>11.1} {:>11.1} {:>9.1}",
            format!("{w}x{h}"),
            r.p50_ms,
            r.p95_ms,
            r.fps,
            r.cores,
            r.coded_mbit,
            raw_mbit,
            r.scene_ms
        );
        if let Some((p50, p95, fps, cores)) = py {
            println!(
                "{:<10} {:>8.1} {:>8.1} {:>7.1} {:>6.2}   (python: xoq.realsense -> numpy, client process only)",
                "  python", p50, p95, fps, cores
            );
        }
    }
    println!();
    print_process_figures(cpu_seconds() - cpu0, t0.elapsed().as_secs_f64(), "");
    Ok(())
}
