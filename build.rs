//! Generates `include/qm.h` from `src/ffi` with cbindgen (pinned in Cargo.toml), with the
//! version macros taken from Cargo's version, and gives the shared library its versioned soname
//! (`libqm.so.<major>`).
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

    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("reading cbindgen.toml: {e}"));
    config.after_includes = Some(version_macros());
    // Only the FFI module tree is parsed: the core's public items never reach the header.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("generating include/qm.h with cbindgen: {e}"));
    std::fs::create_dir_all(dir.join("include")).expect("creating include/");
    bindings.write_to_file(dir.join("include/qm.h"));
}

/// `QM_VERSION_*` for the header, from the package version (the one place it is written).
fn version_macros() -> String {
    let var = |name: &str| std::env::var(name).expect("cargo sets the package version");
    format!(
        "\n/* The version of this header (the library's at run time: qm_version()). */\n\
         #define QM_VERSION_MAJOR {}\n\
         #define QM_VERSION_MINOR {}\n\
         #define QM_VERSION_PATCH {}\n\
         #define QM_VERSION_STRING \"{}\"\n",
        var("CARGO_PKG_VERSION_MAJOR"),
        var("CARGO_PKG_VERSION_MINOR"),
        var("CARGO_PKG_VERSION_PATCH"),
        var("CARGO_PKG_VERSION"),
    )
}
