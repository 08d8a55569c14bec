//! `machine.json` (in `$XOQ_HOME`): what a deploy installed, read by `--status`,
//! `--uninstall`, the next deploy (to replace this one cleanly) and the machine service.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A deployed machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MachineFile {
    /// The machine service's endpoint id: the id clients put before `/<service>`.
    pub(crate) machine_id: String,
    /// Host name (or the config's name).
    pub(crate) name: String,
    /// `system` or `user` units.
    pub(crate) scope: String,
    /// Where the unit files are.
    pub(crate) unit_dir: PathBuf,
    /// The machine service's unit, port and P2P addresses.
    pub(crate) machine_unit: String,
    /// Port of the machine service.
    pub(crate) machine_port: u16,
    /// Its direct addresses (`<id>@<ip>:<port>`).
    pub(crate) machine_addresses: Vec<String>,
    /// The relay services publish on, if any (without its token).
    pub(crate) relay: Option<String>,
    /// Every service.
    pub(crate) services: Vec<ServiceEntry>,
}

/// One deployed service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceEntry {
    /// Name clients use: `<machine-id>/<name>`.
    pub(crate) name: String,
    /// `serial`, `can`, `camera`, `depth` or `audio`.
    pub(crate) kind: String,
    /// The device as the server opens it (a stable path, an interface, `sim:...`).
    pub(crate) device: String,
    /// The identity the key and the unit derive from (survives renumbering).
    pub(crate) stable_id: String,
    /// The service's endpoint id.
    pub(crate) endpoint_id: String,
    /// UDP port it listens on.
    pub(crate) port: u16,
    /// Direct P2P addresses (`<id>@<ip>:<port>`).
    pub(crate) addresses: Vec<String>,
    /// MoQ path on the relay, when publishing.
    pub(crate) moq_path: Option<String>,
    /// systemd unit name.
    pub(crate) unit: String,
    /// Key file.
    pub(crate) key: PathBuf,
}

impl MachineFile {
    /// Read `path`.
    pub(crate) fn read(path: &Path) -> anyhow::Result<MachineFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}: nothing deployed here?", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Write `path` (through a temporary file, so a reader never sees half of it).
    pub(crate) fn write(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Every unit this deploy installed (services, then the machine service).
    pub(crate) fn units(&self) -> Vec<String> {
        let mut u: Vec<String> = self.services.iter().map(|s| s.unit.clone()).collect();
        u.push(self.machine_unit.clone());
        u
    }

    /// The machine as the machine service describes it.
    pub(crate) fn describe(&self) -> Result<xoq_wire::machine::Machine, String> {
        let services = self
            .services
            .iter()
            .map(|s| {
                let id: iroh::EndpointId = s
                    .endpoint_id
                    .parse()
                    .map_err(|e| format!("{}: bad endpoint id ({e})", s.name))?;
                Ok(xoq_wire::machine::Service {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    endpoint_id: *id.as_bytes(),
                    port: s.port,
                    moq_path: s.moq_path.clone().unwrap_or_default(),
                    device: s.device.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(xoq_wire::machine::Machine {
            name: self.name.clone(),
            services,
        })
    }
}
