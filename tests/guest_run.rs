//! `run` in the real Linux guest (`guest/linux`) over both channels: the same script over the
//! console (`Console::run`) and the agent (`guest-exec`), through one `Guest` shape.
//!
//! The tests that leave the guest as they found it share one guest (console + agent); the
//! ones that power it off have their own.

mod support;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use qm::linux_guest::{LinuxGuest, READY};
use qm::{AgentChannel, Channel, Error, Machine};
use support::linux_guest::linux_guest;
use support::vm;

/// Bound of a boot: generous, TCG on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(240);
/// Bound of one command: a failure bound, never a timing assertion.
const T: Duration = Duration::from_secs(120);
const BOTH: [Channel; 2] = [Channel::Console, Channel::Agent];

/// The guest's arguments from the core helper (the one list every language uses).
fn args() -> Vec<String> {
    let g = linux_guest();
    LinuxGuest::new(&g.kernel, &g.initrd).qemu_args()
}

fn boot() -> Machine {
    let vm = Machine::new(vm::qemu());
    vm.add_args(args());
    vm.set_console(None, 0);
    vm.set_guest_agent(Some(AgentChannel::SocketPair));
    vm.launch().unwrap();
    vm.console_wait(&READY.into(), BOOT).unwrap();
    for ch in BOTH {
        vm.guest(ch).wait_ready(BOOT).unwrap();
    }
    vm
}

/// The shared guest, one test at a time (a console runs one wait at a time; the test harness
/// runs tests in parallel).
fn shared() -> (MutexGuard<'static, ()>, &'static Machine) {
    static VM: OnceLock<Machine> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    (turn, VM.get_or_init(boot))
}

#[test]
fn core_args_are_the_build_scripts() {
    // guest/linux/build --qemu-args and qm::linux_guest keep one list.
    assert_eq!(args(), support::linux_guest::qemu_args(&linux_guest()));
}

#[test]
fn output_status_and_stderr_over_both_channels() {
    let (_turn, vm) = shared();
    for ch in BOTH {
        let g = vm.guest(ch);
        let out = g.run("echo hello", T).unwrap();
        assert_eq!(out.stdout, b"hello\n", "{ch:?}");
        assert_eq!(out.status, 0);
        let out = g.run("echo out; echo err >&2; false", T).unwrap();
        assert_eq!(out.status, 1, "{ch:?}");
        match ch {
            Channel::Console => {
                assert_eq!(out.stdout, b"out\nerr\n");
                assert_eq!(out.stderr, None);
            }
            Channel::Agent => {
                assert_eq!(out.stdout, b"out\n");
                assert_eq!(out.stderr.as_deref(), Some(&b"err\n"[..]));
            }
        }
        // Binary bytes, a CR LF of the command's own, escape sequences: verbatim.
        let out = g.run(r"printf '\000\001\377a\r\nb\033[31mc\n'", T).unwrap();
        assert_eq!(out.stdout, b"\x00\x01\xffa\r\nb\x1b[31mc\n", "{ch:?}");
        // Killed by a signal: 128 + N, as $? has it.
        let out = g.run("sh -c 'kill -9 $$'", T).unwrap();
        assert_eq!(out.status, 128 + 9, "{ch:?}");
    }
}

#[test]
fn output_with_the_marker_text_is_output() {
    let (_turn, vm) = shared();
    for ch in BOTH {
        let fake = "QM-RUN-0123456789abcdef-E 0\nQM-RUN-0123456789abcdef-B\n";
        let out = vm
            .guest(ch)
            .run(
                &format!("printf '{}'; echo after", fake.replace('\n', "\\n")),
                T,
            )
            .unwrap();
        assert_eq!(out.stdout_lossy(), format!("{fake}after\n"), "{ch:?}");
        // A marker of this very shape, with the nonce spelled out by the command itself.
        let out = vm
            .guest(ch)
            .run("printf 'QM-RUN-%s-E %d\\n' x 0; echo z", T)
            .unwrap();
        assert_eq!(out.stdout_lossy(), "QM-RUN-x-E 0\nz\n", "{ch:?}");
    }
}

#[test]
fn exit_codes_0_to_255_with_mixed_sizes() {
    // 256 runs per channel in a row, every exit status, outputs of 0 to ~8 KiB.
    let (_turn, vm) = shared();
    for ch in BOTH {
        let g = vm.guest(ch);
        for code in 0..=255u32 {
            let size = (code * 7919) % 8192;
            let cmd = format!("head -c {size} /dev/zero | tr '\\000' x; (exit {code})");
            let out = g
                .run(&cmd, T)
                .unwrap_or_else(|e| panic!("{ch:?} {code}: {e}"));
            assert_eq!(out.status, code as i32, "{ch:?}");
            assert_eq!(out.stdout.len(), size as usize, "{ch:?} {code}");
            assert!(out.stdout.iter().all(|&b| b == b'x'), "{ch:?} {code}");
        }
    }
}

#[test]
fn one_mebibyte_of_random_bytes_verbatim() {
    let (_turn, vm) = shared();
    let agent = vm.guest(Channel::Agent);
    agent
        .run("head -c 1048576 /dev/urandom > /tmp/qm-rand", T)
        .unwrap();
    let want = agent.read_file("/tmp/qm-rand", 2 << 20, T).unwrap();
    assert_eq!(want.len(), 1 << 20);
    for ch in BOTH {
        let out = vm.guest(ch).run("cat /tmp/qm-rand", T).unwrap();
        assert_eq!(out.status, 0);
        assert_eq!(out.stdout.len(), want.len(), "{ch:?}");
        assert!(out.stdout == want, "{ch:?}: the bytes differ");
    }
}

#[test]
fn kernel_messages_are_cut_out_of_the_output() {
    let (_turn, vm) = shared();
    let out = vm
        .console_run(
            "printf abc; echo '<0>qm kernel message' > /dev/kmsg; printf 'def\\n'",
            T,
        )
        .unwrap();
    assert_eq!(out.stdout, b"abcdef\n");
    assert_eq!(out.kernel_messages.len(), 1, "{:?}", out.kernel_messages);
    assert!(out.kernel_messages[0].ends_with("] qm kernel message"));
}

#[test]
fn a_command_that_never_ends_times_out_and_the_next_run_works() {
    let (_turn, vm) = shared();
    let err = vm
        .console_run("sleep 1000", Duration::from_secs(2))
        .unwrap_err();
    assert!(matches!(err, Error::ConsoleTimeout { .. }), "{err}");
    // Ctrl-C went out; the next run resynchronises on its own markers.
    let out = vm.console_run("echo still here", T).unwrap();
    assert_eq!(out.stdout, b"still here\n");
    // A command that printed part of its output before the timeout: nothing of it leaks.
    let err = vm
        .console_run("echo partial; sleep 1000", Duration::from_secs(2))
        .unwrap_err();
    assert!(matches!(err, Error::ConsoleTimeout { .. }), "{err}");
    assert_eq!(vm.console_run("echo next", T).unwrap().stdout, b"next\n");
    // The agent cannot interrupt a program; the next run still works.
    let err = vm
        .guest(Channel::Agent)
        .run("sleep 5", Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    let out = vm.guest(Channel::Agent).run("echo ok", T).unwrap();
    assert_eq!(out.stdout, b"ok\n");
}

#[test]
fn the_console_shell_keeps_its_state_and_the_agent_does_not() {
    let (_turn, vm) = shared();
    let c = vm.guest(Channel::Console);
    c.run("cd /tmp && QM_X=1", T).unwrap();
    assert_eq!(c.run("pwd; echo $QM_X", T).unwrap().stdout, b"/tmp\n1\n");
    c.run("cd /", T).unwrap();
    let a = vm.guest(Channel::Agent);
    assert_eq!(a.run("echo ${QM_X:-unset}", T).unwrap().stdout, b"unset\n");
}

#[test]
fn files_in_and_out_over_both_channels() {
    let (_turn, vm) = shared();
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 256) as u8).collect();
    for ch in BOTH {
        let path = format!("/tmp/qm-file-{ch:?}");
        let g = vm.guest(ch);
        g.write_file(&path, &data, T).unwrap();
        assert_eq!(g.read_file(&path, 1 << 20, T).unwrap(), data, "{ch:?}");
        // Written over one channel, read over the other.
        let other = vm.guest(if ch == Channel::Console {
            Channel::Agent
        } else {
            Channel::Console
        });
        assert_eq!(other.read_file(&path, 1 << 20, T).unwrap(), data, "{ch:?}");
        g.write_file(&path, b"", T).unwrap();
        assert_eq!(g.read_file(&path, 1 << 20, T).unwrap(), b"", "{ch:?}");
    }
    let err = vm
        .guest(Channel::Console)
        .read_file("/nonexistent", 100, T)
        .unwrap_err();
    assert!(err.to_string().contains("No such file"), "{err}");
}

#[test]
fn console_and_agent_runs_at_once_on_one_guest() {
    let (_turn, vm) = shared();
    std::thread::scope(|s| {
        let runs = BOTH.map(|ch| {
            s.spawn(move || {
                for i in 0..25 {
                    let out = vm.guest(ch).run(&format!("echo {ch:?}-{i}"), T).unwrap();
                    assert_eq!(out.stdout_lossy(), format!("{ch:?}-{i}\n"));
                }
            })
        });
        for r in runs {
            r.join().unwrap();
        }
    });
}

#[test]
fn bad_commands_are_refused_before_anything_is_sent() {
    let (_turn, vm) = shared();
    let err = vm.console_run("echo a\necho b", T).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let err = vm.console_run(&"x".repeat(1000), T).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    // Just under the limit: the whole line reaches the shell (busybox keeps 1023 bytes).
    let long = format!("echo {}", "y".repeat(850));
    let out = vm.console_run(&long, T).unwrap();
    assert_eq!(out.stdout.len(), 851);
    // A syntax error is the command's failure, not the frame's.
    let out = vm.console_run("if then fi", T).unwrap();
    assert_eq!(out.status, 2, "{}", out.stdout_lossy());
}

#[test]
fn the_guest_powering_off_during_a_run_ends_it_at_once_and_ends_cleanly() {
    let vm = boot();
    let err = vm.console_run("sleep 1; poweroff -f", T).unwrap_err();
    assert!(matches!(err, Error::ConsoleClosed { .. }), "{err}");
    vm.shutdown(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
}

#[test]
fn the_guest_powering_off_during_an_agent_run_ends_it_at_once() {
    let vm = boot();
    let err = vm
        .guest(Channel::Agent)
        .run("sleep 1; poweroff -f", T)
        .unwrap_err();
    // At once: the agent's port closing (or QEMU's exit) ends the run, not its timeout.
    assert!(
        matches!(err, Error::Disconnected(_) | Error::AgentDisconnected(_)),
        "{err:?}"
    );
    vm.wait(T).unwrap();
    assert_eq!(vm.exitcode(), Some(0));
}
