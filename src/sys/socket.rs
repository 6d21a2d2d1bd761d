//! Sockets: pairs, a private unix listener, sends that never raise SIGPIPE, descriptors passed
//! with SCM_RIGHTS.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, MsgFlags, SockFlag, SockType, SockaddrLike,
    SockaddrStorage, UnixAddr,
};
use nix::sys::stat::{fchmod, Mode};

/// A connected pair of unix stream sockets, close-on-exec.
pub(crate) fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = UnixStream::pair()?;
    Ok((a.into(), b.into()))
}

/// A unix stream socket listening on `path` (backlog 1), close-on-exec, mode 0600 from the
/// start: on Linux the socket file takes the mode of the socket inode, so setting it before
/// `bind` keeps the path unreachable by other users even for a moment.
///
/// The error says which step failed (`"creating"`, `"restricting"`, `"binding"`,
/// `"listening"`) for the caller's message.
pub(crate) fn listen_unix(path: &Path) -> Result<UnixListener, (&'static str, std::io::Error)> {
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| ("creating", e.into()))?;
    fchmod(&sock, Mode::from_bits_truncate(0o600)).map_err(|e| ("restricting", e.into()))?;
    let addr = UnixAddr::new(path).map_err(|e| ("binding", e.into()))?;
    socket::bind(sock.as_raw_fd(), &addr).map_err(|e| ("binding", e.into()))?;
    let backlog = Backlog::new(1).map_err(|e| ("listening", e.into()))?;
    socket::listen(&sock, backlog).map_err(|e| ("listening", e.into()))?;
    Ok(UnixListener::from(sock))
}

/// Accepts one connection, close-on-exec.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    Ok(socket::accept4(listener, SockFlag::SOCK_CLOEXEC)?)
}

/// True for a unix-domain socket (which can carry descriptors), false for TCP and the rest.
pub(crate) fn is_unix(sock: BorrowedFd<'_>) -> bool {
    socket::getsockname::<SockaddrStorage>(sock.as_raw_fd())
        .is_ok_and(|addr| addr.family() == Some(AddressFamily::Unix))
}

/// Makes `fd` non-blocking.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Makes `sock` blocking, with reads bounded by `read_timeout`: a `recv` that waits that long
/// for nothing fails with `WouldBlock`. Sends that must never block say so per call
/// ([`send_nowait`], [`send_fd`]).
pub(crate) fn set_blocking_reads(
    sock: BorrowedFd<'_>,
    read_timeout: std::time::Duration,
) -> std::io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(sock, FcntlArg::F_GETFL)?);
    fcntl(sock, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    let tv = nix::sys::time::TimeVal::new(
        read_timeout.as_secs().try_into().unwrap_or(i64::MAX),
        read_timeout.subsec_micros().into(),
    );
    socket::setsockopt(&sock, socket::sockopt::ReceiveTimeout, &tv)?;
    Ok(())
}

/// send(2) with `MSG_NOSIGNAL`: a peer that is gone is `EPIPE`, never a SIGPIPE that would
/// kill the host process.
pub(crate) fn send(sock: BorrowedFd<'_>, buf: &[u8]) -> std::io::Result<usize> {
    Ok(socket::send(sock.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL)?)
}

/// send(2) with `MSG_NOSIGNAL | MSG_DONTWAIT`: as [`send`], and `WouldBlock` instead of
/// waiting when the socket is full, whether or not the socket is non-blocking.
pub(crate) fn send_nowait(sock: BorrowedFd<'_>, buf: &[u8]) -> std::io::Result<usize> {
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    Ok(socket::send(sock.as_raw_fd(), buf, flags)?)
}

/// recv(2) into `buf`; 0 is end of file. A raw number is accepted (for a reader that holds
/// the connection open by protocol rather than by a borrow): a stale one fails with EBADF or
/// reads another socket, it touches no memory but `buf`.
pub(crate) fn recv(sock: impl AsRawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    Ok(socket::recv(sock.as_raw_fd(), buf, MsgFlags::empty())?)
}

/// Sends one byte (a space, which JSON ignores) carrying `fd` with SCM_RIGHTS, without
/// SIGPIPE and without blocking. Returns the bytes sent (1), or the error; `WouldBlock` on a
/// full socket, for the caller to poll and retry.
pub(crate) fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> std::io::Result<usize> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b" ")];
    let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, flags, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// Shuts both directions of `sock` down: a thread blocked reading it sees end of file.
pub(crate) fn shutdown(sock: BorrowedFd<'_>) {
    let _ = socket::shutdown(sock.as_raw_fd(), socket::Shutdown::Both);
}

/// Takes ownership of socket `fd` inherited from the parent (the fake QEMU's `fd=N`), made
/// close-on-exec. Fails unless `fd` is an open unix socket.
pub(crate) fn inherited_socket(fd: std::os::fd::RawFd) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only reads the descriptor's flags; an invalid `fd` fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (F_GETFD succeeded); the process inherited it to use it, and
    // nothing else in the process owns it (the fake takes each descriptor once).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    if !is_unix(std::os::fd::AsFd::as_fd(&owned)) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a unix socket"),
        ));
    }
    Ok(owned)
}
