//! Generates `include/qm.h` from `src/ffi` with cbindgen (pinned in Cargo.toml), and gives the
//! shared library its versioned soname (`libqm.so.<major>`).
//!
//! The header is committed; `make check-header` (part of `make test`) fails when a build
//! changes it. It is only rewritten when its content changes.

use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=include/qm.h");

    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libqm.so.{major}");
    }

    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("reading cbindgen.toml: {e}"));
    // Only the FFI module tree is parsed: the core's public items never reach the header.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("generating include/qm.h with cbindgen: {e}"));
    std::fs::create_dir_all(dir.join("include")).expect("creating include/");
    bindings.write_to_file(dir.join("include/qm.h"));
}
