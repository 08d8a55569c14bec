//! Simulated devices: product features for demos and robot CI, not test-only code.

pub mod audio;
pub mod damiao;
pub mod feetech;
