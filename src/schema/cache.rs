//! One parsed schema per QEMU binary per process.
//!
//! The key is the binary's resolved path and its file identity (device, inode, size,
//! modification time): 200 machines of one binary share one [`Schema`], and a binary replaced
//! in place (a rebuild, an upgrade) is a new key. The cache only grows by one entry per
//! distinct binary a process runs.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::Schema;
use crate::error::Result;

/// Which binary a schema belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BinaryKey {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl BinaryKey {
    /// The key of `binary` as a launch runs it: a name without `/` is looked up in `PATH`.
    /// `None` when it cannot be found or read (the schema is then loaded per machine).
    pub(crate) fn of(binary: &str) -> Option<BinaryKey> {
        let path = if binary.contains('/') {
            PathBuf::from(binary)
        } else {
            let dirs = std::env::var_os("PATH")?;
            std::env::split_paths(&dirs)
                .map(|d| d.join(binary))
                .find(|p| p.is_file())?
        };
        Self::of_path(&path)
    }

    fn of_path(path: &Path) -> Option<BinaryKey> {
        let path = std::fs::canonicalize(path).ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        Some(BinaryKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            path,
        })
    }
}

fn cache() -> &'static Mutex<HashMap<BinaryKey, Arc<Schema>>> {
    static CACHE: OnceLock<Mutex<HashMap<BinaryKey, Arc<Schema>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The cached schema of `key`, or the one `load` makes (then cached). Two machines that load at
/// once may both fetch; the first to finish is kept and both get it.
pub(crate) fn load_cached(
    key: Option<&BinaryKey>,
    load: impl FnOnce() -> Result<Schema>,
) -> Result<Arc<Schema>> {
    let lock = || cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = key.and_then(|k| lock().get(k).cloned()) {
        return Ok(found);
    }
    let schema = Arc::new(load()?);
    Ok(match key {
        Some(k) => lock().entry(k.clone()).or_insert(schema).clone(),
        None => schema,
    })
}
