//! The fake QEMU (`qm-fake-qemu`, issue #23) against the real one, both driven by qm's Rust
//! API — the point is how much faster a test runs on the fake, so the "raw" side of these
//! metrics is the **real QEMU** and the "subject" side the fake:
//!
//! - `fake_launch_ready`: `Machine::launch` until QMP is negotiated, ms (the fake with the empty
//!   script: its default greeting, `qmp_capabilities` and `quit` answered by the fake itself);
//!   shutdown untimed, and the fake's verdict (exit status 0) checked after each.
//! - `fake_qmp_rtt`: one `query-status` round trip, µs; the fake follows a script of exactly
//!   as many `query-status` expectations (matched by name) as the segment sends, each with
//!   QEMU's reply, and its verdict says every one was met.
//!
//! The fake is `qm::fake::binary_path()`: `bench/run` builds `qm-fake-qemu` beside this
//! program (or set `QM_FAKE_QEMU`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use qm::Machine;

use crate::raw::Res;
use crate::{e, ms, order, qm_launch, qm_query_status, us, Out, Params, Side, WAIT};

/// A machine on the fake, following `script` (none: the empty script).
fn fake_launch(script: Option<&Path>) -> Res<Machine> {
    let fake = qm::fake::binary_path();
    if !fake.is_file() {
        return Err(format!(
            "no fake QEMU at {} (bench/run builds it; or set QM_FAKE_QEMU)",
            fake.display()
        ));
    }
    let vm = Machine::new(fake.to_string_lossy());
    vm.set_machine("none");
    if let Some(script) = script {
        vm.add_args(["-qm-fake-script".to_owned(), script.display().to_string()]);
    }
    vm.launch().map_err(e)?;
    Ok(vm)
}

/// Shuts the fake down and checks its verdict: exit status 0, the script followed.
fn fake_shutdown(vm: Machine) -> Res<()> {
    vm.shutdown(WAIT).map_err(e)?;
    match vm.exitcode() {
        Some(0) => Ok(()),
        other => Err(format!(
            "the fake's verdict: exit status {other:?}; its log:\n{}",
            vm.get_log().unwrap_or_default()
        )),
    }
}

pub fn fake_launch_ready(p: &Params, out: &mut Out) -> Res<()> {
    let q = p.qemu();
    // Warm up: page cache, qm's spawner thread.
    qm_launch(&q)?.shutdown(WAIT).map_err(e)?;
    fake_shutdown(fake_launch(None)?)?;
    for i in 0..p.get("reps", 40) {
        out.pair();
        for side in order(i) {
            let t = Instant::now();
            let vm = match side {
                Side::Raw => qm_launch(&q)?,
                Side::Qm => fake_launch(None)?,
            };
            out.push(side, ms(t.elapsed()));
            match side {
                Side::Raw => vm.shutdown(WAIT).map_err(e)?,
                Side::Qm => fake_shutdown(vm)?,
            }
        }
    }
    Ok(())
}

/// A script of `n` `query-status` expectations and replies (QEMU 7.2's reply on `-machine
/// none`).
fn write_status_script(path: &Path, n: usize) -> Res<()> {
    let mut text = String::from("{\"qm-fake\": 1, \"idle\": 120}\n");
    for _ in 0..n {
        text.push_str(
            "{\"dir\": \"out\", \"msg\": {\"execute\": \"query-status\"}, \"match\": \"name\"}\n\
             {\"dir\": \"in\", \"msg\": {\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}}\n",
        );
    }
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|err| format!("{}: {err}", path.display()))
}

pub fn fake_qmp_rtt(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 2), p.get("reps", 250));
    const WARM: usize = 100;
    let dir: PathBuf = std::env::temp_dir().join(format!("qm-bench-fake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let script = dir.join("status.jsonl");
    let result = (|| {
        write_status_script(&script, WARM + blocks * reps)?;
        for seg in 0..p.get("segments", 20) {
            out.pair();
            let (real, fake) = if seg % 2 == 0 {
                let real = qm_launch(&p.qemu())?;
                (real, fake_launch(Some(&script))?)
            } else {
                let fake = fake_launch(Some(&script))?;
                (qm_launch(&p.qemu())?, fake)
            };
            for _ in 0..WARM {
                qm_query_status(&real)?;
                qm_query_status(&fake)?;
            }
            for block in 0..blocks {
                for side in order(block) {
                    let vm = match side {
                        Side::Raw => &real,
                        Side::Qm => &fake,
                    };
                    for _ in 0..reps {
                        let t = Instant::now();
                        qm_query_status(vm)?;
                        out.push(side, us(t.elapsed()));
                    }
                }
            }
            real.shutdown(WAIT).map_err(e)?;
            fake_shutdown(fake)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
