//! The console's socketpair (the console itself, its reader thread and its waits, live in
//! [`crate::console`]).

use std::os::fd::OwnedFd;

use crate::error::{Error, Result};
use crate::sys::socket;

/// A connected pair of stream sockets, close-on-exec.
pub(crate) fn socketpair(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    socket::pair().map_err(|e| Error::io(format!("creating the {what} socketpair"), e))
}
