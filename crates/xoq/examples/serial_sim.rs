//! Serve the simulated SO-101 servo bus and read a servo's position through it, both sides
//! in one process, offline on loopback.
//!
//! ```sh
//! cargo run --example serial_sim
//! ```

use iroh::protocol::Router;
use xoq::serial::{LineSettings, RemoteSerial, SerialOptions, SerialServer};
use xoq::transport::p2p::EndpointBuilder;
use xoq::wire::{feetech, serial::ALPN};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The robot side: open the device (here the simulator) and serve it on an iroh
    //    endpoint. Offline: no discovery, loopback only.
    let server = SerialServer::builder(xoq::serial::backend("sim:so101")?)
        .settings(LineSettings::new(1_000_000))
        .start()
        .await?;
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![ALPN.to_vec()])
        .spawn()
        .await?;
    // The same string `xoq serial-server` prints as `address:`.
    let address = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep).accept(ALPN, server).spawn();

    // 2. The program side: open the remote port like a local one.
    let port = RemoteSerial::connect(&address, SerialOptions::new(1_000_000).offline(true)).await?;

    // 3. Feetech READ of Present_Position (address 56, 2 bytes) on servo 1.
    port.write(&feetech::instruction(
        1,
        feetech::READ,
        &[feetech::PRESENT_POSITION, 2],
    ))
    .await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    let status = loop {
        let n = port.read(&mut buf).await?;
        reply.extend_from_slice(&buf[..n]);
        if let Ok((status, _)) = feetech::decode_status(&reply) {
            break status;
        }
    };
    let position = u16::from_le_bytes([status.params[0], status.params[1]]);
    println!("servo 1 is at {position} (of 4096 steps per turn)");

    // 4. Close both sides gracefully.
    port.close().await;
    router.shutdown().await?;
    Ok(())
}
