//! `fake-can-server`: `xoq can-server sim:openarm` (eight simulated Damiao motors).

fn main() -> std::process::ExitCode {
    xoq::cli::main_with_name(Some("fake-can-server"))
}
