//! `serial-server PORT BAUD [--moq PATH]`: XoQ 0.3.6's name for `xoq serial-server`.

fn main() -> std::process::ExitCode {
    xoq::cli::main_with_name(Some("serial-server"))
}
