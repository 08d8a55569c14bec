//! `realsense-server --relay URL --path P`: XoQ 0.3.6's name for `xoq depth-server`.

fn main() -> std::process::ExitCode {
    xoq::cli::main_with_name(Some("depth-server"))
}
