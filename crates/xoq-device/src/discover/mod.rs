//! Discovery of a robot's hardware: USB serial ports, SocketCAN interfaces and V4L2 cameras,
//! read from a sysfs/devfs tree under a root directory.
//!
//! [`discover`] only reads files and symlinks below the root it is given (`/` on a robot, a
//! fake tree in tests): it opens no device, runs no program and never fails. Entries it cannot
//! make sense of are listed in [`Found::skipped`] with the reason. Every symlink is resolved
//! *inside* the root: a relative target is taken relative to the link's directory, an absolute
//! target (`/sys/devices/...`) is re-rooted under the root, and `..` never climbs above it.
//!
//! What a fake tree cannot tell is left to the caller, on the real root only:
//! - the bitrates of a CAN interface: [`live_can_bitrates`] asks `ip -details -json`;
//! - a camera's modes (they need V4L2 ioctls);
//! - what is attached to a serial port (probing writes to the device): [`SerialPort::attached`]
//!   holds at most a guess from the USB ids, which a probe may replace.
//!
//! Every device gets a [`stable_id`](SerialPort::stable_id) that does not depend on kernel
//! numbering (`ttyUSB0`, `video0`) and a [`unit_name`](SerialPort::unit_name) suggestion that
//! is safe in a systemd unit name and unique within one [`Found`].

#[cfg(any(test, feature = "test-util"))]
pub mod fake;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Everything [`discover`] found under one root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// USB serial ports, ordered by their stable path.
    pub serial: Vec<SerialPort>,
    /// SocketCAN interfaces, ordered by interface name.
    pub can: Vec<CanInterface>,
    /// V4L2 video nodes, ordered by stable id (so the order survives renumbering).
    pub cameras: Vec<VideoNode>,
    /// Entries that could not be read (broken symlinks, unreadable attributes), as paths on
    /// the robot (without the root prefix), each with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Found {
    /// True when no device of any kind was found (skipped entries do not count).
    pub fn is_empty(&self) -> bool {
        self.serial.is_empty() && self.can.is_empty() && self.cameras.is_empty()
    }
}

/// The identity of a USB device, read from its sysfs attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbIds {
    /// `idVendor`.
    pub vendor: u16,
    /// `idProduct`.
    pub product: u16,
    /// `serial`: the device's serial number, when it has one (many CH340s do not).
    pub serial: Option<String>,
    /// `manufacturer` string, when the device reports one.
    pub manufacturer: Option<String>,
    /// `product` string, when the device reports one.
    pub product_name: Option<String>,
}

/// A USB serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialPort {
    /// The stable path as the robot sees it (no root prefix), e.g.
    /// `/dev/serial/by-id/usb-1a86_USB_Single_Serial_5A7C012345-if00`. A port that udev
    /// gave no by-id link (two identical adapters without a serial number share one by-id
    /// name, so only one of them gets it) is listed by its `/dev/serial/by-path/...` link.
    pub by_id: PathBuf,
    /// The kernel's current name, e.g. `/dev/ttyUSB0`: informative only, it renumbers.
    pub tty: PathBuf,
    /// The USB device the port belongs to, when sysfs tells.
    pub usb: Option<UsbIds>,
    /// What is attached. Discovery fills in at most a guess from the USB ids (the text says
    /// it is a guess); a caller that probes the device may replace it.
    pub attached: Option<String>,
    /// Identity that survives renumbering and re-plugging: the by-id (or by-path) link name.
    pub stable_id: String,
    /// Suggested systemd unit name part: `serial-<product>-<serial>` (or the by-id name when
    /// the product is unknown), characters `[a-z0-9-]`.
    pub unit_name: String,
}

/// A SocketCAN interface (`/sys/class/net/<name>/type` is 280).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanInterface {
    /// Interface name, e.g. `can0`.
    pub name: String,
    /// The CAN FD MTU (72) is set now. sysfs does not say whether a controller that is in
    /// classic mode (MTU 16) could do FD.
    pub fd: bool,
    /// The interface is up: `operstate` is `up` (or `unknown` with `IFF_UP` set, as virtual
    /// interfaces report). A configured interface in bus-off reads as down.
    pub up: bool,
    /// The USB adapter (gs_usb/candleLight, PCAN-USB, ...) when the interface is on one.
    pub usb: Option<UsbIds>,
    /// Nominal bitrate: never filled by [`discover`] (sysfs does not expose it); see
    /// [`live_can_bitrates`].
    pub bitrate: Option<u32>,
    /// Data-phase (FD) bitrate: as `bitrate`.
    pub dbitrate: Option<u32>,
    /// Identity: the interface name, `@`, then the adapter's USB ids and serial
    /// (`can0@usb-1d50_606f_003A0038`), else the sysfs device the interface sits on
    /// (`can0@usb-1-1.2:1.0` for a USB adapter without a serial, `can1@fe00b000.can` for a
    /// SoC controller); just the name for a virtual interface.
    pub stable_id: String,
    /// Suggested systemd unit name part: `can-<name>`.
    pub unit_name: String,
}

/// A V4L2 video node (`/sys/class/video4linux/videoN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoNode {
    /// The device node, e.g. `/dev/video0`: informative only, it renumbers.
    pub node: PathBuf,
    /// The stable link to the node, `/dev/v4l/by-id/...` or else `/dev/v4l/by-path/...`,
    /// when udev made one.
    pub stable: Option<PathBuf>,
    /// The card name (`name` attribute), e.g. `HD USB Camera: HD USB Camera`.
    pub name: String,
    /// The node's index on its device (`index` attribute): UVC cameras have the capture node
    /// at 0 and a metadata node at 1; see [`VideoNode::likely_metadata`].
    pub index: u32,
    /// The USB device the camera is, when it is one.
    pub usb: Option<UsbIds>,
    /// Identity: the by-id link name, else `vendor:product:serial:index` (hex ids), else the
    /// by-path link name, else `vendor:product:<usb port>:index`.
    pub stable_id: String,
    /// Suggested systemd unit name part: `camera-<card name>-<index>`.
    pub unit_name: String,
}

impl VideoNode {
    /// The node is probably not the picture stream: a node with `index` other than 0 is a
    /// camera's secondary node (the UVC metadata node has index 1). It is listed anyway;
    /// only the modes (read by the caller with ioctls) tell for sure.
    pub fn likely_metadata(&self) -> bool {
        self.index != 0
    }
}

/// Discovers the serial ports, CAN interfaces and cameras in the tree under `root` (`/` for
/// the machine itself). Never fails: what cannot be read is in [`Found::skipped`].
pub fn discover(root: &Path) -> Found {
    let mut found = Found::default();
    if !root.is_dir() {
        found
            .skipped
            .push((root.to_path_buf(), "the root is not a directory".into()));
        return found;
    }
    let mut tree = Tree {
        root,
        skipped: Vec::new(),
    };
    found.serial = serial_ports(&mut tree);
    found.can = can_interfaces(&mut tree);
    found.cameras = video_nodes(&mut tree);
    found.skipped = tree.skipped;
    dedupe_unit_names(&mut found);
    found
}

/// The nominal and data-phase bitrates of CAN interface `name` as the kernel has them now,
/// from `ip -details -json link show dev <name>` (`linkinfo.info_data.bittiming.bitrate` and
/// `data_bittiming.bitrate`). For the machine itself only (not a fake root). `None` for what
/// is not set or cannot be known: `ip` missing or failing, an unknown interface, an
/// interface that is not CAN.
pub fn live_can_bitrates(name: &str) -> (Option<u32>, Option<u32>) {
    if !plausible_ifname(name) {
        return (None, None);
    }
    let out = Command::new("ip")
        .args(["-details", "-json", "link", "show", "dev", name])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => parse_ip_bitrates(&String::from_utf8_lossy(&out.stdout)),
        _ => (None, None),
    }
}

/// A Linux interface name (at most 15 bytes, no `/`, no whitespace) that cannot be taken for
/// an option by `ip`.
fn plausible_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':')
}

/// Reads the bitrates out of `ip -details -json link show` output.
fn parse_ip_bitrates(text: &str) -> (Option<u32>, Option<u32>) {
    let Some(value) = json::parse(text) else {
        return (None, None);
    };
    let info = value
        .index(0)
        .and_then(|l| l.get("linkinfo"))
        .and_then(|l| l.get("info_data"));
    let rate = |timing: &str| {
        info.and_then(|i| i.get(timing))
            .and_then(|t| t.get("bitrate"))
            .and_then(json::Value::as_u32)
            .filter(|&r| r > 0)
    };
    (rate("bittiming"), rate("data_bittiming"))
}

// ----- serial -----------------------------------------------------------------------------

const SERIAL_BY_ID: &str = "/dev/serial/by-id";
const SERIAL_BY_PATH: &str = "/dev/serial/by-path";

fn serial_ports(tree: &mut Tree<'_>) -> Vec<SerialPort> {
    // (link, tty), by-id first; by-path only for ttys that no by-id link reaches.
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut ttys = HashSet::new();
    for dir in [SERIAL_BY_ID, SERIAL_BY_PATH] {
        for name in tree.list(Path::new(dir)) {
            let link = Path::new(dir).join(&name);
            let Some(tty) = tree.follow_link(&link) else {
                continue;
            };
            if ttys.insert(tty.clone()) {
                links.push((link, tty));
            }
        }
    }
    let by_id_names: Vec<String> = links
        .iter()
        .filter(|(link, _)| link.starts_with(SERIAL_BY_ID))
        .map(|(link, _)| file_name(link))
        .collect();

    let mut ports: Vec<SerialPort> = links
        .into_iter()
        .map(|(link, tty)| {
            let name = file_name(&link);
            let sysfs = Path::new("/sys/class/tty")
                .join(file_name(&tty))
                .join("device");
            let usb = tree
                .resolve(&sysfs)
                .ok()
                .and_then(|dev| tree.usb_above(&dev))
                .map(|(_, ids)| ids);
            let attached = usb.as_ref().and_then(guess_attached);
            let unit_name = serial_unit_name(&name, usb.as_ref(), &by_id_names);
            SerialPort {
                stable_id: safe_id(&name),
                by_id: link,
                tty,
                usb,
                attached,
                unit_name,
            }
        })
        .collect();
    ports.sort_by(|a, b| a.by_id.cmp(&b.by_id));
    ports
}

/// A guess of what is on a serial adapter, from its USB ids alone.
fn guess_attached(usb: &UsbIds) -> Option<String> {
    let chip = match (usb.vendor, usb.product) {
        (0x1a86, 0x55d3) => "CH343",
        (0x1a86, 0x7523) => "CH340",
        _ => return None,
    };
    Some(format!(
        "likely a Feetech/Waveshare servo adapter ({chip}): a guess from USB id {:04x}:{:04x}, not probed",
        usb.vendor, usb.product
    ))
}

/// `-if00`, `-if01-port0`: the interface part udev appends to a by-id name.
fn split_interface_suffix(name: &str) -> (&str, &str) {
    let Some(at) = name.rfind("-if") else {
        return (name, "");
    };
    let suffix = &name[at + 3..];
    let (iface, port) = match suffix.split_once("-port") {
        Some((i, p)) => (i, Some(p)),
        None => (suffix, None),
    };
    // The interface number is two hex digits (`%02x`), the port a decimal number.
    let hex = iface.len() == 2 && iface.bytes().all(|b| b.is_ascii_hexdigit());
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if hex && port_ok {
        (&name[..at], &name[at..])
    } else {
        (name, "")
    }
}

fn serial_unit_name(link_name: &str, usb: Option<&UsbIds>, by_id_names: &[String]) -> String {
    let (stem, suffix) = split_interface_suffix(link_name);
    // A device with several ports (FT4232H: -if00 ... -if03) needs the interface to tell them
    // apart; a single-port one does not.
    let shared = by_id_names
        .iter()
        .filter(|n| split_interface_suffix(n).0 == stem)
        .count()
        > 1;
    let suffix = if shared { suffix } else { "" };
    let from_usb = usb.and_then(|u| {
        let mut body = u.product_name.clone()?;
        if let Some(serial) = &u.serial {
            body.push('-');
            body.push_str(serial);
        }
        body.push_str(suffix);
        sanitized(&body)
    });
    let body = from_usb.or_else(|| {
        let tail = stem.strip_prefix("usb-").unwrap_or(stem);
        sanitized(&format!("{tail}{suffix}"))
    });
    format!("serial-{}", cap(body.as_deref().unwrap_or(UNNAMED), 40))
}

// ----- CAN --------------------------------------------------------------------------------

/// `ARPHRD_CAN`.
const ARPHRD_CAN: u32 = 280;
/// `CANFD_MTU`.
const CANFD_MTU: u32 = 72;
/// `IFF_UP`.
const IFF_UP: u32 = 0x1;

fn can_interfaces(tree: &mut Tree<'_>) -> Vec<CanInterface> {
    let mut found = Vec::new();
    for name in tree.list(Path::new("/sys/class/net")) {
        let class = Path::new("/sys/class/net").join(&name);
        let Some(dir) = tree.follow_link(&class) else {
            continue;
        };
        let Some(kind) = tree.attr(&dir.join("type")) else {
            tree.skip(&class, "no readable `type` attribute".into());
            continue;
        };
        if kind.parse::<u32>().ok() != Some(ARPHRD_CAN) {
            continue;
        }
        let Some(mtu) = tree
            .attr(&dir.join("mtu"))
            .and_then(|m| m.parse::<u32>().ok())
        else {
            tree.skip(&class, "CAN interface without a readable `mtu`".into());
            continue;
        };
        let operstate = tree.attr(&dir.join("operstate")).unwrap_or_default();
        let flags = tree
            .attr(&dir.join("flags"))
            .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        let up = operstate == "up" || (operstate == "unknown" && flags & IFF_UP != 0);
        let device = tree.resolve(&dir.join("device")).ok();
        let usb = device.as_deref().and_then(|d| tree.usb_above(d));
        let at = match (&usb, &device) {
            (Some((_, ids)), _) if ids.serial.is_some() => Some(format!(
                "usb-{:04x}_{:04x}_{}",
                ids.vendor,
                ids.product,
                ids.serial.as_deref().unwrap_or_default()
            )),
            (Some(_), Some(dev)) => Some(format!("usb-{}", file_name(dev))),
            (None, Some(dev)) => Some(file_name(dev)),
            (_, None) => None,
        };
        let stable_id = match at {
            Some(at) => safe_id(&format!("{name}@{at}")),
            None => safe_id(&name),
        };
        found.push(CanInterface {
            unit_name: format!("can-{}", cap(&sanitize_unit(&name), 40)),
            fd: mtu >= CANFD_MTU,
            up,
            usb: usb.map(|(_, ids)| ids),
            bitrate: None,
            dbitrate: None,
            stable_id,
            name,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

// ----- cameras ----------------------------------------------------------------------------

fn video_nodes(tree: &mut Tree<'_>) -> Vec<VideoNode> {
    // node -> stable link, by-id and by-path separately.
    let mut links: [HashMap<PathBuf, PathBuf>; 2] = Default::default();
    for (dir, map) in ["/dev/v4l/by-id", "/dev/v4l/by-path"]
        .iter()
        .zip(links.iter_mut())
    {
        for name in tree.list(Path::new(dir)) {
            let link = Path::new(dir).join(name);
            if let Some(node) = tree.follow_link(&link) {
                map.entry(node).or_insert(link);
            }
        }
    }
    let [by_id, by_path] = links;

    let mut found = Vec::new();
    for entry in tree.list(Path::new("/sys/class/video4linux")) {
        let is_video = entry
            .strip_prefix("video")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_video {
            continue;
        }
        let class = Path::new("/sys/class/video4linux").join(&entry);
        let Some(dir) = tree.follow_link(&class) else {
            continue;
        };
        let Some(name) = tree.attr(&dir.join("name")) else {
            tree.skip(&class, "no readable `name` attribute".into());
            continue;
        };
        let Some(index) = tree
            .attr(&dir.join("index"))
            .and_then(|i| i.parse::<u32>().ok())
        else {
            tree.skip(&class, "no readable `index` attribute".into());
            continue;
        };
        let node = Path::new("/dev").join(&entry);
        let device = tree.resolve(&dir.join("device")).ok();
        let usb = device.as_deref().and_then(|d| tree.usb_above(d));
        let id_link = by_id.get(&node);
        let path_link = by_path.get(&node);
        let stable_id = match (id_link, &usb, path_link) {
            (Some(link), _, _) => file_name(link),
            (None, Some((_, u)), _) if u.serial.is_some() => format!(
                "{:04x}:{:04x}:{}:{index}",
                u.vendor,
                u.product,
                u.serial.as_deref().unwrap_or_default()
            ),
            (None, _, Some(link)) => file_name(link),
            (None, Some((usb_dir, u)), None) => format!(
                "{:04x}:{:04x}:{}:{index}",
                u.vendor,
                u.product,
                file_name(usb_dir)
            ),
            (None, None, None) => match &device {
                Some(dev) => format!("{}:{index}", file_name(dev)),
                None => format!("{name}:{index}"),
            },
        };
        found.push(VideoNode {
            stable: id_link.or(path_link).cloned(),
            unit_name: format!(
                "camera-{}-{index}",
                cap(&sanitize_unit(card_label(&name)), 32)
            ),
            stable_id: safe_id(&stable_id),
            node,
            name,
            index,
            usb: usb.map(|(_, ids)| ids),
        });
    }
    found.sort_by(|a, b| {
        (a.stable_id.as_str(), a.index, &a.node).cmp(&(b.stable_id.as_str(), b.index, &b.node))
    });
    found
}

/// UVC cards are often named `Product: Product`; the unit name needs it once.
fn card_label(name: &str) -> &str {
    match name.split_once(": ") {
        Some((a, b)) if a.trim() == b.trim() => a.trim(),
        _ => name.trim(),
    }
}

// ----- names ------------------------------------------------------------------------------

/// What a name is called when nothing of it survives [`sanitized`].
const UNNAMED: &str = "unnamed";

/// `[a-z0-9-]`: lowercase, every other character a `-`, runs of `-` collapsed, none at the
/// ends; `None` if nothing is left.
fn sanitized(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// [`sanitized`], never empty.
fn sanitize_unit(text: &str) -> String {
    sanitized(text).unwrap_or_else(|| UNNAMED.to_string())
}

/// At most `max` characters of a sanitized name; a longer one keeps its start and ends in a
/// hash of the whole, so two long names that share a start stay apart.
fn cap(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let head = name[..max - 9].trim_end_matches('-');
    format!("{head}-{:08x}", fnv1a(name))
}

/// A stable id safe in a file name: characters outside `[A-Za-z0-9._:@+=#-]` become `_`.
fn safe_id(text: &str) -> String {
    let out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:@+=#-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match out.as_str() {
        "" | "." | ".." => format!("_{out}"),
        _ => out,
    }
}

/// FNV-1a, 32 bits: a hash that is the same on every build (std's is not).
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Makes unit names unique within `found`. Names that clash get a suffix from a hash of their
/// stable id (so a device keeps its name whatever else is plugged in, and across
/// renumbering); a remaining clash gets a counter.
fn dedupe_unit_names(found: &mut Found) {
    let mut units: Vec<(&mut String, &str)> = Vec::new();
    units.extend(
        found
            .serial
            .iter_mut()
            .map(|d| (&mut d.unit_name, d.stable_id.as_str())),
    );
    units.extend(
        found
            .can
            .iter_mut()
            .map(|d| (&mut d.unit_name, d.stable_id.as_str())),
    );
    units.extend(
        found
            .cameras
            .iter_mut()
            .map(|d| (&mut d.unit_name, d.stable_id.as_str())),
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (unit, _) in &units {
        *counts.entry(unit.to_string()).or_default() += 1;
    }
    for (unit, id) in &mut units {
        if counts[unit.as_str()] > 1 {
            let suffixed = format!("{unit}-{:06x}", fnv1a(id) & 0xff_ffff);
            **unit = suffixed;
        }
    }
    let mut seen = HashSet::new();
    for (unit, _) in &mut units {
        if seen.insert(unit.to_string()) {
            continue;
        }
        let mut n = 2;
        while !seen.insert(format!("{unit}-{n}")) {
            n += 1;
        }
        **unit = format!("{unit}-{n}");
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ----- the tree ---------------------------------------------------------------------------

/// How many symlinks one resolution may follow (the kernel's limit).
const MAX_LINKS: usize = 40;
/// How far above a device's sysfs directory its USB device may be (a usb-serial tty's
/// `device` is a port directory below the interface, below the USB device).
const USB_LEVELS: usize = 4;

/// The tree under a root, and what could not be read from it.
struct Tree<'a> {
    root: &'a Path,
    skipped: Vec<(PathBuf, String)>,
}

impl Tree<'_> {
    fn skip(&mut self, path: &Path, reason: String) {
        self.skipped.push((path.to_path_buf(), reason));
    }

    /// The sorted entry names of directory `dir` (a path on the robot). A missing directory
    /// has none; an unreadable one is recorded as skipped.
    fn list(&mut self, dir: &Path) -> Vec<String> {
        let host = match self.resolve(dir) {
            Ok(real) => on_host(self.root, &real),
            Err(_) => return Vec::new(),
        };
        let entries = match fs::read_dir(&host) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.skip(dir, format!("cannot list: {e}"));
                return Vec::new();
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => match entry.file_name().into_string() {
                    Ok(name) => names.push(name),
                    Err(name) => self.skip(
                        &dir.join(&name),
                        "name is not UTF-8: not a name udev or the kernel makes".into(),
                    ),
                },
                Err(e) => self.skip(dir, format!("cannot list: {e}")),
            }
        }
        names.sort();
        names
    }

    /// Where the udev symlink `link` points (a path on the robot), or `None`, recorded as
    /// skipped, when it is not a symlink or points nowhere.
    fn follow_link(&mut self, link: &Path) -> Option<PathBuf> {
        let host = on_host(self.root, link);
        let target = match fs::read_link(&host) {
            Ok(target) => target,
            Err(e) => {
                let reason = match e.kind() {
                    io::ErrorKind::InvalidInput => "not a symlink, as udev makes them".into(),
                    _ => format!("cannot read the link: {e}"),
                };
                self.skip(link, reason);
                return None;
            }
        };
        match self.resolve(link) {
            Ok(real) => Some(real),
            Err(e) => {
                self.skip(link, format!("broken symlink to {}: {e}", target.display()));
                None
            }
        }
    }

    /// `path` (absolute, on the robot) with every symlink resolved inside the root.
    fn resolve(&self, path: &Path) -> Result<PathBuf, String> {
        resolve_in(self.root, path)
    }

    /// The trimmed contents of sysfs attribute `path`, `None` when it is missing, unreadable
    /// or not text.
    fn attr(&self, path: &Path) -> Option<String> {
        let real = self.resolve(path).ok()?;
        let text = fs::read_to_string(on_host(self.root, &real)).ok()?;
        Some(text.trim().to_string())
    }

    /// The nearest USB device at or above sysfs directory `dir` (a resolved path on the
    /// robot), at most [`USB_LEVELS`] levels up: its directory and ids.
    fn usb_above(&self, dir: &Path) -> Option<(PathBuf, UsbIds)> {
        let mut at = Some(dir);
        for _ in 0..=USB_LEVELS {
            let here = at?;
            if on_host(self.root, &here.join("idVendor")).is_file() {
                return self.usb_ids(here).map(|ids| (here.to_path_buf(), ids));
            }
            at = here.parent();
        }
        None
    }

    fn usb_ids(&self, dev: &Path) -> Option<UsbIds> {
        let hex = |name: &str| {
            self.attr(&dev.join(name))
                .and_then(|v| u16::from_str_radix(&v, 16).ok())
        };
        let text = |name: &str| self.attr(&dev.join(name)).filter(|v| !v.is_empty());
        Some(UsbIds {
            vendor: hex("idVendor")?,
            product: hex("idProduct")?,
            serial: text("serial"),
            manufacturer: text("manufacturer"),
            product_name: text("product"),
        })
    }
}

/// Where the robot's absolute `path` is under `root`.
fn on_host(root: &Path, path: &Path) -> PathBuf {
    let relative: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(relative)
}

/// Resolves every symlink in the robot's absolute `path` as the robot would, with the tree
/// under `root` standing for its `/`: relative targets are taken from the link's directory,
/// absolute ones from the root, and `..` stops at the root. Every component must exist.
/// Returns the resolved path on the robot (without the root prefix).
fn resolve_in(root: &Path, path: &Path) -> Result<PathBuf, String> {
    let mut done = PathBuf::from("/");
    // Components still to walk, the next one last.
    let mut todo: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut todo, path);
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&part);
        let host = on_host(root, &next);
        let meta = fs::symlink_metadata(&host).map_err(|e| {
            // Name the whole path being looked for, not only its first missing part.
            let mut wanted = next.clone();
            wanted.extend(todo.iter().rev());
            format!("{}: {}", wanted.display(), io_reason(&e))
        })?;
        if !meta.file_type().is_symlink() {
            done = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(format!(
                "{}: too many levels of symbolic links",
                path.display()
            ));
        }
        let target =
            fs::read_link(&host).map_err(|e| format!("{}: {}", next.display(), io_reason(&e)))?;
        if target.is_absolute() {
            done = PathBuf::from("/");
        }
        push_components(&mut todo, &target);
    }
    Ok(done)
}

/// Puts `path`'s components on the stack `todo` so that the first is popped first.
fn push_components(todo: &mut Vec<std::ffi::OsString>, path: &Path) {
    let parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(parts.into_iter().rev());
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "does not exist".into(),
        _ => e.to_string(),
    }
}

// ----- a small JSON reader (for `ip -json`; this crate has no JSON dependency) -------------

mod json {
    /// A JSON value; numbers are kept as their text.
    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Value {
        Null,
        Bool(bool),
        Number(String),
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        pub(super) fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        pub(super) fn index(&self, i: usize) -> Option<&Value> {
            match self {
                Value::Array(items) => items.get(i),
                _ => None,
            }
        }

        pub(super) fn as_u32(&self) -> Option<u32> {
            match self {
                Value::Number(n) => n.parse().ok(),
                _ => None,
            }
        }
    }

    const MAX_DEPTH: usize = 64;

    /// Parses one JSON document (surrounding whitespace allowed); `None` if it is not one.
    pub(super) fn parse(text: &str) -> Option<Value> {
        let mut p = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = p.value(0)?;
        p.space();
        (p.at == p.bytes.len()).then_some(value)
    }

    struct Parser<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl Parser<'_> {
        fn space(&mut self) {
            while self
                .bytes
                .get(self.at)
                .is_some_and(|b| b.is_ascii_whitespace())
            {
                self.at += 1;
            }
        }

        fn eat(&mut self, b: u8) -> bool {
            self.space();
            if self.bytes.get(self.at) == Some(&b) {
                self.at += 1;
                true
            } else {
                false
            }
        }

        fn literal(&mut self, word: &str, value: Value) -> Option<Value> {
            let end = self.at + word.len();
            (self.bytes.get(self.at..end) == Some(word.as_bytes())).then(|| {
                self.at = end;
                value
            })
        }

        fn value(&mut self, depth: usize) -> Option<Value> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.space();
            match *self.bytes.get(self.at)? {
                b'n' => self.literal("null", Value::Null),
                b't' => self.literal("true", Value::Bool(true)),
                b'f' => self.literal("false", Value::Bool(false)),
                b'"' => self.string().map(Value::String),
                b'[' => {
                    self.at += 1;
                    let mut items = Vec::new();
                    if self.eat(b']') {
                        return Some(Value::Array(items));
                    }
                    loop {
                        items.push(self.value(depth + 1)?);
                        if self.eat(b']') {
                            return Some(Value::Array(items));
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                b'{' => {
                    self.at += 1;
                    let mut fields = Vec::new();
                    if self.eat(b'}') {
                        return Some(Value::Object(fields));
                    }
                    loop {
                        self.space();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        fields.push((key, self.value(depth + 1)?));
                        if self.eat(b'}') {
                            return Some(Value::Object(fields));
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                b'-' | b'0'..=b'9' => {
                    let start = self.at;
                    while self
                        .bytes
                        .get(self.at)
                        .is_some_and(|b| b"+-.eE0123456789".contains(b))
                    {
                        self.at += 1;
                    }
                    let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
                    text.parse::<f64>()
                        .ok()
                        .map(|_| Value::Number(text.to_string()))
                }
                _ => None,
            }
        }

        fn string(&mut self) -> Option<String> {
            if self.bytes.get(self.at) != Some(&b'"') {
                return None;
            }
            self.at += 1;
            let mut out: Vec<u8> = Vec::new();
            loop {
                let b = *self.bytes.get(self.at)?;
                self.at += 1;
                match b {
                    b'"' => return String::from_utf8(out).ok(),
                    b'\\' => {
                        let e = *self.bytes.get(self.at)?;
                        self.at += 1;
                        let c = match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let hex = self.bytes.get(self.at..self.at + 4)?;
                                self.at += 4;
                                let code =
                                    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                                // Surrogate halves (emoji in an alias) are not needed here.
                                char::from_u32(code).unwrap_or('\u{fffd}')
                            }
                            _ => return None,
                        };
                        let mut buf = [0; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    b if b < 0x20 => return None,
                    b => out.push(b),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    fn expected_robot(ch343_tty: &str, ftdi_tty: &str, first_video: u32) -> Found {
        let camera_usb = UsbIds {
            vendor: 0x32e4,
            product: 0x9230,
            serial: Some("SN0001".into()),
            manufacturer: Some("HD USB Camera".into()),
            product_name: Some("HD USB Camera".into()),
        };
        let camera = |index: u32| VideoNode {
            node: PathBuf::from(format!("/dev/video{}", first_video + index)),
            stable: Some(PathBuf::from(format!("{CAM_BY_ID}{index}"))),
            name: CAM_NAME.into(),
            index,
            usb: Some(camera_usb.clone()),
            stable_id: format!("usb-HD_USB_Camera_HD_USB_Camera_SN0001-video-index{index}"),
            unit_name: format!("camera-hd-usb-camera-{index}"),
        };
        Found {
            serial: vec![
                SerialPort {
                    by_id: CH343_BY_ID.into(),
                    tty: PathBuf::from("/dev").join(ch343_tty),
                    usb: Some(UsbIds {
                        vendor: 0x1a86,
                        product: 0x55d3,
                        serial: Some("5A7C012345".into()),
                        manufacturer: None,
                        product_name: Some("USB Single Serial".into()),
                    }),
                    attached: Some(
                        "likely a Feetech/Waveshare servo adapter (CH343): a guess from USB id 1a86:55d3, not probed"
                            .into(),
                    ),
                    stable_id: "usb-1a86_USB_Single_Serial_5A7C012345-if00".into(),
                    unit_name: "serial-usb-single-serial-5a7c012345".into(),
                },
                SerialPort {
                    by_id: FTDI_BY_ID.into(),
                    tty: PathBuf::from("/dev").join(ftdi_tty),
                    usb: Some(UsbIds {
                        vendor: 0x0403,
                        product: 0x6001,
                        serial: Some("A50285BI".into()),
                        manufacturer: Some("FTDI".into()),
                        product_name: Some("FT232R USB UART".into()),
                    }),
                    attached: None,
                    stable_id: "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0".into(),
                    unit_name: "serial-ft232r-usb-uart-a50285bi".into(),
                },
            ],
            can: vec![
                CanInterface {
                    name: "can0".into(),
                    fd: false,
                    up: true,
                    usb: Some(UsbIds {
                        vendor: 0x1d50,
                        product: 0x606f,
                        serial: Some("003A00385841570C20353438".into()),
                        manufacturer: Some("bytewerk".into()),
                        product_name: Some("candleLight USB to CAN adapter".into()),
                    }),
                    bitrate: None,
                    dbitrate: None,
                    stable_id: "can0@usb-1d50_606f_003A00385841570C20353438".into(),
                    unit_name: "can-can0".into(),
                },
                CanInterface {
                    name: "can1".into(),
                    fd: true,
                    up: false,
                    usb: None,
                    bitrate: None,
                    dbitrate: None,
                    stable_id: "can1@fe00b000.can".into(),
                    unit_name: "can-can1".into(),
                },
            ],
            cameras: vec![camera(0), camera(1)],
            skipped: vec![],
        }
    }

    #[test]
    fn discover_finds_the_robot_exactly() {
        let fake = robot("ttyUSB0", "ttyUSB1", 0);
        let found = discover(fake.root());
        assert_eq!(found, expected_robot("ttyUSB0", "ttyUSB1", 0));
        assert!(!found.is_empty());
        assert!(!found.cameras[0].likely_metadata());
        assert!(found.cameras[1].likely_metadata());
    }

    #[test]
    fn discover_ids_survive_renumbering() {
        let before = discover(robot("ttyUSB0", "ttyUSB1", 0).root());
        let after = discover(robot("ttyUSB1", "ttyUSB0", 2).root());
        assert_eq!(after, expected_robot("ttyUSB1", "ttyUSB0", 2));
        // Every device keeps its identity and unit name; only the kernel names moved.
        let serial = |f: &Found| {
            f.serial
                .iter()
                .map(|s| (s.by_id.clone(), s.stable_id.clone(), s.unit_name.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(serial(&before), serial(&after));
        assert_ne!(before.serial[0].tty, after.serial[0].tty);
        let cameras = |f: &Found| {
            f.cameras
                .iter()
                .map(|c| (c.stable.clone(), c.stable_id.clone(), c.unit_name.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(cameras(&before), cameras(&after));
        assert_ne!(before.cameras[0].node, after.cameras[0].node);
        let can = |f: &Found| {
            f.can
                .iter()
                .map(|c| (c.stable_id.clone(), c.unit_name.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(can(&before), can(&after));
    }

    #[test]
    fn discover_empty_tree_is_empty() {
        let fake = Fake::new();
        let found = discover(fake.root());
        assert!(found.is_empty());
        assert_eq!(found, Found::default());

        let missing = fake.root().join("no-such-root");
        let found = discover(&missing);
        assert!(found.is_empty());
        assert_eq!(
            found.skipped,
            vec![(missing, "the root is not a directory".to_string())]
        );
    }

    #[test]
    fn discover_lists_broken_links_as_skipped() {
        let fake = Fake::new();
        fake.link("/dev/serial/by-id/usb-gone-if00", "../../ttyUSB9");
        fake.link("/dev/v4l/by-id/usb-gone-video-index0", "../../video9");
        fake.link("/sys/class/net/can9", "../../devices/virtual/net/can9");
        fake.link("/sys/class/video4linux/video9", "/sys/devices/gone/video9");
        fake.file("/dev/serial/by-id/not-a-link", "");
        let found = discover(fake.root());
        assert!(found.is_empty());
        let skipped: Vec<(&str, &str)> = found
            .skipped
            .iter()
            .map(|(p, r)| (p.to_str().expect("utf-8"), r.as_str()))
            .collect();
        assert_eq!(
            skipped,
            vec![
                (
                    "/dev/serial/by-id/not-a-link",
                    "not a symlink, as udev makes them"
                ),
                (
                    "/dev/serial/by-id/usb-gone-if00",
                    "broken symlink to ../../ttyUSB9: /dev/ttyUSB9: does not exist"
                ),
                (
                    "/sys/class/net/can9",
                    "broken symlink to ../../devices/virtual/net/can9: \
                     /sys/devices/virtual/net/can9: does not exist"
                ),
                (
                    "/dev/v4l/by-id/usb-gone-video-index0",
                    "broken symlink to ../../video9: /dev/video9: does not exist"
                ),
                (
                    "/sys/class/video4linux/video9",
                    "broken symlink to /sys/devices/gone/video9: \
                     /sys/devices/gone/video9: does not exist"
                ),
            ]
        );
    }

    #[test]
    fn discover_unit_names_are_valid_and_unique() {
        let valid = |found: &Found| {
            let units: Vec<&str> = found
                .serial
                .iter()
                .map(|d| d.unit_name.as_str())
                .chain(found.can.iter().map(|d| d.unit_name.as_str()))
                .chain(found.cameras.iter().map(|d| d.unit_name.as_str()))
                .collect();
            for unit in &units {
                assert!(!unit.is_empty() && unit.len() <= 64, "{unit}");
                assert!(
                    unit.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{unit}"
                );
                assert!(
                    !unit.starts_with('-') && !unit.ends_with('-') && !unit.contains("--"),
                    "{unit}"
                );
            }
            let distinct: HashSet<_> = units.iter().collect();
            assert_eq!(distinct.len(), units.len(), "{units:?}");
            units.len()
        };
        assert_eq!(valid(&discover(robot("ttyUSB0", "ttyUSB1", 0).root())), 6);

        // Clashes: two identical CH340s without a serial number (udev gives only one of them
        // the by-id link; the other is found by-path), two identical cameras without serial
        // numbers, a product name with nothing usable in it and a very long one.
        let fake = Fake::new();
        for (port, tty) in [("1-1.1", "ttyUSB0"), ("1-1.2", "ttyUSB1")] {
            let dev = format!("{USB1}/1-1/{port}");
            fake.usb_device(&dev, ("1a86", "7523"), [None, None, Some("USB Serial")]);
            fake.usb_serial_tty(&format!("{dev}/{port}:1.0"), tty);
            fake.link(
                &format!(
                    "/dev/serial/by-path/pci-0000:00:14.0-usb-0:{}:1.0-port0",
                    &port[2..]
                ),
                &format!("../../{tty}"),
            );
        }
        fake.link(
            "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0",
            "../../ttyUSB1",
        );
        let odd = format!("{USB1}/1-1/1-1.5");
        fake.usb_device(&odd, ("0403", "6014"), [Some("€€€"), None, Some("€€")]);
        fake.usb_serial_tty(&format!("{odd}/1-1.5:1.0"), "ttyUSB2");
        fake.link("/dev/serial/by-id/usb-FTDI_x-if00-port0", "../../ttyUSB2");
        let long = format!("{USB1}/1-1/1-1.6");
        fake.usb_device(
            &long,
            ("0403", "6015"),
            [
                Some("LONGSERIAL0123456789"),
                None,
                Some("A Very Long Product Name For A Serial Adapter"),
            ],
        );
        fake.usb_serial_tty(&format!("{long}/1-1.6:1.0"), "ttyUSB3");
        fake.link("/dev/serial/by-id/usb-long-if00-port0", "../../ttyUSB3");
        for (port, node) in [("2-1", "video0"), ("2-2", "video2")] {
            let dev = format!("/sys/devices/pci0000:00/0000:00:14.0/usb2/{port}");
            fake.usb_device(&dev, ("0c45", "6366"), [None, None, Some("USB Camera")]);
            fake.video(
                &format!("{dev}/{port}:1.0"),
                node,
                "USB Camera: USB Camera",
                0,
            );
            fake.link(
                &format!(
                    "/dev/v4l/by-path/pci-0000:00:14.0-usb-0:{}:1.0-video-index0",
                    &port[2..]
                ),
                &format!("../../{node}"),
            );
        }
        let found = discover(fake.root());
        assert_eq!(found.skipped, vec![]);
        assert_eq!(valid(&found), 6);
        let by: Vec<(&Path, &str)> = found
            .serial
            .iter()
            .map(|s| (s.by_id.as_path(), s.stable_id.as_str()))
            .collect();
        assert_eq!(
            by,
            vec![
                (
                    Path::new("/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"),
                    "usb-1a86_USB_Serial-if00-port0"
                ),
                (
                    Path::new("/dev/serial/by-id/usb-FTDI_x-if00-port0"),
                    "usb-FTDI_x-if00-port0"
                ),
                (
                    Path::new("/dev/serial/by-id/usb-long-if00-port0"),
                    "usb-long-if00-port0"
                ),
                (
                    Path::new("/dev/serial/by-path/pci-0000:00:14.0-usb-0:1.1:1.0-port0"),
                    "pci-0000:00:14.0-usb-0:1.1:1.0-port0"
                ),
            ]
        );
        assert!(found.serial[0].unit_name.starts_with("serial-usb-serial-"));
        assert!(found.serial[3].unit_name.starts_with("serial-usb-serial-"));
        assert_eq!(found.serial[1].unit_name, "serial-ftdi-x");
        assert_eq!(
            found.serial[2].unit_name,
            "serial-a-very-long-product-name-for-a-a2a4213b"
        );
        assert_eq!(
            found.serial[0].attached.as_deref(),
            Some(
                "likely a Feetech/Waveshare servo adapter (CH340): a guess from USB id 1a86:7523, not probed"
            )
        );
        assert!(
            found
                .cameras
                .iter()
                .all(|c| c.unit_name.starts_with("camera-usb-camera-0-"))
        );
        assert_eq!(
            found
                .cameras
                .iter()
                .map(|c| c.stable_id.as_str())
                .collect::<Vec<_>>(),
            vec![
                "pci-0000:00:14.0-usb-0:1:1.0-video-index0",
                "pci-0000:00:14.0-usb-0:2:1.0-video-index0"
            ]
        );

        // The suffixes come from stable ids, so they do not depend on the order of discovery.
        let again = discover(fake.root());
        assert_eq!(found, again);
    }

    #[test]
    fn discover_cdc_acm_tty_and_multiport_adapter() {
        let fake = Fake::new();
        // cdc_acm: the tty's `device` is the USB interface itself.
        let dev = format!("{USB1}/1-1");
        fake.usb_device(
            &dev,
            ("1a86", "55d3"),
            [Some("5A7C0"), None, Some("USB Single Serial")],
        );
        let class = format!("{dev}/1-1:1.0/tty/ttyACM0");
        fake.file(&format!("{class}/dev"), "166:0\n");
        fake.link(&format!("{class}/device"), "../../../1-1:1.0");
        fake.link(
            "/sys/class/tty/ttyACM0",
            &format!("../..{}", class.trim_start_matches("/sys")),
        );
        fake.file("/dev/ttyACM0", "");
        fake.link(
            "/dev/serial/by-id/usb-1a86_USB_Single_Serial_5A7C0-if00",
            "../../ttyACM0",
        );
        // An FT2232H: two ports, one by-id stem.
        let ft = format!("{USB1}/2-1");
        fake.usb_device(
            &ft,
            ("0403", "6010"),
            [Some("FT1"), Some("FTDI"), Some("Dual RS232-HS")],
        );
        for (iface, tty) in [("2-1:1.0", "ttyUSB0"), ("2-1:1.1", "ttyUSB1")] {
            fake.usb_serial_tty(&format!("{ft}/{iface}"), tty);
            let n = &iface[6..];
            fake.link(
                &format!("/dev/serial/by-id/usb-FTDI_Dual_RS232-HS_FT1-if0{n}-port0"),
                &format!("../../{tty}"),
            );
        }
        let found = discover(fake.root());
        assert_eq!(found.skipped, vec![]);
        let got: Vec<(&str, u16, &str)> = found
            .serial
            .iter()
            .map(|s| {
                (
                    s.tty.to_str().expect("utf-8"),
                    s.usb.as_ref().expect("usb").product,
                    s.unit_name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/dev/ttyACM0", 0x55d3, "serial-usb-single-serial-5a7c0"),
                (
                    "/dev/ttyUSB0",
                    0x6010,
                    "serial-dual-rs232-hs-ft1-if00-port0"
                ),
                (
                    "/dev/ttyUSB1",
                    0x6010,
                    "serial-dual-rs232-hs-ft1-if01-port0"
                ),
            ]
        );
    }

    #[test]
    fn discover_can_without_usb_serial_and_virtual() {
        let fake = Fake::new();
        let dev = format!("{USB1}/1-3");
        fake.usb_device(
            &dev,
            ("0c72", "000c"),
            [None, Some("PEAK-System"), Some("PCAN-USB")],
        );
        let can0 = format!("{dev}/1-3:1.0/net/can0");
        fake.netdev(
            &can0,
            "can0",
            [
                ("type", "280"),
                ("mtu", "16"),
                ("operstate", "down"),
                ("flags", "0x80"),
            ],
        );
        fake.link(&format!("{can0}/device"), "../../../1-3:1.0");
        fake.netdev(
            "/sys/devices/virtual/net/vcan0",
            "vcan0",
            [
                ("type", "280"),
                ("mtu", "72"),
                ("operstate", "unknown"),
                ("flags", "0xc1"),
            ],
        );
        let found = discover(fake.root());
        let got: Vec<(&str, bool, bool, &str)> = found
            .can
            .iter()
            .map(|c| (c.name.as_str(), c.fd, c.up, c.stable_id.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("can0", false, false, "can0@usb-1-3:1.0"),
                ("vcan0", true, true, "vcan0"),
            ]
        );
        assert_eq!(
            found.can[0]
                .usb
                .as_ref()
                .expect("usb")
                .product_name
                .as_deref(),
            Some("PCAN-USB")
        );
    }

    #[test]
    fn discover_resolves_links_inside_the_root() {
        let fake = Fake::new();
        fake.file("/sys/devices/x/attr", "1\n");
        fake.link("/a", "/sys/devices/x");
        fake.link("/sys/class/b", "../../../../../sys/devices/x");
        fake.link("/loop1", "loop2");
        fake.link("/loop2", "/loop1");
        let root = fake.root();
        assert_eq!(
            resolve_in(root, Path::new("/a/attr")),
            Ok(PathBuf::from("/sys/devices/x/attr"))
        );
        assert_eq!(
            resolve_in(root, Path::new("/sys/class/b")),
            Ok(PathBuf::from("/sys/devices/x"))
        );
        assert_eq!(
            resolve_in(root, Path::new("/sys/./class/../devices")),
            Ok(PathBuf::from("/sys/devices"))
        );
        assert_eq!(resolve_in(root, Path::new("/")), Ok(PathBuf::from("/")));
        assert_eq!(
            resolve_in(root, Path::new("/loop1")),
            Err("/loop1: too many levels of symbolic links".to_string())
        );
        assert_eq!(
            resolve_in(root, Path::new("/a/nothing")),
            Err("/sys/devices/x/nothing: does not exist".to_string())
        );
    }

    #[test]
    fn discover_on_this_machine_does_not_panic() {
        // Whatever this machine has (often nothing in a container): only reads.
        let found = discover(Path::new("/"));
        println!("{found:#?}");
        for can in &found.can {
            println!("{}: {:?}", can.name, live_can_bitrates(&can.name));
        }
    }

    #[test]
    fn discover_reads_bitrates_from_ip_json() {
        let fd = r#"[{"ifindex":5,"ifname":"can0","flags":["NOARP","UP","LOWER_UP","ECHO"],"mtu":72,
            "linkinfo":{"info_kind":"can","info_data":{"ctrlmode":["FD"],"state":"ERROR-ACTIVE",
            "berr_counter":{"tx":0,"rx":0},"restart_ms":0,
            "bittiming":{"bitrate":1000000,"sample_point":"0.800","tq":12,"prop_seg":31,"phase_seg1":32,"phase_seg2":16,"sjw":1,"brp":1},
            "bittiming_const":{"name":"gs_usb","tseg1":{"min":1,"max":256}},
            "data_bittiming":{"bitrate":5000000,"sample_point":"0.750","tq":12},
            "clock":80000000}},"alias":"arm \"left\" \u00e9"}]"#;
        assert_eq!(parse_ip_bitrates(fd), (Some(1_000_000), Some(5_000_000)));
        let classic = r#"[{"ifname":"can1","linkinfo":{"info_kind":"can","info_data":{"bittiming":{"bitrate":500000}}}}]"#;
        assert_eq!(parse_ip_bitrates(classic), (Some(500_000), None));
        // Down and never configured: no bittiming at all.
        let unset =
            r#"[{"ifname":"can2","linkinfo":{"info_kind":"can","info_data":{"state":"STOPPED"}}}]"#;
        assert_eq!(parse_ip_bitrates(unset), (None, None));
        assert_eq!(parse_ip_bitrates(r#"[{"ifname":"eth0"}]"#), (None, None));
        assert_eq!(
            parse_ip_bitrates("Device \"x\" does not exist."),
            (None, None)
        );
        assert_eq!(parse_ip_bitrates(""), (None, None));
        assert_eq!(parse_ip_bitrates(&"[".repeat(1000)), (None, None));
        // Tolerant of `ip` missing, of unknown interfaces and of names that are not names.
        assert_eq!(live_can_bitrates("xoqnosuchif0"), (None, None));
        assert_eq!(live_can_bitrates("-json"), (None, None));
        assert_eq!(live_can_bitrates("a/b"), (None, None));
    }
}
