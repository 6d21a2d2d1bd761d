//! Saving a running machine's state to a file and starting a new machine from it.
//!
//! QEMU 7.2 has no `file:` migration URI. qm opens the file itself and hands QEMU the
//! descriptor (`getfd` + `migrate uri=fd:NAME`; on restore `-incoming defer` +
//! `migrate-incoming uri=fd:NAME`). That is preferred over `exec:` (`exec:cat > FILE`), which
//! runs `/bin/sh -c` with a command line qm would have to quote, starts an extra process per
//! save or restore, and reports a bad path or a full disk on QEMU's stderr as a broken pipe
//! instead of as an error qm can name. With `fd:`, qm creates the file (mode 0600, close-on-exec)
//! and any error opening it is reported before QEMU is involved.
//!
//! A state file is a qm header followed by QEMU's migration stream. The header's first line is
//! `QM-STATE 1 <header length>`; the next line is a JSON object: the length of the stream, the
//! QEMU binary's identity and version, and the machine settings the state depends on
//! (`StateArgs`, in `machine/incoming.rs`). The header is written last, when the migration
//! completed, and the file is written under a temporary name and renamed: a save that fails or
//! is interrupted never leaves a file that looks complete.
//!
//! A restore checks all of it before launching QEMU: the header, the stream's length (a
//! truncated file), QEMU's own stream magic, the binary and the settings. A stream that is
//! damaged inside fails QEMU's load: QEMU exits, and the restore fails with an
//! [`Error::Launch`] holding QEMU's output; no QEMU is left behind. (The stream carries no
//! checksum of the guest's memory pages: a flipped bit inside a page is not detected.)

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::console::Patterns;
use crate::error::{Error, Result};
use crate::machine::StateArgs;
use crate::wait::Wait;
use crate::Machine;

/// The default bound of [`Machine::save_state`] and [`Machine::restore_state`] (saving the Linux
/// test guest takes well under a second; a guest with gigabytes of memory takes longer).
pub const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_secs(120);

/// The first bytes of a qm state file.
const MAGIC: &str = "QM-STATE 1 ";
/// The first bytes of QEMU's migration stream (`QEMU_VM_FILE_MAGIC`, "QEVM").
const QEMU_MAGIC: &[u8; 4] = b"QEVM";
/// The name the descriptor gets in QEMU (`getfd`); consumed by the migrate command.
const FD_NAME: &str = "qm-state";
/// How often a migration wait asks `query-migrate` when no event comes (QEMU sends MIGRATION
/// events only when the `events` capability is on, which the caller may not have set).
const MIGRATION_POLL: Duration = Duration::from_millis(200);

/// What a state file's header says.
#[derive(Clone, Debug)]
pub struct StateInfo {
    /// The state file.
    pub path: PathBuf,
    /// The length of QEMU's migration stream in the file (the file is this plus the header).
    pub stream_bytes: u64,
    /// QEMU's version as `query-version` reported it when saving (`{"qemu": …, "package": …}`).
    pub qemu_version: Value,
    /// The QEMU binary that saved it: `{"path": …, "size": …, "mtime_ns": …}`.
    pub binary: Value,
    /// The machine settings the state depends on: `{"machine", "console", "guest_agent",
    /// "args"}`.
    pub settings: Value,
    header_len: u64,
    pub(crate) args: StateArgs,
}

impl StateInfo {
    /// The length of qm's header before QEMU's stream.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Reads and checks a state file's header (and that the stream is whole and starts as a
    /// QEMU migration stream). Fails with [`Error::Io`] when the file cannot be read, and with
    /// [`Error::Invalid`] when it is not a complete qm state file.
    pub fn read(path: &Path) -> Result<StateInfo> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        read_header(&file, path)
    }
}

fn not_state(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "{} is not a complete qm state file: {why}",
        path.display()
    ))
}

fn read_header(file: &File, path: &Path) -> Result<StateInfo> {
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    let mut first = [0u8; 64];
    let n = file
        .read_at(&mut first, 0)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let first = &first[..n];
    let line_end = first
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| not_state(path, "no header line"))?;
    let line = std::str::from_utf8(&first[..line_end]).unwrap_or_default();
    let header_len: u64 = line
        .strip_prefix(MAGIC)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| not_state(path, format!("its first line is {line:?}")))?;
    if header_len > 1 << 20 || header_len > len {
        return Err(not_state(path, "its header is cut short"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let json_line = header[line_end + 1..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let meta: Value = serde_json::from_slice(json_line)
        .map_err(|e| not_state(path, format!("its header is not JSON ({e})")))?;
    let stream_bytes = meta["stream_bytes"]
        .as_u64()
        .ok_or_else(|| not_state(path, "its header has no stream length"))?;
    let args = StateArgs::from_json(&meta["settings"])
        .ok_or_else(|| not_state(path, "its header has no machine settings"))?;
    if len != header_len + stream_bytes {
        return Err(not_state(
            path,
            format!(
                "truncated or extended: the stream should be {stream_bytes} bytes, the file \
                 holds {}",
                len.saturating_sub(header_len)
            ),
        ));
    }
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, header_len)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if &magic != QEMU_MAGIC {
        return Err(not_state(path, "the stream does not start as QEMU's does"));
    }
    Ok(StateInfo {
        path: path.to_owned(),
        stream_bytes,
        qemu_version: meta["qemu_version"].clone(),
        binary: meta["binary"].clone(),
        settings: meta["settings"].clone(),
        header_len,
        args,
    })
}

/// The file a binary name runs (looked up in `PATH` unless it holds a `/`), and its size and
/// modification time: what a saved state says about the QEMU that made it.
pub(crate) fn binary_identity(binary: &str) -> Result<Value> {
    let found = if binary.contains('/') {
        Some(PathBuf::from(binary))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(binary))
                .find(|p| p.is_file())
        })
    };
    let path = found
        .and_then(|p| p.canonicalize().ok())
        .ok_or_else(|| Error::Invalid(format!("QEMU binary {binary:?} not found")))?;
    let meta = std::fs::metadata(&path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(json!({
        "path": path.to_string_lossy(),
        "size": meta.len(),
        "mtime_ns": meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    }))
}

/// What differs between a state's settings and a machine's, for the error message; empty when
/// they match.
fn differences(saved: &StateArgs, now: &StateArgs) -> Vec<String> {
    let mut out = Vec::new();
    if saved.machine != now.machine {
        out.push(format!(
            "machine type: saved {:?}, now {:?}",
            saved.machine, now.machine
        ));
    }
    if saved.console != now.console {
        out.push(format!(
            "console: saved {:?}, now {:?}",
            saved.console, now.console
        ));
    }
    if saved.agent != now.agent {
        out.push(format!(
            "guest agent channel: saved {}, now {}",
            if saved.agent { "on" } else { "off" },
            if now.agent { "on" } else { "off" }
        ));
    }
    if saved.args != now.args {
        out.push(format!(
            "arguments: saved {:?}, now {:?}",
            saved.args.join(" "),
            now.args.join(" ")
        ));
    }
    out
}

/// When a restored machine counts as ready.
#[derive(Clone, Debug, Default)]
pub enum Ready {
    /// As soon as the guest runs again (`cont` answered).
    #[default]
    Running,
    /// When the guest agent answers `guest-sync` (the machine needs `set_guest_agent`).
    Agent,
    /// When one of `patterns` shows on the console, after sending `send` (if any): a guest
    /// saved at a shell prompt prints nothing until something is typed, so send `"\n"` and wait
    /// for the prompt.
    Console {
        /// Bytes to send first, if any.
        send: Option<String>,
        /// What to wait for.
        patterns: Patterns,
    },
}

impl Ready {
    /// Waits until `vm` is ready in this sense, within `wait`.
    pub(crate) fn wait(&self, vm: &Machine, wait: Wait) -> Result<()> {
        match self {
            Ready::Running => Ok(()),
            Ready::Agent => vm.agent()?.sync(wait),
            Ready::Console { send, patterns } => {
                let deadline = wait.start()?;
                if let Some(send) = send {
                    vm.console_send(send.as_bytes(), deadline.to_wait())?;
                }
                vm.console_wait(patterns, deadline.to_wait()).map(drop)
            }
        }
    }
}

impl Machine {
    /// Saves the running machine's state to `path` (created mode 0600, replaced if it exists)
    /// and returns what was recorded with it.
    ///
    /// The guest is paused (`stop`) first and stays paused: the machine is then in QEMU's
    /// `postmigrate` state, from which `cont` resumes it or a shutdown ends it. The save turns on
    /// the `events` migration capability and lifts the bandwidth limit (`max-bandwidth`) on
    /// this machine. The wait's default is [`DEFAULT_STATE_TIMEOUT`]; on a timeout, an
    /// interruption or a failed migration, the migration is cancelled and no file is left at
    /// `path`. A failed migration is an [`Error::Qmp`] whose description holds QEMU's
    /// `error-desc`.
    pub fn save_state(&self, path: &Path, wait: impl Into<Wait>) -> Result<StateInfo> {
        let wait = wait
            .into()
            .or_default(Some(DEFAULT_STATE_TIMEOUT))
            .checked()?;
        let deadline = wait.start()?;
        let settings = self.state_args();
        let binary = binary_identity(&self.binary())?;
        // Created first: a path that cannot be written fails before the guest is paused.
        let partial = partial_path(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&partial)
            .map_err(|e| Error::io(format!("creating {}", partial.display()), e))?;
        let saved = (|| {
            let qemu_version = self.cmd_with("query-version", None, deadline.to_wait())?;
            let status = self.cmd_with("query-status", None, deadline.to_wait())?;
            if status["running"].as_bool() == Some(true) {
                self.cmd_with("stop", None, deadline.to_wait())?;
            }
            self.cmd_with(
                "migrate-set-capabilities",
                Some(&json!({"capabilities": [{"capability": "events", "state": true}]})),
                deadline.to_wait(),
            )?;
            self.cmd_with(
                "migrate-set-parameters",
                Some(&json!({"max-bandwidth": i64::MAX / 2})),
                deadline.to_wait(),
            )?;
            let mut meta = json!({
                "stream_bytes": u64::MAX,
                "qemu_version": qemu_version,
                "binary": binary,
                "settings": settings.to_json(),
            });
            // Room for the header with the longest stream length, rounded to a page.
            let header_len =
                (format!("{MAGIC}{}\n{meta}\n", u64::MAX).len() as u64).div_ceil(4096) * 4096;
            // QEMU writes from the descriptor's offset, which it shares with ours: after the
            // room for the header.
            (&file)
                .write_all(&vec![0u8; header_len as usize])
                .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
            self.send_fd_scm(file.as_fd())?;
            self.cmd_with(
                "getfd",
                Some(&json!({"fdname": FD_NAME})),
                deadline.to_wait(),
            )?;
            self.cmd_with(
                "migrate",
                Some(&json!({"uri": format!("fd:{FD_NAME}")})),
                deadline.to_wait(),
            )?;
            if let Err(e) = self.wait_migration(deadline.to_wait()) {
                let _ = self.qmp("migrate_cancel", None);
                return Err(e);
            }
            // QEMU reports the migration completed a moment before it leaves `finish-migrate`
            // for `postmigrate`, where `cont` is accepted: wait for that too.
            loop {
                let status = self.cmd_with("query-status", None, deadline.to_wait())?;
                if status["status"] != "finish-migrate" {
                    break;
                }
                if deadline.remaining().is_some_and(|left| left.is_zero()) {
                    return Err(Error::Timeout(format!(
                        "QEMU stayed in finish-migrate {}",
                        deadline.within()
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let len = file
                .metadata()
                .map_err(|e| Error::io(format!("reading {}", partial.display()), e))?
                .len();
            let stream_bytes = len - header_len;
            meta["stream_bytes"] = json!(stream_bytes);
            let mut header = format!("{MAGIC}{header_len}\n{meta}\n").into_bytes();
            header.resize(header_len as usize, b' ');
            header[header_len as usize - 1] = b'\n';
            file.write_all_at(&header, 0)
                .map_err(|e| Error::io(format!("writing {}", partial.display()), e))?;
            std::fs::rename(&partial, path).map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", partial.display(), path.display()),
                    e,
                )
            })?;
            Ok((stream_bytes, meta, header_len))
        })();
        match saved {
            Ok((stream_bytes, meta, header_len)) => Ok(StateInfo {
                path: path.to_owned(),
                stream_bytes,
                qemu_version: meta["qemu_version"].clone(),
                binary: meta["binary"].clone(),
                settings: meta["settings"].clone(),
                header_len,
                args: settings,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    /// Launches this machine from a state saved by [`save_state`](Self::save_state) and resumes
    /// the guest. The machine must be configured as the saved one was (same machine type,
    /// console, guest agent channel on or off, extra arguments, and the same QEMU binary); qm
    /// checks that, and the state file, before launching anything, and refuses a mismatch with
    /// [`Error::Invalid`] naming what differs.
    ///
    /// QEMU starts with `-incoming defer`, loads the stream (`migrate-incoming uri=fd:NAME`),
    /// then `cont` resumes the guest; `ready` says what to wait for after that. The console
    /// starts empty (what the guest printed before the save is not replayed), and the guest's
    /// clocks jump: see the [template module](crate::template) for what the guest sees. The
    /// wait's default is [`DEFAULT_STATE_TIMEOUT`], for all of it.
    ///
    /// A stream QEMU cannot load (damaged inside) makes QEMU exit: the restore fails with an
    /// [`Error::Launch`] holding QEMU's output, and nothing is left running. Any failure after
    /// the launch kills this QEMU.
    pub fn restore_state(&self, path: &Path, ready: &Ready, wait: impl Into<Wait>) -> Result<()> {
        self.restore_renamed(path, &[], ready, wait.into())
    }

    /// [`restore_state`](Self::restore_state), where the saved arguments are compared after
    /// replacing each `from` with `to` (a template's per-clone overlay paths).
    pub(crate) fn restore_renamed(
        &self,
        path: &Path,
        renames: &[(String, String)],
        ready: &Ready,
        wait: Wait,
    ) -> Result<()> {
        let wait = wait.or_default(Some(DEFAULT_STATE_TIMEOUT)).checked()?;
        let deadline = wait.start()?;
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let info = read_header(&file, path)?;
        let mut saved = info.args.clone();
        for arg in &mut saved.args {
            for (from, to) in renames {
                if arg.contains(from.as_str()) {
                    *arg = arg.replace(from.as_str(), to);
                }
            }
        }
        let diff = differences(&saved, &self.state_args());
        if !diff.is_empty() {
            return Err(Error::Invalid(format!(
                "{} was saved from a machine configured differently; QEMU could not load it: {}",
                path.display(),
                diff.join("; ")
            )));
        }
        let binary = binary_identity(&self.binary())?;
        if binary != info.binary {
            return Err(Error::Invalid(format!(
                "{} was saved by another QEMU binary ({}), not {}",
                path.display(),
                info.binary,
                binary
            )));
        }
        // QEMU reads from the descriptor's offset: past the header.
        (&file)
            .seek(SeekFrom::Start(info.header_len))
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;

        self.set_incoming_defer(true);
        let launched = self.launch_with(deadline.to_wait());
        self.set_incoming_defer(false);
        launched?;
        let loaded = (|| {
            self.cmd_with(
                "migrate-set-capabilities",
                Some(&json!({"capabilities": [{"capability": "events", "state": true}]})),
                deadline.to_wait(),
            )?;
            self.send_fd_scm(file.as_fd())?;
            self.cmd_with(
                "getfd",
                Some(&json!({"fdname": FD_NAME})),
                deadline.to_wait(),
            )?;
            self.cmd_with(
                "migrate-incoming",
                Some(&json!({"uri": format!("fd:{FD_NAME}")})),
                deadline.to_wait(),
            )?;
            self.wait_migration(deadline.to_wait())?;
            self.cmd_with("cont", None, deadline.to_wait())?;
            ready.wait(self, deadline.to_wait())
        })();
        if let Err(cause) = loaded {
            // QEMU exits by itself when the load fails; give it a moment to say why.
            let _ = self.wait(Duration::from_secs(2));
            let _ = self.kill();
            return Err(Error::Launch {
                exitcode: self.exitcode(),
                command: self.full_args().join(" "),
                output: self.get_log().unwrap_or_default(),
                cause: Box::new(cause),
            });
        }
        Ok(())
    }

    /// Waits for this machine's migration (outgoing, or incoming on a machine started with
    /// `-incoming`) to end, and returns the last `query-migrate` reply when it completed.
    ///
    /// Wakes on `MIGRATION` events (consuming them; they come when the `events` capability is
    /// on) and asks `query-migrate` at each, and every 200 ms without one. A migration that
    /// failed or was cancelled is an [`Error::Qmp`] with QEMU's `error-desc`; a QEMU that exits
    /// meanwhile (a failed incoming migration) is [`Error::Disconnected`]. The wait has no
    /// default: give a timeout or [`Wait::forever`].
    pub fn wait_migration(&self, wait: impl Into<Wait>) -> Result<Value> {
        let wait = wait.into().checked()?;
        let deadline = wait.start()?;
        let mut last = String::from("not queried");
        loop {
            if deadline.remaining().is_some_and(|left| left.is_zero()) {
                return Err(Error::Timeout(format!(
                    "migration did not complete {} (status {last})",
                    deadline.within()
                )));
            }
            let info = self.cmd_with("query-migrate", None, deadline.to_wait())?;
            match info["status"].as_str().unwrap_or("none") {
                "completed" => return Ok(info),
                status @ ("failed" | "cancelled") => {
                    return Err(Error::Qmp {
                        class: "GenericError".into(),
                        desc: format!(
                            "migration {status}: {}",
                            info["error-desc"]
                                .as_str()
                                .unwrap_or("(QEMU gave no reason)")
                        ),
                    })
                }
                status => {
                    last = status.to_owned();
                    let slice = deadline
                        .remaining()
                        .map_or(MIGRATION_POLL, |left| left.min(MIGRATION_POLL));
                    let mut step = Wait::timeout(slice);
                    if let Some(cancel) = deadline.cancel {
                        step = step.cancel(cancel);
                    }
                    match self.event_wait("MIGRATION", None, step) {
                        Ok(_) | Err(Error::Timeout(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// Where a save writes before the rename.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".qm-partial");
    path.with_file_name(name)
}
