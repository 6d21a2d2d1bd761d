//! The machine's side of the QMP schema: its policy, and one [`Checker`] per launch (made from
//! the greeting; the schema itself is loaded when a call first needs it, never at launch).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{lock, Machine};
use crate::error::Result;
use crate::schema::{Checker, Greeting, Schema, SchemaPolicy};
use crate::wait::Wait;

/// What a [`Machine`] keeps about the schema.
#[derive(Default)]
pub(super) struct SchemaSlot {
    policy: Mutex<SchemaPolicy>,
    /// The current connection's checker (made at the handshake).
    checker: Mutex<Option<Arc<Checker>>>,
    /// Ask for out-of-band execution at the next launches.
    oob: AtomicBool,
}

impl Machine {
    /// Sets what checks before send do (see [`SchemaPolicy`]; the default checks nothing).
    /// Applies at once and to later launches.
    ///
    /// Under a policy that checks, the first checked call loads the schema (one
    /// `query-qmp-schema` per QEMU binary per process, within that call's wait); then every
    /// [`qmp`](Self::qmp) / [`cmd`](Self::cmd) is checked before it is sent, and so are the
    /// event names of [`event_wait`](Self::event_wait) / [`events_wait`](Self::events_wait).
    /// A refused call fails with [`Error::Refused`](crate::Error::Refused) and sends nothing.
    /// A schema that cannot be loaded or parsed turns the checks off for this launch with a
    /// logged warning; commands go on as without checks.
    pub fn set_schema_policy(&self, policy: SchemaPolicy) {
        *lock(&self.schema.policy) = policy;
        if let Some(c) = lock(&self.schema.checker).as_ref() {
            c.set_policy(policy);
        }
    }

    /// The policy set by [`set_schema_policy`](Self::set_schema_policy).
    pub fn schema_policy(&self) -> SchemaPolicy {
        *lock(&self.schema.policy)
    }

    /// What QEMU's greeting said at the last launch (version, package, capabilities); `None`
    /// before a launch with QMP.
    pub fn greeting(&self) -> Option<Greeting> {
        self.checker().and_then(|c| c.greeting().cloned())
    }

    /// The running QEMU's QMP schema, loaded (or taken from the per-binary cache) now if it was
    /// not yet, waiting at most the QMP timer.
    pub fn schema(&self) -> Result<Arc<Schema>> {
        self.schema_with(Wait::call_default())
    }

    /// [`schema`](Self::schema) with an explicit wait (its default is the QMP timer).
    pub fn schema_with(&self, wait: impl Into<Wait>) -> Result<Arc<Schema>> {
        let wait = wait.into().or_default(self.qmp_timer()).checked()?;
        let client = self.live_client()?;
        let checker = self.checker().ok_or_else(|| {
            crate::Error::State("no QMP connection (not launched, or QMP is off)".into())
        })?;
        checker.schema(&client, wait)
    }

    /// Asks for out-of-band execution (the QMP `oob` capability) at later launches (default:
    /// off, as QEMU's `QEMUMachine`). It is enabled when QEMU's greeting offers it (QEMU 7.2
    /// does); then [`qmp_oob`](Self::qmp_oob) runs commands that allow it while in-band ones
    /// are pending. With OOB on, QEMU queues at most 8 in-band commands and drops more: keep
    /// at most 8 in flight.
    pub fn set_qmp_oob(&self, on: bool) {
        self.schema.oob.store(on, Ordering::SeqCst);
    }

    /// What [`set_qmp_oob`](Self::set_qmp_oob) asked for.
    pub fn qmp_oob_requested(&self) -> bool {
        self.schema.oob.load(Ordering::SeqCst)
    }

    /// True when the current connection negotiated out-of-band execution.
    pub fn qmp_oob_enabled(&self) -> bool {
        lock(&self.qmp).as_ref().is_some_and(|c| c.oob_enabled())
    }

    /// Runs a command out-of-band (`exec-oob`) and returns QEMU's raw response, as
    /// [`qmp_with`](Self::qmp_with) does (the wait defaults to the QMP timer). QEMU may answer
    /// it while in-band commands sent earlier are still running. Fails with
    /// [`Error::State`](crate::Error::State) when OOB was not negotiated
    /// ([`set_qmp_oob`](Self::set_qmp_oob) before launch), and, once the schema is loaded, with
    /// [`Error::Invalid`](crate::Error::Invalid) for a command that does not allow OOB (QEMU
    /// 7.2: only `migrate-recover`, `migrate-pause`, `yank`, `query-yank` do); otherwise QEMU
    /// refuses such a command itself. Nothing is sent when qm refuses.
    pub fn qmp_oob(&self, cmd: &str, args: Option<&Value>, wait: impl Into<Wait>) -> Result<Value> {
        let wait = wait.into().or_default(self.qmp_timer()).checked()?;
        let client = self.live_client()?;
        if client.oob_enabled() {
            if let Some(checker) = self.checker() {
                checker.check_oob(cmd, args)?;
            }
        }
        client.execute_oob(cmd, args, wait)
    }

    /// The checker of the current connection.
    pub(super) fn checker(&self) -> Option<Arc<Checker>> {
        lock(&self.schema.checker).clone()
    }

    /// A new connection: a checker for it, from `binary` (the schema cache's key; `None` when
    /// the command line does not run it) and the greeting.
    pub(super) fn schema_connected(&self, binary: Option<&str>, greeting: &Value) {
        let policy = self.schema_policy();
        *lock(&self.schema.checker) = Some(Arc::new(Checker::new(binary, Some(greeting), policy)));
    }
}
