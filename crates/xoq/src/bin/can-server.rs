//! `can-server IFACE[:fd]... [--moq-relay URL]`: XoQ 0.3.6's name for `xoq can-server`.

fn main() -> std::process::ExitCode {
    xoq::cli::main_with_name(Some("can-server"))
}
