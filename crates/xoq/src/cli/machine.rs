//! `xoq machine-server` (what `xoq deploy` runs as `xoq-machine.service`) and `xoq ls`.

use std::path::PathBuf;

use clap::Args;
use iroh::protocol::Router;
use xoq_server::machine::MachineServer;
use xoq_transport::Address;
use xoq_wire::machine::ALPN_MACHINE;

use super::common::{self, ServerArgs};
use super::deploy::manifest::MachineFile;

/// `xoq machine-server`.
#[derive(Debug, Args)]
pub struct MachineServerCmd {
    /// The machine description `xoq deploy` wrote (default $XOQ_HOME/machine.json).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub(super) async fn server(a: MachineServerCmd) -> anyhow::Result<()> {
    let file = a
        .file
        .clone()
        .unwrap_or_else(|| xoq_transport::key::xoq_home().join("machine.json"));
    // Read now to fail early on a missing or damaged file; then at every request.
    MachineFile::read(&file)?;
    let path = file.clone();
    let server = MachineServer::new(move || {
        MachineFile::read(&path)
            .map_err(|e| format!("{e:#}"))?
            .describe()
    });
    let ep = a
        .server
        .endpoint("machine", vec![ALPN_MACHINE.to_vec()])
        .await?;
    let router = Router::builder(ep).accept(ALPN_MACHINE, server).spawn();
    common::print_addresses(
        &format!("xoq machine-server: describing {}", file.display()),
        Some(router.endpoint()),
        a.server.p2p.offline(),
        None,
        &[],
    );
    common::shutdown_signal().await;
    let _ = router.shutdown().await;
    Ok(())
}

/// `xoq ls MACHINE`.
#[derive(Debug, Args)]
pub struct LsCmd {
    /// The machine: <machine-id> or <machine-id>@<ip>:<port> (`xoq deploy` prints it).
    pub address: String,
    /// Client identity key (default $XOQ_KEY or ~/.config/xoq/client.key).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// No discovery (also XOQ_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

pub(super) async fn ls(a: LsCmd) -> anyhow::Result<()> {
    let addr: Address = a.address.parse()?;
    let Address::P2p { id, direct } = &addr else {
        anyhow::bail!(
            "give the machine's id (`xoq deploy --status` prints it), not a service or relay address"
        );
    };
    let offline = a.offline || xoq_transport::offline_from_env();
    let secret = common::client_identity(a.key.as_ref()).secret()?;
    let ep = xoq_transport::p2p::client_endpoint(secret, &addr, offline).await?;
    let machine = xoq_transport::machine::describe(&ep, &addr, offline).await;
    ep.close().await;
    let machine = machine?;
    println!(
        "machine {id} ({}): {} services",
        machine.name,
        machine.services.len()
    );
    for s in &machine.services {
        let sid = iroh::EndpointId::from_bytes(&s.endpoint_id)
            .map_or_else(|_| "?".into(), |i| i.to_string());
        let at = match direct {
            Some(d) if s.port != 0 => {
                format!("{sid}@{}", std::net::SocketAddr::new(d.ip(), s.port))
            }
            _ => sid,
        };
        println!("  {:<24} {:<7} {}", s.name, s.kind, s.device);
        println!("      {id}/{}", s.name);
        println!("      {at}");
        if !s.moq_path.is_empty() {
            println!("      MoQ path {}", s.moq_path);
        }
    }
    Ok(())
}
