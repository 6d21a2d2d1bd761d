//! Templates (qm::template) on the real Linux test guest under TCG: one boot, many clones, each
//! with its own memory, console, agent and disk overlay; a template directory reused by another
//! process without booting.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use qm::console::Patterns;
use qm::{Exec, Machine, Ready, Template};
use serde_json::json;
use support::linux_guest::{linux_guest, qemu_args, PROMPT, READY};
use support::vm;

/// Bound of a boot, a save or a set of clones: generous (TCG, a loaded 2-core machine); a
/// failure bound, never a timing assertion.
const T: Duration = Duration::from_secs(300);

/// The Linux guest as a template in `dir`: console and agent on.
fn template(dir: &Path) -> Template {
    let mut t = Template::new(vm::qemu(), dir);
    t.add_args(qemu_args(&linux_guest()))
        .set_console(None, 0)
        .set_guest_agent(true);
    t
}

fn sh(vm: &Machine, script: &str) -> (Option<i32>, String) {
    let out = vm
        .agent()
        .unwrap()
        .exec(&Exec::new("sh").args(["-c", script]), T)
        .unwrap();
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Boot to the agent, then leave a marker in the guest's tmpfs: what every clone must find.
fn boot_with_marker(vm: &Machine, wait: qm::Wait) -> qm::Result<()> {
    vm.agent()?.sync(wait)?;
    let (code, _) = sh(vm, "echo from-the-template > /tmp/marker");
    assert_eq!(code, Some(0));
    Ok(())
}

/// One template for the tests of this file, prepared once.
fn shared() -> &'static Template {
    static SHARED: OnceLock<(tempfile::TempDir, Template)> = OnceLock::new();
    &SHARED
        .get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("qm-template-")
                .tempdir()
                .unwrap();
            let t = template(dir.path());
            assert!(
                t.prepare_with(boot_with_marker, T).unwrap(),
                "a new directory boots"
            );
            (dir, t)
        })
        .1
}

#[test]
fn clones_find_the_template_state_but_not_each_others_writes() {
    let t = shared();
    let a = t.clone_machine(T).unwrap();
    let b = t.clone_machine(T).unwrap();
    assert_ne!(a.pid(), b.pid());
    for vm in [&a, &b] {
        assert_eq!(
            sh(vm, "cat /tmp/marker"),
            (Some(0), "from-the-template\n".into())
        );
    }
    assert_eq!(sh(&a, "echo only-in-a > /tmp/a").0, Some(0));
    assert_eq!(sh(&a, "cat /tmp/a").1, "only-in-a\n");
    let (code, out) = sh(&b, "cat /tmp/a 2>/dev/null");
    assert_ne!(code, Some(0), "clone b sees clone a's file: {out:?}");
    // The console starts empty: the boot's ready line belongs to the template's run.
    let seen = a.console_transcript(None).unwrap();
    assert!(
        !String::from_utf8_lossy(&seen).contains(READY),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    // ... and works: a newline brings the prompt back.
    a.console_exec("echo $((6*7))", "\n", &Patterns::new().success("42"), T)
        .unwrap();
}

#[test]
fn eight_clones_at_once() {
    let t = shared();
    let clones = t.clones(8, T).unwrap();
    assert_eq!(clones.len(), 8);
    let mut pids: Vec<_> = clones.iter().map(|c| c.pid().unwrap()).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 8, "eight QEMUs");
    for (i, vm) in clones.iter().enumerate() {
        assert_eq!(sh(vm, "cat /tmp/marker").1, "from-the-template\n");
        assert_eq!(
            sh(vm, &format!("echo {i} > /tmp/me; cat /tmp/me")).1,
            format!("{i}\n")
        );
    }
}

#[test]
fn a_clone_can_be_ready_at_the_console_prompt() {
    let mut t = shared().clone();
    t.set_clone_ready(Ready::Console {
        send: Some("\n".into()),
        patterns: Patterns::new().success(PROMPT),
    });
    let vm = t.clone_machine(T).unwrap();
    vm.console_exec(
        "cat /tmp/marker",
        "\n",
        &Patterns::new().success("from-the-template"),
        T,
    )
    .unwrap();
}

#[test]
fn clones_write_their_own_overlays_never_the_template_disk() {
    let dir = tempfile::Builder::new()
        .prefix("qm-template-")
        .tempdir()
        .unwrap();
    let base = dir.path().join("base.raw");
    std::fs::write(&base, vec![0x5au8; 1 << 20]).unwrap();
    let mut t = template(&dir.path().join("templates"));
    t.add_disk(&base, "raw", "if=none,id=disk0")
        .add_args(["-device", "virtio-blk-pci,drive=disk0"]);
    assert!(t.prepare(&Ready::Agent, T).unwrap());
    let template_disk = t.state_dir().unwrap().join("disk0.qcow2");
    let before = std::fs::read(&template_disk).unwrap();

    let a = t.clone_machine(T).unwrap();
    let b = t.clone_machine(T).unwrap();
    // HMP's qemu-io prints on QEMU's stdout: what the command added to the log.
    let hmp = |vm: &Machine, cmd: &str| {
        let before = vm.log_so_far().unwrap_or_default().len();
        vm.cmd("human-monitor-command", Some(&json!({"command-line": cmd})))
            .unwrap();
        vm.log_so_far().unwrap_or_default()[before..].to_owned()
    };
    let written = hmp(&a, "qemu-io disk0 \"write -P 0xab 0 4096\"");
    assert!(written.contains("wrote 4096/4096"), "{written}");
    assert!(hmp(&a, "qemu-io disk0 \"read -P 0xab 0 4096\"").contains("read 4096/4096"));
    // b reads the base's bytes, not a's.
    let other = hmp(&b, "qemu-io disk0 \"read -P 0xab 0 4096\"");
    assert!(other.contains("Pattern verification failed"), "{other}");
    assert!(hmp(&b, "qemu-io disk0 \"read -P 0x5a 0 4096\"").contains("read 4096/4096"));
    // Each clone's disk is its own overlay; the template's is a read-only backing file.
    for vm in [&a, &b] {
        let nodes = vm.cmd("query-named-block-nodes", None).unwrap();
        let nodes = nodes.as_array().unwrap();
        let top = nodes
            .iter()
            .find(|n| {
                n["drv"] == json!("qcow2")
                    && Path::new(n["backing_file"].as_str().unwrap_or_default()) == template_disk
            })
            .unwrap_or_else(|| panic!("{nodes:?}"));
        let file = PathBuf::from(top["file"].as_str().unwrap());
        assert_ne!(file, template_disk);
        assert_eq!(top["ro"], json!(false));
        let backing = nodes
            .iter()
            .find(|n| Path::new(n["file"].as_str().unwrap_or_default()) == template_disk)
            .unwrap_or_else(|| panic!("no node for the template disk: {nodes:?}"));
        assert_eq!(backing["ro"], json!(true), "{backing}");
    }
    drop((a, b));
    assert!(
        std::fs::read(&template_disk).unwrap() == before,
        "the template disk changed"
    );
    assert_eq!(std::fs::read(&base).unwrap(), vec![0x5au8; 1 << 20]);
}

/// Run by `restore_from_a_directory_another_process_made` in a child process: prepares the
/// template in `QM_TEMPLATE_CHILD_DIR`.
#[test]
#[ignore = "a child process's half of restore_from_a_directory_another_process_made"]
fn child_prepares_template() {
    let dir = std::env::var("QM_TEMPLATE_CHILD_DIR").expect("run by the parent test");
    assert!(template(Path::new(&dir))
        .prepare_with(boot_with_marker, T)
        .unwrap());
}

#[test]
fn restore_from_a_directory_another_process_made() {
    let dir = tempfile::Builder::new()
        .prefix("qm-template-")
        .tempdir()
        .unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_prepares_template",
            "--ignored",
            "--nocapture",
        ])
        .env("QM_TEMPLATE_CHILD_DIR", dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");
    let t = template(dir.path());
    assert!(t.is_saved().unwrap());
    assert!(!t.prepare_with(|_, _| panic!("booted again"), T).unwrap());
    let vm = t.clone_machine(T).unwrap();
    assert_eq!(sh(&vm, "cat /tmp/marker").1, "from-the-template\n");
    // Another key (one more argument) is another template: not saved.
    let mut other = template(dir.path());
    other.add_args(["-smp", "1"]);
    assert!(!other.is_saved().unwrap());
    assert_ne!(other.state_dir().unwrap(), t.state_dir().unwrap());
}
