//! `camera-server 0 --h264`: XoQ 0.3.6's name for `xoq camera-server`.

fn main() -> std::process::ExitCode {
    xoq::cli::main_with_name(Some("camera-server"))
}
