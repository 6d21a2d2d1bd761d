//! Migration and block jobs as waits, in the style of QEMU's iotests `VM` (`wait_migration`,
//! `run_job`): live migration from one qm machine to another, and a job run to its end.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::log::debug;
use crate::wait::Wait;
use crate::Machine;

/// The default bound of [`Machine::migrate_to`] and [`Machine::run_job`].
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// How often [`Machine::run_job`] looks at `query-jobs` when no event comes.
const JOB_POLL: Duration = Duration::from_millis(200);

impl Machine {
    /// Launches this machine waiting for an incoming migration (`-incoming defer` at the end of
    /// qm's own command line): QMP answers, the guest does not run until a migration (see
    /// [`migrate_to`](Machine::migrate_to)) or [`restore_state`](Machine::restore_state) loads
    /// its state. Otherwise as [`launch_with`](Machine::launch_with).
    pub fn launch_incoming(&self, wait: impl Into<Wait>) -> Result<()> {
        self.set_incoming_defer(true);
        let launched = self.launch_with(wait);
        self.set_incoming_defer(false);
        launched
    }

    /// Live-migrates this running machine to `dest`, which must have been launched with
    /// [`launch_incoming`](Machine::launch_incoming) and configured with the same devices.
    ///
    /// The stream goes over a socketpair qm creates and hands to both QEMUs (`getfd`, then
    /// `migrate-incoming uri=fd:NAME` on `dest` and `migrate uri=fd:NAME` here): no port or
    /// path to choose. Turns on the `events` capability on both. Returns when both sides
    /// report the migration completed: `dest` then runs the guest (if it ran here) and this
    /// machine is paused in `postmigrate`. A failure is an [`Error::Qmp`] with QEMU's
    /// `error-desc`; on a timeout or an interruption the migration is cancelled. The wait's
    /// default is [`DEFAULT_JOB_TIMEOUT`].
    pub fn migrate_to(&self, dest: &Machine, wait: impl Into<Wait>) -> Result<()> {
        let wait = wait
            .into()
            .or_default(Some(DEFAULT_JOB_TIMEOUT))
            .checked()?;
        let deadline = wait.start()?;
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Error::io("creating the migration socketpair", e))?;
        let events = json!({"capabilities": [{"capability": "events", "state": true}]});
        for vm in [self, dest] {
            vm.cmd_with(
                "migrate-set-capabilities",
                Some(&events),
                deadline.to_wait(),
            )?;
        }
        dest.send_fd_scm(theirs.as_fd())?;
        dest.cmd_with(
            "getfd",
            Some(&json!({"fdname": "qm-migration"})),
            deadline.to_wait(),
        )?;
        dest.cmd_with(
            "migrate-incoming",
            Some(&json!({"uri": "fd:qm-migration"})),
            deadline.to_wait(),
        )?;
        self.send_fd_scm(ours.as_fd())?;
        self.cmd_with(
            "getfd",
            Some(&json!({"fdname": "qm-migration"})),
            deadline.to_wait(),
        )?;
        self.cmd_with(
            "migrate",
            Some(&json!({"uri": "fd:qm-migration"})),
            deadline.to_wait(),
        )?;
        // QEMU holds its ends now; ours must go so that a QEMU that dies reads as EOF.
        drop((ours, theirs));
        let done = self
            .wait_migration(deadline.to_wait())
            .and_then(|_| dest.wait_migration(deadline.to_wait()));
        if let Err(e) = &done {
            if matches!(e, Error::Timeout(_) | Error::Interrupted) {
                let _ = self.qmp("migrate_cancel", None);
            }
        }
        done.map(drop)
    }

    /// Runs job `id` (a block job: mirror, stream, commit, backup …, started by the caller) to
    /// its end and returns its last `query-jobs` entry (or `null` when QEMU dismissed it by
    /// itself).
    ///
    /// Follows `JOB_STATUS_CHANGE` events (consuming them, and asking `query-jobs` at each and
    /// every 200 ms without one): at `ready` it sends `job-complete` (a mirror's switch to its
    /// target, as iotests' `run_job` does for tests), at `pending` `job-finalize` (jobs started
    /// with `auto-finalize: false`), at `concluded` reads the job's error from `query-jobs` and
    /// sends `job-dismiss` (jobs started with `auto-dismiss: false`). A job that ends with an
    /// error is an [`Error::Qmp`] holding it (for jobs QEMU dismisses itself, the error of their
    /// `BLOCK_JOB_COMPLETED` event). On a timeout or an interruption the job is cancelled
    /// (`job-cancel`) and the error returned. The wait's default is [`DEFAULT_JOB_TIMEOUT`].
    pub fn run_job(&self, id: &str, wait: impl Into<Wait>) -> Result<Value> {
        let wait = wait
            .into()
            .or_default(Some(DEFAULT_JOB_TIMEOUT))
            .checked()?;
        let deadline = wait.start()?;
        let result = self.follow_job(id, &deadline);
        if let Err(Error::Timeout(_) | Error::Interrupted) = &result {
            let _ = self.qmp("job-cancel", Some(&json!({"id": id})));
        }
        result
    }

    fn follow_job(&self, id: &str, deadline: &crate::wait::Deadline<'_>) -> Result<Value> {
        let status_filter = json!({"data": {"id": id}});
        let completed_filter = json!({"data": {"device": id}});
        let mut completed_error: Option<String> = None;
        let mut completed_seen = false;
        let (mut completing, mut finalizing) = (false, false);
        let mut status = String::from("not queried");
        loop {
            if deadline.remaining().is_some_and(|left| left.is_zero()) {
                return Err(Error::Timeout(format!(
                    "job {id:?} did not conclude {} (status {status})",
                    deadline.within()
                )));
            }
            let jobs = self.cmd_with("query-jobs", None, deadline.to_wait())?;
            let job = jobs
                .as_array()
                .and_then(|jobs| jobs.iter().find(|j| j["id"] == id))
                .cloned();
            let Some(job) = job else {
                // Gone: dismissed by QEMU (auto-dismiss), or never there.
                if completed_seen {
                    return match completed_error {
                        Some(err) => Err(job_failed(id, &err)),
                        None => Ok(Value::Null),
                    };
                }
                // The event may still be on its way, or the job never existed.
                match self.event_wait(
                    "BLOCK_JOB_COMPLETED",
                    Some(&completed_filter),
                    Duration::ZERO,
                )? {
                    Some(ev) => {
                        completed_seen = true;
                        completed_error = ev["data"]["error"].as_str().map(str::to_owned);
                        continue;
                    }
                    None => {
                        return Err(Error::State(format!("no job {id:?} (query-jobs)")));
                    }
                }
            };
            status = job["status"].as_str().unwrap_or_default().to_owned();
            debug!("job {id}: {status}");
            match status.as_str() {
                "ready" if !completing => {
                    completing = true;
                    self.cmd_with("job-complete", Some(&json!({"id": id})), deadline.to_wait())?;
                }
                "pending" if !finalizing => {
                    finalizing = true;
                    self.cmd_with("job-finalize", Some(&json!({"id": id})), deadline.to_wait())?;
                }
                "concluded" => {
                    // Its BLOCK_JOB_COMPLETED came before this reply: consumed with the job, so
                    // a later run_job of the same id does not take it for a new job's end.
                    let _ = self.event_wait(
                        "BLOCK_JOB_COMPLETED",
                        Some(&completed_filter),
                        Duration::ZERO,
                    );
                    let _ =
                        self.qmp_with("job-dismiss", Some(&json!({"id": id})), deadline.to_wait())?;
                    return match job["error"].as_str() {
                        Some(err) => Err(job_failed(id, err)),
                        None => Ok(job),
                    };
                }
                _ => {}
            }
            let slice = deadline
                .remaining()
                .map_or(JOB_POLL, |left| left.min(JOB_POLL));
            let mut step = Wait::timeout(slice);
            if let Some(cancel) = deadline.cancel {
                step = step.cancel(cancel);
            }
            match self.events_wait(
                &[
                    ("JOB_STATUS_CHANGE", Some(&status_filter)),
                    ("BLOCK_JOB_COMPLETED", Some(&completed_filter)),
                ],
                step,
            ) {
                Ok(Some(ev)) if ev["event"] == "BLOCK_JOB_COMPLETED" => {
                    completed_seen = true;
                    completed_error = ev["data"]["error"].as_str().map(str::to_owned);
                }
                Ok(_) | Err(Error::Timeout(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn job_failed(id: &str, err: &str) -> Error {
    Error::Qmp {
        class: "GenericError".into(),
        desc: format!("job {id} failed: {err}"),
    }
}
