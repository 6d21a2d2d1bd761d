//! The few OS calls the console engine makes, as safe functions.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};

/// The outcome of one non-blocking transfer.
pub(crate) enum Io {
    Data(usize),
    WouldBlock,
    /// End of file, or the peer is gone (EPIPE, ECONNRESET …).
    Closed,
}

/// A connected pair of close-on-exec stream sockets.
pub(crate) fn socketpair(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(Error::last_os(format!("creating the {what} socketpair")));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd(what: &str) -> Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::last_os(format!("creating the {what} eventfd")));
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes an eventfd readable.
pub(crate) fn signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) is still readable: fine.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Receives what is there, without blocking.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Io {
    // SAFETY: buf is a live, writable slice.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Io::Closed,
        n if n > 0 => Io::Data(n as usize),
        _ => would_block_or_closed(),
    }
}

/// Sends what fits, without blocking and without SIGPIPE.
pub(crate) fn send(fd: BorrowedFd<'_>, data: &[u8]) -> Io {
    // SAFETY: data is a live slice; MSG_NOSIGNAL turns a closed peer into EPIPE.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        Io::Data(n as usize)
    } else {
        would_block_or_closed()
    }
}

fn would_block_or_closed() -> Io {
    match std::io::Error::last_os_error().kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Io::WouldBlock,
        _ => Io::Closed,
    }
}

/// Shuts down the sending direction, so the peer reads end of file.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) {
    // SAFETY: shutdown(2) on a socket we own; no memory involved.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
}
