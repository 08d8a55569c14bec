//! Camera sources. Frames are packed 8-bit RGB (`width × height × 3` bytes, rows top to
//! bottom); encoders and the network are the camera service's business.

pub mod pattern;

pub use pattern::{TestPattern, read_stamp};
