//! `xoq deploy`: discover a robot's hardware and run it as systemd services, with stable
//! keys and ports, `machine.json`, status and uninstall.
//!
//! Pieces: `plan` (what to install, from what discovery found and the robot config),
//! `units` (unit files), `manifest` (`machine.json`). This module runs the command: it prints
//! the plan, writes keys, units and `machine.json`, and drives `systemctl`.

pub(super) mod manifest;
pub(super) mod plan;
pub(super) mod units;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Args;
use xoq_device::discover::{Found, discover};

use manifest::{MachineFile, ServiceEntry};
use plan::{PlanInputs, Planned, RobotConfig};
use units::Scope;

/// `xoq deploy`.
#[derive(Debug, Args)]
pub struct DeployCmd {
    /// Print what was found and what would be installed; touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Show each deployed service and its unit's state.
    #[arg(long, conflicts_with_all = ["dry_run", "uninstall"])]
    pub status: bool,
    /// Stop, disable and remove the deployed units and machine.json (keys are kept).
    #[arg(long, conflicts_with = "dry_run")]
    pub uninstall: bool,
    /// Start the services at boot (enable; for user units also `loginctl enable-linger`).
    #[arg(long)]
    pub boot: bool,
    /// Per-robot config (JSON): names, baud and bit rates, safety flags, allowlist, declared
    /// services.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Relay the services also publish on (`https://host/anon`, token as ?jwt=).
    #[arg(long, env = "XOQ_RELAY")]
    pub relay: Option<String>,
    /// MoQ path prefix: services publish as <prefix>/<machine>/<service>.
    #[arg(long, default_value = "anon")]
    pub prefix: String,
    /// Look for devices under this root instead of / (a copy of /sys and /dev, for tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Write units here instead of the system or user unit directory.
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
    /// User units (default when not root) or system units (default as root).
    #[arg(long, value_parser = ["user", "system"])]
    pub scope: Option<String>,
    /// Do not run systemctl (write files only; with --unit-dir for a scratch directory).
    #[arg(long)]
    pub no_systemctl: bool,
    /// IP the services bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_ip: std::net::IpAddr,
    /// UDP port of the machine service; services get fixed ports above it.
    #[arg(long, default_value_t = 47000)]
    pub port_base: u16,
    /// Servers without discovery (direct addresses only; loopback tests).
    #[arg(long)]
    pub offline: bool,
}

fn home() -> PathBuf {
    xoq_transport::key::xoq_home()
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn scope_of(a: &DeployCmd) -> Scope {
    match a.scope.as_deref() {
        Some("system") => Scope::System,
        Some("user") => Scope::User,
        _ if is_root() => Scope::System,
        _ => Scope::User,
    }
}

fn unit_dir(a: &DeployCmd, scope: Scope) -> anyhow::Result<PathBuf> {
    if let Some(d) = &a.unit_dir {
        return Ok(d.clone());
    }
    Ok(match scope {
        Scope::System => PathBuf::from("/etc/systemd/system"),
        Scope::User => std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .context("no HOME: pass --unit-dir")?
            .join("systemd/user"),
    })
}

/// `systemctl [--user] ARGS`; its error says what failed.
fn systemctl(scope: Scope, args: &[&str]) -> anyhow::Result<String> {
    let mut c = Command::new("systemctl");
    if scope == Scope::User {
        c.arg("--user");
    }
    let out = c.args(args).output().context(
        "cannot run systemctl: is this a systemd machine? (--no-systemctl writes the files only)",
    )?;
    anyhow::ensure!(
        out.status.success(),
        "systemctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// This machine's non-loopback IPv4 addresses (for the addresses clients paste).
fn local_ips() -> Vec<std::net::IpAddr> {
    let mut ips = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                let ip = std::net::IpAddr::V4(sin.ip());
                if !ip.is_loopback() && !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    ips
}

/// Direct addresses of an endpoint on `port`.
fn addresses(id: &str, bind_ip: std::net::IpAddr, port: u16) -> Vec<String> {
    let mut ips = vec![];
    if bind_ip.is_unspecified() {
        ips.push(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        ips.extend(local_ips());
    } else {
        ips.push(bind_ip);
    }
    ips.iter()
        .map(|ip| format!("{id}@{}", std::net::SocketAddr::new(*ip, port)))
        .collect()
}

/// V4L2 nodes of this machine that deliver depth (Z16/Y16), from their modes.
fn depth_nodes() -> Vec<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        xoq_device::camera::v4l2::list()
            .into_iter()
            .filter(|d| d.modes.iter().any(|m| m.format.is_depth()))
            .map(|d| d.path)
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

fn print_found(found: &Found) {
    println!("found:");
    if found.is_empty() {
        println!("  no serial ports, CAN interfaces or cameras");
    }
    for p in &found.serial {
        let usb = p.usb.as_ref().map_or_else(String::new, |u| {
            format!(
                "  {:04x}:{:04x} {}{}",
                u.vendor,
                u.product,
                u.product_name.as_deref().unwrap_or(""),
                u.serial
                    .as_ref()
                    .map_or_else(String::new, |s| format!(" serial {s}"))
            )
        });
        println!(
            "  serial  {} (now {}){usb}",
            p.by_id.display(),
            p.tty.display()
        );
        if let Some(g) = &p.attached {
            println!("          {g}");
        }
    }
    for c in &found.can {
        println!(
            "  can     {} ({}, {}{})",
            c.name,
            if c.fd { "FD" } else { "classic" },
            if c.up { "up" } else { "down" },
            c.bitrate
                .map_or_else(String::new, |b| format!(", {b} bit/s"))
        );
    }
    for v in &found.cameras {
        println!(
            "  camera  {} ({:?}, now {}){}",
            v.stable.as_ref().unwrap_or(&v.node).display(),
            v.name,
            v.node.display(),
            if v.likely_metadata() {
                "  (a metadata node: not served)"
            } else {
                ""
            }
        );
    }
    for (p, why) in &found.skipped {
        println!("  skipped {}: {why}", p.display());
    }
}

pub(super) async fn run(a: DeployCmd) -> anyhow::Result<()> {
    let home = home();
    let manifest_path = home.join("machine.json");
    let scope = scope_of(&a);
    if a.status {
        return status(&manifest_path, a.no_systemctl);
    }
    if a.uninstall {
        return uninstall(&manifest_path, a.no_systemctl);
    }
    let config = match &a.config {
        Some(p) => RobotConfig::read(p)?,
        None => RobotConfig::default(),
    };
    let mut found = discover(&a.root);
    if a.root == Path::new("/") {
        for c in &mut found.can {
            let (b, d) = xoq_device::discover::live_can_bitrates(&c.name);
            c.bitrate = b;
            c.dbitrate = d;
        }
    }
    let relay = a.relay.clone().or(config.relay.clone());
    let machine_key = home.join("keys").join("machine.key");
    let xoq = std::env::current_exe().context("cannot find the xoq binary")?;
    let mut inputs = PlanInputs {
        xoq,
        home: home.clone(),
        bind_ip: a.bind_ip,
        port_base: a.port_base,
        relay: relay.clone(),
        prefix: a.prefix.clone(),
        machine_id: if machine_key.exists() {
            xoq_transport::key::load_or_create(&machine_key)?
                .public()
                .to_string()
        } else {
            "<machine id, created at deploy>".to_string()
        },
        offline: a.offline,
        depth_nodes: if a.root == Path::new("/") {
            depth_nodes()
        } else {
            Vec::new()
        },
    };
    let mut planned = plan::plan(&found, &config, &inputs)?;
    if !a.dry_run && !planned.is_empty() && !machine_key.exists() {
        // The MoQ paths carry the machine id: plan again with the real one.
        inputs.machine_id = xoq_transport::key::load_or_create(&machine_key)?
            .public()
            .to_string();
        planned = plan::plan(&found, &config, &inputs)?;
    }
    let dir = std::path::absolute(unit_dir(&a, scope)?)?;
    print_found(&found);
    if planned.is_empty() {
        anyhow::bail!(
            "nothing to deploy: no serial port (/dev/serial/by-id), CAN interface or camera was found under {}, \
             and the robot config declares no service (\"extra\")",
            a.root.display()
        );
    }
    println!();
    println!(
        "{} {} units in {} (XOQ_HOME {}):",
        if a.dry_run {
            "would install"
        } else {
            "installing"
        },
        scope.name(),
        dir.display(),
        home.display()
    );
    for p in &planned {
        println!(
            "  {:<34} {:<7} port {:<5} key {}",
            p.unit,
            p.kind,
            p.port,
            p.key.strip_prefix(&home).unwrap_or(&p.key).display()
        );
        if !p.about.is_empty() {
            println!("      {}", p.about);
        }
        if let Some(pre) = &p.pre {
            println!("      before: {}", units::command_line(&pre[1..]));
        }
        println!("      runs:   {}", units::command_line(&p.exec[1..]));
    }
    println!(
        "  {:<34} machine port {:<5} (answers `xoq ls`)",
        "xoq-machine.service", a.port_base
    );
    if config.allow.is_empty() {
        println!(
            "note: no \"allow\" list in the robot config: anyone who learns a service's id can connect"
        );
    }
    if scope == Scope::User && !a.dry_run {
        println!(
            "note: user units cannot set CAN bit rates or join device groups: this user needs to be in dialout/video"
        );
    }
    if a.dry_run {
        println!("would write {}", manifest_path.display());
        return Ok(());
    }
    install(
        &a,
        &config,
        scope,
        &dir,
        &home,
        &manifest_path,
        &planned,
        &inputs,
        &machine_key,
    )
}

#[allow(clippy::too_many_arguments)]
fn install(
    a: &DeployCmd,
    config: &RobotConfig,
    scope: Scope,
    dir: &Path,
    home: &Path,
    manifest_path: &Path,
    planned: &[Planned],
    inputs: &PlanInputs,
    machine_key: &Path,
) -> anyhow::Result<()> {
    let previous = MachineFile::read(manifest_path).ok();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let relay_env = home.join("relay.env");
    match &inputs.relay {
        Some(url) => write_private(&relay_env, &format!("XOQ_RELAY={url}\n"))?,
        None => {
            let _ = std::fs::remove_file(&relay_env);
        }
    }
    let relay_env = inputs.relay.as_ref().map(|_| relay_env.as_path());
    let mut services = Vec::new();
    for p in planned {
        let id = xoq_transport::key::load_or_create(&p.key)?
            .public()
            .to_string();
        let unit = units::render_planned(p, home, scope, relay_env);
        std::fs::write(dir.join(&p.unit), unit)
            .with_context(|| format!("cannot write {}", dir.join(&p.unit).display()))?;
        services.push(ServiceEntry {
            name: p.name.clone(),
            kind: p.kind.to_string(),
            device: p.device.clone(),
            stable_id: p.stable_id.clone(),
            addresses: addresses(&id, a.bind_ip, p.port),
            endpoint_id: id,
            port: p.port,
            moq_path: p.moq_path.clone(),
            unit: p.unit.clone(),
            key: p.key.clone(),
        });
    }
    let machine_id = xoq_transport::key::load_or_create(machine_key)?
        .public()
        .to_string();
    let machine_unit = "xoq-machine.service".to_string();
    let exec = plan::machine_exec(inputs, machine_key, &config.allow);
    let unit = units::render(
        "xoq machine service (answers `xoq ls`)",
        None,
        &exec,
        "machine",
        "",
        home,
        scope,
        None,
    );
    std::fs::write(dir.join(&machine_unit), unit)?;
    // The machine's name: the config's, else the host name.
    let name = config.name.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "robot".into())
    });
    let file = MachineFile {
        machine_addresses: addresses(&machine_id, a.bind_ip, a.port_base),
        machine_id,
        name,
        scope: scope.name().into(),
        unit_dir: dir.to_path_buf(),
        machine_unit,
        machine_port: a.port_base,
        relay: inputs
            .relay
            .as_ref()
            .map(|r| r.split_once('?').map_or(r.as_str(), |(h, _)| h).to_string()),
        services,
    };
    // A previous deploy's units that this one no longer has go away.
    let gone: Vec<String> = previous
        .as_ref()
        .map(|old| {
            old.units()
                .into_iter()
                .filter(|u| !file.units().contains(u))
                .collect()
        })
        .unwrap_or_default();
    if !a.no_systemctl {
        for u in &gone {
            let _ = systemctl(scope, &["disable", "--now", u]);
        }
    }
    if let Some(old) = &previous {
        for u in &gone {
            let _ = std::fs::remove_file(old.unit_dir.join(u));
        }
    }
    file.write(manifest_path)?;
    if !a.no_systemctl {
        systemctl(scope, &["daemon-reload"])?;
        let units = file.units();
        let mut args: Vec<&str> = if a.boot {
            vec!["enable", "--now"]
        } else {
            vec!["restart"]
        };
        args.extend(units.iter().map(String::as_str));
        systemctl(scope, &args)?;
        if a.boot && scope == Scope::User {
            let user = std::env::var("USER").unwrap_or_default();
            let ok = Command::new("loginctl")
                .args(["enable-linger", &user])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                println!(
                    "note: `loginctl enable-linger {user}` failed: the services start at login, not at boot"
                );
            }
        }
    }
    println!("wrote {}", manifest_path.display());
    println!();
    println!("machine {}", file.machine_id);
    for s in &file.services {
        println!("  {}/{}  ({})", file.machine_id, s.name, s.kind);
    }
    println!("list them from anywhere: xoq ls {}", file.machine_id);
    Ok(())
}

/// Write a file only its owner can read (a relay token).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn status(manifest_path: &Path, no_systemctl: bool) -> anyhow::Result<()> {
    let file = MachineFile::read(manifest_path)?;
    let scope = Scope::from_name(&file.scope);
    println!(
        "machine {} ({}), {} units in {}",
        file.machine_id,
        file.name,
        file.scope,
        file.unit_dir.display()
    );
    let state = |unit: &str| -> String {
        if no_systemctl {
            return "not asked (--no-systemctl)".into();
        }
        match systemctl(
            scope,
            &[
                "show",
                "-p",
                "ActiveState",
                "-p",
                "UnitFileState",
                "--value",
                unit,
            ],
        ) {
            Ok(out) => out.split_whitespace().collect::<Vec<_>>().join(", "),
            Err(e) => format!("unknown ({e})"),
        }
    };
    println!(
        "  {:<34} {:<7} {}",
        file.machine_unit,
        "machine",
        state(&file.machine_unit)
    );
    for s in &file.services {
        println!("  {:<34} {:<7} {}", s.unit, s.kind, state(&s.unit));
        println!("      {}/{}  device {}", file.machine_id, s.name, s.device);
        for addr in &s.addresses {
            println!("      {addr}");
        }
        if let Some(p) = &s.moq_path {
            println!(
                "      MoQ {}{p}",
                file.relay
                    .as_deref()
                    .map_or(String::new(), |r| format!("{}/", r.trim_end_matches('/')))
            );
        }
    }
    Ok(())
}

fn uninstall(manifest_path: &Path, no_systemctl: bool) -> anyhow::Result<()> {
    let file = MachineFile::read(manifest_path)?;
    let scope = Scope::from_name(&file.scope);
    let units = file.units();
    if !no_systemctl {
        let mut args = vec!["disable", "--now"];
        args.extend(units.iter().map(String::as_str));
        if let Err(e) = systemctl(scope, &args) {
            println!("note: {e}");
        }
    }
    for u in &units {
        let p = file.unit_dir.join(u);
        match std::fs::remove_file(&p) {
            Ok(()) => println!("removed {}", p.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot remove {}: {e}", p.display()),
        }
    }
    if !no_systemctl {
        let _ = systemctl(scope, &["daemon-reload"]);
    }
    std::fs::remove_file(manifest_path)
        .with_context(|| format!("cannot remove {}", manifest_path.display()))?;
    let relay_env = manifest_path.with_file_name("relay.env");
    if std::fs::remove_file(&relay_env).is_ok() {
        println!("removed {}", relay_env.display());
    }
    println!("removed {}", manifest_path.display());
    println!(
        "kept the keys in {} (the services keep their ids if deployed again)",
        manifest_path.with_file_name("keys").display()
    );
    Ok(())
}
