//! `fake-serial-server`: `xoq serial-server sim:so101 1000000` (simulated SO-101 servo bus).

fn main() -> std::process::ExitCode {
    xoq::cli::main_with_name(Some("fake-serial-server"))
}
