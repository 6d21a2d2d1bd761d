//! Shared by the fuzz targets.

use std::sync::OnceLock;

/// True when `tag` is listed in `QM_FUZZ_ALLOW` (comma-separated): a known violation that a
/// long run should step over to look for others. Never set by `fuzz/smoke`.
pub fn allowed(tag: &str) -> bool {
    static ALLOW: OnceLock<Vec<String>> = OnceLock::new();
    ALLOW
        .get_or_init(|| {
            std::env::var("QM_FUZZ_ALLOW")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|t| t == tag)
}
