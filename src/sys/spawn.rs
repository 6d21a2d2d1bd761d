//! Starting a child process: fork, set the child up, exec; nothing else inherited.
//!
//! The child side ([`exec_child`]) is written with raw `libc` calls on purpose: between fork and
//! exec in a multi-threaded host only async-signal-safe calls are allowed (no allocation, no
//! locks), which rules out `std::process` hooks that allocate and most of `nix`'s conveniences.
//! Every descriptor the host did not mean QEMU to have is marked close-on-exec in the child;
//! the intended ones (`keep_fds`) keep their numbers. A close-on-exec pipe reports a failed
//! exec's errno to the parent, so "cannot run the binary" is an error, not a dead child.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::OnceLock;

/// What to start.
pub(crate) struct Spawn {
    pub argv: Vec<String>,
    /// Descriptors QEMU inherits under the same numbers; everything else is closed at exec.
    pub keep_fds: Vec<RawFd>,
    /// Receives QEMU's stdout and stderr.
    pub log: File,
}

/// Starts `spawn.argv` with stdin on /dev/null and stdout+stderr on the log, and waits until
/// it has exec'd. Returns its pid; the caller owns the child (reaps it).
pub(crate) fn spawn(spawn: Spawn) -> std::io::Result<u32> {
    let gone = || std::io::Error::other("the qm spawner thread is gone");
    let (tx, rx) = mpsc::sync_channel(1);
    spawner().send((spawn, tx)).map_err(|_| gone())?;
    let (pid, exec_status) = rx.recv().map_err(|_| gone())??;
    await_exec(pid, exec_status)?;
    Ok(pid as u32)
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
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
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

/// The child's side of [`fork_child`]: never returns.
///
/// # Safety
/// Runs in the child of a fork from a multi-threaded process, so only async-signal-safe calls
/// are allowed: another thread of the host may have held any lock (malloc's included) at the
/// fork. No allocation, no locks, no Rust runtime (no panics, no `std::io`); raw `libc` calls
/// only, on data prepared before the fork (`argv` is a NULL-terminated array of C strings
/// that outlive the call). This is why it is not written with `nix`.
unsafe fn exec_child(
    argv: &[*const libc::c_char],
    host: libc::pid_t,
    stdin: RawFd,
    log: RawFd,
    keep_fds: &[RawFd],
    status: RawFd,
) -> ! {
    let fail = |errno: libc::c_int| -> ! {
        // SAFETY: writes 4 bytes from a live c_int; _exit never returns.
        unsafe {
            libc::write(status, (&errno as *const libc::c_int).cast(), 4);
            libc::_exit(127)
        }
    };
    // SAFETY: errno of this thread; always readable.
    let errno = || unsafe { *libc::__errno_location() };
    // The host's signal mask and ignored signals (Rust ignores SIGPIPE) must not reach QEMU.
    // SAFETY: sigset_t is plain data, filled by sigemptyset; the calls touch only it.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        fail(errno());
    }
    // The host may have died before prctl: then nobody would ever kill us.
    // SAFETY: getppid has no arguments.
    if unsafe { libc::getppid() } != host {
        fail(libc::ESRCH);
    }
    // SAFETY: dup2 on descriptors the parent holds open across the fork.
    if unsafe { libc::dup2(stdin, 0) < 0 || libc::dup2(log, 1) < 0 || libc::dup2(log, 2) < 0 } {
        fail(errno());
    }
    // SAFETY: async-signal-safe, as documented there.
    unsafe { close_on_exec_from(3) };
    for &fd in keep_fds {
        // SAFETY: fcntl with integer arguments.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            fail(errno());
        }
    }
    // SAFETY: argv is a NULL-terminated array of live C strings (the contract).
    unsafe { libc::execvp(argv[0], argv.as_ptr()) };
    fail(errno())
}

/// Waits until the forked child exec'd; on a failed exec, reaps it and returns the error.
fn await_exec(pid: libc::pid_t, status: OwnedFd) -> std::io::Result<()> {
    let mut errno = [0u8; 4];
    let read = loop {
        match nix::unistd::read(&status, &mut errno) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    if read == Ok(0) {
        return Ok(());
    }
    // The child exits right after reporting: reap it.
    while nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)
        == Err(nix::errno::Errno::EINTR)
    {}
    Err(match read {
        Ok(4) => std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
        Ok(_) => std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        Err(e) => e.into(),
    })
}

/// Marks every descriptor from `first` up close-on-exec, so that descriptors other code in the
/// host left inheritable do not leak into QEMU.
///
/// # Safety
/// Async-signal-safe, for [`exec_child`]: raw syscalls on integers and a stack `rlimit` only.
unsafe fn close_on_exec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with integer arguments.
    if unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) } == 0 {
        return;
    }
    // Kernels before 5.11: walk the descriptor table up to the soft limit.
    // SAFETY: rlimit is plain data that getrlimit fills.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes into the live rlimit above.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as i32
    } else {
        4096
    };
    for fd in first as i32..max {
        // SAFETY: fcntl with integer arguments; a closed number just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}
