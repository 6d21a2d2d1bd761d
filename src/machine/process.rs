//! The QEMU child process: spawning with exactly the intended descriptors, exact timed waits
//! through a pidfd, and signals that cannot hit a recycled pid.
//!
//! Without pidfds (Linux before 5.3, or valgrind, which does not know the syscall) a small
//! thread blocks in `waitid(WNOWAIT)` and signals an eventfd when the child exits: the same
//! exact wake-up, at the cost of one thread per running QEMU.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::wait::{poll, pollfd, Deadline};

/// What to start.
pub(crate) struct Spawn {
    pub argv: Vec<String>,
    /// Descriptors QEMU inherits under the same numbers; everything else is closed at exec.
    pub keep_fds: Vec<RawFd>,
    /// Receives QEMU's stdout and stderr.
    pub log: File,
}

/// A running (or exited, not yet forgotten) QEMU.
pub(crate) struct Process {
    pid: u32,
    /// Readable once the child has exited: its pidfd, or the fallback's eventfd.
    exit: ExitFd,
    /// The exit status once reaped; its lock also keeps the pid from being reaped (and so
    /// recycled) while a signal goes out.
    status: Mutex<Option<i32>>,
}

enum ExitFd {
    Pidfd(OwnedFd),
    Watched {
        eventfd: OwnedFd,
        watcher: Option<std::thread::JoinHandle<()>>,
    },
}

impl ExitFd {
    fn fd(&self) -> &OwnedFd {
        match self {
            ExitFd::Pidfd(fd) => fd,
            ExitFd::Watched { eventfd, .. } => eventfd,
        }
    }
}

/// A pidfd for our child `pid`, or the fallback when the kernel (or valgrind) has none.
fn exit_fd(pid: u32) -> std::io::Result<ExitFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked. Our unreaped child's
    // pid cannot be recycled, so the pidfd refers to it.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if raw >= 0 {
        // SAFETY: a fresh descriptor nothing else owns (pidfds are close-on-exec).
        return Ok(ExitFd::Pidfd(unsafe { OwnedFd::from_raw_fd(raw as RawFd) }));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: eventfd has no memory preconditions; checked below.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let signal = eventfd.try_clone()?;
    let watcher = std::thread::Builder::new()
        .name(format!("qm-wait-{pid}"))
        .spawn(move || {
            // SAFETY: siginfo_t is plain data; waitid fills it. WNOWAIT leaves the child
            // unreaped, so its pid stays ours until try_status reaps it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            loop {
                let flags = libc::WEXITED | libc::WNOWAIT;
                // SAFETY: as above.
                let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
                if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            unsafe { libc::write(signal.as_raw_fd(), (&one as *const u64).cast(), 8) };
        })?;
    Ok(ExitFd::Watched {
        eventfd,
        watcher: Some(watcher),
    })
}

/// A forked child, and the read end of a close-on-exec pipe: end of file once the child has
/// exec'd, or the errno of a failed exec.
type Forked = (libc::pid_t, OwnedFd);

type Job = (Spawn, mpsc::SyncSender<std::io::Result<Forked>>);

/// Every QEMU is forked from one long-lived thread. `PR_SET_PDEATHSIG` fires when the thread
/// that forked the child ends, not the process; forking from a caller's thread would kill the
/// VM when that thread exits (a Go goroutine's OS thread, a test thread). The spawner only
/// forks: waiting for the exec (loading QEMU takes milliseconds) is the launching thread's, so
/// many launches exec in parallel.
fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("qm-spawner".into())
            .spawn(move || {
                for (job, reply) in rx {
                    let _ = reply.send(fork_child(job));
                }
            })
            .expect("starting the qm spawner thread");
        tx
    })
}

/// Forks a child that sets itself up and execs `job.argv`; does not wait for the exec.
fn fork_child(job: Spawn) -> std::io::Result<Forked> {
    let invalid = |_| std::io::Error::from_raw_os_error(libc::EINVAL);
    let args: Vec<CString> = job
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(invalid))
        .collect::<std::io::Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let null = File::open("/dev/null")?;
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (status_r, status_w) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let host = std::process::id() as libc::pid_t;
    // SAFETY: fork(2). The child runs only `exec_child`, which is async-signal-safe and does
    // not return; everything it touches was prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child, as above.
        unsafe {
            exec_child(
                &argv,
                host,
                null.as_raw_fd(),
                job.log.as_raw_fd(),
                &job.keep_fds,
                status_w.as_raw_fd(),
            )
        }
    }
    Ok((pid, status_r))
}

/// The child's side of [`fork_child`]: never returns. Only async-signal-safe calls: another
/// thread of the host may have held any lock (malloc's included) at the fork.
unsafe fn exec_child(
    argv: &[*const libc::c_char],
    host: libc::pid_t,
    stdin: RawFd,
    log: RawFd,
    keep_fds: &[RawFd],
    status: RawFd,
) -> ! {
    let fail = |errno: libc::c_int| -> ! {
        libc::write(status, (&errno as *const libc::c_int).cast(), 4);
        libc::_exit(127)
    };
    // The host's signal mask and ignored signals (Rust ignores SIGPIPE) must not reach QEMU.
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
        fail(*libc::__errno_location());
    }
    // The host may have died before prctl: then nobody would ever kill us.
    if libc::getppid() != host {
        fail(libc::ESRCH);
    }
    if libc::dup2(stdin, 0) < 0 || libc::dup2(log, 1) < 0 || libc::dup2(log, 2) < 0 {
        fail(*libc::__errno_location());
    }
    close_on_exec_from(3);
    for &fd in keep_fds {
        if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
            fail(*libc::__errno_location());
        }
    }
    libc::execvp(argv[0], argv.as_ptr());
    fail(*libc::__errno_location())
}

/// Waits until the forked child exec'd; on a failed exec, reaps it and returns the error.
fn await_exec(pid: libc::pid_t, status: OwnedFd) -> std::io::Result<()> {
    let mut errno: libc::c_int = 0;
    let n = loop {
        // SAFETY: reads at most 4 bytes into a live c_int.
        let n = unsafe {
            libc::read(
                status.as_raw_fd(),
                (&mut errno as *mut libc::c_int).cast(),
                4,
            )
        };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break n;
        }
    };
    if n == 0 {
        return Ok(());
    }
    let mut wstatus = 0;
    // SAFETY: reaping our own child, which exits right after reporting.
    unsafe { libc::waitpid(pid, &mut wstatus, 0) };
    Err(if n == 4 {
        std::io::Error::from_raw_os_error(errno)
    } else {
        std::io::Error::last_os_error()
    })
}

/// Marks every descriptor from `first` up close-on-exec, so that descriptors other code in the
/// host left inheritable do not leak into QEMU. Async-signal-safe.
unsafe fn close_on_exec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    if libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) == 0 {
        return;
    }
    // Kernels before 5.11: walk the descriptor table up to the soft limit.
    let mut lim: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        lim.rlim_cur.min(1 << 20) as i32
    } else {
        4096
    };
    for fd in first as i32..max {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

impl Process {
    /// Starts `spawn.argv` with stdin on /dev/null and stdout+stderr on the log.
    pub(crate) fn spawn(spawn: Spawn) -> Result<Process> {
        let program = spawn.argv[0].clone();
        let (tx, rx) = mpsc::sync_channel(1);
        spawner()
            .send((spawn, tx))
            .map_err(|_| Error::State("the qm spawner thread is gone".into()))?;
        let (pid, exec_status) = rx
            .recv()
            .map_err(|_| Error::State("the qm spawner thread is gone".into()))?
            .map_err(|e| Error::io(format!("starting {program:?}"), e))?;
        await_exec(pid, exec_status).map_err(|e| Error::io(format!("starting {program:?}"), e))?;
        let exit = match exit_fd(pid as u32) {
            Ok(exit) => exit,
            Err(err) => {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(Error::io("watching QEMU's exit", err));
            }
        };
        Ok(Process {
            pid: pid as u32,
            exit,
            status: Mutex::new(None),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Readable once the process has exited.
    pub(crate) fn exit_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.exit.fd().as_fd()
    }

    /// The exit status if the process has exited (reaping it), `-N` for death by signal N.
    pub(crate) fn try_status(&self) -> Option<i32> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            let mut wstatus = 0;
            // SAFETY: waitpid on our own child, without blocking.
            if unsafe { libc::waitpid(self.pid as libc::pid_t, &mut wstatus, libc::WNOHANG) } > 0 {
                *status = Some(if libc::WIFSIGNALED(wstatus) {
                    -libc::WTERMSIG(wstatus)
                } else {
                    libc::WEXITSTATUS(wstatus)
                });
            }
        }
        *status
    }

    /// Waits for the exit, bounded by `deadline`; wakes the moment the process exits.
    pub(crate) fn wait(&self, deadline: &Deadline<'_>) -> Result<i32> {
        loop {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            if deadline.cancelled() {
                return Err(Error::Interrupted);
            }
            let mut fds = vec![pollfd(self.exit.fd().as_raw_fd(), libc::POLLIN)];
            if let Some(fd) = deadline.cancel_fd()? {
                fds.push(pollfd(fd, libc::POLLIN));
            }
            if poll(&mut fds, deadline.remaining())? == 0 {
                return Err(Error::Timeout(format!(
                    "waiting for QEMU (pid {}) to exit",
                    self.pid
                )));
            }
        }
    }

    /// Sends `sig` unless the process is already gone. Never hits a recycled pid: the pidfd
    /// names this process only, and without one the status lock keeps the child unreaped (so
    /// its pid ours) while the signal goes out.
    pub(crate) fn signal(&self, sig: libc::c_int) -> Result<()> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_some() {
            return Ok(());
        }
        let rc = match &self.exit {
            // SAFETY: pidfd_send_signal with a live pidfd and no siginfo.
            ExitFd::Pidfd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill(2) on our unreaped child.
            ExitFd::Watched { .. } => (unsafe { libc::kill(self.pid as libc::pid_t, sig) }) as _,
        };
        drop(status);
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(Error::last_os(format!(
                "signalling QEMU (pid {})",
                self.pid
            )))
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The fallback watcher ends when the child exits; join it if so, never block on it.
        if let ExitFd::Watched { watcher, .. } = &mut self.exit {
            if let Some(handle) = watcher.take_if(|h| h.is_finished()) {
                let _ = handle.join();
            }
        }
    }
}
