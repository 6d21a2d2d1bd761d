//! A fake QEMU for testing code that drives QEMU through qm, without QEMU.
//!
//! The program `qm-fake-qemu` (built from this crate: `src/bin/qm-fake-qemu.rs`) stands in for
//! `qemu-system-*`: give a [`Machine`](crate::Machine) its path as the binary, and a script
//! with `-qm-fake-script PATH` among the arguments (or in the `QM_FAKE_SCRIPT` environment
//! variable). It reads the arguments qm writes for the monitor (inherited socketpair, unix
//! socket or TCP), the console and the guest agent's channel, ignores the rest, and follows the
//! script: a transcript recorded by qm ([`Machine::set_qmp_transcript`]: QMP, console and
//! agent) replays as it is,
//! and hand-written lines add expectations, errors, events, console text, agent replies and
//! faults. The README's "Testing without QEMU" section documents the script format.
//!
//! The fake's exit status is its verdict (see the `EXIT_*` constants); what went wrong is
//! written to its stderr, which qm keeps as the machine's log ([`Machine::get_log`]).
//!
//! [`Machine::set_qmp_transcript`]: crate::Machine::set_qmp_transcript
//! [`Machine::get_log`]: crate::Machine::get_log

mod args;
mod nonce;
mod run;
mod script;

pub use run::{EXIT_BAD_SCRIPT, EXIT_IDLE, EXIT_NOT_FOLLOWED, EXIT_OK, EXIT_SETUP};
pub use script::{
    default_greeting, Action, Chan, Match, Script, ScriptError, Step, DEFAULT_IDLE, SCRIPT_VERSION,
};

/// The environment variable naming the script when no `-qm-fake-script` argument does.
pub const SCRIPT_ENV: &str = "QM_FAKE_SCRIPT";

/// The fake's `main`: `args` without the program name; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let parsed = match args::parse(args) {
        Ok(a) => a,
        Err(e) => {
            run::say(&format!("bad arguments: {e}"));
            return EXIT_BAD_SCRIPT;
        }
    };
    let path = parsed
        .script
        .clone()
        .or_else(|| std::env::var_os(SCRIPT_ENV).map(Into::into));
    let script = match &path {
        None => Script::parse("").expect("the empty script is valid"),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    run::say(&format!("reading the script {}: {e}", path.display()));
                    return EXIT_BAD_SCRIPT;
                }
            };
            match Script::parse(&text) {
                Ok(s) => s,
                Err(e) => {
                    run::say(&format!("{}: {e}", path.display()));
                    return EXIT_BAD_SCRIPT;
                }
            }
        }
    };
    match run::Runner::connect(
        script,
        parsed.monitor.as_ref(),
        parsed.console.as_ref(),
        parsed.agent.as_ref(),
    ) {
        Ok(runner) => runner.run(),
        Err(e) => {
            run::say(&e);
            EXIT_SETUP
        }
    }
}

/// The environment variable that names the fake's binary for [`binary_path`].
pub const BINARY_ENV: &str = "QM_FAKE_QEMU";

/// The fake's file name.
pub const BINARY_NAME: &str = "qm-fake-qemu";

/// Where the fake QEMU is, for [`Machine::new`](crate::Machine::new): `$QM_FAKE_QEMU` when
/// set; else `qm-fake-qemu` beside the file holding qm's code (the shared library, or the
/// program linking qm statically), in its parent directory, or in `../bin` from it (where
/// `make install` puts it: `PREFIX/bin` beside `PREFIX/lib`), the first that exists; else
/// the bare name, which the launch looks up in `PATH`.
pub fn binary_path() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        return path.into();
    }
    let object = crate::sys::locate::this_object();
    if let Some(dir) = object.as_deref().and_then(std::path::Path::parent) {
        for candidate in [
            dir.join(BINARY_NAME),
            dir.join("..").join(BINARY_NAME),
            dir.join("../bin").join(BINARY_NAME),
        ] {
            if candidate.is_file() {
                return candidate.canonicalize().unwrap_or(candidate);
            }
        }
    }
    BINARY_NAME.into()
}
