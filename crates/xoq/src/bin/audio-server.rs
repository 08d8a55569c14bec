//! `audio-server sim:tone`: XoQ 0.3.6's name for `xoq audio-server`.

fn main() -> std::process::ExitCode {
    xoq::cli::main_with_name(Some("audio-server"))
}
