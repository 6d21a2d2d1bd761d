//! `qm-bench-rust METRIC [key=value …]`: the Rust subject. One run measures one metric, with
//! the raw baseline (`raw.rs`) and the qm Rust API alternating in this same process, and prints
//! the samples in the subject protocol (see `bench/README.md`):
//!
//! ```text
//! raw <value>                  one baseline sample
//! subject <value>              one qm sample
//! stat <name> raw|subject <v>  a side measurement (scale)
//! ```
//!
//! A failure (a wrong reply, an error from QEMU or qm) goes to stderr and exits non-zero.

mod console;
mod fake;
mod guest_run;
mod qga;
mod raw;
mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use qm::Machine;
use raw::{RawVm, Res};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

struct Params(HashMap<String, String>);

impl Params {
    fn get(&self, key: &str, default: usize) -> usize {
        self.0
            .get(key)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{key}={v}: not a number"))
            })
            .unwrap_or(default)
    }
    fn qemu(&self) -> String {
        self.0
            .get("qemu")
            .cloned()
            .unwrap_or_else(|| "qemu-system-x86_64".into())
    }
}

enum Line {
    Sample(Side, f64),
    Stat(&'static str, Side, f64),
    Pair,
}

/// The output lines, printed at the end, never while timing.
#[derive(Default)]
struct Out {
    lines: Vec<Line>,
}

impl Out {
    fn push(&mut self, side: Side, v: f64) {
        self.lines.push(Line::Sample(side, v));
    }
    fn stat(&mut self, name: &'static str, side: Side, v: f64) {
        self.lines.push(Line::Stat(name, side, v));
    }
    /// The samples that follow come from a new pair of machines (or a new alternation).
    fn pair(&mut self) {
        self.lines.push(Line::Pair);
    }
    fn print(&self) {
        use std::io::Write;
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        for line in &self.lines {
            let _ = match line {
                Line::Sample(side, v) => writeln!(stdout, "{} {v}", side.name()),
                Line::Stat(name, side, v) => writeln!(stdout, "stat {name} {} {v}", side.name()),
                Line::Pair => writeln!(stdout, "pair"),
            };
        }
        let _ = stdout.flush();
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
fn e(err: qm::Error) -> String {
    format!("qm: {err}")
}

fn qm_launch(qemu: &str) -> Res<Machine> {
    let vm = Machine::new(qemu);
    vm.set_machine("none");
    vm.launch().map_err(e)?;
    Ok(vm)
}

fn qm_query_status(vm: &Machine) -> Res<()> {
    let ret = vm.cmd("query-status", None).map_err(e)?;
    if ret["status"] != "running" || ret["running"] != true {
        return Err(format!("unexpected query-status return: {ret}"));
    }
    Ok(())
}

fn qm_command_and_event(vm: &Machine, cmd: &str, event: &str) -> Res<Value> {
    vm.cmd(cmd, None).map_err(e)?;
    vm.event_wait(event, None, WAIT)
        .map_err(e)?
        .ok_or_else(|| format!("no {event} event"))
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Raw,
    Qm,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Qm => "subject",
        }
    }
    /// The name a `side=` parameter gives it.
    fn short(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Qm => "qm",
        }
    }
}

/// The order of the two sides in round `round`: raw first on even rounds, qm first on odd
/// ones, so that neither always goes first.
fn order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Raw, Side::Qm]
    } else {
        [Side::Qm, Side::Raw]
    }
}

// ---- metrics --------------------------------------------------------------------------------

/// A fresh pair of machines (launched in alternating order) for each of `segments` segments,
/// so that neither side keeps a QEMU that the scheduler happens to treat worse for the whole
/// run; `body` runs the segment's blocks.
fn segments(
    p: &Params,
    out: &mut Out,
    mut body: impl FnMut(&mut RawVm, &Machine, &mut Out) -> Res<()>,
) -> Res<()> {
    for seg in 0..p.get("segments", 20) {
        out.pair();
        let (mut raw, vm) = if seg.is_multiple_of(2) {
            let raw = RawVm::launch(&p.qemu())?;
            (raw, qm_launch(&p.qemu())?)
        } else {
            let vm = qm_launch(&p.qemu())?;
            (RawVm::launch(&p.qemu())?, vm)
        };
        body(&mut raw, &vm, out)?;
        raw.shutdown()?;
        vm.shutdown(WAIT).map_err(e)?;
    }
    Ok(())
}

fn qmp_rtt(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 2), p.get("reps", 500));
    segments(p, out, |raw, vm, out| {
        for _ in 0..100 {
            raw.query_status()?;
            qm_query_status(vm)?;
        }
        for block in 0..blocks {
            for side in order(block) {
                for _ in 0..reps {
                    let t = Instant::now();
                    match side {
                        Side::Raw => raw.query_status()?,
                        Side::Qm => qm_query_status(vm)?,
                    }
                    out.push(side, us(t.elapsed()));
                }
            }
        }
        Ok(())
    })
}

/// `threads` threads run `per_thread` query-status each on one machine, checking every reply.
fn qm_threads_block(vm: &Machine, threads: usize, per_thread: usize) -> Res<usize> {
    let results: Vec<Res<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    for i in 0..per_thread {
                        qm_query_status(vm).map_err(|err| format!("command {i}: {err}"))?;
                    }
                    Ok(per_thread)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    results.into_iter().sum()
}

fn qmp_threads(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps, threads) = (p.get("blocks", 2), p.get("reps", 400), p.get("threads", 8));
    let per_thread = reps / threads;
    let total = per_thread * threads;
    segments(p, out, |raw, vm, out| {
        for _ in 0..100 {
            raw.query_status()?;
        }
        qm_threads_block(vm, threads, 100 / threads)?;
        for block in 0..blocks {
            let mut qm_rate = 0.0;
            for side in order(block) {
                let t = Instant::now();
                let done = match side {
                    // The baseline's rate is sequential: one command at a time.
                    Side::Raw => {
                        for _ in 0..total {
                            raw.query_status()?;
                        }
                        total
                    }
                    Side::Qm => qm_threads_block(vm, threads, per_thread)?,
                };
                if done != total {
                    return Err(format!("{done} of {total} commands answered"));
                }
                let rate = done as f64 / t.elapsed().as_secs_f64();
                out.push(side, rate);
                if side == Side::Qm {
                    qm_rate = rate;
                }
            }
            // The raw client pipelining as many commands as qm has threads: what QEMU itself
            // can do with that many in flight (`stat pipelined`: raw pipelined, and qm's rate
            // of the same block, for their ratio).
            let t = Instant::now();
            for _ in 0..per_thread {
                raw.query_status_pipelined(threads)?;
            }
            out.stat(
                "pipelined",
                Side::Raw,
                total as f64 / t.elapsed().as_secs_f64(),
            );
            out.stat("pipelined", Side::Qm, qm_rate);
        }
        Ok(())
    })
}

#[allow(clippy::large_enum_variant)] // one value at a time
enum Either {
    Raw(RawVm),
    Qm(Machine),
}

fn launch_side(side: Side, q: &str) -> Res<Either> {
    Ok(match side {
        Side::Raw => Either::Raw(RawVm::launch(q)?),
        Side::Qm => Either::Qm(qm_launch(q)?),
    })
}

fn shutdown_side(vm: Either) -> Res<()> {
    match vm {
        Either::Raw(vm) => vm.shutdown(),
        Either::Qm(vm) => vm.shutdown(WAIT).map_err(e),
    }
}

fn launch_ready(p: &Params, out: &mut Out) -> Res<()> {
    let q = p.qemu();
    // Warm up: page cache, qm's spawner thread.
    for side in order(0) {
        shutdown_side(launch_side(side, &q)?)?;
    }
    for i in 0..p.get("reps", 40) {
        out.pair();
        for side in order(i) {
            let t = Instant::now();
            let vm = launch_side(side, &q)?;
            out.push(side, ms(t.elapsed()));
            shutdown_side(vm)?;
        }
    }
    Ok(())
}

fn shutdown(p: &Params, out: &mut Out) -> Res<()> {
    let q = p.qemu();
    for side in order(0) {
        shutdown_side(launch_side(side, &q)?)?;
    }
    for i in 0..p.get("reps", 40) {
        out.pair();
        for side in order(i) {
            let mut vm = launch_side(side, &q)?;
            match &mut vm {
                Either::Raw(vm) => vm.query_status()?,
                Either::Qm(vm) => qm_query_status(&*vm)?,
            }
            std::thread::sleep(Duration::from_millis(2));
            let t = Instant::now();
            // The machine is dropped after the clock stops: only the shutdown is timed.
            let done = match vm {
                Either::Raw(vm) => vm.shutdown().map(|()| None)?,
                Either::Qm(vm) => vm.shutdown(WAIT).map(|()| Some(vm)).map_err(e)?,
            };
            out.push(side, ms(t.elapsed()));
            drop(done);
        }
    }
    Ok(())
}

fn event_latency(p: &Params, out: &mut Out) -> Res<()> {
    segments(p, out, |raw, vm, out| {
        event_rounds(p, out, |side, cmd, event| match side {
            Side::Raw => raw.command_and_event(cmd, event),
            Side::Qm => {
                let ev = qm_command_and_event(vm, cmd, event)?;
                if ev["event"] != event {
                    return Err(format!("wrong event: {ev}"));
                }
                Ok(())
            }
        })
    })
}

/// `event_latency`'s control: the raw client on both sides, each with a QEMU of its own
/// (launched in alternating order, segment by segment, as `segments` does for raw and qm). Its
/// ratio is what the harness reads for two identical clients: the resolution of
/// `event_latency`'s ratio on this machine, measured in the same run.
fn event_latency_aa(p: &Params, out: &mut Out) -> Res<()> {
    let q = p.qemu();
    for seg in 0..p.get("segments", 20) {
        out.pair();
        let (mut a, mut b) = (RawVm::launch(&q)?, RawVm::launch(&q)?);
        if seg % 2 == 1 {
            std::mem::swap(&mut a, &mut b);
        }
        event_rounds(p, out, |side, cmd, event| match side {
            Side::Raw => a.command_and_event(cmd, event),
            Side::Qm => b.command_and_event(cmd, event),
        })?;
        a.shutdown()?;
        b.shutdown()?;
    }
    Ok(())
}

/// The blocks of one `event_latency` segment: `run(side, command, event)` sends the command
/// and returns once its reply and the event are in hand. Each sample is a `stop` until `STOP`;
/// a `cont` until `RESUME` (not timed) follows it.
fn event_rounds(
    p: &Params,
    out: &mut Out,
    mut run: impl FnMut(Side, &str, &str) -> Res<()>,
) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 2), p.get("reps", 50));
    // `side=raw` or `side=qm`: that side only, for a profiler (`perf stat`, `perf record`).
    let only = p.0.get("side").map(String::as_str);
    for _ in 0..10 {
        for side in order(0) {
            run(side, "stop", "STOP")?;
            run(side, "cont", "RESUME")?;
        }
    }
    for block in 0..blocks {
        for side in order(block) {
            if only.is_some_and(|o| o != side.short()) {
                continue;
            }
            for _ in 0..reps {
                let t = Instant::now();
                run(side, "stop", "STOP")?;
                out.push(side, us(t.elapsed()));
                run(side, "cont", "RESUME")?;
            }
        }
    }
    Ok(())
}

// ---- scale ----------------------------------------------------------------------------------

/// `Threads` and `VmRSS` (KiB) from /proc/self/status.
fn self_status() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("Threads:"), field("VmRSS:"))
}

fn fd_count() -> f64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("listing /proc/self/fd")
        .count() as f64
}

struct Round {
    wall: Duration,
    up: Duration,
    down: Duration,
    threads: f64,
    rss_kib: f64,
    fd_delta: f64,
}

impl Round {
    fn emit(&self, side: Side, n: usize, out: &mut Out) {
        let n = n as f64;
        out.push(side, ms(self.wall));
        out.stat("up_ms", side, ms(self.up));
        out.stat("down_ms", side, ms(self.down));
        out.stat("threads_per_machine", side, self.threads / n);
        out.stat("rss_kib_per_machine", side, self.rss_kib / n);
        out.stat("fd_delta", side, self.fd_delta);
    }
}

/// The baseline: spawn every QEMU from this thread, then negotiate QMP with each in turn
/// (they all start meanwhile); then `quit` to all, and read each reply and reap.
fn scale_raw(q: &str, n: usize) -> Res<Round> {
    let fds0 = fd_count();
    let t0 = Instant::now();
    let (threads0, rss0) = self_status();
    let mut vms = (0..n).map(|_| RawVm::spawn(q)).collect::<Res<Vec<_>>>()?;
    for vm in &mut vms {
        vm.handshake()?;
    }
    let up = t0.elapsed();
    let (threads1, rss1) = self_status();
    let t1 = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for vm in &mut vms {
        ids.push(vm.send("quit")?);
    }
    for (mut vm, id) in vms.into_iter().zip(ids) {
        vm.recv_reply(id, |_| {})?;
        vm.reap()?;
    }
    let down = t1.elapsed();
    Ok(Round {
        wall: t0.elapsed(),
        up,
        down,
        threads: threads1 - threads0,
        rss_kib: rss1 - rss0,
        fd_delta: fd_count() - fds0,
    })
}

/// qm: one caller thread per machine (launch blocks), all started at once; they park on a
/// barrier before creating their machine and after launching it, so that threads and RSS are
/// read with the callers alive both times and only the library's share differs.
fn scale_qm(q: &str, n: usize) -> Res<Round> {
    let fds0 = fd_count();
    let t0 = Instant::now();
    let gate = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            let q = q.to_owned();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || -> Res<()> {
                    // Make this thread's malloc arena exist before the first reading.
                    drop(std::hint::black_box(vec![0u8; 64]));
                    gate.wait(); // all callers exist
                    gate.wait(); // "before" was read
                    let vm = qm_launch(&q);
                    gate.wait(); // all launched (or failed)
                    gate.wait(); // "after" was read
                    let vm = vm?;
                    vm.shutdown(WAIT).map_err(e)
                })
                .map_err(|err| format!("starting a thread: {err}"))
        })
        .collect::<Res<_>>()?;
    gate.wait();
    let (threads0, rss0) = self_status();
    gate.wait();
    gate.wait();
    let up = t0.elapsed();
    let (threads1, rss1) = self_status();
    let t1 = Instant::now();
    gate.wait();
    let mut first_err = None;
    for h in handles {
        let r = h.join().unwrap_or_else(|_| Err("a thread panicked".into()));
        if let (Err(err), None) = (r, &first_err) {
            first_err = Some(err);
        }
    }
    if let Some(err) = first_err {
        return Err(err);
    }
    let down = t1.elapsed();
    Ok(Round {
        wall: t0.elapsed(),
        up,
        down,
        threads: threads1 - threads0,
        rss_kib: rss1 - rss0,
        fd_delta: fd_count() - fds0,
    })
}

/// qm's batch launch: every machine from this one thread with `qm::launch_all` (no thread per
/// machine), then `quit` to each and a wait for each to exit, from the same thread: the raw
/// client's order of work, through qm.
fn scale_batch_qm(q: &str, n: usize) -> Res<Round> {
    let fds0 = fd_count();
    let t0 = Instant::now();
    let (threads0, rss0) = self_status();
    let vms: Vec<Machine> = (0..n)
        .map(|_| {
            let vm = Machine::new(q);
            vm.set_machine("none");
            vm
        })
        .collect();
    let refs: Vec<&Machine> = vms.iter().collect();
    for result in qm::launch_all(&refs, WAIT) {
        result.map_err(e)?;
    }
    let up = t0.elapsed();
    let (threads1, rss1) = self_status();
    let t1 = Instant::now();
    for vm in &vms {
        vm.cmd("quit", None).map_err(e)?;
    }
    for vm in &vms {
        vm.wait(WAIT).map_err(e)?;
    }
    let down = t1.elapsed();
    drop(refs);
    drop(vms);
    Ok(Round {
        wall: t0.elapsed(),
        up,
        down,
        threads: threads1 - threads0,
        rss_kib: rss1 - rss0,
        fd_delta: fd_count() - fds0,
    })
}

/// CPU time (user + system) this process has used so far, ms.
fn cpu_ms() -> f64 {
    // SAFETY: rusage is plain data that getrusage fills.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e3 + tv.tv_usec as f64 / 1e3;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// `scale` (one caller thread per machine) or `scale_batch` (`qm::launch_all` from one thread),
/// against the same raw client. By hand, `scale_batch vs=threads` puts `scale`'s qm round
/// (a thread per machine) on the baseline's side instead of the raw client: the ratio is then
/// what the batch saves over the thread per caller, both through qm, in one process.
fn scale(p: &Params, out: &mut Out, batch: bool) -> Res<()> {
    let (q, n, rounds) = (p.qemu(), p.get("machines", 200), p.get("rounds", 3));
    let vs_threads = match p.0.get("vs").map(String::as_str) {
        None | Some("raw") => false,
        Some("threads") if batch => true,
        Some(other) => return Err(format!("vs={other}: raw, or threads with scale_batch")),
    };
    RawVm::launch(&q)?.shutdown()?;
    qm_launch(&q)?.shutdown(WAIT).map_err(e)?;
    for round in 0..rounds {
        out.pair();
        for side in order(round) {
            let cpu0 = cpu_ms();
            let r = match side {
                Side::Raw if vs_threads => scale_qm(&q, n)?,
                Side::Raw => scale_raw(&q, n)?,
                Side::Qm if batch => scale_batch_qm(&q, n)?,
                Side::Qm => scale_qm(&q, n)?,
            };
            let cpu = cpu_ms() - cpu0;
            r.emit(side, n, out);
            out.stat("cpu_ms_per_machine", side, cpu / n as f64);
        }
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(metric) = args.next() else {
        eprintln!("usage: qm-bench-rust METRIC [key=value …]");
        std::process::exit(2);
    };
    let params = Params(
        args.filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect(),
    );
    let mut out = Out::default();
    let result = match metric.as_str() {
        "qmp_rtt" => qmp_rtt(&params, &mut out),
        "qmp_threads" => qmp_threads(&params, &mut out),
        "launch_ready" => launch_ready(&params, &mut out),
        "shutdown" => shutdown(&params, &mut out),
        "event_latency" => event_latency(&params, &mut out),
        "event_latency_aa" => event_latency_aa(&params, &mut out),
        "scale" => scale(&params, &mut out, false),
        "scale_batch" => scale(&params, &mut out, true),
        "qga_rtt" => qga::qga_rtt(&params, &mut out),
        "qga_exec" => qga::qga_exec(&params, &mut out),
        "console_latency" => console::console_latency(&params, &mut out),
        "console_run" => guest_run::console_run(&params, &mut out),
        "agent_run" => guest_run::agent_run(&params, &mut out),
        "fake_launch_ready" => fake::fake_launch_ready(&params, &mut out),
        "fake_qmp_rtt" => fake::fake_qmp_rtt(&params, &mut out),
        "schema_load" => schema::schema_load(&params, &mut out),
        "schema_strict" => schema::schema_strict(&params, &mut out),
        "schema_check" => schema::schema_check(&params, &mut out),
        other => Err(format!("unknown metric {other}")),
    };
    out.print();
    if let Err(err) = result {
        eprintln!("qm-bench-rust {metric}: {err}");
        std::process::exit(1);
    }
}
