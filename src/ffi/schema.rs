//! `qm_schema`: the running QEMU's QMP schema (feature queries, command descriptions, checks),
//! the machine's schema policy, and its greeting.

use std::ffi::{c_char, c_int};
use std::sync::Arc;

use serde_json::Value;

use super::boundary::{guard, opt_json_object, out, reference, string, Result};
use super::cancel::{self, qm_cancel};
use super::error::{call, qm_error, qm_status};
use super::machine::{machine, qm_machine};
use crate::schema::{Level, Schema, SchemaPolicy};
use crate::Error;

/// The parsed QMP schema of a running QEMU, from `qm_schema_get`. Immutable: any number of
/// threads may read it at once. It stays valid after the machine shuts down or is freed; free
/// it with `qm_schema_free`.
pub struct qm_schema {
    schema: Arc<Schema>,
}

/// What a check before send does with what it finds (`qm_set_schema_policy`).
pub type qm_schema_level = c_int;

/// Not looked at.
pub const QM_SCHEMA_OFF: qm_schema_level = 0;
/// Logged as a warning (see `qm_set_log_callback`); the command is sent all the same.
pub const QM_SCHEMA_WARN: qm_schema_level = 1;
/// Refused with `QM_ERR_REFUSED`; the command is never sent.
pub const QM_SCHEMA_STRICT: qm_schema_level = 2;

fn level(value: qm_schema_level, name: &str) -> Result<Level> {
    match value {
        QM_SCHEMA_OFF => Ok(Level::Off),
        QM_SCHEMA_WARN => Ok(Level::Warn),
        QM_SCHEMA_STRICT => Ok(Level::Strict),
        other => Err(Error::Invalid(format!(
            "{name} {other} is not one of QM_SCHEMA_OFF (0), QM_SCHEMA_WARN (1), \
             QM_SCHEMA_STRICT (2)"
        ))),
    }
}

fn level_value(level: Level) -> qm_schema_level {
    match level {
        Level::Off => QM_SCHEMA_OFF,
        Level::Warn => QM_SCHEMA_WARN,
        Level::Strict => QM_SCHEMA_STRICT,
    }
}

/// Sets what checks before send do on this machine, at once and for later launches: `checks`
/// for what QEMU would refuse (unknown commands, events and members, missing members, wrong
/// JSON types, values outside an enum), `deprecated` and `unstable` for the use of what the
/// schema marks so (QEMU's `-compat deprecated-input=` / `unstable-input=`). Each is a
/// `QM_SCHEMA_*` level. The default is all `QM_SCHEMA_OFF`: nothing checked, no schema loaded.
/// A good setting for tests: `QM_SCHEMA_STRICT, QM_SCHEMA_WARN, QM_SCHEMA_OFF`.
///
/// When checks are on, the first checked call (`qm_qmp`, `qm_cmd`, `qm_qmpf`, the event
/// waits) loads the schema within its own timeout: one `query-qmp-schema` per QEMU binary per
/// process. A refused call returns `QM_ERR_REFUSED` and sends nothing; the error names the JSON
/// path (`qm_error_schema_path`) and the rule (`qm_error_schema_rule`). A schema that cannot be
/// loaded turns the checks off for that launch, with a logged warning.
/// `QM_ERR_INVALID` for a value that is not a `QM_SCHEMA_*` level (nothing changes).
#[no_mangle]
pub unsafe extern "C" fn qm_set_schema_policy(
    m: *mut qm_machine,
    checks: qm_schema_level,
    deprecated: qm_schema_level,
    unstable: qm_schema_level,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_set_schema_policy", err_out, || {
        // SAFETY: the handle contract.
        let m = unsafe { machine(m) }?;
        let policy = SchemaPolicy {
            checks: level(checks, "checks")?,
            deprecated: level(deprecated, "deprecated")?,
            unstable: level(unstable, "unstable")?,
        };
        m.vm.set_schema_policy(policy);
        Ok(())
    })
}

/// Stores the machine's schema policy (see `qm_set_schema_policy`) in `*checks_out`,
/// `*deprecated_out` and `*unstable_out`, none of which may be NULL.
#[no_mangle]
pub unsafe extern "C" fn qm_get_schema_policy(
    m: *const qm_machine,
    checks_out: *mut qm_schema_level,
    deprecated_out: *mut qm_schema_level,
    unstable_out: *mut qm_schema_level,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_get_schema_policy", err_out, || {
        let checks = out(checks_out, "checks_out")?;
        let deprecated = out(deprecated_out, "deprecated_out")?;
        let unstable = out(unstable_out, "unstable_out")?;
        // SAFETY: the handle contract.
        let policy = unsafe { machine(m) }?.vm.schema_policy();
        checks.write(level_value(policy.checks));
        deprecated.write(level_value(policy.deprecated));
        unstable.write(level_value(policy.unstable));
        Ok(())
    })
}

/// Stores what QEMU's greeting said at the last launch as JSON in `*json_out` (owned: free
/// with `qm_string_free`): `{"version": {"major": 7, "minor": 2, "micro": 0}, "package": "…",
/// "capabilities": ["oob"]}`. No I/O: the greeting is kept from the launch. `QM_ERR_STATE`
/// before a launch with QMP.
#[no_mangle]
pub unsafe extern "C" fn qm_greeting(
    m: *const qm_machine,
    json_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_greeting", err_out, || {
        let json = out(json_out, "json_out")?;
        // SAFETY: the handle contract.
        let greeting = unsafe { machine(m) }?
            .vm
            .greeting()
            .ok_or_else(|| Error::State("no greeting: not launched, or QMP is off".into()))?;
        json.write_json(Some(&greeting.to_value()));
        Ok(())
    })
}

/// Gets the running QEMU's QMP schema: from the per-binary cache, or with `query-qmp-schema`
/// (then parsed and cached), within `timeout_ms` (`QM_WAIT_DEFAULT`: the QMP timer) unless
/// `cancel` fires. Stores a new handle in `*schema_out` (owned: free with `qm_schema_free`).
/// Errors: `QM_ERR_STATE` (not launched, or QMP off), `QM_ERR_PROTOCOL` (a damaged schema: the
/// message names the entry), `QM_ERR_QMP`, `QM_ERR_TIMEOUT`, `QM_ERR_INTERRUPTED`,
/// `QM_ERR_DISCONNECTED`.
#[no_mangle]
pub unsafe extern "C" fn qm_schema_get(
    m: *const qm_machine,
    timeout_ms: i64,
    cancel: *const qm_cancel,
    schema_out: *mut *mut qm_schema,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_schema_get", err_out, || {
        let schema_out = out(schema_out, "schema_out")?;
        // SAFETY: the handle and token contracts.
        let (m, wait) = unsafe { (machine(m)?, cancel::wait(timeout_ms, cancel)?) };
        let schema = m.vm.schema_with(wait)?;
        schema_out.write(Box::into_raw(Box::new(qm_schema { schema })));
        Ok(())
    })
}

/// Frees a schema handle. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn qm_schema_free(s: *mut qm_schema) {
    guard((), || {
        if !s.is_null() {
            // SAFETY: a non-NULL s came from Box::into_raw in qm_schema_get, freed once.
            drop(unsafe { Box::from_raw(s) });
        }
    })
}

/// Borrows the schema behind a handle.
///
/// # Safety
/// A non-NULL `s` must be a live handle from `qm_schema_get`.
unsafe fn schema<'a>(s: *const qm_schema) -> Result<&'a Schema> {
    // SAFETY: forwarded contract.
    Ok(&unsafe { reference(s, "schema") }?.schema)
}

/// True when QEMU has a command called `name` (borrowed). False for NULL arguments.
#[no_mangle]
pub unsafe extern "C" fn qm_schema_has_command(s: *const qm_schema, name: *const c_char) -> bool {
    guard(false, || {
        // SAFETY: the handle and string contracts.
        let found = unsafe { schema(s).and_then(|s| Ok(s.has_command(string(name, "name")?))) };
        found.unwrap_or(false)
    })
}

/// True when QEMU has an event called `name` (borrowed). False for NULL arguments.
#[no_mangle]
pub unsafe extern "C" fn qm_schema_has_event(s: *const qm_schema, name: *const c_char) -> bool {
    guard(false, || {
        // SAFETY: the handle and string contracts.
        let found = unsafe { schema(s).and_then(|s| Ok(s.has_event(string(name, "name")?))) };
        found.unwrap_or(false)
    })
}

/// Answers a feature question in libvirt's query-path syntax (`path`, borrowed), e.g.
/// `"blockdev-add/arg-type/+file/aio/^io_uring"`: stores true in `*found_out` when the path
/// exists in this QEMU's schema, false when not. The grammar: a command or event name; then
/// `arg-type` or `ret-type` (events: `arg-type`); then per step a member `name`, an optional
/// member `*name`, a union variant `+case`, an enum value `^value`, a JSON type `!type`
/// (`string`, `int`, `number`, `boolean`, `null`, `value`, `object`, `array`), or a feature
/// `$feature` of what was selected last. Arrays are looked through; alternates are entered
/// (the path holds through any branch). `QM_ERR_INVALID` for a malformed path, naming the
/// component. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_schema_query(
    s: *const qm_schema,
    path: *const c_char,
    found_out: *mut bool,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_schema_query", err_out, || {
        let found_out = out(found_out, "found_out")?;
        // SAFETY: the handle and string contracts.
        let (s, path) = unsafe { (schema(s)?, string(path, "path")?) };
        found_out.write(s.query(path)?);
        Ok(())
    })
}

/// Describes the command `name` (borrowed) as JSON in `*json_out` (owned: free with
/// `qm_string_free`): `{"name": …, "allow-oob": false, "features": […], "arguments": [{"name":
/// …, "optional": true, "type": "str", "variants": […], "features": […]}, …]}` (`type` in
/// words: a builtin, `enum (a, b)`, `object`, `array of …`, `alternate (… | …)`; `variants`:
/// the cases of a union's discriminator). `null` when QEMU has no such command. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_schema_command(
    s: *const qm_schema,
    name: *const c_char,
    json_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_schema_command", err_out, || {
        let json = out(json_out, "json_out")?;
        // SAFETY: the handle and string contracts.
        let (s, name) = unsafe { (schema(s)?, string(name, "name")?) };
        json.write_json(Some(&s.command(name).map_or(Value::Null, |c| c.to_value())));
        Ok(())
    })
}

/// Checks the command `cmd` with the arguments `args_json` (a JSON object, or NULL / `"null"`
/// for none; both borrowed) against the schema without sending anything, and stores every
/// finding as a JSON array in `*findings_json_out` (owned: free with `qm_string_free`; `[]`
/// when all is well): `[{"path": "arguments.node_name", "rule": "unknown-member", "message":
/// "unexpected member 'node_name' (did you mean 'node-name'?)"}, …]`. Rules:
/// `unknown-command`, `unknown-member`, `missing-member`, `wrong-type`, `enum-value`,
/// `deprecated`, `unstable`. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn qm_schema_check(
    s: *const qm_schema,
    cmd: *const c_char,
    args_json: *const c_char,
    findings_json_out: *mut *mut c_char,
    err_out: *mut *mut qm_error,
) -> qm_status {
    call("qm_schema_check", err_out, || {
        let json = out(findings_json_out, "findings_json_out")?;
        // SAFETY: the handle and string contracts.
        let (s, cmd, args) = unsafe {
            (
                schema(s)?,
                string(cmd, "cmd")?,
                opt_json_object(args_json, "args_json")?,
            )
        };
        let findings: Vec<Value> = s
            .check_command(cmd, args.as_ref())
            .iter()
            .map(|f| f.to_value())
            .collect();
        json.write_json(Some(&Value::Array(findings)));
        Ok(())
    })
}
