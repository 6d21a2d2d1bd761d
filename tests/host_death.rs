//! A harness that dies without cleaning up takes its VMs with it: QEMU is started with
//! PR_SET_PDEATHSIG from qm's long-lived spawner thread, so even machines launched from
//! threads that have since exited die with the host process.

mod support;
use support::vm;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
#[ignore = "the host process of host_sigkill_takes_every_qemu_with_it"]
fn child_host_with_five_machines() {
    if std::env::var_os("QM_TEST_CHILD").is_none() {
        return; // only meaningful as the child of the test below
    }
    let dir = vm::scratch();
    let mut machines = Vec::new();
    for _ in 0..5 {
        // Launch from a thread that exits at once: the VM must not die with it.
        let dir = dir.path().to_owned();
        let m = std::thread::spawn(move || {
            let m = vm::vm_none(&dir);
            m.launch().unwrap();
            m
        })
        .join()
        .unwrap();
        println!("pid {}", m.pid().unwrap());
        machines.push(m);
    }
    std::thread::sleep(Duration::from_millis(200));
    for m in &machines {
        assert!(
            m.is_running(),
            "a machine died with the thread that launched it"
        );
        m.cmd("query-status", None).unwrap();
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(600));
}

fn gone(pid: u32) -> bool {
    // Gone, or a zombie waiting for init to reap it: either way no longer running.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

#[test]
fn host_sigkill_takes_every_qemu_with_it() {
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_host_with_five_machines",
            "--ignored",
            "--nocapture",
        ])
        .env("QM_TEST_CHILD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    for line in BufReader::new(host.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(pid) = line.strip_prefix("pid ") {
            pids.push(pid.parse::<u32>().unwrap());
        }
        if line == "ready" {
            break;
        }
    }
    assert_eq!(pids.len(), 5, "the host did not start its machines");
    host.kill().unwrap();
    host.wait().unwrap();
    // PDEATHSIG is immediate; the bound is generous so a loaded machine cannot flake.
    let until = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|&p| gone(p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive: Vec<_> = pids.iter().filter(|&&p| !gone(p)).collect();
    assert!(alive.is_empty(), "QEMUs outlived their host: {alive:?}");
}
