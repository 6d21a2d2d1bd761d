//! `make header`: generates `include/qm.h` from `src/ffi` with cbindgen (pinned in
//! `Cargo.toml`), configured by `cbindgen.toml`, with the version macros taken from the root
//! `Cargo.toml`'s version (the one place it is written).
//!
//! A development step of this repository only: the library's own `build.rs` does not run
//! cbindgen, so a crate that depends on `qm-qemu` neither compiles cbindgen nor has a header
//! written into its dependency's directory. The header is committed; `make check-header`
//! (part of `make test` and CI) runs this and fails when the file changed.
//!
//! Usage: `qm-header [REPO_ROOT]` (default: two directories above this crate). The file is
//! only rewritten when its content changes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        PathBuf::from,
    );
    match generate(&root) {
        Ok(changed) => {
            if changed {
                eprintln!("qm-header: wrote {}", root.join("include/qm.h").display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qm-header: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `include/qm.h` under `root`; true when its content changed.
fn generate(root: &Path) -> Result<bool, String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))
        .map_err(|e| format!("reading {}/Cargo.toml: {e}", root.display()))?;
    let version = package_version(&manifest)
        .ok_or_else(|| "no version in the [package] table of Cargo.toml".to_string())?;
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .map_err(|e| format!("reading cbindgen.toml: {e}"))?;
    config.after_includes = Some(version_macros(&version)?);
    // Only the FFI module tree is parsed: the core's public items never reach the header.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .map_err(|e| format!("generating the header with cbindgen: {e}"))?;
    std::fs::create_dir_all(root.join("include")).map_err(|e| format!("creating include/: {e}"))?;
    Ok(bindings.write_to_file(root.join("include/qm.h")))
}

/// The `version = "…"` of the `[package]` table.
fn package_version(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(rest) = line.strip_prefix("version") {
                let value = rest.trim_start().strip_prefix('=')?.trim();
                return Some(value.trim_matches('"').to_string());
            }
        }
    }
    None
}

/// `QM_VERSION_*` for the header.
fn version_macros(version: &str) -> Result<String, String> {
    let core = version.split(['-', '+']).next().unwrap_or(version);
    let parts: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = parts[..] else {
        return Err(format!("version {version} is not MAJOR.MINOR.PATCH"));
    };
    Ok(format!(
        "\n/* The version of this header (the library's at run time: qm_version()). */\n\
         #define QM_VERSION_MAJOR {major}\n\
         #define QM_VERSION_MINOR {minor}\n\
         #define QM_VERSION_PATCH {patch}\n\
         #define QM_VERSION_STRING \"{version}\"\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_of_the_package_table_only() {
        let manifest = "[package]\nname = \"x\"\nversion = \"1.2.3\"\n[dependencies]\n\
                        version = \"9\"\n";
        assert_eq!(package_version(manifest).as_deref(), Some("1.2.3"));
        assert!(version_macros("1.2.3").unwrap().contains("QM_VERSION_PATCH 3"));
        assert!(version_macros("1.2").is_err());
    }
}
