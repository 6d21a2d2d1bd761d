//! `qm::schema::Schema::parse` on arbitrary JSON, then queries and checks on what parsed.
//!
//! The input is JSON text, a NUL byte, then lines: query paths, and `command<TAB>arguments`
//! pairs to check. Properties:
//! 1. parsing never panics, whatever the JSON (an error is fine);
//! 2. a schema that parsed answers every query path and every check without panicking, and
//!    an invalid path is an `Invalid` error, never a wrong answer for a valid one;
//! 3. every command it lists has a description, and checking it with no arguments reports
//!    only missing members (nothing else can be wrong with nothing);
//! 4. a path to a command that exists holds; one whose first component is absent does not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qm::schema::{Rule, Schema};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (json, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let Ok(schema) = Schema::parse(&value) else {
        return;
    };
    for name in schema.command_names() {
        let command = schema.command(name).expect("a listed command is described");
        assert_eq!(command.name, name);
        for f in schema.check_command(name, None) {
            assert!(
                matches!(
                    f.rule,
                    Rule::MissingMember | Rule::Deprecated | Rule::Unstable
                ),
                "[empty-args] {name}: {f}"
            );
        }
        if !name.is_empty() && !name.contains('/') {
            assert!(schema.query(name).unwrap(), "[command-path] {name}");
        }
    }
    for name in schema.event_names() {
        assert!(schema.check_event(name).iter().all(|f| f.rule.is_feature()));
    }
    let text = String::from_utf8_lossy(rest);
    for line in text.lines() {
        match line.split_once('\t') {
            Some((cmd, args)) => {
                let args = serde_json::from_str::<Value>(args).ok();
                let _ = schema.check_command(cmd, args.as_ref());
            }
            None => {
                let _ = schema.query(line);
                let _ = schema.check_event(line);
            }
        }
    }
    let _ = schema.heap_size();
});
