//! Checks before send on one QMP connection: the policy, the greeting, and the schema loaded
//! when first needed.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::{BinaryKey, Finding, Rule, Schema};
use crate::error::{Error, Result};
use crate::log::{debug, warning};
use crate::qmp::{into_return, QmpClient};
use crate::wait::{Deadline, Wait};

/// What a check does with what it finds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Level {
    /// Nothing: not looked at.
    #[default]
    Off,
    /// Logged as a warning; the command is sent all the same.
    Warn,
    /// Refused with [`Error::Refused`]; the command is never sent.
    Strict,
}

impl Level {
    /// The level called `"off"`, `"warn"` or `"strict"`.
    pub fn parse(name: &str) -> Option<Level> {
        Some(match name {
            "off" => Level::Off,
            "warn" => Level::Warn,
            "strict" => Level::Strict,
            _ => return None,
        })
    }

    /// `"off"`, `"warn"`, `"strict"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Warn => "warn",
            Level::Strict => "strict",
        }
    }
}

/// A machine's schema policy: what checks before send do with each kind of finding.
///
/// The default is [`SchemaPolicy::off`]: nothing is checked and no schema is loaded, so a
/// program behaves as it did before checks existed (the same messages on the wire, the same
/// errors from QEMU). Turning checks on costs one `query-qmp-schema` per QEMU binary per
/// process, on the first checked call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SchemaPolicy {
    /// What QEMU would refuse: unknown commands, events and members, missing members, wrong
    /// types, values outside an enum.
    pub checks: Level,
    /// Use of what is marked `deprecated` (QEMU accepts it unless `-compat
    /// deprecated-input=reject`; `Strict` is that rule, applied before sending).
    pub deprecated: Level,
    /// Use of what is marked `unstable` (`x-` commands and members; QEMU's `-compat
    /// unstable-input=`).
    pub unstable: Level,
}

impl SchemaPolicy {
    /// Nothing checked (the default).
    pub fn off() -> SchemaPolicy {
        SchemaPolicy::default()
    }

    /// Everything QEMU would refuse, and deprecated use, logged as warnings; unstable use
    /// accepted silently.
    pub fn warn() -> SchemaPolicy {
        SchemaPolicy {
            checks: Level::Warn,
            deprecated: Level::Warn,
            unstable: Level::Off,
        }
    }

    /// What QEMU would refuse is refused before sending; deprecated use is a warning; unstable
    /// use is accepted (tests use `x-` commands on purpose).
    pub fn strict() -> SchemaPolicy {
        SchemaPolicy {
            checks: Level::Strict,
            deprecated: Level::Warn,
            unstable: Level::Off,
        }
    }

    /// True when nothing is checked.
    pub fn is_off(&self) -> bool {
        *self == SchemaPolicy::off()
    }

    fn level(&self, rule: Rule) -> Level {
        match rule {
            Rule::Deprecated => self.deprecated,
            Rule::Unstable => self.unstable,
            _ => self.checks,
        }
    }
}

/// What QEMU's greeting says (`{"QMP": {"version": …, "capabilities": […]}}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// QEMU's version, `(major, minor, micro)`, e.g. `(7, 2, 0)`.
    pub version: (u64, u64, u64),
    /// The package string, e.g. `"Debian 1:7.2+dfsg-7"` (may be empty).
    pub package: String,
    /// The capabilities QEMU offers, e.g. `["oob"]`.
    pub capabilities: Vec<String>,
}

impl Greeting {
    /// Reads a greeting message; `None` when it lacks the version.
    pub fn from_value(greeting: &Value) -> Option<Greeting> {
        let qmp = greeting.get("QMP")?;
        let v = &qmp["version"]["qemu"];
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(Greeting {
            version: (n("major")?, n("minor")?, n("micro")?),
            package: qmp["version"]["package"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            capabilities: qmp["capabilities"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// As JSON, the shape the C, Go and Python APIs hand out: `{"version": {"major", "minor",
    /// "micro"}, "package", "capabilities": [...]}`.
    pub fn to_value(&self) -> Value {
        let (major, minor, micro) = self.version;
        serde_json::json!({
            "version": {"major": major, "minor": minor, "micro": micro},
            "package": self.package,
            "capabilities": self.capabilities,
        })
    }

    /// `"major.minor.micro"`.
    pub fn version_string(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }
}

enum State {
    NotLoaded,
    Ready(Arc<Schema>),
    /// The schema could not be had (damaged, or the command failed): checks are off for this
    /// connection, as the warning said.
    Disabled,
}

/// Checks before send for one QMP connection: a [`SchemaPolicy`], the [`Greeting`], and the
/// [`Schema`], loaded on the first call that needs it (never at connection time) and shared
/// with every connection to the same QEMU binary in the process.
///
/// A [`Machine`](crate::Machine) has one per launch; use it directly with a bare
/// [`QmpClient`].
pub struct Checker {
    policy: Mutex<SchemaPolicy>,
    binary: Option<String>,
    greeting: Option<Greeting>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Checker {
    /// A checker for a connection to `binary` (its schema is cached per binary; `None`: not
    /// cached), with the `greeting` QEMU sent (as the handshake returned it).
    pub fn new(binary: Option<&str>, greeting: Option<&Value>, policy: SchemaPolicy) -> Checker {
        Checker {
            policy: Mutex::new(policy),
            binary: binary.map(str::to_owned),
            greeting: greeting.and_then(Greeting::from_value),
            state: Mutex::new(State::NotLoaded),
        }
    }

    /// Sets the policy for the calls that follow.
    pub fn set_policy(&self, policy: SchemaPolicy) {
        *lock(&self.policy) = policy;
    }

    /// The policy.
    pub fn policy(&self) -> SchemaPolicy {
        *lock(&self.policy)
    }

    /// The greeting, when it had a version.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// The schema: cached, or fetched with `query-qmp-schema` within `wait` and parsed. A
    /// damaged schema is [`Error::Protocol`] naming the damaged entry.
    pub fn schema(&self, client: &QmpClient, wait: impl Into<Wait>) -> Result<Arc<Schema>> {
        let wait = wait.into();
        if wait.is_no_wait() {
            if let State::Ready(s) = &*lock(&self.state) {
                return Ok(s.clone());
            }
        }
        let deadline = wait.start()?;
        self.load(client, &deadline)
    }

    fn load(&self, client: &QmpClient, deadline: &Deadline<'_>) -> Result<Arc<Schema>> {
        if let State::Ready(s) = &*lock(&self.state) {
            return Ok(s.clone());
        }
        let key = self.binary.as_deref().and_then(BinaryKey::of);
        let schema = super::load_cached(key.as_ref(), || {
            let reply = client.execute_within("query-qmp-schema", None, deadline)?;
            let schema = Schema::parse(&into_return(reply)?)?;
            debug!(
                "loaded the QMP schema of {}: {} entries",
                self.binary.as_deref().unwrap_or("QEMU"),
                schema.len()
            );
            Ok(schema)
        })?;
        *lock(&self.state) = State::Ready(schema.clone());
        Ok(schema)
    }

    /// The schema for a check; `None` when checks are disabled for this connection. A schema
    /// that cannot be had for a reason of its own (damaged, `query-qmp-schema` refused)
    /// disables the checks with one warning; a timeout, a cancel or a lost connection is the
    /// caller's error.
    fn schema_for_checks(
        &self,
        client: &QmpClient,
        deadline: &Deadline<'_>,
    ) -> Result<Option<Arc<Schema>>> {
        match &*lock(&self.state) {
            State::Ready(s) => return Ok(Some(s.clone())),
            State::Disabled => return Ok(None),
            State::NotLoaded => {}
        }
        match self.load(client, deadline) {
            Ok(s) => Ok(Some(s)),
            Err(e @ (Error::Protocol(_) | Error::Qmp { .. })) => {
                warning!("schema checks are off for this machine: {e}");
                *lock(&self.state) = State::Disabled;
                Ok(None)
            }
            Err(Error::Timeout(what)) => Err(Error::Timeout(format!(
                "loading the QMP schema for the check before send: {what}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Applies the policy to `findings`: warnings are logged, the first refusal is the error.
    /// `subject` names what was checked, for messages: made only when there is a finding, as
    /// most checks (every checked command and event wait) find nothing.
    fn judge(
        &self,
        policy: SchemaPolicy,
        subject: impl Fn() -> String,
        findings: Vec<Finding>,
    ) -> Result<()> {
        if findings.is_empty() {
            return Ok(());
        }
        let subject = subject();
        let mut refused: Vec<Finding> = Vec::new();
        for f in findings {
            match policy.level(f.rule) {
                Level::Off => {}
                Level::Warn => warning!("schema check of {subject}: {f}"),
                Level::Strict => refused.push(f),
            }
        }
        let mut refused = refused.into_iter();
        match refused.next() {
            None => Ok(()),
            Some(first) => Err(Error::Refused {
                subject,
                path: first.path,
                rule: first.rule,
                message: first.message,
                more: refused.map(|f| f.to_string()).collect(),
            }),
        }
    }

    /// Checks `cmd` with `args` under the policy, loading the schema first if needed (within
    /// `deadline`).
    pub(crate) fn check_command(
        &self,
        client: &QmpClient,
        cmd: &str,
        args: Option<&Value>,
        deadline: &Deadline<'_>,
    ) -> Result<()> {
        let policy = self.policy();
        if policy.is_off() {
            return Ok(());
        }
        let Some(schema) = self.schema_for_checks(client, deadline)? else {
            return Ok(());
        };
        self.judge(
            policy,
            || format!("'{cmd}'"),
            schema.check_command(cmd, args),
        )
    }

    /// Runs a command after checking it under the policy: a refused command is never sent.
    /// Otherwise as [`QmpClient::execute`].
    pub fn execute(
        &self,
        client: &QmpClient,
        cmd: &str,
        args: Option<&Value>,
        wait: impl Into<Wait>,
    ) -> Result<Value> {
        let wait = wait.into();
        if self.policy().is_off() || wait.is_no_wait() {
            return client.execute(cmd, args, wait);
        }
        let deadline = wait.start()?;
        self.check_command(client, cmd, args, &deadline)?;
        client.execute_within(cmd, args, &deadline)
    }

    /// Checks an out-of-band command: that its schema entry allows OOB ([`Error::Invalid`]
    /// naming the commands that do, whatever the policy), then the policy's checks. Only a
    /// schema already loaded is used: an OOB command is typically sent while the monitor is busy
    /// with an in-band one, behind which `query-qmp-schema` would wait.
    pub fn check_oob(&self, cmd: &str, args: Option<&Value>) -> Result<()> {
        let schema = match &*lock(&self.state) {
            State::Ready(s) => s.clone(),
            _ => return Ok(()),
        };
        if let Some(c) = schema.command(cmd).filter(|c| !c.allow_oob) {
            let allowed: Vec<&str> = schema
                .command_names()
                .into_iter()
                .filter(|n| schema.command(n).is_some_and(|c| c.allow_oob))
                .collect();
            return Err(Error::Invalid(format!(
                "{}: this QEMU does not run it out-of-band (its schema has no allow-oob); it \
                 does for: {}; nothing was sent",
                c.name,
                allowed.join(", ")
            )));
        }
        let policy = self.policy();
        if policy.is_off() {
            return Ok(());
        }
        self.judge(
            policy,
            || format!("'{cmd}'"),
            schema.check_command(cmd, args),
        )
    }

    /// Checks that every event name exists (and is not deprecated or unstable) under the
    /// policy. With a zero wait only an already loaded schema is used.
    pub fn check_events(&self, client: &QmpClient, names: &[&str], wait: &Wait) -> Result<()> {
        let policy = self.policy();
        if policy.is_off() {
            return Ok(());
        }
        let schema = if wait.is_no_wait() {
            match &*lock(&self.state) {
                State::Ready(s) => s.clone(),
                _ => return Ok(()),
            }
        } else {
            let deadline = wait.start()?;
            match self.schema_for_checks(client, &deadline)? {
                Some(s) => s,
                None => return Ok(()),
            }
        };
        for name in names {
            self.judge(
                policy,
                || format!("event wait for '{name}'"),
                schema.check_event(name),
            )?;
        }
        Ok(())
    }
}
