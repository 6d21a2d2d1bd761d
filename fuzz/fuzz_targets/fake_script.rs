//! `qm::fake::Script::parse` (the fake QEMU's script format) on arbitrary text.
//!
//! Properties:
//! 1. never panics;
//! 2. an error names a line of the input (1 ..= its number of lines) and a problem;
//! 3. a parsed script's steps come from distinct lines, in increasing order, within the input,
//!    and each step's line parses alone as the same kind of step (unless it is a reply or a
//!    greeting, which depend on the lines before them);
//! 4. parsing is deterministic (the same text gives the same result).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qm::fake::{Action, Script};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    let first = Script::parse(&text);
    assert_eq!(first, Script::parse(&text), "[deterministic]");
    match first {
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines,
                "[line] {e} of {lines} lines"
            );
            assert!(!e.problem.is_empty(), "[problem]");
        }
        Ok(script) => {
            let mut last = 0;
            for step in &script.steps {
                assert!(
                    step.line > last && step.line <= lines,
                    "[order] {}",
                    step.line
                );
                last = step.line;
                if matches!(step.action, Action::Reply { .. }) {
                    continue;
                }
                let alone = text.lines().nth(step.line - 1).unwrap();
                let again = Script::parse(alone).expect("[alone] a step's line parses alone");
                assert_eq!(again.steps.len(), 1, "[alone] {alone}");
                assert_eq!(again.steps[0].action, step.action, "[alone] {alone}");
            }
        }
    }
});
