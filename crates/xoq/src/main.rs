//! The `xoq` command.

fn main() -> std::process::ExitCode {
    xoq::cli::main_with_name(None)
}
