//! Out-of-band execution (QMP spec: capability `oob`, `exec-oob`).
//!
//! Asked for before the handshake ([`QmpClient::request_oob`]), negotiated only when QEMU's
//! greeting offers it. Once on, QEMU reads the monitor while an in-band command runs, and a
//! command sent with `exec-oob` (one whose schema entry says `allow-oob`) may be answered before
//! in-band ones sent earlier. Every command already carries an `id` and every reply is filed
//! under its id, so nothing else changes: the OOB reply goes to its caller while in-band callers
//! keep waiting for theirs.
//!
//! QEMU queues at most 8 in-band commands once OOB is on and drops more (a `COMMAND_DROPPED`
//! event); qm does not hold a 9th back, so with OOB on keep at most 8 in-band commands in
//! flight.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};

use super::QmpClient;
use crate::error::{Error, Result};
use crate::wait::Wait;

/// The OOB state of one connection.
#[derive(Default)]
pub(super) struct Oob {
    requested: AtomicBool,
    enabled: AtomicBool,
}

impl QmpClient {
    /// Asks for out-of-band execution at the handshake (call it before
    /// [`handshake`](Self::handshake)). It is enabled only when QEMU's greeting offers the
    /// `oob` capability; [`oob_enabled`](Self::oob_enabled) says whether it was.
    pub fn request_oob(&self, on: bool) {
        self.shared.oob.requested.store(on, Ordering::SeqCst);
    }

    /// True when out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.shared.oob.enabled.load(Ordering::SeqCst)
    }

    /// The arguments of `qmp_capabilities` for this greeting: `{"enable": ["oob"]}` when OOB
    /// was asked for and QEMU offers it, else none.
    pub(super) fn capabilities_for(&self, greeting: &Value) -> Option<Value> {
        let offered = greeting["QMP"]["capabilities"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "oob"));
        (self.shared.oob.requested.load(Ordering::SeqCst) && offered)
            .then(|| json!({"enable": ["oob"]}))
    }

    /// `qmp_capabilities` succeeded with `capabilities`.
    pub(super) fn negotiated(&self, capabilities: Option<&Value>) {
        self.shared
            .oob
            .enabled
            .store(capabilities.is_some(), Ordering::SeqCst);
    }

    /// Runs a command out-of-band (`exec-oob`) and returns QEMU's raw response, as
    /// [`execute`](Self::execute) does. It may be answered while in-band commands sent
    /// earlier are still pending. Fails with [`Error::State`] when OOB was not negotiated
    /// (nothing is sent); QEMU itself refuses a command whose schema lacks `allow-oob`.
    pub fn execute_oob(
        &self,
        cmd: &str,
        args: Option<&Value>,
        wait: impl Into<Wait>,
    ) -> Result<Value> {
        if !self.oob_enabled() {
            let why = if self.shared.oob.requested.load(Ordering::SeqCst) {
                "QEMU's greeting did not offer the oob capability"
            } else {
                "it was not asked for before the handshake (set_qmp_oob(true) before launch)"
            };
            return Err(Error::State(format!(
                "{cmd}: out-of-band execution is not enabled on this connection: {why}; \
                 nothing was sent"
            )));
        }
        let wait = wait.into();
        if wait.is_no_wait() {
            return self.execute(cmd, args, wait);
        }
        self.execute_as(b"exec-oob", cmd, args, &wait.start()?, false)
    }
}
