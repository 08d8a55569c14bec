//! Serve the simulated OpenArm (eight Damiao motors) and drive one motor to a target with MIT
//! commands through the bridge, both sides in one process, offline on loopback.
//!
//! ```sh
//! cargo run --example can_motor
//! ```

use std::time::Duration;

use iroh::protocol::Router;
use xoq::can::{CanFrame, CanOptions, CanServer, RemoteCanBus};
use xoq::transport::p2p::EndpointBuilder;
use xoq::wire::can::ALPN;
use xoq::wire::damiao::{CMD_DISABLE, CMD_ENABLE, MotorModel, decode_feedback, encode_mit};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The robot side. The on-disconnect frame makes the motor safe if this program dies.
    let server = CanServer::builder(xoq::can::backend("sim:openarm")?)
        .on_disconnect(vec![CanFrame::new(0x07, CMD_DISABLE.to_vec())?])
        .deadman(Some(Duration::from_millis(100)))
        .start()
        .await?;
    let ep = EndpointBuilder::new()
        .offline(true)
        .alpns(vec![ALPN.to_vec()])
        .spawn()
        .await?;
    let address = format!("{}@{}", ep.id(), ep.bound_sockets()[0]);
    let router = Router::builder(ep).accept(ALPN, server).spawn();

    // 2. The controller side: enable motor 7 (a DM4310), then command 1 rad at 500 Hz.
    let bus = RemoteCanBus::connect(&address, CanOptions::new().offline(true)).await?;
    bus.send(&CanFrame::new(0x07, CMD_ENABLE.to_vec())?).await?;
    let model = MotorModel::DM4310;
    let mut position = 0.0;
    for step in 0..500 {
        let mit = encode_mit(model, 1.0, 0.0, 30.0, 1.0, 0.0);
        bus.send(&CanFrame::new(0x07, mit.to_vec())?).await?;
        // Every command gets a feedback frame on the motor's master id, 0x17.
        while let Some(f) = bus.recv_timeout(Duration::from_millis(100)).await? {
            if f.frame.id == 0x17 {
                if let Some(fb) = decode_feedback(model, &f.frame.data) {
                    position = fb.position;
                }
                break;
            }
        }
        if step % 100 == 0 {
            println!("t = {:>4} ms  position {position:+.3} rad", step * 2);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!("final position {position:+.3} rad (target 1.000)");

    // 3. Leaving is enough to disable the motor: the server sends the on-disconnect frame.
    bus.close().await;
    router.shutdown().await?;
    Ok(())
}
