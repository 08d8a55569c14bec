//! xoq: robot hardware over QUIC.
//!
//! A robot's serial servos, CAN motors and cameras are served from
//! the robot, and a program anywhere uses them as if they were plugged in locally: P2P over
//! iroh (dial a robot by its public key) or 1-to-many through a MoQ relay.
//!
//! ```no_run
//! # async fn demo() -> Result<(), xoq::client::ClientError> {
//! use xoq::serial::{RemoteSerial, SerialOptions};
//! let port = RemoteSerial::connect("http://127.0.0.1:4443/anon/xoq-serial", SerialOptions::new(1_000_000)).await?;
//! port.write(b"hello").await?;
//! # Ok(()) }
//! ```
//!
//! Layers, top to bottom: front ends (the `xoq` binary), services ([`server`], [`client`]
//! over [`device`] backends), wire codecs ([`wire`]), transport ([`transport`]).
//!
//! Cargo features build only what is used: `serial`, `can`, `camera` (pulls in OpenH264,
//! built from C), `audio` (Opus, pure Rust), `depth` (lossless depth cameras), `relay-server` (the embedded moq-relay and relay tokens) and `cli` (the
//! binaries; the default, with everything). A program that only drives serial servos:
//! `xoq = { version = "0.4", default-features = false, features = ["serial"] }`.
// Every public item says what it is for: these crates are read from their docs.
#![deny(missing_docs)]

/// The `xoq` command line (the binaries' code), not a library API: it changes with the CLI.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;

pub use xoq_client as client;
pub use xoq_device as device;
#[cfg(feature = "camera")]
pub use xoq_media as media;
#[cfg(feature = "relay-server")]
pub use xoq_relay as relay;
pub use xoq_server as server;
pub use xoq_transport as transport;
pub use xoq_wire as wire;

/// Why a server could not start (every service).
pub use xoq_server::ServerError;
/// Why a server refused a session or a request (every service shares these codes).
pub use xoq_wire::RefuseCode;

#[cfg(feature = "audio")]
/// Microphones and speakers: serve one ([`audio::AudioServer`]) and use one
/// ([`audio::RemoteAudio`]).
pub mod audio {
    pub use xoq_client::audio::{AudioChunk, AudioClientStats, AudioOptions, RemoteAudio};
    pub use xoq_device::audio::{AudioBlock, AudioSink, AudioSource};
    pub use xoq_device::sim::audio::{Recording, ToneSource, tone_sample};
    pub use xoq_media::audio::{JitterBuffer, JitterStats};
    pub use xoq_server::audio::{AudioServer, AudioServerBuilder, AudioStats};
    pub use xoq_wire::audio::{AudioCodec, AudioFormat};
}

#[cfg(feature = "depth")]
/// Depth cameras: serve one ([`depth::DepthServer`]) and watch one
/// ([`depth::RemoteDepthCamera`]); depth is lossless, in device units.
pub mod depth {
    pub use xoq_client::depth::{DepthFrameset, DepthOptions, RemoteDepthCamera};
    pub use xoq_device::depth::{
        DepthCapture, DepthInfo, DepthSource, Distortion, Intrinsics, SceneSource, read_depth_stamp,
    };
    pub use xoq_media::depth::{DepthCodec, DepthImage};
    pub use xoq_server::depth::{DepthServer, DepthServerBuilder, DepthStats};
}

#[cfg(feature = "camera")]
/// Cameras: serve one ([`camera::CameraServer`]) and watch one ([`camera::RemoteCamera`]).
pub mod camera {
    pub use xoq_client::camera::{CameraOptions, RemoteCamera};
    pub use xoq_device::camera::{
        CameraSource, Mode, ModeRequest, PatternSource, PixelFormat, RawFrame, TestPattern,
        read_stamp,
    };
    pub use xoq_media::{ChannelOrder, Picture, RgbImage};
    pub use xoq_server::camera::{CameraServer, CameraServerBuilder, CameraStats};
    pub use xoq_wire::camera::{Codec, VideoFrame};
}

#[cfg(feature = "can")]
/// CAN buses over the network: the client, the read-only observer, the server, frames and the
/// simulator's helpers.
pub mod can {
    pub use xoq_client::can::{
        CanClientStats, CanObservation, CanObserver, CanOptions, Direction, ObserveOptions,
        RemoteCanBus,
    };
    pub use xoq_device::can::{CanBackend, backend};
    pub use xoq_server::can::{CanServer, CanServerBuilder};
    pub use xoq_wire::can::{BusState, CanFrame, Filter, TimedFrame};
}

#[cfg(feature = "serial")]
/// Serial ports over the network: the client, the read-only observer, the server and their
/// settings.
pub mod serial {
    pub use xoq_client::serial::{
        BlockingSerial, Direction, ObserveOptions, RemoteSerial, SerialObservation, SerialObserver,
        SerialOptions,
    };
    pub use xoq_device::serial::{SerialBackend, backend};
    pub use xoq_server::serial::{SerialServer, SerialServerBuilder};
    pub use xoq_wire::serial::{
        ClearBuffer, DataBits, FlowControl, LineSettings, Parity, StopBits,
    };
}
