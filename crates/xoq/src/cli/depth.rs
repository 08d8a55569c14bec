//! `xoq depth-server` (alias `realsense-server`) and `xoq depth-client`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use xoq_client::depth::{DepthOptions, RemoteDepthCamera};
use xoq_device::depth::{DepthSource, Distortion, Intrinsics, SceneSource};
use xoq_server::depth::DepthServer;

use super::common::{self, RelayTask, Running, ServerArgs};

/// `xoq depth-server DEVICE`.
#[derive(Debug, Args)]
pub struct DepthServerCmd {
    /// Depth camera: its V4L2 depth node (a number or a path; the node with Z16 in
    /// `xoq camera-server --list`), or sim:depth (a synthetic scene with known distances: a
    /// board at 1 m in the middle of the picture).
    #[arg(default_value = "sim:depth")]
    pub device: String,
    /// The colour node to pair with a V4L2 depth node (default: the node of the same USB
    /// device that offers pictures).
    #[arg(long, value_name = "DEVICE")]
    pub color: Option<String>,
    /// sim:depth only: colour picture size (WIDTHxHEIGHT; default: the depth size), as a
    /// D4xx's 848x480 depth with 1280x720 colour.
    #[arg(long, value_name = "WxH")]
    pub color_size: Option<String>,
    /// Picture width (depth and colour).
    #[arg(long)]
    pub width: Option<u32>,
    /// Picture height.
    #[arg(long)]
    pub height: Option<u32>,
    /// Frames per second.
    #[arg(long)]
    pub fps: Option<u32>,
    /// Metres per depth unit (V4L2 does not report it: 0.001 on a D4xx, 0.0001 on a D405).
    #[arg(long)]
    pub depth_scale: Option<f32>,
    /// Depth intrinsics as JSON: width, height, fx, fy, ppx, ppy, model, coeffs.
    #[arg(long, value_name = "FILE")]
    pub intrinsics: Option<PathBuf>,
    /// JPEG quality 1-100 of the colour pictures sent with depth.
    #[arg(long, default_value_t = 80)]
    pub quality: u8,
    /// XoQ 0.3.6's `realsense-server --path`: the MoQ path (= --moq).
    #[arg(long, hide = true)]
    pub path: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn open_source(a: &DepthServerCmd) -> anyhow::Result<Box<dyn DepthSource>> {
    match a.device.as_str() {
        "sim:depth" | "sim" | "test" => {
            let mut s = SceneSource::new(
                a.width.unwrap_or(640),
                a.height.unwrap_or(480),
                a.fps.unwrap_or(30),
            )?;
            if let Some(size) = &a.color_size {
                let (w, h) = common::parse_size(size).context("--color-size")?;
                s = s.with_color_size(w, h)?;
            }
            Ok(Box::new(s))
        }
        #[cfg(target_os = "linux")]
        node => {
            let req = xoq_device::camera::ModeRequest {
                width: a.width,
                height: a.height,
                fps: a.fps,
                prefer_mjpeg: false,
                depth: true,
            };
            Ok(Box::new(xoq_device::depth::v4l2::V4l2Depth::open(
                node,
                a.color.as_deref(),
                req,
            )?))
        }
        #[cfg(not(target_os = "linux"))]
        other => anyhow::bail!(
            "{other}: only sim:depth is available on this platform (V4L2 is Linux-only)"
        ),
    }
}

/// Read `--intrinsics FILE`: `{"width":640,"height":480,"fx":..,"fy":..,"ppx":..,"ppy":..,
/// "model":"none","coeffs":[0,0,0,0,0]}` (model and coeffs optional).
pub(super) fn read_intrinsics(path: &Path) -> anyhow::Result<Intrinsics> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read intrinsics {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let num = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_f64())
            .with_context(|| format!("{}: missing number \"{k}\"", path.display()))
    };
    let model = match v.get("model").and_then(|m| m.as_str()) {
        None => Distortion::None,
        Some(m) => Distortion::from_name(m).with_context(|| {
            format!(
                "{}: unknown model \"{m}\" (none, modified_brown_conrady, inverse_brown_conrady, \
                 ftheta, brown_conrady, kannala_brandt4)",
                path.display()
            )
        })?,
    };
    let mut coeffs = [0f32; 5];
    if let Some(c) = v.get("coeffs").and_then(|c| c.as_array()) {
        anyhow::ensure!(c.len() <= 5, "{}: at most 5 coeffs", path.display());
        for (slot, x) in coeffs.iter_mut().zip(c) {
            *slot = x.as_f64().context("coeffs must be numbers")? as f32;
        }
    }
    let k = Intrinsics {
        width: num("width")? as u32,
        height: num("height")? as u32,
        fx: num("fx")? as f32,
        fy: num("fy")? as f32,
        ppx: num("ppx")? as f32,
        ppy: num("ppy")? as f32,
        model,
        coeffs,
    };
    anyhow::ensure!(
        k.width > 0 && k.height > 0 && k.fx > 0.0 && k.fy > 0.0,
        "{}: width, height, fx and fy must be positive",
        path.display()
    );
    Ok(k)
}

/// Start serving: P2P (unless `--no-p2p`) and, with `--relay`, a hang broadcast.
pub(super) async fn start(a: &DepthServerCmd) -> anyhow::Result<Running<DepthServer>> {
    let mut args = a.server.clone();
    if args.moq.is_none() {
        args.moq = a.path.clone();
    }
    let default_path = format!("anon/xoq-depth-{}", a.device.replace([':', '/'], "-"));
    let moq_addr = args.moq_address(&default_path)?;
    let mut builder = DepthServer::builder(open_source(a)?).quality(a.quality);
    if let Some(s) = a.depth_scale {
        builder = builder.scale(s);
    }
    if let Some(p) = &a.intrinsics {
        builder = builder.intrinsics(read_intrinsics(p)?);
    }
    let server = builder
        .start()
        .await
        .with_context(|| format!("cannot serve depth camera {}", a.device))?;
    let router = if args.no_p2p {
        None
    } else {
        let ep = args
            .endpoint(
                &format!("depth-{}", a.device.replace([':', '/'], "-")),
                server.alpns(),
            )
            .await?;
        Some(server.router(ep))
    };
    let relay = match &moq_addr {
        Some(addr) => {
            let srv = server.clone();
            Some(RelayTask::spawn(
                addr,
                format!("depth camera {}", a.device),
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

pub(super) async fn server(a: DepthServerCmd) -> anyhow::Result<()> {
    let running = start(&a).await?;
    let info = running.server.info();
    let mode = running.server.mode().map_or_else(
        || "?".into(),
        |m| format!("{}x{} @ {} fps", m.width, m.height, m.fps),
    );
    common::print_addresses(
        &format!(
            "xoq depth-server: serving {} ({mode}): depth lossless (RVL + deflate, {} m per unit), colour H.264/JPEG",
            a.device, info.scale
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

/// `xoq depth-client ADDRESS`.
#[derive(Debug, Args)]
pub struct DepthClientCmd {
    /// Server address: <id>, <id>@<ip>:<port>, or <relay-url>/<path>.
    pub address: String,
    /// Stop after this many frames (default: until Ctrl-C).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Depth only, without the colour picture.
    #[arg(long)]
    pub no_color: bool,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// No discovery (also XOQ_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

pub(super) async fn client(a: DepthClientCmd) -> anyhow::Result<()> {
    let mut opts = DepthOptions::new()
        .identity(common::client_identity(a.key.as_ref()))
        .color(!a.no_color);
    if a.offline {
        opts = opts.offline(true);
    }
    let mut cam = RemoteDepthCamera::connect(&a.address, opts).await?;
    let info = cam.info().clone();
    println!(
        "{} ({}): {} m per unit, depth fx {:.1} fy {:.1} ppx {:.1} ppy {:.1}",
        info.name,
        info.serial,
        info.scale,
        info.depth.fx,
        info.depth.fy,
        info.depth.ppx,
        info.depth.ppy
    );
    let started = Instant::now();
    let mut n = 0u64;
    loop {
        if a.frames.is_some_and(|max| n >= max) {
            break;
        }
        let set = tokio::select! {
            s = cam.next() => s?,
            _ = common::shutdown_signal() => break,
        };
        n += 1;
        let d = &set.depth;
        let centre = d.data[(d.height as usize / 2) * d.width as usize + d.width as usize / 2];
        let valid = d.data.iter().filter(|&&v| v != 0).count();
        let age_ms = (xoq_device::now_us().saturating_sub(set.timestamp_us)) as f64 / 1000.0;
        println!(
            "frame {:>6}  depth {}x{}  centre {:.3} m  valid {:.1}%  colour {}  age {age_ms:.1} ms",
            set.seq,
            d.width,
            d.height,
            f32::from(centre) * cam.info().scale,
            100.0 * valid as f64 / d.data.len().max(1) as f64,
            set.color
                .as_ref()
                .map_or_else(|| "-".into(), |c| format!("{}x{}", c.width, c.height)),
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} frames in {secs:.1} s ({:.1} fps)",
        n as f64 / secs.max(1e-9)
    );
    cam.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intrinsics_files_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("k.json");
        std::fs::write(
            &p,
            r#"{"width":848,"height":480,"fx":421.5,"fy":421.5,"ppx":424.1,"ppy":240.2,"model":"brown_conrady","coeffs":[0.1,0,0,0,0]}"#,
        )
        .expect("write");
        let k = read_intrinsics(&p).expect("intrinsics");
        assert_eq!(
            (k.width, k.fx, k.model),
            (848, 421.5, Distortion::BrownConrady)
        );
        for bad in [
            r#"{"width":848}"#,
            r#"{"width":848,"height":480,"fx":0,"fy":1,"ppx":1,"ppy":1}"#,
            r#"{"width":848,"height":480,"fx":1,"fy":1,"ppx":1,"ppy":1,"model":"fisheye9"}"#,
            "not json",
        ] {
            std::fs::write(&p, bad).expect("write");
            assert!(read_intrinsics(&p).is_err(), "{bad}");
        }
    }
}
