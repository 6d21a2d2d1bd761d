//! The console: a socketpair to QEMU's serial chardev, and the drain that keeps QEMU from
//! blocking on it while logging every byte.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::log::{debug, warning};
use crate::wait::{poll, pollfd};

/// A connected pair of stream sockets, close-on-exec.
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

/// The host side of a console.
pub(crate) struct Console {
    /// What the user reads and writes: QEMU's peer directly, or the user end of the drain.
    user: Option<OwnedFd>,
    drain: Option<Drain>,
}

struct Drain {
    stop: OwnedFd,
    thread: JoinHandle<()>,
}

impl Console {
    /// Serves `host` (the socket QEMU's chardev talks to) directly.
    pub(crate) fn direct(host: OwnedFd) -> Console {
        Console {
            user: Some(host),
            drain: None,
        }
    }

    /// Starts a drain thread that always reads what QEMU writes, appends it to `log` (if any)
    /// and forwards it to the user's end, buffering in memory what the user has not read yet;
    /// what the user writes goes to QEMU.
    pub(crate) fn drained(host: OwnedFd, log: Option<File>, name: &str) -> Result<Console> {
        let (user, relay_end) = socketpair("console")?;
        // SAFETY: eventfd has no memory preconditions; checked below.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(Error::last_os("creating the console drain's eventfd"));
        }
        // SAFETY: fresh descriptor.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let stop_raw = stop.as_raw_fd();
        crate::qmp::set_nonblocking(host.as_raw_fd())?;
        crate::qmp::set_nonblocking(relay_end.as_raw_fd())?;
        let relay = Relay {
            qemu: host,
            user: Some(relay_end),
            log,
            to_user: VecDeque::new(),
            to_qemu: VecDeque::new(),
            name: name.to_owned(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("qm-console-{name}"))
            .spawn(move || relay.run(stop_raw))
            .map_err(|e| Error::io("starting the console drain thread", e))?;
        Ok(Console {
            user: Some(user),
            drain: Some(Drain { stop, thread }),
        })
    }

    /// The descriptor the user reads and writes; `None` once closed.
    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.user.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Closes our end of the user's side, so a console nobody reads can't block QEMU; a drain
    /// keeps reading until [`finish`](Self::finish).
    pub(crate) fn close_user(&mut self) {
        self.user = None;
    }

    /// After QEMU exited: lets the drain take what is left in the socket, then joins it.
    pub(crate) fn finish(mut self) {
        self.user = None;
        if let Some(drain) = self.drain.take() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            unsafe { libc::write(drain.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
            if drain.thread.join().is_err() {
                warning!("the console drain thread panicked");
            }
        }
    }
}

struct Relay {
    qemu: OwnedFd,
    user: Option<OwnedFd>,
    log: Option<File>,
    to_user: VecDeque<u8>,
    to_qemu: VecDeque<u8>,
    name: String,
}

enum Io {
    Data(usize),
    WouldBlock,
    Closed,
}

fn recv(fd: RawFd, buf: &mut [u8]) -> Io {
    // SAFETY: buf is a live, writable slice.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    match n {
        0 => Io::Closed,
        n if n > 0 => Io::Data(n as usize),
        _ => match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Io::WouldBlock,
            _ => Io::Closed,
        },
    }
}

/// Sends from the front of `queue`, removing what was sent.
fn send_from(fd: RawFd, queue: &mut VecDeque<u8>) -> Io {
    let (front, _) = queue.as_slices();
    // SAFETY: front is a live slice; MSG_NOSIGNAL turns a closed peer into EPIPE.
    let n = unsafe { libc::send(fd, front.as_ptr().cast(), front.len(), libc::MSG_NOSIGNAL) };
    if n >= 0 {
        queue.drain(..n as usize);
        return Io::Data(n as usize);
    }
    match std::io::Error::last_os_error().kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Io::WouldBlock,
        _ => Io::Closed,
    }
}

impl Relay {
    fn run(mut self, stop: RawFd) {
        let mut buf = vec![0u8; 16 << 10];
        let mut qemu_open = true;
        let mut stopping = false;
        loop {
            let qemu = self.qemu.as_raw_fd();
            let user = self.user.as_ref().map(AsRawFd::as_raw_fd);
            if stopping || !qemu_open {
                // QEMU is gone: hand over what is buffered without waiting for the user.
                self.flush_user_now();
                break;
            }
            let mut fds = vec![
                pollfd(stop, libc::POLLIN),
                pollfd(
                    qemu,
                    libc::POLLIN
                        | if self.to_qemu.is_empty() {
                            0
                        } else {
                            libc::POLLOUT
                        },
                ),
            ];
            if let Some(user) = user {
                let out = if self.to_user.is_empty() {
                    0
                } else {
                    libc::POLLOUT
                };
                fds.push(pollfd(user, libc::POLLIN | out));
            }
            if poll(&mut fds, None).is_err() {
                break;
            }
            if fds[0].revents != 0 {
                stopping = true;
            }
            // Read QEMU until it has nothing more: when stopping this is the final drain.
            if fds[1].revents != 0 || stopping {
                qemu_open = self.pump_from_qemu(&mut buf);
            }
            if fds[1].revents & libc::POLLOUT != 0 {
                if let Io::Closed = send_from(qemu, &mut self.to_qemu) {
                    self.to_qemu.clear();
                }
            }
            if let Some(user_fd) = fds.get(2) {
                if user_fd.revents & libc::POLLIN != 0 {
                    self.pump_from_user(&mut buf);
                }
                if user_fd.revents & libc::POLLOUT != 0 || user_fd.revents & libc::POLLHUP != 0 {
                    self.send_to_user();
                }
            }
        }
        if let Some(log) = self.log.as_mut() {
            let _ = log.flush();
        }
        debug!("{}: console drain finished", self.name);
    }

    /// Returns false at EOF.
    fn pump_from_qemu(&mut self, buf: &mut [u8]) -> bool {
        loop {
            match recv(self.qemu.as_raw_fd(), buf) {
                Io::Data(n) => {
                    if let Some(log) = self.log.as_mut() {
                        if let Err(e) = log.write_all(&buf[..n]) {
                            warning!("{}: console log write failed: {e}", self.name);
                            self.log = None;
                        }
                    }
                    if self.user.is_some() {
                        self.to_user.extend(&buf[..n]);
                    }
                }
                Io::WouldBlock => return true,
                Io::Closed => return false,
            }
        }
    }

    fn pump_from_user(&mut self, buf: &mut [u8]) {
        let Some(user) = self.user.as_ref() else {
            return;
        };
        match recv(user.as_raw_fd(), buf) {
            Io::Data(n) => {
                self.to_qemu.extend(&buf[..n]);
                let _ = send_from(self.qemu.as_raw_fd(), &mut self.to_qemu);
            }
            Io::WouldBlock => {}
            // The user closed every copy of their end: keep draining QEMU into the log.
            Io::Closed => self.drop_user(),
        }
    }

    fn send_to_user(&mut self) {
        let Some(user) = self.user.as_ref() else {
            return;
        };
        while !self.to_user.is_empty() {
            match send_from(user.as_raw_fd(), &mut self.to_user) {
                Io::Data(_) => {}
                Io::WouldBlock => return,
                Io::Closed => return self.drop_user(),
            }
        }
    }

    fn flush_user_now(&mut self) {
        self.send_to_user();
        if !self.to_user.is_empty() {
            debug!(
                "{}: {} console bytes not read by the user (still in the console log)",
                self.name,
                self.to_user.len()
            );
        }
    }

    fn drop_user(&mut self) {
        self.user = None;
        self.to_user.clear();
    }
}
