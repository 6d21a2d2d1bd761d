//! Templates: boot a guest once, save it, and start as many running copies as wanted from the
//! saved state, each in a fraction of a boot.
//!
//! A [`Template`] is a machine description (binary, arguments, console, guest agent, disks) and
//! a directory the caller names. [`Template::prepare`] boots the guest to a given point (the
//! agent answers, a console pattern, or a caller's function: [`Template::prepare_with`]) and
//! saves it in that directory, under a key over everything the state depends on: the QEMU
//! binary (path, size, modification time), the settings and arguments, the base disk images and
//! every file the arguments name (path, size, modification time). A later prepare with the same
//! key, in this process or another, finds the state and boots nothing. A change to any of them
//! gives another key, so a stale state is never restored.
//!
//! [`Template::clone_machine`] starts a new machine from the state; [`Template::clones`] starts
//! many at once. Each clone has its own QEMU, monitor, console and guest agent channel, and for
//! each template disk its own qcow2 overlay (`qemu-img create -f qcow2 -b TEMPLATE -F qcow2`),
//! created in the clone's temporary directory ([`Machine::temp_dir`]), removed when it shuts
//! down: clones never write the template's image (QEMU opens a backing file read-only), and
//! never see each other's writes. A clone is for one run: relaunching it finds no overlays.
//!
//! What the guest sees after a restore:
//! - Its memory, devices and CPU state as they were at the save, as if no time had passed in
//!   between: the guest was paused for the save. Its monotonic clock continues from the saved
//!   value.
//! - Its wall clock (`CLOCK_REALTIME`, `date`) is also where it was at the save, so it lags the
//!   host's by the time since the save (seconds, or days for a template kept across runs). The
//!   emulated RTC reads the host's time, so a guest that re-reads it (`hwclock -s`) or runs NTP,
//!   or the agent's `guest-set-time` without a time (which sets the guest clock from its RTC),
//!   jumps forward. Tests that depend on the wall clock should set it after a clone starts.
//! - The console shows only what the guest prints after the restore: a guest saved at a shell
//!   prompt prints nothing until something is typed (see [`Ready::Console`]).
//! - The guest agent's channel is new: qm synchronises it (`guest-sync-delimited`) before the
//!   first command, dropping anything left over from before the save.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::snapshot::{binary_identity, Ready, StateInfo};
use crate::wait::Wait;
use crate::{AgentChannel, Machine};

/// The version of the template directory layout (part of the key).
const LAYOUT: u32 = 1;
/// The state file in a template's directory.
const STATE: &str = "state";
/// The description (key text) in a template's directory.
const KEY_FILE: &str = "key.json";

/// A disk of a template: a base image the template never writes, and the `-drive` options
/// that attach it.
#[derive(Clone, Debug)]
struct Disk {
    base: PathBuf,
    format: String,
    opts: String,
}

/// A guest booted once and saved, from which running machines are cloned (see the
/// [module](self)).
#[derive(Clone, Debug)]
pub struct Template {
    dir: PathBuf,
    binary: String,
    qemu_img: String,
    machine: Option<String>,
    console: Option<(Option<String>, usize)>,
    agent: bool,
    args: Vec<String>,
    disks: Vec<Disk>,
    ready: Option<Ready>,
}

impl Template {
    /// A template of machines running `binary`, saved under `dir` (created when needed; one
    /// subdirectory per key).
    pub fn new(binary: impl Into<String>, dir: impl Into<PathBuf>) -> Template {
        Template {
            dir: dir.into(),
            binary: binary.into(),
            qemu_img: "qemu-img".into(),
            machine: None,
            console: None,
            agent: false,
            args: Vec::new(),
            disks: Vec::new(),
            ready: None,
        }
    }

    /// Appends QEMU arguments, as [`Machine::add_args`].
    pub fn add_args<I, S>(&mut self, args: I) -> &mut Template
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `-machine TYPE`, as [`Machine::set_machine`].
    pub fn set_machine(&mut self, machine_type: &str) -> &mut Template {
        self.machine = Some(machine_type.to_owned());
        self
    }

    /// A console, as [`Machine::set_console`]; each clone has its own.
    pub fn set_console(&mut self, device_type: Option<&str>, index: usize) -> &mut Template {
        self.console = Some((device_type.map(str::to_owned), index));
        self
    }

    /// A guest agent channel (a socketpair per machine), as [`Machine::set_guest_agent`].
    pub fn set_guest_agent(&mut self, on: bool) -> &mut Template {
        self.agent = on;
        self
    }

    /// The `qemu-img` that creates the overlays (default: `qemu-img` in `PATH`).
    pub fn set_qemu_img(&mut self, qemu_img: impl Into<String>) -> &mut Template {
        self.qemu_img = qemu_img.into();
        self
    }

    /// Adds a disk: `-drive file=OVERLAY,format=qcow2,OPTS` where the overlay's backing file
    /// is `base` (of format `format`, e.g. `qcow2` or `raw`). The template boots on an overlay
    /// of its own, kept in its directory, which the clones' overlays are based on: `base` is
    /// only ever read. `opts` are more `-drive` options, e.g. `if=none,id=disk0`.
    pub fn add_disk(
        &mut self,
        base: impl Into<PathBuf>,
        format: &str,
        opts: &str,
    ) -> &mut Template {
        self.disks.push(Disk {
            base: base.into(),
            format: format.to_owned(),
            opts: opts.to_owned(),
        });
        self
    }

    /// What a clone waits for before [`clone_machine`](Self::clone_machine) returns (default:
    /// the agent answers when the template has one, else the guest runs).
    pub fn set_clone_ready(&mut self, ready: Ready) -> &mut Template {
        self.ready = Some(ready);
        self
    }

    fn clone_ready(&self) -> Ready {
        match &self.ready {
            Some(r) => r.clone(),
            None if self.agent => Ready::Agent,
            None => Ready::Running,
        }
    }

    /// The key's text: everything the saved state depends on.
    fn key_text(&self) -> Result<String> {
        let mut files = Vec::new();
        for arg in &self.args {
            for part in std::iter::once(arg.as_str()).chain(arg.split(',')) {
                let value = part.split_once('=').map_or(part, |(_, v)| v);
                let path = Path::new(value);
                if !value.is_empty() && path.is_file() {
                    files.push(file_identity(path)?);
                }
            }
        }
        let disks: Vec<Value> = self
            .disks
            .iter()
            .map(|d| {
                Ok(json!({
                    "base": file_identity(&d.base)?,
                    "format": d.format,
                    "opts": d.opts,
                }))
            })
            .collect::<Result<_>>()?;
        Ok(json!({
            "layout": LAYOUT,
            "binary": binary_identity(&self.binary)?,
            "machine": self.machine,
            "console": self.console.as_ref().map(|(d, i)| json!({"device": d, "index": i})),
            "guest_agent": self.agent,
            "args": self.args,
            "files": files,
            "disks": disks,
        })
        .to_string())
    }

    /// The directory this template's state lives in (`<dir>/<key>`), whether or not it was
    /// saved yet.
    pub fn state_dir(&self) -> Result<PathBuf> {
        Ok(self
            .dir
            .join(format!("{:016x}", fnv1a(self.key_text()?.as_bytes()))))
    }

    /// True when a saved state for this template's key exists.
    pub fn is_saved(&self) -> Result<bool> {
        let dir = self.state_dir()?;
        Ok(dir.join(STATE).is_file()
            && fs::read_to_string(dir.join(KEY_FILE)).ok() == Some(self.key_text()?))
    }

    /// A machine configured as this template's (not launched), its disks on the overlays in
    /// `overlay_dir`.
    fn machine(&self) -> Machine {
        let vm = Machine::new(self.binary.clone());
        if let Some(m) = &self.machine {
            vm.set_machine(m);
        }
        if let Some((device, index)) = &self.console {
            vm.set_console(device.as_deref(), *index);
        }
        if self.agent {
            vm.set_guest_agent(Some(AgentChannel::SocketPair));
        }
        vm.add_args(self.args.iter().cloned());
        vm
    }

    /// The `-drive` arguments of the disks, on the overlays in `overlay_dir`.
    fn drive_args(&self, overlay_dir: &Path) -> Vec<String> {
        let mut args = Vec::new();
        for (i, disk) in self.disks.iter().enumerate() {
            let overlay = overlay_path(overlay_dir, i);
            let mut drive = format!(
                "file={},format=qcow2",
                crate::opts::option_value(&overlay.to_string_lossy())
            );
            if !disk.opts.is_empty() {
                drive.push(',');
                drive.push_str(&disk.opts);
            }
            args.extend(["-drive".to_owned(), drive]);
        }
        args
    }

    /// Makes sure the state is saved: when it is not, boots the guest, waits until `ready`, and
    /// saves it. Returns true when it booted (false: found saved, in this process or another).
    /// The wait (default [`DEFAULT_STATE_TIMEOUT`](crate::snapshot::DEFAULT_STATE_TIMEOUT))
    /// bounds the boot, the wait and the save together.
    pub fn prepare(&self, ready: &Ready, wait: impl Into<Wait>) -> Result<bool> {
        let ready = ready.clone();
        self.prepare_with(move |vm, wait| ready.wait(vm, wait), wait)
    }

    /// [`prepare`](Self::prepare), where `boot` brings the launched machine to the point to
    /// save (given what is left of the wait): wait for a pattern, log in, start a service …
    pub fn prepare_with<F>(&self, boot: F, wait: impl Into<Wait>) -> Result<bool>
    where
        F: FnOnce(&Machine, Wait) -> Result<()>,
    {
        let wait = wait
            .into()
            .or_default(Some(crate::snapshot::DEFAULT_STATE_TIMEOUT))
            .checked()?;
        if self.is_saved()? {
            return Ok(false);
        }
        let deadline = wait.start()?;
        let key = self.key_text()?;
        let dir = self.state_dir()?;
        fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        // Built under a name of our own, renamed into place when complete: another process
        // preparing the same template at the same time never sees half a state.
        let building = tempfile::Builder::new()
            .prefix(".building-")
            .tempdir_in(&self.dir)
            .map_err(|e| Error::io(format!("creating a directory in {}", self.dir.display()), e))?;
        for (i, disk) in self.disks.iter().enumerate() {
            self.create_overlay(&overlay_path(building.path(), i), &disk.base, &disk.format)?;
        }
        let vm = self.machine();
        vm.add_args(self.drive_args(building.path()));
        vm.launch_with(deadline.to_wait())?;
        boot(&vm, deadline.to_wait())?;
        vm.save_state(&building.path().join(STATE), deadline.to_wait())?;
        vm.shutdown(deadline.to_wait())?;
        let recorded = json!({
            "disks": (0..self.disks.len())
                .map(|i| overlay_path(building.path(), i).to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        });
        write_file(
            &building.path().join("disks.json"),
            recorded.to_string().as_bytes(),
        )?;
        write_file(&building.path().join(KEY_FILE), key.as_bytes())?;
        let built = building.keep();
        if let Err(e) = fs::rename(&built, &dir) {
            let _ = fs::remove_dir_all(&built);
            // Another process saved it first: use theirs.
            if !self.is_saved()? {
                return Err(Error::io(format!("renaming into {}", dir.display()), e));
            }
        }
        Ok(true)
    }

    /// Information on the saved state (its header).
    pub fn state_info(&self) -> Result<StateInfo> {
        StateInfo::read(&self.state_dir()?.join(STATE))
    }

    /// Starts a running machine from the saved state (see [`prepare`](Self::prepare)), with its
    /// own sockets, console, agent channel and disk overlays, and waits until it is ready (see
    /// [`set_clone_ready`](Self::set_clone_ready)). The wait's default is
    /// [`DEFAULT_STATE_TIMEOUT`](crate::snapshot::DEFAULT_STATE_TIMEOUT). Fails with
    /// [`Error::State`] when the template was not prepared; on any failure nothing is left
    /// running and the overlays are removed.
    pub fn clone_machine(&self, wait: impl Into<Wait>) -> Result<Machine> {
        let wait = wait.into();
        let dir = self.state_dir()?;
        if !self.is_saved()? {
            return Err(Error::State(format!(
                "the template is not prepared: no saved state in {}",
                dir.display()
            )));
        }
        let vm = self.machine();
        let mut renames = Vec::new();
        if !self.disks.is_empty() {
            // The overlays live in the machine's temporary directory: removed at its shutdown.
            let overlays = vm.temp_dir()?;
            let recorded: Value = serde_json::from_slice(
                &fs::read(dir.join("disks.json"))
                    .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?,
            )
            .map_err(|e| Error::Invalid(format!("{}: disks.json: {e}", dir.display())))?;
            for i in 0..self.disks.len() {
                let clone_overlay = overlay_path(&overlays, i);
                // On failure, dropping the machine removes its temporary directory.
                self.create_overlay(&clone_overlay, &overlay_path(&dir, i), "qcow2")?;
                let saved = recorded["disks"][i].as_str().unwrap_or_default();
                renames.push((
                    crate::opts::option_value(saved),
                    crate::opts::option_value(&clone_overlay.to_string_lossy()),
                ));
            }
            vm.add_args(self.drive_args(&overlays));
        }
        vm.restore_renamed(&dir.join(STATE), &renames, &self.clone_ready(), wait)?;
        Ok(vm)
    }

    /// Starts `n` clones at once (one thread each), as [`clone_machine`](Self::clone_machine),
    /// all within one wait. If any fails, the others are shut down and the first error is
    /// returned.
    pub fn clones(&self, n: usize, wait: impl Into<Wait>) -> Result<Vec<Machine>> {
        let wait = wait
            .into()
            .or_default(Some(crate::snapshot::DEFAULT_STATE_TIMEOUT))
            .checked()?;
        let deadline = wait.start()?;
        let results: Vec<Result<Machine>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let wait = deadline.to_wait();
                    s.spawn(move || self.clone_machine(wait))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::State("a clone's thread panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect()
    }

    fn create_overlay(&self, overlay: &Path, base: &Path, format: &str) -> Result<()> {
        let base = base
            .canonicalize()
            .map_err(|e| Error::io(format!("opening {}", base.display()), e))?;
        let out = Command::new(&self.qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
            .arg(&base)
            .arg(overlay)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {}", self.qemu_img), e))?;
        if !out.status.success() {
            return Err(Error::Invalid(format!(
                "{} create -b {} {}: {}{}",
                self.qemu_img,
                base.display(),
                overlay.display(),
                String::from_utf8_lossy(&out.stderr).trim_end(),
                String::from_utf8_lossy(&out.stdout).trim_end()
            )));
        }
        Ok(())
    }
}

impl Template {
    /// Removes this template's saved state (the state, its key and the template's overlays),
    /// if any, so the next [`prepare`](Self::prepare) boots again.
    pub fn remove(&self) -> Result<()> {
        let dir = self.state_dir()?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }
}

/// Keeps the compiler honest about sharing templates between threads.
#[allow(dead_code)]
fn assert_sync() {
    fn is<T: Send + Sync>() {}
    is::<Template>();
    is::<Arc<Template>>();
}

fn overlay_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("disk{i}.qcow2"))
}

fn file_identity(path: &Path) -> Result<Value> {
    use std::os::unix::fs::MetadataExt;
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let meta = fs::metadata(&canonical)
        .map_err(|e| Error::io(format!("reading {}", canonical.display()), e))?;
    Ok(json!({
        "path": canonical.to_string_lossy(),
        "size": meta.len(),
        "mtime_ns": meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    }))
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// 64-bit FNV-1a: a stable hash for directory names (std's hasher may change between Rust
/// releases); the full key text is stored and compared too.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
