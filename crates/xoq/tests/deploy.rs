//! `xoq deploy` end to end, without systemd: discovery on fake sysfs/devfs trees, the exact
//! plan, units checked by `systemd-analyze verify`, stable keys across deploys and
//! renumbering, the units' own command lines started directly (real servers on loopback
//! reached by `<machine-id>/<service>` and listed by `xoq ls`), uninstall, replacement.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::xoq_bin;
use xoq_device::discover::fake::{Fake, robot};

/// Run `xoq deploy ARGS` with `home` as `$XOQ_HOME`.
fn deploy(home: &Path, args: &[&str]) -> Output {
    Command::new(xoq_bin())
        .arg("deploy")
        .args(args)
        .env("XOQ_HOME", home)
        .env("XOQ_OFFLINE", "1")
        .env("XOQ_LOG", "warn")
        .env_remove("XOQ_RELAY")
        .output()
        .expect("run xoq deploy")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "xoq deploy failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A port base no other test of this run uses.
fn port_base() -> u16 {
    20_000 + (std::process::id() % 2000) as u16 * 10 + rand_offset()
}

fn rand_offset() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) * 1000 % 30_000
}

fn machine_json(home: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(home.join("machine.json")).expect("machine.json");
    serde_json::from_str(&text).expect("json")
}

/// name → (key, endpoint id, port, unit) of every service in machine.json.
fn identities(home: &Path) -> BTreeMap<String, (String, String, u64, String)> {
    let m = machine_json(home);
    m["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("name").to_string(),
                (
                    v["key"].as_str().expect("key").to_string(),
                    v["endpoint_id"].as_str().expect("id").to_string(),
                    v["port"].as_u64().expect("port"),
                    v["unit"].as_str().expect("unit").to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn the_dry_run_prints_the_exact_plan_and_touches_nothing() {
    let tree = robot("ttyUSB0", "ttyUSB1", 0);
    let home = tempfile::tempdir().expect("home");
    let units = home.path().join("units");
    let out = ok(&deploy(
        home.path(),
        &[
            "--dry-run",
            "--root",
            s(tree.root()),
            "--unit-dir",
            s(&units),
            "--scope",
            "system",
            "--port-base",
            "47000",
        ],
    ));
    let h = s(home.path());
    let xoq = xoq_bin();
    let expected = format!(
        "\
found:
  serial  /dev/serial/by-id/usb-1a86_USB_Single_Serial_5A7C012345-if00 (now /dev/ttyUSB0)  1a86:55d3 USB Single Serial serial 5A7C012345
          likely a Feetech/Waveshare servo adapter (CH343): a guess from USB id 1a86:55d3, not probed
  serial  /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0 (now /dev/ttyUSB1)  0403:6001 FT232R USB UART serial A50285BI
  can     can0 (classic, up)
  can     can1 (FD, down)
  camera  /dev/v4l/by-id/usb-HD_USB_Camera_HD_USB_Camera_SN0001-video-index0 (\"HD USB Camera: HD USB Camera\", now /dev/video0)
  camera  /dev/v4l/by-id/usb-HD_USB_Camera_HD_USB_Camera_SN0001-video-index1 (\"HD USB Camera: HD USB Camera\", now /dev/video1)  (a metadata node: not served)

would install system units in {units} (XOQ_HOME {h}):
{plan}  xoq-machine.service                machine port 47000 (answers `xoq ls`)
note: no \"allow\" list in the robot config: anyone who learns a service's id can connect
would write {h}/machine.json
",
        units = s(&units),
        plan = PLAN.trim_start_matches('\n').replace("{H}", h).replace("{XOQ}", xoq),
    );
    assert_eq!(out, expected);
    assert!(!units.exists(), "a dry run writes no unit");
    assert!(!home.path().join("machine.json").exists());
    assert!(
        !home.path().join("keys").exists(),
        "a dry run creates no key"
    );
}

/// The service lines of the dry run above (ports are hashes of the stable ids).
const PLAN: &str = r#"
  xoq-serial-usb-single-serial-5a7c012345.service serial  port 47320 key keys/usb-1a86_usb_single_serial_5a7c012345-if00.key
      runs:   serial-server /dev/serial/by-id/usb-1a86_USB_Single_Serial_5A7C012345-if00 1000000 --key {H}/keys/usb-1a86_usb_single_serial_5a7c012345-if00.key --bind 0.0.0.0:47320
  xoq-serial-ft232r-usb-uart-a50285bi.service serial  port 47223 key keys/usb-ftdi_ft232r_usb_uart_a50285bi-if00-port0.key
      runs:   serial-server /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0 1000000 --key {H}/keys/usb-ftdi_ft232r_usb_uart_a50285bi-if00-port0.key --bind 0.0.0.0:47223
  xoq-can-can0.service               can     port 47652 key keys/can0_usb-1d50_606f_003a00385841570c20353438.key
      before: setup-can can0 --bitrate 1000000
      runs:   can-server can0 --key {H}/keys/can0_usb-1d50_606f_003a00385841570c20353438.key --bind 0.0.0.0:47652
  xoq-can-can1.service               can     port 47103 key keys/can1_fe00b000.can.key
      before: setup-can can1 --bitrate 1000000
      runs:   can-server can1 --key {H}/keys/can1_fe00b000.can.key --bind 0.0.0.0:47103
  xoq-camera-hd-usb-camera-0.service camera  port 47295 key keys/usb-hd_usb_camera_hd_usb_camera_sn0001-video-index0.key
      runs:   camera-server /dev/v4l/by-id/usb-HD_USB_Camera_HD_USB_Camera_SN0001-video-index0 --key {H}/keys/usb-hd_usb_camera_hd_usb_camera_sn0001-video-index0.key --bind 0.0.0.0:47295
"#;

#[test]
fn a_tree_with_nothing_gives_a_clear_message() {
    let tree = Fake::new();
    let home = tempfile::tempdir().expect("home");
    let out = deploy(home.path(), &["--dry-run", "--root", s(tree.root())]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing to deploy"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no serial ports, CAN interfaces or cameras")
    );
}

fn units_of(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("unit dir")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).expect("unit"),
            )
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify_and_match_their_snapshots() {
    let tree = robot("ttyUSB0", "ttyUSB1", 0);
    let home = tempfile::tempdir().expect("home");
    let units = home.path().join("units");
    ok(&deploy(
        home.path(),
        &[
            "--root",
            s(tree.root()),
            "--unit-dir",
            s(&units),
            "--no-systemctl",
            "--scope",
            "system",
            "--port-base",
            "47000",
        ],
    ));
    let written = units_of(&units);
    assert_eq!(
        written.keys().cloned().collect::<Vec<_>>(),
        [
            "xoq-camera-hd-usb-camera-0.service",
            "xoq-can-can0.service",
            "xoq-can-can1.service",
            "xoq-machine.service",
            "xoq-serial-ft232r-usb-uart-a50285bi.service",
            "xoq-serial-usb-single-serial-5a7c012345.service",
        ]
    );
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(written.keys().map(|u| units.join(u)))
        .output()
        .expect(
            "systemd-analyze is missing: install Debian's systemd package (scripts/test.sh does)",
        );
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !complaints.contains(".service"),
        "systemd-analyze verify: {complaints}"
    );
    let h = s(home.path());
    let xoq = xoq_bin();
    for (unit, snapshot) in [
        (
            "xoq-serial-usb-single-serial-5a7c012345.service",
            SERIAL_UNIT,
        ),
        ("xoq-can-can1.service", CAN_UNIT),
        ("xoq-camera-hd-usb-camera-0.service", CAMERA_UNIT),
        ("xoq-machine.service", MACHINE_UNIT),
    ] {
        let want = snapshot.replace("{H}", h).replace("{XOQ}", xoq);
        assert_eq!(written[unit], want, "{unit}");
    }
}

const SERIAL_UNIT: &str = r#"# Written by `xoq deploy`; `xoq deploy --uninstall` removes it.
[Unit]
Description=xoq serial server: serial-usb-single-serial-5a7c012345 (/dev/serial/by-id/usb-1a86_USB_Single_Serial_5A7C012345-if00)
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
Environment=XOQ_HOME={H}
Environment=XOQ_LOG=info
ExecStart={XOQ} serial-server /dev/serial/by-id/usb-1a86_USB_Single_Serial_5A7C012345-if00 1000000 --key {H}/keys/usb-1a86_usb_single_serial_5a7c012345-if00.key --bind 0.0.0.0:47320
Restart=always
RestartSec=2
TimeoutStopSec=10
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths={H}
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
DevicePolicy=closed
DeviceAllow=char-ttyUSB rw
DeviceAllow=char-ttyACM rw
SupplementaryGroups=dialout

[Install]
WantedBy=multi-user.target
"#;
const CAN_UNIT: &str = r#"# Written by `xoq deploy`; `xoq deploy --uninstall` removes it.
[Unit]
Description=xoq can server: can-can1 (can1)
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
Environment=XOQ_HOME={H}
Environment=XOQ_LOG=info
ExecStartPre={XOQ} setup-can can1 --bitrate 1000000
ExecStart={XOQ} can-server can1 --key {H}/keys/can1_fe00b000.can.key --bind 0.0.0.0:47103
Restart=always
RestartSec=2
TimeoutStopSec=10
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths={H}
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_CAN

[Install]
WantedBy=multi-user.target
"#;
const CAMERA_UNIT: &str = r#"# Written by `xoq deploy`; `xoq deploy --uninstall` removes it.
[Unit]
Description=xoq camera server: camera-hd-usb-camera-0 (/dev/v4l/by-id/usb-HD_USB_Camera_HD_USB_Camera_SN0001-video-index0)
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
Environment=XOQ_HOME={H}
Environment=XOQ_LOG=info
ExecStart={XOQ} camera-server /dev/v4l/by-id/usb-HD_USB_Camera_HD_USB_Camera_SN0001-video-index0 --key {H}/keys/usb-hd_usb_camera_hd_usb_camera_sn0001-video-index0.key --bind 0.0.0.0:47295
Restart=always
RestartSec=2
TimeoutStopSec=10
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths={H}
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
DevicePolicy=closed
DeviceAllow=char-video4linux rw
SupplementaryGroups=video

[Install]
WantedBy=multi-user.target
"#;
const MACHINE_UNIT: &str = r#"# Written by `xoq deploy`; `xoq deploy --uninstall` removes it.
[Unit]
Description=xoq machine service (answers `xoq ls`)
Wants=network-online.target
After=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
Environment=XOQ_HOME={H}
Environment=XOQ_LOG=info
ExecStart={XOQ} machine-server --file {H}/machine.json --key {H}/keys/machine.key --bind 0.0.0.0:47000
Restart=always
RestartSec=2
TimeoutStopSec=10
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths={H}
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK

[Install]
WantedBy=multi-user.target
"#;

#[test]
fn keys_ports_and_units_survive_a_second_deploy_and_renumbered_devices() {
    let home = tempfile::tempdir().expect("home");
    let units = home.path().join("units");
    let run = |tree: &Fake| {
        ok(&deploy(
            home.path(),
            &[
                "--root",
                s(tree.root()),
                "--unit-dir",
                s(&units),
                "--no-systemctl",
                "--port-base",
                "47000",
            ],
        ));
        (identities(home.path()), units_of(&units))
    };
    let first = run(&robot("ttyUSB0", "ttyUSB1", 0));
    let again = run(&robot("ttyUSB0", "ttyUSB1", 0));
    // The adapters swap tty numbers and the camera moves to video2 after a replug.
    let renumbered = run(&robot("ttyUSB1", "ttyUSB0", 2));
    assert_eq!(first, again);
    assert_eq!(first.0, renumbered.0, "same keys, ids and ports per device");
    assert_eq!(first.1, renumbered.1, "same units");
    for (key, ..) in first.0.values() {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(key).expect("key").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

/// The robot config of the run tests: simulated devices declared, as for CI, the arm with
/// a deadman that disables motor 1 (frames in `frames`).
fn sim_robot(frames: &Path) -> String {
    std::fs::write(frames, "001#FFFFFFFFFFFFFFFD\n").expect("frames");
    format!(
        r#"{{
  "name": "ci-robot",
  "extra": [
    {{"kind": "serial", "device": "sim:so101", "name": "so101"}},
    {{"kind": "can", "device": "sim:openarm", "name": "openarm", "deadman": 200, "on_disconnect": "{}"}},
    {{"kind": "depth", "device": "sim:depth", "name": "wrist-depth"}}
  ]
}}"#,
        frames.display()
    )
}

/// The `ExecStart` of a unit file, split (the test's units have no quoted arguments), and
/// its `XOQ_HOME`.
fn exec_start(unit: &str) -> (Vec<String>, PathBuf) {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let home = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment=XOQ_HOME="))
        .expect("XOQ_HOME");
    (
        line.split(' ').map(str::to_string).collect(),
        PathBuf::from(home),
    )
}

struct Running(Vec<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_command_lines_start_servers_that_clients_reach_by_name() {
    let home = tempfile::tempdir().expect("home");
    let units = home.path().join("units");
    let empty = Fake::new();
    let config = home.path().join("robot.json");
    std::fs::write(&config, sim_robot(&home.path().join("disable.frames"))).expect("config");
    let base = port_base();
    ok(&deploy(
        home.path(),
        &[
            "--root",
            s(empty.root()),
            "--config",
            s(&config),
            "--unit-dir",
            s(&units),
            "--no-systemctl",
            "--offline",
            "--bind-ip",
            "127.0.0.1",
            "--port-base",
            &base.to_string(),
        ],
    ));
    let m = machine_json(home.path());
    let ids = identities(home.path());
    assert_eq!(
        ids.keys().cloned().collect::<Vec<_>>(),
        ["openarm", "so101", "wrist-depth"]
    );
    // Start every unit's command line as systemd would, and check what each prints
    // against machine.json.
    let mut running = Running(Vec::new());
    let mut expected: Vec<(String, u64, String)> = ids
        .values()
        .map(|(_, id, port, unit)| (id.clone(), *port, unit.clone()))
        .collect();
    expected.push((
        m["machine_id"].as_str().expect("id").to_string(),
        u64::from(base),
        "xoq-machine.service".into(),
    ));
    for (id, port, unit) in &expected {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit");
        let (args, unit_home) = exec_start(&text);
        assert_eq!(args[0], xoq_bin());
        assert_eq!(unit_home, home.path());
        let argv: Vec<&str> = args[1..].iter().map(String::as_str).collect();
        let (child, banner) = common::spawn_cli(&argv, &unit_home);
        running.0.push(child);
        assert_eq!(common::banner_value(&banner, "id"), [id.as_str()], "{unit}");
        let at = format!("{id}@127.0.0.1:{port}");
        assert!(
            common::banner_value(&banner, "address").contains(&at.as_str()),
            "{unit} is not at {at}: {banner:?}"
        );
        let listed: Vec<&str> = if unit == "xoq-machine.service" {
            m["machine_addresses"]
                .as_array()
                .expect("addresses")
                .iter()
                .filter_map(|v| v.as_str())
                .collect()
        } else {
            m["services"]
                .as_array()
                .expect("services")
                .iter()
                .find(|v| v["unit"] == unit.as_str())
                .expect("service")["addresses"]
                .as_array()
                .expect("addresses")
                .iter()
                .filter_map(|v| v.as_str())
                .collect()
        };
        assert_eq!(
            listed,
            [at.as_str()],
            "machine.json says what {unit} prints"
        );
    }
    let machine = format!("{}@127.0.0.1:{base}", m["machine_id"].as_str().expect("id"));
    // `xoq ls` lists them.
    let ls = Command::new(xoq_bin())
        .args(["ls", &machine, "--offline"])
        .env("XOQ_HOME", home.path())
        .output()
        .expect("xoq ls");
    let listing = ok(&ls);
    for (name, kind) in [
        ("so101", "serial"),
        ("openarm", "can"),
        ("wrist-depth", "depth"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([name, kind])),
            "{name} missing from: {listing}"
        );
        assert!(listing.contains(&format!(
            "{}/{name}",
            m["machine_id"].as_str().unwrap_or("")
        )));
    }
    // Clients dial services by name.
    let mut cam = xoq::depth::RemoteDepthCamera::connect(
        &format!("{machine}/wrist-depth"),
        xoq::depth::DepthOptions::new().offline(true).ephemeral(),
    )
    .await
    .expect("depth camera by name");
    let set = cam.next().await.expect("capture");
    let d = &set.depth;
    let centre = d.data[(d.height / 2 * d.width + d.width / 2) as usize];
    assert!((990..=1010).contains(&centre), "{centre} mm");
    cam.close().await;
    let port = xoq::client::serial::RemoteSerial::connect(
        &format!("{machine}/so101"),
        xoq::client::serial::SerialOptions::new(1_000_000)
            .offline(true)
            .ephemeral(),
    )
    .await
    .expect("serial port by name");
    port.write(&xoq::wire::feetech::instruction(
        1,
        xoq::wire::feetech::PING,
        &[],
    ))
    .await
    .expect("ping");
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    while reply.len() < 6 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), port.read(&mut buf))
            .await
            .expect("servo 1 answers")
            .expect("read");
        reply.extend_from_slice(&buf[..n]);
    }
    let (status, _) = xoq::wire::feetech::decode_status(&reply).expect("status");
    assert_eq!(status.id, 1);
    drop(port);
    // A name the machine does not have: the error lists what it has.
    let err = xoq::client::serial::RemoteSerial::connect(
        &format!("{machine}/nope"),
        xoq::client::serial::SerialOptions::new(1_000_000)
            .offline(true)
            .ephemeral(),
    )
    .await
    .expect_err("no such service");
    let msg = err.to_string();
    assert!(
        msg.contains("no service \"nope\"") && msg.contains("so101"),
        "{msg}"
    );
}

#[test]
fn uninstall_removes_exactly_what_deploy_wrote_and_keeps_the_keys() {
    let tree = robot("ttyUSB0", "ttyUSB1", 0);
    let home = tempfile::tempdir().expect("home");
    let units = home.path().join("units");
    std::fs::create_dir_all(&units).expect("dir");
    std::fs::write(units.join("someone-else.service"), "[Service]\n").expect("write");
    let args = [
        "--root",
        s(tree.root()),
        "--unit-dir",
        s(&units),
        "--no-systemctl",
    ];
    ok(&deploy(home.path(), &args));
    let keys: Vec<_> = std::fs::read_dir(home.path().join("keys"))
        .expect("keys")
        .flatten()
        .map(|e| (e.file_name(), std::fs::read(e.path()).expect("key")))
        .collect();
    assert_eq!(keys.len(), 6, "five services and the machine");
    let out = ok(&deploy(home.path(), &["--uninstall", "--no-systemctl"]));
    assert!(out.contains("kept the keys"), "{out}");
    assert_eq!(
        units_of(&units).keys().cloned().collect::<Vec<_>>(),
        ["someone-else.service"]
    );
    assert!(!home.path().join("machine.json").exists());
    let after: Vec<_> = std::fs::read_dir(home.path().join("keys"))
        .expect("keys")
        .flatten()
        .map(|e| (e.file_name(), std::fs::read(e.path()).expect("key")))
        .collect();
    assert_eq!(keys, after, "keys untouched");
    // Nothing deployed: status and uninstall say so.
    let out = deploy(home.path(), &["--status", "--no-systemctl"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing deployed"));
}

#[test]
fn a_second_deploy_replaces_the_first_and_status_lists_it() {
    let home = tempfile::tempdir().expect("home");
    let units = home.path().join("units");
    let empty = Fake::new();
    let config = home.path().join("robot.json");
    let run = |json: &str| {
        std::fs::write(&config, json).expect("config");
        ok(&deploy(
            home.path(),
            &[
                "--root",
                s(empty.root()),
                "--config",
                s(&config),
                "--unit-dir",
                s(&units),
                "--no-systemctl",
            ],
        ))
    };
    run(&sim_robot(&home.path().join("disable.frames")));
    assert!(units.join("xoq-openarm.service").exists());
    run(r#"{"extra": [{"kind": "serial", "device": "sim:so101", "name": "so101"}]}"#);
    assert_eq!(
        units_of(&units).keys().cloned().collect::<Vec<_>>(),
        ["xoq-machine.service", "xoq-so101.service"],
        "the services this deploy no longer has are gone"
    );
    let status = ok(&deploy(home.path(), &["--status", "--no-systemctl"]));
    assert!(status.contains("xoq-so101.service"), "{status}");
    assert!(!status.contains("openarm"), "{status}");
}

#[test]
fn a_relay_token_stays_out_of_the_units_and_the_allowlist_reaches_every_unit() {
    let home = tempfile::tempdir().expect("home");
    let units = home.path().join("units");
    let empty = Fake::new();
    let config = home.path().join("robot.json");
    let client = "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6";
    std::fs::write(
        &config,
        format!(
            r#"{{"allow": ["{client}"], "extra": [{{"kind": "serial", "device": "sim:so101", "name": "so101"}}]}}"#
        ),
    )
    .expect("config");
    ok(&deploy(
        home.path(),
        &[
            "--root",
            s(empty.root()),
            "--config",
            s(&config),
            "--unit-dir",
            s(&units),
            "--no-systemctl",
            "--relay",
            "https://relay.example.org/anon?jwt=SECRET-TOKEN",
        ],
    ));
    let m = machine_json(home.path());
    let id = m["machine_id"].as_str().expect("id");
    assert_eq!(m["relay"], "https://relay.example.org/anon");
    let path = format!("anon/{}/so101", &id[..16]);
    assert_eq!(m["services"][0]["moq_path"], path.as_str());
    for (name, text) in units_of(&units) {
        assert!(!text.contains("SECRET"), "{name} shows the token");
        assert!(
            text.contains(&format!("--allow {client}")),
            "{name} admits anyone"
        );
    }
    let so101 = &units_of(&units)["xoq-so101.service"];
    assert!(so101.contains(&format!("--moq {path}")));
    let env = home.path().join("relay.env");
    assert!(so101.contains(&format!("EnvironmentFile={}", env.display())));
    assert_eq!(
        std::fs::read_to_string(&env).expect("relay.env"),
        "XOQ_RELAY=https://relay.example.org/anon?jwt=SECRET-TOKEN\n"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&env).expect("env").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    ok(&deploy(home.path(), &["--uninstall", "--no-systemctl"]));
    assert!(!env.exists(), "uninstall removes what deploy wrote");
}
