//! `xoq camera-server` and `xoq camera-client`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use xoq_client::camera::{CameraOptions, RemoteCamera};
use xoq_device::camera::{CameraSource, PatternSource};
use xoq_server::camera::CameraServer;
use xoq_wire::camera::Codec;

use super::common::{self, RelayTask, Running, ServerArgs};

/// `xoq camera-server DEVICE`.
#[derive(Debug, Args)]
pub struct CameraServerCmd {
    /// Camera: a V4L2 index (0) or path (/dev/video0), or sim:pattern (a moving test
    /// picture with the frame number and capture time in its pixels).
    #[arg(required_unless_present = "list")]
    pub device: Option<String>,
    /// List the cameras on this machine and their modes, then exit.
    #[arg(long)]
    pub list: bool,
    /// Offer H.264 only.
    #[arg(long, conflicts_with = "jpeg")]
    pub h264: bool,
    /// Offer JPEG only (a camera's MJPEG passes through without a re-encode).
    #[arg(long)]
    pub jpeg: bool,
    /// Picture width (the camera picks its closest mode).
    #[arg(long)]
    pub width: Option<u32>,
    /// Picture height.
    #[arg(long)]
    pub height: Option<u32>,
    /// Frames per second.
    #[arg(long)]
    pub fps: Option<u32>,
    /// H.264 keyframe interval in frames (default: one second).
    #[arg(long)]
    pub gop: Option<u32>,
    /// H.264 bitrate in bits per second (default: about 0.1 bit per pixel per frame).
    #[arg(long)]
    pub bitrate: Option<u32>,
    /// JPEG quality 1-100 when frames are encoded here.
    #[arg(long, default_value_t = 80)]
    pub quality: u8,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn open_source(device: &str, a: &CameraServerCmd) -> anyhow::Result<Box<dyn CameraSource>> {
    if matches!(device, "sim:pattern" | "test" | "sim:camera") {
        return Ok(Box::new(PatternSource::new(
            a.width.unwrap_or(1280),
            a.height.unwrap_or(720),
            a.fps.unwrap_or(30),
        )?));
    }
    #[cfg(target_os = "linux")]
    {
        let req = xoq_device::camera::ModeRequest {
            width: a.width,
            height: a.height,
            fps: a.fps,
            prefer_mjpeg: a.jpeg,
            depth: false,
        };
        Ok(Box::new(xoq_device::camera::v4l2::V4l2Camera::open(
            device, req,
        )?))
    }
    #[cfg(not(target_os = "linux"))]
    anyhow::bail!("{device}: only sim:pattern is available on this platform (V4L2 is Linux-only)")
}

pub(super) async fn start(a: &CameraServerCmd) -> anyhow::Result<Running<CameraServer>> {
    let device = a.device.as_deref().unwrap_or("sim:pattern");
    let default_path = format!(
        "anon/xoq-camera-{}",
        device.rsplit('/').next().unwrap_or("0").replace(':', "-")
    );
    let moq_addr = a.server.moq_address(&default_path)?;
    let source = open_source(device, a)?;
    let codecs: &[Codec] = if a.h264 {
        &[Codec::H264]
    } else if a.jpeg {
        &[Codec::Jpeg]
    } else {
        &[Codec::H264, Codec::Jpeg]
    };
    let mut builder = CameraServer::builder(source)
        .codecs(codecs)
        .quality(a.quality);
    if let Some(g) = a.gop {
        builder = builder.gop(g);
    }
    if let Some(b) = a.bitrate {
        builder = builder.bitrate(b);
    }
    let server = builder
        .start()
        .await
        .with_context(|| format!("cannot serve camera {device}"))?;
    let router = if a.server.no_p2p {
        None
    } else {
        let alpns = codecs.iter().map(|c| c.alpn().to_vec()).collect();
        let ep = a
            .server
            .endpoint(&format!("camera-{}", device.replace('/', "-")), alpns)
            .await?;
        let r = server.router(ep);
        Some(r)
    };
    let relay = match &moq_addr {
        Some(addr) => {
            if !codecs.contains(&Codec::H264) {
                anyhow::bail!("MoQ broadcasts are H.264 (what the web player plays): drop --jpeg");
            }
            let srv = server.clone();
            Some(RelayTask::spawn(
                addr,
                format!("camera {device}"),
                move |session, name| async move { Ok(srv.serve_moq(&session, &name).await?) },
            )?)
        }
        None => None,
    };
    Ok(Running {
        server,
        router,
        moq: moq_addr,
        relay,
    })
}

fn list() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let devices = xoq_device::camera::v4l2::list();
        if devices.is_empty() {
            println!("no V4L2 capture devices (/dev/video*) on this machine");
        }
        for d in devices {
            println!("{}  {} ({}, {})", d.path.display(), d.card, d.driver, d.bus);
            if let Some(e) = &d.error {
                println!("    unusable: {e}");
            }
            for m in &d.modes {
                println!("    {m}");
            }
        }
    }
    println!("sim:pattern  test pattern, any even size up to 7680x4320, 1-120 fps");
    Ok(())
}

pub(super) async fn server(a: CameraServerCmd) -> anyhow::Result<()> {
    if a.list {
        return list();
    }
    let running = start(&a).await?;
    let mode = running
        .server
        .mode()
        .map_or_else(|| "?".into(), |m| m.to_string());
    let codecs: Vec<String> = running
        .server
        .codecs()
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    common::print_addresses(
        &format!(
            "xoq camera-server: serving {} ({mode}) as {}",
            a.device.as_deref().unwrap_or("sim:pattern"),
            codecs.join(", ")
        ),
        running.router.as_ref().map(|r| r.endpoint()),
        a.server.p2p.offline(),
        running.moq.as_ref(),
        &[],
    );
    common::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

/// `xoq camera-client ADDRESS`.
#[derive(Debug, Args)]
pub struct CameraClientCmd {
    /// Server address: <id> or <id>@<ip>:<port>.
    pub address: String,
    /// Save what arrives: a directory (one JPEG per frame), a .h264 file (raw Annex-B
    /// stream, for ffplay/ffmpeg) or a .mjpeg file (concatenated JPEGs).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Stop after this many frames (default: until Ctrl-C).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Only accept this codec (default: H.264, else JPEG).
    #[arg(long, value_parser = ["h264", "jpeg"])]
    pub codec: Option<String>,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// No discovery (also XOQ_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

enum Sink {
    Print,
    Dir(PathBuf),
    Stream(std::io::BufWriter<std::fs::File>),
}

pub(super) async fn client(a: CameraClientCmd) -> anyhow::Result<()> {
    let mut codecs: &[Codec] = match a.codec.as_deref() {
        Some("h264") => &[Codec::H264],
        Some("jpeg") => &[Codec::Jpeg],
        _ => &[Codec::H264, Codec::Jpeg],
    };
    let mut sink = Sink::Print;
    if let Some(p) = &a.save {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        sink = match ext {
            "h264" | "264" | "mjpeg" | "mjpg" => {
                let want = if ext.starts_with('m') {
                    Codec::Jpeg
                } else {
                    Codec::H264
                };
                if !codecs.contains(&want) {
                    anyhow::bail!("--save {} needs the {want:?} codec", p.display());
                }
                // A stream file holds one codec: ask for that one only.
                codecs = if want == Codec::Jpeg {
                    &[Codec::Jpeg]
                } else {
                    &[Codec::H264]
                };
                Sink::Stream(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                ))
            }
            "mp4" | "mkv" | "mov" => anyhow::bail!(
                "no container muxer is built in: save to out.h264 and run `ffmpeg -i out.h264 -c copy {}`",
                p.display()
            ),
            "" => {
                std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
                Sink::Dir(p.clone())
            }
            _ => anyhow::bail!("--save: give a directory, a .h264 or a .mjpeg file"),
        };
    }
    let opts = CameraOptions::new()
        .identity(common::client_identity(a.key.as_ref()))
        .offline(a.offline || xoq_transport::offline_from_env())
        .codecs(codecs);
    let mut cam = RemoteCamera::connect(&a.address, opts).await?;
    eprintln!(
        "connected to {} ({:?})",
        common::shown(&a.address),
        cam.codec()
    );
    let started = Instant::now();
    let mut n = 0u64;
    let mut wrote_key = false;
    // `--save DIR` of an H.264 session decodes here and stores pictures.
    let mut dir_decoder: Option<xoq_media::VideoDecoder> = None;
    loop {
        if a.frames.is_some_and(|max| n >= max) {
            break;
        }
        let next = tokio::select! {
            f = cam.next_frame() => f?,
            _ = common::shutdown_signal() => break,
        };
        n += 1;
        let latency_ms = (xoq_device::camera::now_us() as f64 - next.timestamp_us as f64) / 1000.0;
        match &mut sink {
            Sink::Print => println!(
                "frame {} {}x{} {} bytes{} latency {latency_ms:.1} ms",
                next.seq,
                next.width,
                next.height,
                next.data.len(),
                if next.keyframe { " key" } else { "" }
            ),
            Sink::Stream(w) => {
                // A stream file must start on a keyframe to be playable.
                wrote_key |= next.keyframe;
                if wrote_key {
                    w.write_all(&next.data)?;
                }
            }
            Sink::Dir(dir) => {
                let path = dir.join(format!("frame-{:06}.jpg", next.seq));
                let jpg = match cam.codec() {
                    Codec::Jpeg => next.data.to_vec(),
                    Codec::H264 => {
                        // Decode here and store pictures: a directory of JPEGs opens anywhere.
                        let dec = match &mut dir_decoder {
                            Some(d) => d,
                            None => dir_decoder
                                .insert(xoq_media::VideoDecoder::h264(xoq_media::MAX_PIXELS)?),
                        };
                        match dec.decode_with(&next.data, |p| p.into_rgb()) {
                            Ok(Some(Ok(img))) => {
                                xoq_media::jpeg::encode(&img.data, img.width, img.height, 90)?
                            }
                            _ => continue,
                        }
                    }
                };
                std::fs::write(&path, jpg)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    if let Sink::Stream(w) = &mut sink {
        w.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{n} frames in {secs:.1} s ({:.1} fps)",
        n as f64 / secs.max(1e-9)
    );
    cam.close().await;
    Ok(())
}
