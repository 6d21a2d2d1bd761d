//! The `qm` command line (built with `--features cli`) as the CLI tests drive it: through pipes.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::vm::qemu;

/// `qm`, with `QM_QEMU` set to the QEMU the tests use.
pub fn qm_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qm"));
    cmd.env("QM_QEMU", qemu());
    cmd
}

/// Runs `qm ARGS` with `input` on stdin; its exit code, stdout and stderr.
pub fn run_piped(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = qm_bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each line of `out` as JSON (what `--json` prints); panics on a line that is not.
pub fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}
