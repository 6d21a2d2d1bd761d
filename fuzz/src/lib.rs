//! What the fuzz targets share.

use std::sync::OnceLock;

/// Splits `stream` into pseudo-random read sizes from `seed` (xorshift): 0 to 2*avg bytes, avg
/// from the seed too, so a target sees the same bytes arrive the way a socket may hand them out.
pub fn random_chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let avg = 1 + usize::from(seed % 16);
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % (2 * avg + 1)).min(rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    chunks
}

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
