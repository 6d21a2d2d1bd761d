//! [`Machine`]: one QEMU virtual machine, from configuration to cleanup.
//!
//! The behaviour follows QEMU's Python `QEMUMachine` (python/qemu/machine/machine.py). Each
//! file answers one question: [`config`] what to run (settings and their defaults), `args`
//! the command line (pure), `launch` how a run starts, `shutdown` how it ends and what is
//! cleaned up; this file holds the [`Machine`] itself, its state, and the calls on a running
//! machine (QMP, events, console).

mod args;
mod attach;
mod config;
mod console;
mod expect;
mod incoming;
mod launch;
mod process;
mod schema;
mod shutdown;

pub(crate) use incoming::StateArgs;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::console::Console;
use crate::error::{Error, Result};
use crate::event::EventFilter;
use crate::qga::GuestAgent;
use crate::qmp::QmpClient;
use crate::wait::Wait;
pub use attach::AttachAddress;
use config::Config;
pub use config::MonitorAddress;
pub use launch::launch_all;
use launch::{Prepared, QemuLog};
use process::Process;
pub use shutdown::DEFAULT_SHUTDOWN_TIMEOUT;

/// One QEMU virtual machine.
///
/// Every method takes `&self` and is safe to call from many threads at once: commands from
/// several threads run concurrently, each getting its own reply; a shutdown in the middle fails
/// the others with [`Error::Disconnected`]. Configuration changes apply to the next launch.
/// Dropping a running machine shuts it down (gracefully, [`DEFAULT_SHUTDOWN_TIMEOUT`]).
//
// Lock order (a thread holding a lock only ever takes locks further down this list):
//   1. `life`: the outermost; held across a whole launch, attach or shutdown, never by a
//      call that only uses a running machine (commands, events, console, agent), so those
//      never wait for a launch or shutdown.
//   2. `cfg`, `qmp`, `proc`, `console`, `temp_dir`, `output`, `agent`: each held for one
//      statement or a short block, and never two at once. `qmp`, `console` and `agent` are
//      cloned out (an `Arc`) before anything is called on them, so no blocking call holds
//      one of these.
//   3. the components' own locks, taken inside the calls made in 1 and 2: `QmpClient`'s,
//      `Console`'s (`user`, `thread`, `state`; see console/mod.rs), `GuestAgent`'s (`queue`
//      then `chan`; see qga/mod.rs), `Process::status`.
//   4. process-wide leaves, taken last and holding nothing else while held: the log
//      callback (`log.rs`), the process tree (`sys/tree.rs`), a `Cancel`'s sleepers
//      (`wait.rs`), the FFI's live handles (`ffi/handle.rs`).
pub struct Machine {
    cfg: Mutex<Config>,
    /// Serialises launch and shutdown; owns what a run created.
    life: Mutex<Life>,
    /// The current QMP connection, kept after it closes so its queued events stay readable.
    qmp: Mutex<Option<Arc<QmpClient>>>,
    proc: Mutex<ProcState>,
    /// The console of the last launch, kept after shutdown for its transcript. Its own lock, so
    /// console calls never wait for a shutdown; waits hold a clone, not the lock.
    console: Mutex<Option<Arc<Console>>>,
    temp_dir: Mutex<Option<tempfile::TempDir>>,
    /// Set by a successful `quit`, and by `wait`: QEMU's exit is expected.
    quit_issued: AtomicBool,
    /// The signal a shutdown sent, if any: an exit by it is ours, not worth a warning.
    signal_sent: AtomicI32,
    output: Mutex<RunOutput>,
    /// The guest agent's channel while launched (`set_guest_agent`).
    agent: Mutex<Option<Arc<GuestAgent>>>,
    /// The cap on queued QMP events (`usize::MAX`: none); see `set_max_queued_events`.
    max_events: AtomicUsize,
    /// The pid of the last run's QEMU (0: none), kept after it exits.
    last_pid: AtomicU32,
    /// The schema policy and the current connection's checker (`schema.rs`).
    schema: schema::SchemaSlot,
}

#[derive(Default)]
struct Life {
    launched: bool,
    /// Monitor socket paths created by qm, removed at cleanup.
    remove_files: Vec<PathBuf>,
    /// Where QEMU's stdout and stderr go, read back at cleanup.
    log: Option<QemuLog>,
    /// What `prepare_launch` created for a run not started yet.
    prepared: Option<Prepared>,
}

#[derive(Default)]
enum ProcState {
    #[default]
    None,
    Running(Arc<Process>),
    Exited(i32),
    /// Attached to a QEMU someone else started (see `attach.rs`): no process of ours.
    Attached,
}

#[derive(Default)]
struct RunOutput {
    full_args: Vec<String>,
    log: Option<String>,
    /// QEMU's output while it runs, read with positioned reads (QEMU shares the in-memory
    /// file's offset: it must never move).
    live_log: Option<Arc<File>>,
}

static NEXT_NAME: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Machine {
    /// A machine that will run `binary` (e.g. `qemu-system-x86_64`, looked up in `PATH`).
    /// Nothing starts until [`launch`](Self::launch).
    pub fn new(binary: impl Into<String>) -> Machine {
        let name = format!(
            "qm-{}-{}",
            std::process::id(),
            NEXT_NAME.fetch_add(1, Ordering::Relaxed)
        );
        Machine {
            cfg: Mutex::new(Config::new(binary.into(), name)),
            life: Mutex::new(Life::default()),
            qmp: Mutex::new(None),
            proc: Mutex::new(ProcState::None),
            console: Mutex::new(None),
            temp_dir: Mutex::new(None),
            quit_issued: AtomicBool::new(false),
            signal_sent: AtomicI32::new(0),
            output: Mutex::new(RunOutput::default()),
            agent: Mutex::new(None),
            max_events: AtomicUsize::new(usize::MAX),
            last_pid: AtomicU32::new(0),
            schema: schema::SchemaSlot::default(),
        }
    }
    // ---- state -----------------------------------------------------------------------------

    /// The QEMU binary.
    pub fn binary(&self) -> String {
        lock(&self.cfg).binary.clone()
    }

    /// The extra arguments (not the ones qm builds; see [`full_args`](Self::full_args)).
    pub fn args(&self) -> Vec<String> {
        lock(&self.cfg).args.clone()
    }

    /// The machine's name.
    pub fn name(&self) -> String {
        lock(&self.cfg).name.clone()
    }

    /// The whole command line of the last launch: wrapper, binary, qm's arguments, extra ones.
    pub fn full_args(&self) -> Vec<String> {
        lock(&self.output).full_args.clone()
    }

    /// True while QEMU runs (for an [attached](Self::attach) machine: while the QMP connection
    /// is up).
    pub fn is_running(&self) -> bool {
        match &*lock(&self.proc) {
            ProcState::Running(p) => p.try_status().is_none(),
            ProcState::Attached => lock(&self.qmp).as_ref().is_some_and(|c| c.is_connected()),
            _ => false,
        }
    }

    /// QEMU's exit status once it exited (`-N`: killed by signal N); `None` while it runs or
    /// before a launch.
    pub fn exitcode(&self) -> Option<i32> {
        match &*lock(&self.proc) {
            ProcState::Running(p) => p.try_status(),
            ProcState::Exited(code) => Some(*code),
            ProcState::None | ProcState::Attached => None,
        }
    }

    /// QEMU's pid while it runs. Under a [wrapper](Self::set_wrapper): QEMU's own pid if, once
    /// QMP is up, exactly one process of the launch's process group runs the QEMU binary;
    /// otherwise (QMP off, QEMU not found or not alone) the wrapper's pid.
    pub fn pid(&self) -> Option<u32> {
        match &*lock(&self.proc) {
            ProcState::Running(p) if p.try_status().is_none() => Some(p.reported_pid()),
            _ => None,
        }
    }

    /// The pid of the last run's QEMU, while it runs and after it exited (as the seed's
    /// `_popen.pid`), until the next launch is prepared; `None` before any process was
    /// started (or when the launch failed before starting it). Under a wrapper, what
    /// [`pid`](Self::pid) reported: QEMU's own once identified, else the wrapper's.
    pub fn last_pid(&self) -> Option<u32> {
        match self.last_pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// What QEMU wrote to stdout and stderr, available after a shutdown or a failed launch.
    pub fn get_log(&self) -> Option<String> {
        lock(&self.output).log.clone()
    }

    /// What QEMU has written to stdout and stderr so far: while it runs, everything up to now
    /// (read afresh on each call, so it costs the size of the output); after a shutdown or a
    /// failed launch, the same as [`get_log`](Self::get_log); `None` before any launch. A
    /// character QEMU is in the middle of writing is left for the next call.
    pub fn log_so_far(&self) -> Option<String> {
        let output = lock(&self.output);
        if let Some(log) = &output.log {
            return Some(log.clone());
        }
        let file = output.live_log.as_ref()?;
        let mut text = Vec::new();
        // On an error, what was read is still worth having.
        let _ = launch::read_all_at(file, &mut text);
        if let Err(e) = std::str::from_utf8(&text) {
            if e.error_len().is_none() {
                text.truncate(e.valid_up_to());
            }
        }
        Some(String::from_utf8_lossy(&text).into_owned())
    }

    /// The machine's temporary directory (mode 0700), created on first use under the base
    /// temp dir and removed at shutdown.
    pub fn temp_dir(&self) -> Result<PathBuf> {
        let base = lock(&self.cfg).base_temp_dir.clone();
        let mut dir = lock(&self.temp_dir);
        if dir.is_none() {
            // Checked first so the error carries the OS's errno (tempfile's wraps it).
            std::fs::metadata(&base)
                .map_err(|e| Error::io(format!("creating a temp dir in {}", base.display()), e))?;
            let created = tempfile::Builder::new()
                .prefix("qemu-machine-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(&base)
                .map_err(|e| Error::io(format!("creating a temp dir in {}", base.display()), e))?;
            *dir = Some(created);
        }
        Ok(dir.as_ref().expect("created above").path().to_owned())
    }

    /// Where `<name>.log` goes, if [`set_log_dir`](Self::set_log_dir) was called. Without a log
    /// dir QEMU's output is kept in memory; either way [`get_log`](Self::get_log) has it.
    pub fn log_dir(&self) -> Option<PathBuf> {
        lock(&self.cfg).log_dir.clone()
    }

    /// Where qm-chosen socket paths go: the configured sock dir, or the temporary directory.
    pub fn sock_dir(&self) -> Result<PathBuf> {
        let configured = lock(&self.cfg).sock_dir.clone();
        match configured {
            Some(dir) => Ok(dir),
            None => self.temp_dir(),
        }
    }

    // ---- QMP -------------------------------------------------------------------------------

    fn client(&self) -> Result<Arc<QmpClient>> {
        lock(&self.qmp)
            .clone()
            .ok_or_else(|| Error::State("no QMP connection (not launched, or QMP is off)".into()))
    }

    /// The connection for a new command: a machine that was shut down is a state error, not
    /// a disconnection (calls in flight during the shutdown get [`Error::Disconnected`]).
    fn live_client(&self) -> Result<Arc<QmpClient>> {
        let client = self.client()?;
        if client.is_closed() {
            return Err(Error::State(
                "the machine is not running (it was shut down)".into(),
            ));
        }
        Ok(client)
    }

    /// Runs a QMP command and returns the raw response, `{"return": …}` or `{"error": …}`,
    /// waiting at most the QMP timer. `args` is sent as it is (see [`conv_keys`](crate::conv_keys)).
    pub fn qmp(&self, cmd: &str, args: Option<&Value>) -> Result<Value> {
        self.qmp_with(cmd, args, Wait::call_default())
    }

    /// [`qmp`](Self::qmp) with an explicit wait (its default is the QMP timer).
    pub fn qmp_with(
        &self,
        cmd: &str,
        args: Option<&Value>,
        wait: impl Into<Wait>,
    ) -> Result<Value> {
        let wait = wait.into().or_default(self.qmp_timer()).checked()?;
        let client = self.live_client()?;
        let response = match self.checker() {
            Some(checker) => checker.execute(&client, cmd, args, wait)?,
            None => client.execute(cmd, args, wait)?,
        };
        if cmd == "quit" && response.get("return").is_some() {
            self.quit_issued.store(true, Ordering::SeqCst);
        }
        Ok(response)
    }

    /// Runs a QMP command and returns its `return` value, or [`Error::Qmp`] with QEMU's error
    /// class and description.
    pub fn cmd(&self, cmd: &str, args: Option<&Value>) -> Result<Value> {
        self.cmd_with(cmd, args, Wait::call_default())
    }

    /// [`cmd`](Self::cmd) with an explicit wait.
    pub fn cmd_with(
        &self,
        cmd: &str,
        args: Option<&Value>,
        wait: impl Into<Wait>,
    ) -> Result<Value> {
        crate::qmp::into_return(self.qmp_with(cmd, args, wait)?)
    }

    /// Sends a descriptor to QEMU with SCM_RIGHTS, for a following `getfd` or `add-fd`.
    pub fn send_fd_scm(&self, fd: BorrowedFd<'_>) -> Result<()> {
        self.live_client()?.send_fd(fd, self.qmp_timer())
    }

    /// Opens `path` read-only and sends it with [`send_fd_scm`](Self::send_fd_scm).
    pub fn send_file_scm(&self, path: &Path) -> Result<()> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        self.send_fd_scm(file.as_fd())
    }

    // ---- guest agent -----------------------------------------------------------------------

    /// The guest agent of the running machine (see [`set_guest_agent`](Self::set_guest_agent)):
    /// call [`GuestAgent::sync`] to wait for `qemu-ga` to come up, then its commands. Fails with
    /// [`Error::State`] when the machine has no agent channel or is not launched. Calls in
    /// progress when the machine shuts down fail with [`Error::Disconnected`].
    pub fn agent(&self) -> Result<Arc<GuestAgent>> {
        lock(&self.agent).clone().ok_or_else(|| {
            Error::State(
                "no guest agent channel (set_guest_agent before launch, and launch)".into(),
            )
        })
    }

    // ---- events ----------------------------------------------------------------------------

    /// The oldest queued event. A zero wait returns `None` when there is none; a longer wait
    /// fails with [`Error::Timeout`]. Events received before a shutdown stay readable after it.
    pub fn get_qmp_event(&self, wait: impl Into<Wait>) -> Result<Option<Value>> {
        let wait = wait.into().checked()?;
        self.client()?.pull_event(wait)
    }

    /// Every queued event, oldest first; with a non-zero wait, waits for at least one.
    pub fn get_qmp_events(&self, wait: impl Into<Wait>) -> Result<Vec<Value>> {
        let wait = wait.into().checked()?;
        self.client()?.get_events(wait)
    }

    /// Every queued event, oldest first, as the text of one JSON array (`[]` when none, with
    /// a zero wait); with a non-zero wait, waits for at least one. No event is parsed: for a
    /// long queue this costs far less memory than [`get_qmp_events`](Self::get_qmp_events)
    /// (see [`QmpClient::get_events_json`]).
    pub fn get_qmp_events_json(&self, wait: impl Into<Wait>) -> Result<String> {
        let wait = wait.into().checked()?;
        self.client()?.get_events_json(wait)
    }

    /// Caps the number of queued, unread QMP events (`None`, the default: no cap, events are
    /// never dropped, as in QEMU's Python `QEMUMachine`). Applies at once and to later launches.
    ///
    /// When an event arrives and `max` are queued, the oldest is dropped to make room (a
    /// caller waiting for an event waits for one yet to come). The next call that reads events
    /// — or one already waiting — fails once with [`Error::EventsDropped`]; the calls after it
    /// read the events that were kept. [`dropped_events`](Self::dropped_events) counts them.
    pub fn set_max_queued_events(&self, max: Option<usize>) {
        self.max_events
            .store(max.unwrap_or(usize::MAX), Ordering::SeqCst);
        if let Some(client) = lock(&self.qmp).as_ref() {
            client.set_max_queued_events(max);
        }
    }

    /// The cap set by [`set_max_queued_events`](Self::set_max_queued_events).
    pub fn max_queued_events(&self) -> Option<usize> {
        let max = self.max_events.load(Ordering::SeqCst);
        (max != usize::MAX).then_some(max)
    }

    /// How many QMP events the cap dropped since the last launch.
    pub fn dropped_events(&self) -> u64 {
        lock(&self.qmp)
            .as_ref()
            .map_or(0, |client| client.dropped_events())
    }

    /// Drops every queued event.
    pub fn clear_events(&self) {
        if let Some(client) = lock(&self.qmp).as_ref() {
            client.clear_events();
        }
    }

    /// Waits for an event called `name` that matches `filter` (see
    /// [`event_match`](crate::event_match)).
    pub fn event_wait(
        &self,
        name: &str,
        filter: Option<&Value>,
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        self.events_wait(&[(name, filter)], wait)
    }

    /// [`events_wait`](Self::events_wait) with typed filters.
    pub fn events_wait_for(
        &self,
        filters: &[EventFilter],
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        let pairs: Vec<(&str, Option<&Value>)> = filters
            .iter()
            .map(|f| (f.name.as_str(), f.filter.as_ref()))
            .collect();
        self.events_wait(&pairs, wait)
    }

    /// Waits for the first event that matches any `(name, filter)` pair. Queued events are
    /// searched first; events that do not match stay queued, in order. A zero wait returns
    /// `None` when nothing matches; a longer one fails with [`Error::Timeout`].
    pub fn events_wait(
        &self,
        events: &[(&str, Option<&Value>)],
        wait: impl Into<Wait>,
    ) -> Result<Option<Value>> {
        let wait = wait.into().checked()?;
        // The bound, for the message of a timeout (formatted only then: this is the hot path
        // of every event wait).
        let limit = wait.start()?.limit();
        let client = self.client()?;
        if let Some(checker) = self.checker() {
            if !checker.policy().is_off() && !client.is_closed() {
                let names: Vec<&str> = events.iter().map(|(name, _)| *name).collect();
                checker.check_events(&client, &names, &wait)?;
            }
        }
        client.events_wait(events, wait).map_err(|e| match e {
            // Name the events waited for: `no SHUTDOWN event within 3000 ms`.
            Error::Timeout(_) => {
                let names: Vec<&str> = events.iter().map(|(name, _)| *name).collect();
                let filtered = events.iter().any(|(_, f)| f.is_some());
                Error::Timeout(format!(
                    "no {} event{} {}",
                    names.join(" or "),
                    if filtered {
                        " (matching the filter)"
                    } else {
                        ""
                    },
                    crate::wait::within(limit)
                ))
            }
            other => other,
        })
    }

    // ---- console ---------------------------------------------------------------------------

    /// The console descriptor (a connected stream socket), owned by the machine and valid until
    /// shutdown begins. Fails unless [`set_console`](Self::set_console) was called and the
    /// machine is launched.
    pub fn console_fd(&self) -> Result<RawFd> {
        lock(&self.console)
            .as_ref()
            .and_then(|c| c.fd())
            .ok_or_else(|| Error::State("no console (set_console before launch)".into()))
    }

    /// A new handle on the console (a duplicate of [`console_fd`](Self::console_fd)) that the
    /// caller owns.
    pub fn console(&self) -> Result<UnixStream> {
        let console = lock(&self.console);
        let console = console
            .as_ref()
            .filter(|c| c.fd().is_some())
            .ok_or_else(|| Error::State("no console (set_console before launch)".into()))?;
        Ok(UnixStream::from(console.dup_fd()?))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.shutdown(DEFAULT_SHUTDOWN_TIMEOUT);
    }
}
