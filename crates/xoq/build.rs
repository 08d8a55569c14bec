//! Embeds the web pages (`web/`, built from `js/examples` by `npm run pages` in `js/`) into
//! the binary, so `xoq demo` serves them with nothing else installed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, root, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            out.push((rel, path.clone()));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let web = manifest.join("web");
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    walk(&web, &web, &mut files);
    let mut code = String::from("/// Embedded web files: (path relative to `web/`, contents).\n");
    code.push_str("pub(crate) static FILES: &[(&str, &[u8])] = &[\n");
    // Paths relative to the manifest directory, not absolute: two clones sharing one build
    // cache (CI's fresh clone beside a work tree) reuse this output, which must then name
    // the files of the clone being compiled.
    for (rel, _) in files {
        let _ = writeln!(
            code,
            "    ({rel:?}, include_bytes!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/web/\", {rel:?}))),"
        );
    }
    code.push_str("];\n");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this")).join("web_files.rs");
    std::fs::write(out, code).expect("write web_files.rs");
}
