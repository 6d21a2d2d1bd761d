//! Schema checks against a scripted peer, for what a real QEMU will not do: serve a damaged
//! schema, or refuse `query-qmp-schema`.

mod support;
use support::fake_client;
use support::fake_qmp;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_client::{client, with_handshake};
use fake_qmp::Step;
use qm::schema::{Checker, Rule, SchemaPolicy};
use qm::Error;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// A small valid schema: `query-status` (no arguments) and `SHUTDOWN`.
fn tiny_schema() -> Value {
    json!([
        {"name": "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
        {"name": "SHUTDOWN", "meta-type": "event", "arg-type": "0"},
        {"name": "0", "meta-type": "object", "members": []},
    ])
}

fn checker() -> Checker {
    Checker::new(None, Some(&fake_qmp::greeting()), SchemaPolicy::strict())
}

/// Runs `body` with qm's warnings captured; returns what it returned and the warnings that
/// mention `marker`.
fn with_warnings<R>(marker: &str, body: impl FnOnce() -> R) -> (R, Vec<String>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    qm::set_log_callback(Some(Box::new(move |r: &qm::LogRecord<'_>| {
        if r.level == qm::LogLevel::Warn {
            sink.lock().unwrap().push(r.message.to_owned());
        }
    })))
    .unwrap();
    let result = body();
    qm::set_log_callback(None).unwrap();
    let warnings = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.contains(marker))
        .cloned()
        .collect();
    (result, warnings)
}

#[test]
fn a_damaged_schema_turns_checks_off_with_one_warning_and_commands_go_on() {
    let damaged = [
        // A member whose type is not in the schema.
        json!([{"name": "query-status", "meta-type": "command", "arg-type": "7",
                "ret-type": "str"},
               {"name": "str", "meta-type": "builtin", "json-type": "string"}]),
        // Not a list at all.
        json!({"name": "query-status"}),
        // An entry without its meta-type's fields.
        json!([{"name": "0", "meta-type": "object"}]),
        // A meta-type nobody knows.
        json!([{"name": "0", "meta-type": "struct", "members": []}]),
    ];
    for schema in damaged {
        let script = with_handshake(vec![
            Step::expect("query-qmp-schema"),
            Step::Reply(schema.clone()),
            // The typo goes out: with checks off, QEMU is the judge again.
            Step::expect("query-statu"),
            Step::ReplyWith(json!({"error": {"class": "CommandNotFound", "desc": "no"}})),
            // And no second fetch.
            Step::expect("query-status"),
            Step::Reply(json!({"status": "running"})),
            Step::Drain,
        ]);
        let (c, peer) = client(script);
        c.handshake(T).unwrap();
        let checker = checker();
        let (first, warnings) = with_warnings(
            "checks are off for this machine: QMP protocol error: damaged",
            || checker.execute(&c, "query-statu", None, T),
        );
        assert_eq!(
            first.unwrap()["error"]["class"],
            "CommandNotFound",
            "{schema}"
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("damaged QMP schema"),
            "{}",
            warnings[0]
        );
        let reply = checker.execute(&c, "query-status", None, T).unwrap();
        assert_eq!(reply["return"]["status"], "running");
        drop(c);
        peer.join().unwrap();
    }
}

#[test]
fn asking_for_a_damaged_schema_says_which_entry() {
    let script = with_handshake(vec![
        Step::expect("query-qmp-schema"),
        Step::Reply(json!([{"name": "x", "meta-type": "enum", "values": [1]}])),
        Step::Drain,
    ]);
    let (c, peer) = client(script);
    c.handshake(T).unwrap();
    match checker().schema(&c, T) {
        Err(Error::Protocol(why)) => {
            assert!(why.contains("entry 0 (\"x\")"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    drop(c);
    peer.join().unwrap();
}

#[test]
fn a_qemu_without_query_qmp_schema_runs_unchecked() {
    let script = with_handshake(vec![
        Step::expect("query-qmp-schema"),
        Step::ReplyWith(json!({"error": {"class": "CommandNotFound", "desc": "nope"}})),
        Step::expect("query-name"),
        Step::Reply(json!({})),
        Step::Drain,
    ]);
    let (c, peer) = client(script);
    c.handshake(T).unwrap();
    let checker = checker();
    assert_eq!(
        checker.execute(&c, "query-name", None, T).unwrap()["return"],
        json!({})
    );
    drop(c);
    peer.join().unwrap();
}

#[test]
fn a_refused_command_is_never_sent() {
    let script = with_handshake(vec![
        Step::expect("query-qmp-schema"),
        Step::Reply(tiny_schema()),
        Step::expect("query-status"),
        Step::Reply(json!({})),
        Step::Drain,
    ]);
    let (c, peer) = client(script);
    c.handshake(T).unwrap();
    let checker = checker();
    assert_eq!(checker.greeting().unwrap().version, (7, 2, 0));
    match checker.execute(&c, "query-status", Some(&json!({"verbose": true})), T) {
        Err(Error::Refused { path, rule, .. }) => {
            assert_eq!(
                (path.as_str(), rule),
                ("arguments.verbose", Rule::UnknownMember)
            );
        }
        other => panic!("{other:?}"),
    }
    match checker.check_events(&c, &["SHUTDOWNN"], &T.into()) {
        Err(Error::Refused { rule, .. }) => assert_eq!(rule, Rule::UnknownEvent),
        other => panic!("{other:?}"),
    }
    checker.execute(&c, "query-status", None, T).unwrap();
    drop(c);
    let received = peer.join().unwrap();
    let sent: Vec<&str> = received
        .iter()
        .filter_map(|m| m["execute"].as_str())
        .collect();
    assert_eq!(
        sent,
        ["qmp_capabilities", "query-qmp-schema", "query-status"]
    );
    assert!(
        received.iter().all(|m| m.get("arguments").is_none()),
        "the refused arguments went out: {received:?}"
    );
}
