//! Block jobs and live migration as waits, on a real QEMU: `run_job` on a blockdev-mirror of a
//! qcow2 image (to its end, with auto-dismiss on and off), on a job that fails (blkdebug
//! injects a write error), on one that outlives its timeout or its cancel token; and
//! `migrate_to` between two machines while the Linux guest counts on its console.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use qm::console::Patterns;
use qm::{Cancel, Error, Machine, Wait};
use serde_json::json;
use support::linux_guest::{linux_guest, qemu_args, PROMPT};
use support::vm;

/// A failure bound, never a timing assertion.
const T: Duration = Duration::from_secs(120);

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
}

/// A 4 MiB qcow2 image at `path` whose first MiB is 0x11; an empty one of the same size at
/// `target`.
fn images(src: &Path, dst: &Path) {
    qemu_img(&["create", "-q", "-f", "qcow2", src.to_str().unwrap(), "4M"]);
    let out = Command::new("qemu-io")
        .args(["-c", "write -P 0x11 0 1M", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    qemu_img(&["create", "-q", "-f", "qcow2", dst.to_str().unwrap(), "4M"]);
}

fn machine_none() -> Machine {
    let vm = Machine::new(vm::qemu());
    vm.set_machine("none");
    vm.launch().unwrap();
    vm
}

fn add_qcow2(vm: &Machine, node: &str, path: &Path) {
    vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "qcow2", "node-name": node,
            "file": {"driver": "file", "filename": path}})),
    )
    .unwrap();
}

#[test]
fn a_mirror_runs_to_its_end_and_the_copy_is_identical() {
    let dir = vm::scratch();
    let (src, dst) = (dir.path().join("src.qcow2"), dir.path().join("dst.qcow2"));
    images(&src, &dst);
    let vm = machine_none();
    add_qcow2(&vm, "src", &src);
    add_qcow2(&vm, "dst", &dst);
    // auto-dismiss off: run_job dismisses it, and returns its last state.
    vm.cmd(
        "blockdev-mirror",
        Some(
            &json!({"job-id": "m0", "device": "src", "target": "dst", "sync": "full",
            "auto-dismiss": false}),
        ),
    )
    .unwrap();
    let job = vm.run_job("m0", T).unwrap();
    assert_eq!(job["status"], "concluded", "{job}");
    assert_eq!(vm.cmd("query-jobs", None).unwrap(), json!([]));
    // Again with QEMU's defaults (auto-dismiss on): the job is gone when it ends.
    vm.cmd(
        "blockdev-mirror",
        Some(&json!({"job-id": "m1", "device": "src", "target": "dst", "sync": "full"})),
    )
    .unwrap();
    assert_eq!(vm.run_job("m1", T).unwrap(), json!(null));
    for node in ["src", "dst"] {
        vm.cmd("blockdev-del", Some(&json!({"node-name": node})))
            .unwrap();
    }
    vm.shutdown(T).unwrap();
    let out = Command::new("qemu-img")
        .args(["compare", src.to_str().unwrap(), dst.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_job_that_fails_reports_qemus_error() {
    let dir = vm::scratch();
    let (src, dst) = (dir.path().join("src.qcow2"), dir.path().join("dst.qcow2"));
    images(&src, &dst);
    let vm = machine_none();
    add_qcow2(&vm, "src", &src);
    vm.cmd(
        "blockdev-add",
        Some(&json!({"driver": "blkdebug", "node-name": "bad",
            "inject-error": [{"event": "pwritev", "errno": 5}],
            "image": {"driver": "qcow2", "file": {"driver": "file", "filename": dst}}})),
    )
    .unwrap();
    for (id, dismiss) in [("f0", false), ("f1", true)] {
        vm.cmd(
            "blockdev-mirror",
            Some(
                &json!({"job-id": id, "device": "src", "target": "bad", "sync": "full",
                "auto-dismiss": dismiss}),
            ),
        )
        .unwrap();
        let err = vm.run_job(id, T).unwrap_err();
        let Error::Qmp { desc, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            desc.contains(&format!("job {id} failed")) && desc.contains("Input/output error"),
            "{err}"
        );
    }
    assert_eq!(vm.cmd("query-jobs", None).unwrap(), json!([]));
    let err = vm.run_job("nothing", T).unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err}");
}

#[test]
fn a_job_past_its_timeout_or_cancel_is_cancelled() {
    let dir = vm::scratch();
    let (src, dst) = (dir.path().join("src.qcow2"), dir.path().join("dst.qcow2"));
    images(&src, &dst);
    let vm = machine_none();
    add_qcow2(&vm, "src", &src);
    add_qcow2(&vm, "dst", &dst);
    let slow = |id: &str| {
        // 4 KiB/s: a MiB of data takes minutes.
        vm.cmd(
            "blockdev-mirror",
            Some(
                &json!({"job-id": id, "device": "src", "target": "dst", "sync": "full",
                "speed": 4096, "auto-dismiss": false}),
            ),
        )
        .unwrap();
    };
    slow("s0");
    let err = vm.run_job("s0", Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(
        err.to_string().contains("job \"s0\" did not conclude"),
        "{err}"
    );
    // Cancelled: it concludes (with or without an error), not running any more.
    let job = vm.run_job("s0", T);
    assert!(
        !vm.cmd("query-jobs", None)
            .unwrap()
            .to_string()
            .contains("s0"),
        "{job:?}"
    );

    slow("s1");
    let cancel = Cancel::new();
    let firing = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        firing.cancel();
    });
    let err = vm
        .run_job("s1", Wait::timeout(T).cancel(&cancel))
        .unwrap_err();
    t.join().unwrap();
    assert!(matches!(err, Error::Interrupted), "{err}");
    let _ = vm.run_job("s1", T);
    assert_eq!(vm.cmd("query-jobs", None).unwrap(), json!([]));
}

/// The numbers `n=K` on whole lines of `text`, in order.
fn counts(text: &str) -> Vec<u64> {
    text.split(['\r', '\n'])
        .filter_map(|l| l.strip_prefix("n=")?.parse().ok())
        .collect()
}

#[test]
fn live_migration_loses_no_step_of_a_counting_guest() {
    let configured = || {
        let vm = Machine::new(vm::qemu());
        vm.add_args(qemu_args(&linux_guest()));
        vm.set_console(None, 0);
        vm
    };
    let src = configured();
    src.launch().unwrap();
    src.console_wait(&Patterns::new().success(PROMPT), Duration::from_secs(300))
        .unwrap();
    src.console_send_line(
        "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); echo n=$i; usleep 2000; done",
        "\n",
        T,
    )
    .unwrap();
    src.console_wait(&Patterns::new().success("n=50\r\n"), T)
        .unwrap();
    let dst = configured();
    dst.launch_incoming(T).unwrap();
    src.migrate_to(&dst, T).unwrap();
    assert_eq!(
        src.cmd("query-status", None).unwrap()["status"],
        "postmigrate"
    );
    assert_eq!(dst.cmd("query-status", None).unwrap()["status"], "running");
    // The loop goes on on the destination.
    dst.console_wait(
        &Patterns::new().success(qm::console::Pattern::regex(r"n=\d+\r\n").unwrap()),
        T,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    src.shutdown(T).unwrap();
    let before = String::from_utf8_lossy(&src.console_transcript(None).unwrap()).into_owned();
    let after = String::from_utf8_lossy(&dst.console_transcript(None).unwrap()).into_owned();
    let all = counts(&format!("{before}{after}"));
    let (on_src, on_dst) = (counts(&before), counts(&after));
    assert!(
        on_src.len() >= 50 && !on_dst.is_empty(),
        "{before:?} / {after:?}"
    );
    let first = all[0];
    for (i, n) in all.iter().enumerate() {
        assert_eq!(
            *n,
            first + i as u64,
            "a step lost or repeated around {n}: {all:?}"
        );
    }
    dst.shutdown(T).unwrap();
}
