//! A fake sysfs/devfs tree for tests of discovery (feature `test-util`): build one with
//! [`Fake`], or take [`robot`], a robot with two USB serial adapters, two CAN interfaces
//! (one FD), an Ethernet port and a UVC camera.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{file_name, on_host};

/// A fake sysfs/devfs tree; paths are given as the robot sees them.
pub struct Fake(TempDir);

impl Default for Fake {
    fn default() -> Self {
        Self::new()
    }
}

impl Fake {
    /// An empty tree in a new temporary directory (removed when dropped).
    pub fn new() -> Self {
        Fake(tempfile::tempdir().expect("tempdir"))
    }

    /// The directory standing for the robot's `/`.
    pub fn root(&self) -> &Path {
        self.0.path()
    }

    /// Where the robot's `path` is in the tree.
    pub fn host(&self, path: &str) -> PathBuf {
        on_host(self.root(), Path::new(path))
    }

    /// Write a file (and its directories).
    pub fn file(&self, path: &str, text: &str) {
        let host = self.host(path);
        fs::create_dir_all(host.parent().expect("parent")).expect("mkdir");
        fs::write(host, text).expect("write");
    }

    /// Make a symlink (and its directories), `target` as given (relative or absolute).
    pub fn link(&self, path: &str, target: &str) {
        let host = self.host(path);
        fs::create_dir_all(host.parent().expect("parent")).expect("mkdir");
        symlink(target, host).expect("symlink");
    }

    /// A USB device directory with its attributes, as the kernel writes them.
    pub fn usb_device(&self, dir: &str, ids: (&str, &str), strings: [Option<&str>; 3]) {
        self.file(&format!("{dir}/idVendor"), &format!("{}\n", ids.0));
        self.file(&format!("{dir}/idProduct"), &format!("{}\n", ids.1));
        for (name, value) in ["serial", "manufacturer", "product"].iter().zip(strings) {
            if let Some(value) = value {
                self.file(&format!("{dir}/{name}"), &format!("{value}\n"));
            }
        }
    }

    /// A usb-serial (ch341, ftdi_sio) tty: the tty's `device` is the port directory
    /// below the USB interface.
    pub fn usb_serial_tty(&self, iface: &str, tty: &str) {
        let class = format!("{iface}/{tty}/tty/{tty}");
        self.file(&format!("{class}/dev"), "188:0\n");
        self.link(&format!("{class}/device"), &format!("../../../{tty}"));
        self.link(
            &format!("/sys/class/tty/{tty}"),
            &format!("../..{}", class.trim_start_matches("/sys")),
        );
        self.file(&format!("/dev/{tty}"), "");
    }

    /// A V4L2 node of the camera whose USB interface is `iface`.
    pub fn video(&self, iface: &str, node: &str, name: &str, index: u32) {
        let class = format!("{iface}/video4linux/{node}");
        self.file(&format!("{class}/name"), &format!("{name}\n"));
        self.file(&format!("{class}/index"), &format!("{index}\n"));
        self.file(&format!("{class}/dev"), &format!("81:{index}\n"));
        self.link(
            &format!("{class}/device"),
            &format!("../../../{}", file_name(Path::new(iface))),
        );
        self.link(
            &format!("/sys/class/video4linux/{node}"),
            &format!("../..{}", class.trim_start_matches("/sys")),
        );
        self.file(&format!("/dev/{node}"), "");
    }

    /// A network interface at sysfs directory `dir`.
    pub fn netdev(&self, dir: &str, name: &str, attrs: [(&str, &str); 4]) {
        for (attr, value) in attrs {
            self.file(&format!("{dir}/{attr}"), &format!("{value}\n"));
        }
        self.link(
            &format!("/sys/class/net/{name}"),
            &format!("../..{}", dir.trim_start_matches("/sys")),
        );
    }
}

/// The USB bus the fixture's devices hang off.
pub const USB1: &str = "/sys/devices/pci0000:00/0000:00:14.0/usb1";
/// The fixture's CH343 serial adapter, by id.
pub const CH343_BY_ID: &str = "/dev/serial/by-id/usb-1a86_USB_Single_Serial_5A7C012345-if00";
/// The fixture's FTDI serial adapter, by id.
pub const FTDI_BY_ID: &str = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0";
/// The fixture's camera nodes by id, without the index.
pub const CAM_BY_ID: &str = "/dev/v4l/by-id/usb-HD_USB_Camera_HD_USB_Camera_SN0001-video-index";
/// The fixture camera's V4L2 card name.
pub const CAM_NAME: &str = "HD USB Camera: HD USB Camera";

/// The robot of test 1: the CH343 on `ch343_tty`, the FTDI on `ftdi_tty`, the camera's
/// nodes `video<first_video>` and the next.
pub fn robot(ch343_tty: &str, ftdi_tty: &str, first_video: u32) -> Fake {
    let fake = Fake::new();
    // The root hub and a hub: USB devices the walk up must not reach.
    fake.usb_device(USB1, ("1d6b", "0002"), [Some("0000:00:14.0"), None, None]);
    fake.usb_device(&format!("{USB1}/1-1"), ("05e3", "0610"), [None, None, None]);

    // Serial: a CH343 (Waveshare bus servo board) and an FTDI, both usb-serial ttys.
    let ch343 = format!("{USB1}/1-1/1-1.1");
    fake.usb_device(
        &ch343,
        ("1a86", "55d3"),
        [Some("5A7C012345"), None, Some("USB Single Serial")],
    );
    fake.usb_serial_tty(&format!("{ch343}/1-1.1:1.0"), ch343_tty);
    fake.link(CH343_BY_ID, &format!("../../{ch343_tty}"));
    fake.link(
        "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1.1:1.0",
        &format!("../../{ch343_tty}"),
    );
    let ftdi = format!("{USB1}/1-1/1-1.3");
    fake.usb_device(
        &ftdi,
        ("0403", "6001"),
        [Some("A50285BI"), Some("FTDI"), Some("FT232R USB UART")],
    );
    fake.usb_serial_tty(&format!("{ftdi}/1-1.3:1.0"), ftdi_tty);
    fake.link(FTDI_BY_ID, &format!("../../{ftdi_tty}"));
    fake.link(
        "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1.3:1.0-port0",
        &format!("../../{ftdi_tty}"),
    );

    // CAN: can0 classic and up on a candleLight (gs_usb); can1 FD and down on the SoC,
    // its `device` link absolute (re-rooted under the fake root).
    let gs = format!("{USB1}/1-1/1-1.2");
    fake.usb_device(
        &gs,
        ("1d50", "606f"),
        [
            Some("003A00385841570C20353438"),
            Some("bytewerk"),
            Some("candleLight USB to CAN adapter"),
        ],
    );
    let can0 = format!("{gs}/1-1.2:1.0/net/can0");
    fake.netdev(
        &can0,
        "can0",
        [
            ("type", "280"),
            ("mtu", "16"),
            ("operstate", "up"),
            ("flags", "0x40c1"),
        ],
    );
    fake.link(&format!("{can0}/device"), "../../../1-1.2:1.0");
    let can1 = "/sys/devices/platform/soc/fe00b000.can/net/can1";
    fake.netdev(
        can1,
        "can1",
        [
            ("type", "280"),
            ("mtu", "72"),
            ("operstate", "down"),
            ("flags", "0x40c0"),
        ],
    );
    fake.link(
        &format!("{can1}/device"),
        "/sys/devices/platform/soc/fe00b000.can",
    );
    // Not CAN: ignored.
    let eth0 = "/sys/devices/pci0000:00/0000:00:1f.6/net/eth0";
    fake.netdev(
        eth0,
        "eth0",
        [
            ("type", "1"),
            ("mtu", "1500"),
            ("operstate", "up"),
            ("flags", "0x1003"),
        ],
    );
    fake.link(&format!("{eth0}/device"), "../../../0000:00:1f.6");
    fake.netdev(
        "/sys/devices/virtual/net/lo",
        "lo",
        [
            ("type", "772"),
            ("mtu", "65536"),
            ("operstate", "unknown"),
            ("flags", "0x9"),
        ],
    );

    // A UVC camera: the capture node (index 0) and the metadata node (index 1).
    let cam = format!("{USB1}/1-1/1-1.4");
    fake.usb_device(
        &cam,
        ("32e4", "9230"),
        [Some("SN0001"), Some("HD USB Camera"), Some("HD USB Camera")],
    );
    for index in 0..2 {
        let node = format!("video{}", first_video + index);
        fake.video(&format!("{cam}/1-1.4:1.0"), &node, CAM_NAME, index);
        fake.link(&format!("{CAM_BY_ID}{index}"), &format!("../../{node}"));
        fake.link(
            &format!("/dev/v4l/by-path/pci-0000:00:14.0-usb-0:1.4:1.0-video-index{index}"),
            &format!("../../{node}"),
        );
    }
    fake
}
