//! Where qm's own code was loaded from: `libqm.so`, or the program qm is linked into.

use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The file holding this function's code (`dladdr`), or `None` when the loader cannot say.
pub(crate) fn this_object() -> Option<PathBuf> {
    // SAFETY: Dl_info is plain data; all-zero is a valid value to be overwritten.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = this_object as *const libc::c_void;
    // SAFETY: `addr` is an address in this object; `info` is writable.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr succeeded: dli_fname is a NUL-terminated string owned by the loader,
    // valid while the object stays loaded (it is ours), copied at once.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
    std::fs::canonicalize(&path).ok().or(Some(path))
}
