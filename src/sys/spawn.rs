//! Starting a child process without copying the host's address space: `clone(CLONE_VM |
//! CLONE_VFORK)`, the way `posix_spawn` does it, with the setup `posix_spawn` cannot express
//! (a parent-death signal checked against a race, a fresh process group, every stray
//! descriptor closed at exec while chosen ones are kept under their numbers).
//!
//! `fork(2)` copies the page tables of the whole host; with many threads and a large heap (a Go
//! runtime, a test harness with hundreds of machines) that is most of the cost of a launch, and
//! every page the host writes afterwards faults once more while the child still shares it.
//! Here the child borrows the host's memory and runs on a small stack of its own until it execs;
//! the calling thread is suspended by the kernel until then (the kernel part of `execve`:
//! opening and mapping the binary, a fraction of a millisecond; the dynamic loader and QEMU's
//! own start run after the parent resumed).
//!
//! # The child's invariants (it shares every byte of the host's memory until `execve`)
//! - It runs [`child_main`] only, on [`CHILD_STACK`] bytes of its own stack, and reads only the
//!   [`Prepared`] the parent built before the clone: no allocation, no lock, no Rust runtime,
//!   no thread-local other than `errno` (the spawning thread's, which is suspended meanwhile).
//! - Only async-signal-safe system calls: `sigaction`, `pthread_sigmask`, `setpgid`, `prctl`,
//!   `getppid`, `dup2`, `fcntl`, `close_range`, `getrlimit`, `execve`, `write`, `_exit`.
//! - It never returns into the parent's frames and never unwinds: it ends in `execve` or
//!   `_exit`. Before `_exit` it writes its failure (the step and `errno`) to a close-on-exec
//!   pipe, which reads as end of file once it exec'd. (The shared memory could carry the
//!   report, but valgrind turns a vfork-style clone into a plain fork; the pipe works both
//!   ways: with the real thing the parent's read never blocks.)
//! - Every signal is blocked in the spawning thread across the clone, so the child starts with
//!   all signals blocked; before it unblocks them every caught signal is reset to its default
//!   action, so no handler of the host ever runs on the child's stack over the host's memory.
//! - Other threads of the host keep running; the child touches no memory they write.

use std::ffi::{c_int, c_void, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc;
use std::sync::OnceLock;

/// The child's stack. The child's deepest call is a libc system-call wrapper.
const CHILD_STACK: usize = 64 * 1024;

/// What to start.
pub(crate) struct Spawn {
    pub argv: Vec<String>,
    /// Descriptors QEMU inherits under the same numbers; everything else is closed at exec
    /// (unless `inherit_all`).
    pub keep_fds: Vec<RawFd>,
    /// Leave every descriptor the host left inheritable open too (`close_fds=False`).
    pub inherit_all: bool,
    /// Receives QEMU's stdout and stderr.
    pub log: File,
}

/// Starts `spawn.argv` with stdin on /dev/null and stdout+stderr on the log, in a process
/// group of its own (its pgid is its pid) and with SIGKILL as its parent-death signal, tied to
/// the spawner thread. Returns its pid once it has exec'd; the caller owns the child (reaps
/// it) and its group.
pub(crate) fn spawn(spawn: Spawn) -> io::Result<u32> {
    let null = File::open("/dev/null")?;
    let log = spawn.log.as_raw_fd();
    let mut job = Prepared::new(&spawn.argv, [null.as_raw_fd(), log, log], &spawn.keep_fds)?;
    job.death_signal = libc::SIGKILL;
    job.own_group = true;
    job.inherit_all = spawn.inherit_all;
    let gone = || io::Error::other("the qm spawner thread is gone");
    let (tx, rx) = mpsc::sync_channel(1);
    spawner().send((job, tx)).map_err(|_| gone())?;
    let pid = rx.recv().map_err(|_| gone())??;
    Ok(pid as u32)
}

type Job = (Prepared, mpsc::SyncSender<io::Result<libc::pid_t>>);

/// Every QEMU is started from one long-lived thread. `PR_SET_PDEATHSIG` fires when the thread
/// that started the child ends, not the process; starting it from a caller's thread would kill
/// the VM when that thread exits (a Go goroutine's OS thread, a test thread). The spawner only
/// clones: everything that allocates (argv, environment, the `PATH` search) is prepared by the
/// launching thread, and the clone shares the host's memory instead of copying its page tables,
/// so the spawner is busy for the kernel part of one `execve` per launch.
fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("qm-spawner".into())
            .spawn(move || {
                for (job, reply) in rx {
                    let _ = reply.send(start(&job));
                }
            })
            .expect("starting the qm spawner thread");
        tx
    })
}

/// Everything the child needs, built by the parent (the child may not allocate).
pub(crate) struct Prepared {
    /// Where to look for the program, in order (the `PATH` search done here, not in the child).
    paths: Vec<CString>,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    /// Become descriptors 0, 1 and 2 (all above 2, so that no dup2 overwrites another's source).
    stdio: [RawFd; 3],
    /// Copies made to lift a source of `stdio` above 2.
    _lifted: Vec<OwnedFd>,
    /// Inherited under the same numbers; every other descriptor from 3 up is closed at exec,
    /// unless `inherit_all`.
    keep_fds: Vec<RawFd>,
    /// Leave open what the host left inheritable (only close-on-exec descriptors close).
    pub inherit_all: bool,
    /// `PR_SET_PDEATHSIG` for the child (0: none).
    pub death_signal: c_int,
    /// Put the child in a new process group of its own (its pgid = its pid).
    pub own_group: bool,
    /// Signals the program starts with ignored (all others at their default action).
    pub ignore: Vec<c_int>,
    /// The highest signal number (`SIGRTMAX`), read here rather than in the child.
    last_signal: c_int,
}

// SAFETY: the raw pointers point into the CStrings owned by the same value.
unsafe impl Send for Prepared {}

/// Which step failed in the child (reported with `errno`).
#[derive(Clone, Copy)]
#[repr(C)]
enum Step {
    None,
    DeathSignal,
    ParentGone,
    Group,
    Stdio,
    KeepFd,
    Exec,
}

/// The child's report, written to the pipe before it `_exit`s.
#[derive(Clone, Copy)]
#[repr(C)]
struct Report {
    step: Step,
    errno: c_int,
}

struct Ctx<'a> {
    p: &'a Prepared,
    host: libc::pid_t,
    /// The write end of the report pipe (close-on-exec).
    report: RawFd,
}

impl Prepared {
    /// `argv[0]` is looked up in `PATH` (as `execvp` would) unless it contains a `/`. The
    /// environment is the host's at this moment. `stdio` are the descriptors for 0, 1, 2.
    pub(crate) fn new(argv: &[String], stdio: [RawFd; 3], keep_fds: &[RawFd]) -> io::Result<Self> {
        let invalid = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} contains a NUL byte"),
            )
        };
        let Some(program) = argv.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
        };
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| invalid("an argument")))
            .collect::<io::Result<_>>()?;
        let paths = search_path(program).map_err(|_| invalid("the program's path"))?;
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        let argv = nul_terminated(&args);
        let envp = nul_terminated(&env);
        let mut lifted = Vec::new();
        let mut stdio = stdio;
        for fd in &mut stdio {
            if *fd < 3 {
                // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller lent us; checked.
                let copy = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
                if copy < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a fresh descriptor.
                lifted.push(unsafe { OwnedFd::from_raw_fd(copy) });
                *fd = copy;
            }
        }
        Ok(Prepared {
            paths,
            _argv: args,
            argv,
            _envp: env,
            envp,
            stdio,
            _lifted: lifted,
            keep_fds: keep_fds.to_vec(),
            inherit_all: false,
            death_signal: 0,
            own_group: false,
            ignore: Vec::new(),
            last_signal: libc::SIGRTMAX(),
        })
    }
}

fn nul_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

impl Prepared {
    /// Starts the program with an empty environment.
    pub(crate) fn clear_env(&mut self) {
        self._envp.clear();
        self.envp = vec![std::ptr::null()];
    }
}

/// The candidates `execvp` would try for `program`, in order.
fn search_path(program: &str) -> Result<Vec<CString>, std::ffi::NulError> {
    if program.contains('/') || program.is_empty() {
        return Ok(vec![CString::new(program)?]);
    }
    let path = std::env::var_os("PATH");
    let path = path
        .as_deref()
        .map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
    path.split(|&b| b == b':')
        .map(|dir| {
            // An empty entry means the current directory.
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(program.as_bytes());
            CString::new(full)
        })
        .collect()
}

/// Starts `p` in a child that shares this process's memory until it execs, and returns its
/// pid once it exec'd. The caller owns the child (it must reap it). A failure before or in
/// `execve` is returned with the step and the child's `errno`; that child is already reaped.
///
/// Call it from the thread the child's death signal should be tied to.
pub(crate) fn start(p: &Prepared) -> io::Result<libc::pid_t> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array; checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned by nobody else.
    let (report_r, report_w) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The child's dup2 onto 0, 1, 2 must not hit the report pipe.
    let report_w = above_stdio(report_w)?;
    let ctx = Ctx {
        p,
        host: std::process::id() as libc::pid_t,
        report: report_w.as_raw_fd(),
    };
    let stack = Stack::new()?;
    // SAFETY: sigset_t is plain data (all zeroes is a valid value) that sigfillset fills;
    // pthread_sigmask changes this thread's mask only, and it is restored below on every path.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    let clone = libc_clone();
    // SAFETY: see the module's invariants. `child_main` runs on `stack` (unused by anyone
    // else) and reads `ctx`, which outlives the call: CLONE_VFORK suspends this thread until
    // the child exec'd or exited.
    let pid = unsafe {
        clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&ctx as *const Ctx).cast_mut().cast::<c_void>(),
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(report_w);
    if pid < 0 {
        return Err(clone_err);
    }
    // Only the child's copy of the write end is left: end of file once it exec'd.
    let mut report = Report {
        step: Step::None,
        errno: 0,
    };
    let n = loop {
        // SAFETY: reads at most size_of::<Report>() bytes into a live Report; any bit pattern
        // the child wrote is one it built from a valid Report.
        let n = unsafe {
            libc::read(
                report_r.as_raw_fd(),
                (&mut report as *mut Report).cast(),
                std::mem::size_of::<Report>(),
            )
        };
        if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break n;
        }
    };
    drop(stack);
    if n == 0 {
        return Ok(pid);
    }
    let read_err = io::Error::last_os_error();
    // The child _exit'ed right after its report: reap it.
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        if rc >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    if n != std::mem::size_of::<Report>() as isize {
        return Err(read_err);
    }
    let err = io::Error::from_raw_os_error(report.errno);
    let what = match report.step {
        Step::None | Step::Exec => return Err(err),
        Step::DeathSignal => "setting the parent-death signal",
        Step::ParentGone => "the host is exiting",
        Step::Group => "creating a process group",
        Step::Stdio => "redirecting stdin/stdout/stderr",
        Step::KeepFd => "passing a descriptor",
    };
    Err(io::Error::new(err.kind(), format!("{what}: {err}")))
}

/// `fd`, moved above the standard descriptors if it is one of them (a host that closed its
/// stdin gets 0 for its next descriptor).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on our own descriptor; checked.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// A stack for the child with a guard page below it, unmapped on drop.
struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let guard = 4096;
        let len = CHILD_STACK + guard;
        // SAFETY: an anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of our own mapping becomes a guard: an overflow faults.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    fn top(&self) -> *mut c_void {
        // The stack grows down on every Linux target Rust supports but hppa, which is not one
        // qm builds for; the end of the mapping is 16-byte aligned (page aligned).
        // SAFETY: one past the end of our mapping, never dereferenced as such.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the child that used it has exec'd or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The child: sets itself up and execs, or reports and `_exit`s. See the module's invariants.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `Ctx`, alive and unchanged until we exec or exit.
    let ctx = unsafe { &*arg.cast::<Ctx>() };
    child_setup_and_exec(ctx)
}

/// The last `errno` (this thread's: the spawning thread's slot, which it does not read while
/// suspended).
fn errno() -> c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Writes the report and exits. Async-signal-safe.
fn fail(ctx: &Ctx, step: Step, errno: c_int) -> ! {
    let r = Report { step, errno };
    // SAFETY: write(2) of a live, plain-data value to the report pipe; _exit(2) ends the child
    // without running anything of the host's (no atexit handlers, no destructors).
    unsafe {
        libc::write(
            ctx.report,
            (&r as *const Report).cast(),
            std::mem::size_of::<Report>(),
        );
        libc::_exit(127)
    }
}

fn child_setup_and_exec(ctx: &Ctx) -> ! {
    let p = ctx.p;

    // Dispositions: every caught signal back to its default (no host handler may run here),
    // SIGPIPE too (Rust ignores it, QEMU must not inherit that), the chosen ones ignored.
    // Ignored signals stay ignored across exec, as a shell would pass them on.
    for sig in 1..=p.last_signal {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction is plain data (zeroes valid); sigaction(2) reads and writes this
        // process's own table (the child has its own copy: no CLONE_SIGHAND).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue; // signals the C library reserves for itself
            }
            let want = if p.ignore.contains(&sig) {
                libc::SIG_IGN
            } else if old.sa_sigaction == libc::SIG_IGN && sig != libc::SIGPIPE {
                continue;
            } else {
                libc::SIG_DFL
            };
            if old.sa_sigaction != want {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = want;
                libc::sigaction(sig, &new, std::ptr::null_mut());
            }
        }
    }
    // SAFETY: setpgid(2) on ourselves; touches no memory.
    if p.own_group && unsafe { libc::setpgid(0, 0) } != 0 {
        fail(ctx, Step::Group, errno());
    }
    if p.death_signal != 0 {
        // SAFETY: prctl(2) with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, p.death_signal as libc::c_ulong) } != 0 {
            fail(ctx, Step::DeathSignal, errno());
        }
        // The host may have died before prctl: then no signal would ever come.
        // SAFETY: getppid(2) has no arguments.
        if unsafe { libc::getppid() } != ctx.host {
            fail(ctx, Step::ParentGone, libc::ESRCH);
        }
    }
    for (target, &fd) in p.stdio.iter().enumerate() {
        let target = target as c_int;
        // SAFETY: dup2/fcntl on descriptor numbers; touch no memory. The sources are all above
        // 2 (`Prepared::new`), so no dup2 overwrites the source of another.
        if unsafe { libc::dup2(fd, target) } < 0 {
            fail(ctx, Step::Stdio, errno());
        }
    }
    if !p.inherit_all {
        close_on_exec_from(3);
    }
    for &fd in &p.keep_fds {
        // SAFETY: fcntl(2) on a descriptor number; touches no memory.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            fail(ctx, Step::KeepFd, errno());
        }
    }
    // SAFETY: an empty set (zeroes, then sigemptyset) for this thread's mask: the program
    // starts with nothing blocked.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }

    // The PATH search as execvp does it: go on past a candidate that is missing (or on a dead
    // mount), and report EACCES if some candidate was there but not executable.
    let go_on = |e| {
        matches!(
            e,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT
        )
    };
    let mut denied = false;
    let mut last = libc::ENOENT;
    for path in &p.paths {
        // SAFETY: NUL-terminated strings and NULL-terminated arrays of them, built by
        // `Prepared::new` and alive (the parent is suspended); returns only on failure.
        unsafe { libc::execve(path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr()) };
        last = errno();
        if last == libc::EACCES {
            denied = true;
        } else if !go_on(last) {
            break;
        }
    }
    fail(
        ctx,
        Step::Exec,
        if denied && go_on(last) {
            libc::EACCES
        } else {
            last
        },
    )
}

/// Marks every descriptor from `first` up close-on-exec, so that descriptors other code in the
/// host left inheritable do not leak into the program. Async-signal-safe.
fn close_on_exec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range(2) with integer arguments; only changes descriptor flags.
    if unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) } == 0 {
        return;
    }
    // Kernels before 5.11: walk the descriptor table up to the soft limit.
    // SAFETY: rlimit is plain data that getrlimit fills; fcntl changes descriptor flags only.
    unsafe {
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
}

/// The signature of libc's `clone(3)` wrapper.
type CloneFn = unsafe extern "C" fn(
    extern "C" fn(*mut c_void) -> c_int,
    *mut c_void,
    c_int,
    *mut c_void,
    ...
) -> c_int;

/// libc's own `clone`, looked up in libc itself rather than by symbol: a sanitizer runtime
/// (ThreadSanitizer) interposes `clone`, takes a `CLONE_VM | CLONE_VFORK` child for a fork of
/// the whole process, and rewrites its own state in the memory the child shares with us, after
/// which it refuses every new thread of the host. Falls back to the symbol when libc cannot be
/// found by that name.
fn libc_clone() -> CloneFn {
    static CLONE: OnceLock<CloneFn> = OnceLock::new();
    *CLONE.get_or_init(|| {
        // SAFETY: dlopen with RTLD_NOLOAD only returns a handle to an already loaded object;
        // dlsym on it returns libc's `clone`, whose type is CloneFn.
        unsafe {
            let handle = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            let sym = if handle.is_null() {
                std::ptr::null_mut()
            } else {
                libc::dlsym(handle, c"clone".as_ptr())
            };
            if sym.is_null() {
                libc::clone as CloneFn
            } else {
                std::mem::transmute::<*mut c_void, CloneFn>(sym)
            }
        }
    })
}
