//! What a deploy will install: one service per discovered (or declared) device, with its
//! key, port, command line and unit, decided without touching the system.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use xoq_device::discover::Found;

/// The per-robot config (`xoq deploy --config FILE`, JSON): what discovery cannot know.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RobotConfig {
    /// Machine name (default: the host name).
    pub(crate) name: Option<String>,
    /// Client endpoint ids every service admits (default: anyone who knows a service's id).
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    /// Relay every service publishes on (`https://relay/anon`), also `--relay`.
    pub(crate) relay: Option<String>,
    /// Settings per discovered device, keyed by its unit name (as `--dry-run` prints it,
    /// e.g. `can-can0`) or its stable id.
    #[serde(default)]
    pub(crate) services: BTreeMap<String, ServiceConfig>,
    /// Services declared rather than discovered (simulated devices for CI, an audio device).
    #[serde(default)]
    pub(crate) extra: Vec<ExtraService>,
}

/// Settings of one service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceConfig {
    /// Name clients use (default: the unit name).
    pub(crate) name: Option<String>,
    /// Leave this device out.
    #[serde(default)]
    pub(crate) skip: bool,
    /// Serial baud rate (default 1000000, Feetech buses).
    pub(crate) baud: Option<u32>,
    /// CAN bit rate (default: the interface's current one, else 1000000).
    pub(crate) bitrate: Option<u32>,
    /// CAN FD data bit rate.
    pub(crate) dbitrate: Option<u32>,
    /// CAN frames sent when the last controller leaves (`--on-disconnect FILE`).
    pub(crate) on_disconnect: Option<PathBuf>,
    /// Deadman in ms (`--deadman`).
    pub(crate) deadman: Option<u64>,
    /// Oldest command accepted, ms (`--max-cmd-age`).
    pub(crate) max_cmd_age: Option<u64>,
}

/// A declared service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtraService {
    /// `serial`, `can`, `camera`, `depth` or `audio`.
    pub(crate) kind: String,
    /// What its server opens (`sim:so101`, `sim:openarm`, `sim:depth`, `sim:tone`, a path).
    pub(crate) device: String,
    /// Name clients use.
    pub(crate) name: String,
    /// Its settings.
    #[serde(flatten)]
    pub(crate) settings: ServiceConfig,
}

impl RobotConfig {
    /// Read `path`.
    pub(crate) fn read(path: &Path) -> anyhow::Result<RobotConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the robot config {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a robot config", path.display()))
    }
}

/// One service to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// Name clients use.
    pub(crate) name: String,
    /// Service kind.
    pub(crate) kind: &'static str,
    /// What the server opens.
    pub(crate) device: String,
    /// Identity the key derives from.
    pub(crate) stable_id: String,
    /// Unit name (`xoq-<name>.service`).
    pub(crate) unit: String,
    /// Key file.
    pub(crate) key: PathBuf,
    /// UDP port.
    pub(crate) port: u16,
    /// Relay path, when publishing.
    pub(crate) moq_path: Option<String>,
    /// `ExecStartPre` (CAN bit rate), if any.
    pub(crate) pre: Option<Vec<String>>,
    /// `ExecStart`.
    pub(crate) exec: Vec<String>,
    /// What `--dry-run` says about a declared device (discovered ones are listed as found).
    pub(crate) about: String,
}

/// Inputs of a plan besides what was found.
#[derive(Debug, Clone)]
pub(crate) struct PlanInputs {
    /// The `xoq` binary units run.
    pub(crate) xoq: PathBuf,
    /// `$XOQ_HOME` of the services.
    pub(crate) home: PathBuf,
    /// IP the services bind (0.0.0.0: every interface).
    pub(crate) bind_ip: std::net::IpAddr,
    /// First port: the machine service's; services get ports above it.
    pub(crate) port_base: u16,
    /// Relay URL, if publishing.
    pub(crate) relay: Option<String>,
    /// MoQ prefix (`anon`).
    pub(crate) prefix: String,
    /// The machine id (for MoQ paths).
    pub(crate) machine_id: String,
    /// Servers without discovery (loopback tests).
    pub(crate) offline: bool,
    /// Video nodes that deliver depth (known only on a real root, from their modes).
    pub(crate) depth_nodes: Vec<PathBuf>,
}

/// Services get ports in `port_base + 1 ..= port_base + PORT_SPAN`.
const PORT_SPAN: u16 = 899;

/// A name safe in a unit name, a MoQ path and a file name.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    // Service addresses take names of at most 64 characters.
    out.truncate(64);
    out
}

/// The port of `stable_id`: a hash into the span, then the next free one, so a device keeps
/// its port across deploys as long as no other device lands on it first.
fn port_for(stable_id: &str, base: u16, taken: &mut HashSet<u16>) -> u16 {
    let h = stable_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut p = (h % u64::from(PORT_SPAN)) as u16;
    while !taken.insert(p) {
        p = (p + 1) % PORT_SPAN;
    }
    base + 1 + p
}

/// Plan the services for what was `found`, under `config`.
pub(crate) fn plan(
    found: &Found,
    config: &RobotConfig,
    inp: &PlanInputs,
) -> anyhow::Result<Vec<Planned>> {
    let mut taken = HashSet::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    let settings = |unit: &str, stable: &str| {
        config
            .services
            .get(unit)
            .or_else(|| config.services.get(stable))
            .cloned()
            .unwrap_or_default()
    };
    let mut add = |kind: &'static str,
                   device: String,
                   stable_id: String,
                   default_name: String,
                   about: String,
                   s: ServiceConfig,
                   out: &mut Vec<Planned>|
     -> anyhow::Result<()> {
        if s.skip {
            return Ok(());
        }
        anyhow::ensure!(
            s.deadman.is_none() || s.on_disconnect.is_some(),
            "{default_name}: \"deadman\" needs \"on_disconnect\" (a file of candump-style frames to send when it trips)"
        );
        let name = sanitize(s.name.as_deref().unwrap_or(&default_name));
        anyhow::ensure!(
            names.insert(name.clone()),
            "two services are named {name}: give one another name in the robot config"
        );
        let key = inp
            .home
            .join("keys")
            .join(format!("{}.key", sanitize(&stable_id)));
        let port = port_for(&stable_id, inp.port_base, &mut taken);
        let moq_path = inp.relay.as_ref().map(|_| {
            format!(
                "{}/{}/{name}",
                inp.prefix,
                &inp.machine_id[..16.min(inp.machine_id.len())]
            )
        });
        let xoq = inp.xoq.display().to_string();
        let mut exec = vec![xoq.clone(), format!("{kind}-server")];
        let mut pre = None;
        match kind {
            "serial" => {
                exec.push(device.clone());
                exec.push(s.baud.unwrap_or(1_000_000).to_string());
            }
            "can" => {
                exec.push(device.clone());
                if let Some(f) = &s.on_disconnect {
                    exec.extend(["--on-disconnect".into(), f.display().to_string()]);
                }
                if let Some(ms) = s.deadman {
                    exec.extend(["--deadman".into(), ms.to_string()]);
                }
                if let Some(ms) = s.max_cmd_age {
                    exec.extend(["--max-cmd-age".into(), ms.to_string()]);
                }
                // A real interface is brought up at its bit rate first; simulated and
                // virtual buses have none.
                if !device.contains(':') {
                    let mut p = vec![
                        xoq.clone(),
                        "setup-can".into(),
                        device.clone(),
                        "--bitrate".into(),
                        s.bitrate.unwrap_or(1_000_000).to_string(),
                    ];
                    if let Some(d) = s.dbitrate {
                        p.extend(["--dbitrate".into(), d.to_string()]);
                    }
                    pre = Some(p);
                }
            }
            "camera" | "depth" | "audio" => exec.push(device.clone()),
            other => {
                anyhow::bail!("unknown service kind {other:?} (serial, can, camera, depth, audio)")
            }
        }
        exec.extend([
            "--key".into(),
            key.display().to_string(),
            "--bind".into(),
            std::net::SocketAddr::new(inp.bind_ip, port).to_string(),
        ]);
        if inp.offline {
            exec.push("--offline".into());
        }
        // The relay URL (and its token) comes from the 0600 environment file the unit names,
        // never from the command line, which any local user can read.
        if let Some(path) = &moq_path {
            exec.extend(["--moq".into(), path.clone()]);
        }
        for id in &config.allow {
            exec.extend(["--allow".into(), id.clone()]);
        }
        out.push(Planned {
            unit: format!("xoq-{name}.service"),
            name,
            kind,
            device,
            stable_id,
            key,
            port,
            moq_path,
            pre,
            exec,
            about,
        });
        Ok(())
    };
    for p in &found.serial {
        add(
            "serial",
            p.by_id.display().to_string(),
            p.stable_id.clone(),
            p.unit_name.clone(),
            String::new(),
            settings(&p.unit_name, &p.stable_id),
            &mut out,
        )?;
    }
    for c in &found.can {
        let mut s = settings(&c.unit_name, &c.stable_id);
        // Keep the bit rate the interface runs at unless the config says otherwise.
        s.bitrate = s.bitrate.or(c.bitrate);
        s.dbitrate = s.dbitrate.or(c.dbitrate);
        add(
            "can",
            c.name.clone(),
            c.stable_id.clone(),
            c.unit_name.clone(),
            String::new(),
            s,
            &mut out,
        )?;
    }
    // A depth camera's node serves depth with the colour node of the same USB device paired
    // in; that colour node is not served again as a camera (it would be busy).
    let depth_cams: Vec<_> = found
        .cameras
        .iter()
        .filter(|v| inp.depth_nodes.contains(&v.node))
        .filter_map(|v| v.usb.clone())
        .collect();
    for v in found.cameras.iter().filter(|v| !v.likely_metadata()) {
        let depth = inp.depth_nodes.contains(&v.node);
        if !depth && v.usb.as_ref().is_some_and(|u| depth_cams.contains(u)) {
            continue;
        }
        let device = v.stable.as_ref().unwrap_or(&v.node).display().to_string();
        add(
            if depth { "depth" } else { "camera" },
            device,
            v.stable_id.clone(),
            v.unit_name.clone(),
            String::new(),
            settings(&v.unit_name, &v.stable_id),
            &mut out,
        )?;
    }
    for e in &config.extra {
        let kind: &'static str = match e.kind.as_str() {
            "serial" => "serial",
            "can" => "can",
            "camera" => "camera",
            "depth" => "depth",
            "audio" => "audio",
            other => anyhow::bail!(
                "extra service {}: unknown kind {other:?} (serial, can, camera, depth, audio)",
                e.name
            ),
        };
        add(
            kind,
            e.device.clone(),
            format!("declared-{}", e.name),
            e.name.clone(),
            format!("{} (declared in the robot config)", e.device),
            ServiceConfig {
                name: Some(e.name.clone()),
                ..e.settings.clone()
            },
            &mut out,
        )?;
    }
    Ok(out)
}

/// The machine service's command line (it admits the same clients as the services).
pub(crate) fn machine_exec(inp: &PlanInputs, key: &Path, allow: &[String]) -> Vec<String> {
    let mut exec = vec![
        inp.xoq.display().to_string(),
        "machine-server".into(),
        "--file".into(),
        inp.home.join("machine.json").display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "--bind".into(),
        std::net::SocketAddr::new(inp.bind_ip, inp.port_base).to_string(),
    ];
    if inp.offline {
        exec.push("--offline".into());
    }
    for id in allow {
        exec.extend(["--allow".into(), id.clone()]);
    }
    exec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_stay_with_their_device_and_never_collide() {
        let mut a = HashSet::new();
        let p1 = port_for("serial-x", 47000, &mut a);
        let p2 = port_for("can-can0", 47000, &mut a);
        let mut b = HashSet::new();
        assert_eq!(
            port_for("can-can0", 47000, &mut b),
            p2,
            "order does not matter"
        );
        assert_ne!(p1, p2);
        let mut c = HashSet::new();
        let ports: HashSet<u16> = (0..PORT_SPAN)
            .map(|i| port_for(&format!("d{i}"), 47000, &mut c))
            .collect();
        assert_eq!(ports.len(), PORT_SPAN as usize);
        assert!(
            ports
                .iter()
                .all(|p| (47001..=47000 + PORT_SPAN).contains(p))
        );
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("Serial-CH343 #1/a"), "serial-ch343__1_a");
    }
}
