//! The QMP schema against the installed QEMU (7.2, TCG): lazy loading, the per-binary cache,
//! the greeting, feature queries, and checks before send.

mod support;
use support::vm;

use std::sync::Arc;

use qm::schema::{Level, Rule, SchemaPolicy};
use qm::{Error, Machine};
use serde_json::{json, Value};
use vm::{scratch, vm_none, T};

/// The `execute` of every command qm sent, from a transcript file.
fn sent(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["dir"] == "out")
        .filter_map(|l| l["msg"]["execute"].as_str().map(str::to_owned))
        .collect()
}

fn strict(dir: &std::path::Path) -> Machine {
    let vm = vm_none(dir);
    vm.set_schema_policy(SchemaPolicy::strict());
    vm.launch().unwrap();
    vm
}

/// The refusal's path, rule and message, or a panic naming what came instead.
fn refused(result: qm::Result<Value>) -> (String, Rule, String) {
    match result {
        Err(Error::Refused {
            path,
            rule,
            message,
            ..
        }) => (path, rule, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_schema_is_loaded_when_first_needed_and_once_per_binary() {
    let dir = scratch();
    let transcript = dir.path().join("a.jsonl");
    let a = vm_none(dir.path());
    a.set_qmp_transcript(Some(transcript.clone()));
    a.launch().unwrap();
    a.cmd("query-status", None).unwrap();
    assert_eq!(
        sent(&transcript),
        ["qmp_capabilities", "query-status"],
        "nothing schema-related at launch or with checks off"
    );
    let first = a.schema().unwrap();
    assert!(first.len() > 500, "{} entries", first.len());
    assert!(first.has_command("query-status") && first.has_event("SHUTDOWN"));

    // A second machine of the same binary gets the same parsed schema without fetching it,
    // even under a policy that checks every command.
    let transcript_b = dir.path().join("b.jsonl");
    let b = vm_none(dir.path());
    b.set_qmp_transcript(Some(transcript_b.clone()));
    b.set_schema_policy(SchemaPolicy::strict());
    b.launch().unwrap();
    b.cmd("query-status", None).unwrap();
    assert!(Arc::ptr_eq(&first, &b.schema().unwrap()));
    let b_sent = sent(&transcript_b);
    assert!(
        !b_sent.iter().any(|c| c == "query-qmp-schema"),
        "the cached schema was fetched again: {b_sent:?}"
    );
    a.shutdown(T).unwrap();
    b.shutdown(T).unwrap();
}

#[test]
fn the_greeting_says_version_package_and_capabilities() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    assert!(vm.greeting().is_none(), "no greeting before a launch");
    vm.launch().unwrap();
    let g = vm.greeting().unwrap();
    let version = vm.cmd("query-version", None).unwrap();
    assert_eq!(g.version.0, version["qemu"]["major"].as_u64().unwrap());
    assert_eq!(g.version.1, version["qemu"]["minor"].as_u64().unwrap());
    assert_eq!(g.version.2, version["qemu"]["micro"].as_u64().unwrap());
    assert_eq!(g.package, version["package"].as_str().unwrap());
    assert!(g.capabilities.iter().any(|c| c == "oob"), "{g:?}");
    vm.shutdown(T).unwrap();
}

#[test]
fn feature_queries_answer_for_the_qemu_in_use() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.launch().unwrap();
    let s = vm.schema().unwrap();
    let present = [
        "blockdev-add",
        "blockdev-add/arg-type/+file/aio/^io_uring",
        "blockdev-add/arg-type/+file/aio/^native",
        "blockdev-add/arg-type/+file/filename",
        "blockdev-add/arg-type/+file/filename/!string",
        "blockdev-add/arg-type/*node-name",
        // The base members stay reachable after a variant.
        "blockdev-add/arg-type/+file/node-name",
        // Through the alternate BlockdevRef (a reference or options) into the options.
        "blockdev-add/arg-type/+qcow2/file/+file/filename",
        "blockdev-add/arg-type/+qcow2/file/!string",
        // Arrays are looked through.
        "migrate-set-capabilities/arg-type/capabilities/capability/^x-colo/$unstable",
        "query-status/ret-type/status/^running",
        "query-status/ret-type/running/!boolean",
        "drive-backup/$deprecated",
        "SHUTDOWN/arg-type/reason/^host-qmp-quit",
        "query-yank",
    ];
    for path in present {
        assert!(s.query(path).unwrap(), "{path} should be present");
    }
    let absent = [
        "blockdev-add/arg-type/+file/aio/^io_uringx",
        "blockdev-add/arg-type/*driver",
        "blockdev-add/arg-type/+file/filename/!int",
        "blockdev-add/arg-type/+nosuchdriver",
        "query-status/ret-type/nonexistent",
        "query-status/$deprecated",
        "migrate-set-capabilities/arg-type/capabilities/capability/^xbzrle/$unstable",
        "no-such-command",
        "no-such-command/arg-type/x",
    ];
    for path in absent {
        assert!(!s.query(path).unwrap(), "{path} should be absent");
    }
    for (path, component) in [
        ("blockdev-add/argtype/+file", "component 2 (\"argtype\")"),
        ("query-status/ret-type/status/^running/x", "component 5"),
        ("query-status/ret-type//x", "component 3"),
        ("SHUTDOWN/ret-type", "component 2"),
        ("query-status/ret-type/running/!bool", "not a JSON type"),
        ("", "component 1"),
        ("query-status/ret-type/+", "a prefix without a name"),
    ] {
        match s.query(path) {
            Err(Error::Invalid(why)) => assert!(why.contains(component), "{path}: {why}"),
            other => panic!("{path}: {other:?}"),
        }
    }

    let add = s.command("blockdev-add").unwrap();
    assert!(!add.allow_oob);
    let driver = add.arguments.iter().find(|a| a.name == "driver").unwrap();
    assert!(!driver.optional && driver.variants.iter().any(|v| v == "qcow2"));
    let node = add
        .arguments
        .iter()
        .find(|a| a.name == "node-name")
        .unwrap();
    assert!(node.optional && node.kind == "str", "{node:?}");
    for oob in ["migrate-pause", "migrate-recover", "yank", "query-yank"] {
        assert!(s.command(oob).unwrap().allow_oob, "{oob}");
    }
    assert!(s.command("no-such-command").is_none());
    assert!(s.command("SHUTDOWN").is_none() && s.has_event("SHUTDOWN"));
    vm.shutdown(T).unwrap();
}

#[test]
fn strict_checks_refuse_before_sending_and_name_the_path() {
    let dir = scratch();
    let transcript = dir.path().join("t.jsonl");
    let vm = vm_none(dir.path());
    vm.set_qmp_transcript(Some(transcript.clone()));
    vm.set_schema_policy(SchemaPolicy::strict());
    vm.launch().unwrap();

    let (path, rule, msg) = refused(vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "null-co", "node_name": "n0"})),
    ));
    assert_eq!(
        (path.as_str(), rule),
        ("arguments.node_name", Rule::UnknownMember)
    );
    assert!(msg.contains("did you mean 'node-name'"), "{msg}");

    let (path, rule, msg) = refused(vm.cmd("query-statsu", None));
    assert_eq!((path.as_str(), rule), ("execute", Rule::UnknownCommand));
    assert!(msg.contains("'query-status'"), "{msg}");

    let (path, rule, _) = refused(vm.cmd("blockdev-add", Some(&json!({"driver": "file"}))));
    assert_eq!(
        (path.as_str(), rule),
        ("arguments.filename", Rule::MissingMember)
    );

    let (path, rule, _) = refused(vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "file", "filename": 5})),
    ));
    assert_eq!(
        (path.as_str(), rule),
        ("arguments.filename", Rule::WrongType)
    );

    let (path, rule, msg) = refused(vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "file", "filename": "/dev/null", "aio": "nativ"})),
    ));
    assert_eq!((path.as_str(), rule), ("arguments.aio", Rule::EnumValue));
    assert!(
        msg.contains("did you mean 'native'") && msg.contains("threads, native"),
        "{msg}"
    );

    // The union's discriminator selects the branch whose members are checked, nested.
    let (path, rule, _) = refused(vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "fil", "filename": "/dev/null"})),
    ));
    assert_eq!((path.as_str(), rule), ("arguments.driver", Rule::EnumValue));
    let (path, rule, msg) = refused(vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "qcow2", "node-name": "q",
                     "file": {"driver": "file", "filenmae": "/x.qcow2"}})),
    ));
    assert_eq!(rule, Rule::MissingMember);
    assert_eq!(path, "arguments.file.filename");
    let err = vm
        .cmd(
            "blockdev-add",
            Some(&json!({"driver": "qcow2", "file": {"driver": "file", "filenmae": "/x"}})),
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("arguments.file.filenmae") && text.contains("did you mean 'filename'"),
        "all refused findings are in the message: {text}"
    );
    assert!(!msg.is_empty());

    // Alternates: a reference is a string, options are an object; a number is neither.
    let (path, rule, msg) = refused(vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "qcow2", "node-name": "q", "file": 5})),
    ));
    assert_eq!((path.as_str(), rule), ("arguments.file", Rule::WrongType));
    assert!(msg.contains("expected one of"), "{msg}");

    // Arrays, to any element.
    let (path, rule, _) = refused(vm.cmd(
        "migrate-set-capabilities",
        Some(&json!({"capabilities": [
            {"capability": "xbzrle", "state": true},
            {"capability": "zero-copy", "state": true}]})),
    ));
    assert_eq!(
        (path.as_str(), rule),
        ("arguments.capabilities[1].capability", Rule::EnumValue)
    );
    let (path, rule, _) = refused(vm.cmd(
        "migrate-set-capabilities",
        Some(&json!({"capabilities": {"capability": "xbzrle", "state": true}})),
    ));
    assert_eq!(
        (path.as_str(), rule),
        ("arguments.capabilities", Rule::WrongType)
    );

    assert!(
        !sent(&transcript)
            .iter()
            .any(|c| c != "qmp_capabilities" && c != "query-qmp-schema"),
        "a refused command was sent: {:?}",
        sent(&transcript)
    );

    // What fits goes through, and QEMU agrees.
    vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "null-co", "node-name": "n0", "size": 4096})),
    )
    .unwrap();
    vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "raw", "node-name": "r0", "file": "n0"})),
    )
    .unwrap();
    // device_add takes the device's properties beyond the schema's driver/bus/id.
    match vm.cmd(
        "device_add",
        Some(&json!({"driver": "no-such-device", "id": "d", "prop": 1})),
    ) {
        Err(Error::Qmp { .. }) => {}
        other => panic!("device_add's extra properties were not sent on: {other:?}"),
    }
    vm.shutdown(T).unwrap();
}

#[test]
fn deprecated_use_is_warned_or_refused_as_asked() {
    let dir = scratch();
    let vm = strict(dir.path());
    let args = json!({"device": "nope", "target": "/nonexistent", "sync": "full"});
    // Strict on what QEMU refuses, but deprecated use is only a warning: QEMU answers.
    match vm.cmd("drive-backup", Some(&args)) {
        Err(Error::Qmp { .. }) => {}
        other => panic!("{other:?}"),
    }
    vm.set_schema_policy(SchemaPolicy {
        deprecated: Level::Strict,
        ..SchemaPolicy::strict()
    });
    let (path, rule, _) = refused(vm.cmd("drive-backup", Some(&args)));
    assert_eq!((path.as_str(), rule), ("execute", Rule::Deprecated));
    vm.shutdown(T).unwrap();
}

#[test]
fn an_event_the_schema_lacks_fails_at_once() {
    let dir = scratch();
    let vm = strict(dir.path());
    let start = std::time::Instant::now();
    match vm.event_wait("SHUTDOWNN", None, T) {
        Err(Error::Refused {
            path,
            rule,
            message,
            ..
        }) => {
            assert_eq!((path.as_str(), rule), ("event", Rule::UnknownEvent));
            assert!(message.contains("did you mean 'SHUTDOWN'"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < T, "it waited out its timeout");
    // A known event waits as usual (nothing queued: a zero wait finds nothing).
    assert_eq!(
        vm.events_wait(
            &[("SHUTDOWN", None), ("STOP", None)],
            std::time::Duration::ZERO
        )
        .unwrap(),
        None
    );
    // Under warn, the typo is only logged.
    vm.set_schema_policy(SchemaPolicy::warn());
    assert_eq!(
        vm.event_wait("SHUTDOWNN", None, std::time::Duration::ZERO)
            .unwrap(),
        None
    );
    vm.shutdown(T).unwrap();
}

#[test]
fn warn_sends_what_strict_would_refuse() {
    let dir = scratch();
    let vm = vm_none(dir.path());
    vm.set_schema_policy(SchemaPolicy::warn());
    vm.launch().unwrap();
    match vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "null-co", "node_name": "n0"})),
    ) {
        Err(Error::Qmp { desc, .. }) => assert!(desc.contains("node_name"), "{desc}"),
        other => panic!("{other:?}"),
    }
    vm.shutdown(T).unwrap();
}
