#!/usr/bin/env python3
"""The Python subject of `make bench` (protocol: bench/README.md).

    qm_bench_py.py METRIC qemu=/path/to/qemu key=value ... [baseline=raw|seed]

The measured side ("subject" lines) is qm's drop-in `qemu.machine.QEMUMachine`. The baseline
("raw" lines), alternating with it in this same process, is either
  - raw:  a minimal QMP client written here (subprocess + a blocking socketpair, no library),
          what Python itself allows; or
  - seed: QEMU's own QEMUMachine (seed 004) with qemu.qmp from PyPI, loaded from the package
          directory given as seed=DIR (bench/python/run extracts it at run time).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

BASE = ["-display", "none", "-vga", "none"]
MACHINE = ["-machine", "none"]

out: List[str] = []  # samples, printed at the end (never while timing)


def emit(line: str) -> None:
    out.append(line)


def die(msg: str) -> None:
    print(f"qm_bench_py: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- the raw baseline: a minimal QMP client ------------------------------------------------


class RawQemu:
    """QEMU on a socketpair monitor; blocking reads until the reply with our id."""

    def __init__(self, qemu: str) -> None:
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.buf = bytearray()
        self.next_id = 0
        self.proc = subprocess.Popen(
            [
                qemu,
                *BASE,
                "-chardev",
                f"socket,id=mon,fd={theirs.fileno()}",
                "-mon",
                "chardev=mon,mode=control",
                *MACHINE,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        greeting = self._line()
        if b"QMP" not in greeting:
            die(f"raw: bad greeting {greeting!r}")
        self.execute("qmp_capabilities")

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 1]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                die("raw: QEMU closed the monitor")
            self.buf += chunk

    def send(self, cmd: str, args: Optional[Dict[str, Any]] = None) -> str:
        self.next_id += 1
        ident = f"r{self.next_id}"
        msg: Dict[str, Any] = {"execute": cmd, "id": ident}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        return ident

    def reply(self, ident: str) -> Dict[str, Any]:
        while True:
            msg = json.loads(self._line())
            if msg.get("id") == ident:
                return msg  # type: ignore[no-any-return]

    def execute(
        self, cmd: str, args: Optional[Dict[str, Any]] = None
    ) -> Dict[str, Any]:
        return self.reply(self.send(cmd, args))

    def wait_event(self, name: str) -> Dict[str, Any]:
        while True:
            msg = json.loads(self._line())
            if msg.get("event") == name:
                return msg  # type: ignore[no-any-return]

    def quit(self) -> None:
        self.execute("quit")
        self.proc.wait()
        self.sock.close()


# ---- the sides ------------------------------------------------------------------------------


def dropin_class() -> Any:
    from qemu.machine import QEMUMachine

    return QEMUMachine


def seed_class(seed_dir: str) -> Any:
    sys.path.insert(0, seed_dir)
    module = importlib.import_module("seed004.machine")
    return module.QEMUMachine


class Side:
    """One way to run QEMU: launch, a command, stop→STOP, shutdown."""

    def launch(self) -> Any: ...
    def rtt(self, vm: Any) -> None: ...
    def stop_event(self, vm: Any) -> None: ...
    def cont_resume(self, vm: Any) -> None: ...
    def shutdown(self, vm: Any) -> None: ...


class RawSide(Side):
    def __init__(self, qemu: str) -> None:
        self.qemu = qemu

    def launch(self) -> RawQemu:
        return RawQemu(self.qemu)

    def rtt(self, vm: RawQemu) -> None:
        if b"running" not in json.dumps(vm.execute("query-status")).encode():
            die("raw: bad reply")

    def stop_event(self, vm: RawQemu) -> None:
        ident = vm.send("stop")
        vm.wait_event("STOP")
        vm.reply(ident)

    def cont_resume(self, vm: RawQemu) -> None:
        ident = vm.send("cont")
        vm.wait_event("RESUME")
        vm.reply(ident)

    def shutdown(self, vm: RawQemu) -> None:
        vm.quit()


class MachineSide(Side):
    """A QEMUMachine class: qm's drop-in, or the seed's."""

    def __init__(self, qemu: str, cls: Any) -> None:
        self.qemu = qemu
        self.cls = cls

    def launch(self) -> Any:
        vm = self.cls(self.qemu, args=MACHINE)
        vm.launch()
        return vm

    def rtt(self, vm: Any) -> None:
        if vm.cmd("query-status")["status"] != "running":
            die("bad reply")

    def stop_event(self, vm: Any) -> None:
        vm.cmd("stop")
        vm.event_wait("STOP", timeout=10)

    def cont_resume(self, vm: Any) -> None:
        vm.cmd("cont")
        vm.event_wait("RESUME", timeout=10)

    def shutdown(self, vm: Any) -> None:
        vm.shutdown()


# ---- metrics --------------------------------------------------------------------------------


def ordered(k: int, base: Side, dut: Side) -> List[Tuple[str, Side]]:
    sides = [("raw", base), ("subject", dut)]
    return sides if k % 2 == 0 else sides[::-1]


def qmp_rtt(base: Side, dut: Side, p: Dict[str, int]) -> None:
    for seg in range(p["segments"]):
        emit("pair")
        vms = {"raw": base.launch(), "subject": dut.launch()}
        sides = {"raw": base, "subject": dut}
        for name in ("raw", "subject"):  # warm up
            for _ in range(20):
                sides[name].rtt(vms[name])
        for b in range(p["blocks"]):
            for name, side in ordered(seg + b, base, dut):
                vm = vms[name]
                for _ in range(p["reps"]):
                    t = time.perf_counter_ns()
                    side.rtt(vm)
                    emit(f"{name} {(time.perf_counter_ns() - t) / 1000:.3f}")
        for name in ("raw", "subject"):
            sides[name].shutdown(vms[name])


def event_latency(base: Side, dut: Side, p: Dict[str, int]) -> None:
    for seg in range(p["segments"]):
        emit("pair")
        vms = {"raw": base.launch(), "subject": dut.launch()}
        for b in range(p["blocks"]):
            for name, side in ordered(seg + b, base, dut):
                vm = vms[name]
                for _ in range(p["reps"]):
                    t = time.perf_counter_ns()
                    side.stop_event(vm)
                    emit(f"{name} {(time.perf_counter_ns() - t) / 1000:.3f}")
                    side.cont_resume(vm)
        base.shutdown(vms["raw"])
        dut.shutdown(vms["subject"])


def launch_ready(base: Side, dut: Side, p: Dict[str, int]) -> None:
    for k in range(p["reps"]):
        if k % 2 == 0:
            emit("pair")
        for name, side in ordered(k // 2 + k, base, dut):
            t = time.perf_counter_ns()
            vm = side.launch()
            emit(f"{name} {(time.perf_counter_ns() - t) / 1e6:.4f}")
            side.shutdown(vm)


def shutdown(base: Side, dut: Side, p: Dict[str, int]) -> None:
    for k in range(p["reps"]):
        if k % 2 == 0:
            emit("pair")
        for name, side in ordered(k // 2 + k, base, dut):
            vm = side.launch()
            t = time.perf_counter_ns()
            side.shutdown(vm)
            emit(f"{name} {(time.perf_counter_ns() - t) / 1e6:.4f}")


def _rtt_worker(start: threading.Barrier, n: int, side: Side, vm: Any) -> None:
    start.wait()
    for _ in range(n):
        side.rtt(vm)


def _launch_worker(
    gate: threading.Barrier,
    side: Side,
    vms: List[Any],
    i: int,
    errors: List[BaseException],
) -> None:
    gate.wait()  # every caller thread exists before the first reading
    try:
        vms[i] = side.launch()
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
    gate.wait()  # all launched: the main thread reads threads and RSS
    gate.wait()  # read: the caller threads may end


def qmp_threads(base: Side, dut: Side, p: Dict[str, int]) -> None:
    reps, nthreads = p["reps"], p["threads"]
    for seg in range(p["segments"]):
        emit("pair")
        raw_vm, dut_vm = base.launch(), dut.launch()
        for b in range(p["blocks"]):
            for name, _side in ordered(seg + b, base, dut):
                if name == "raw":
                    t = time.perf_counter()
                    for _ in range(reps):
                        base.rtt(raw_vm)
                    emit(f"raw {reps / (time.perf_counter() - t):.1f}")
                else:
                    per = reps // nthreads
                    start = threading.Barrier(nthreads + 1)

                    threads = [
                        threading.Thread(
                            target=_rtt_worker, args=(start, per, dut, dut_vm)
                        )
                        for _ in range(nthreads)
                    ]
                    for th in threads:
                        th.start()
                    start.wait()
                    t = time.perf_counter()
                    for th in threads:
                        th.join()
                    emit(f"subject {per * nthreads / (time.perf_counter() - t):.1f}")
        base.shutdown(raw_vm)
        dut.shutdown(dut_vm)


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def scale(qemu: str, dut: Side, p: Dict[str, int], batch: bool = False) -> None:
    """200 machines up, then down, against the raw client doing the same from one thread.
    qm's side: the drop-in from a thread per machine (a launching caller each, as a harness
    would), or with `batch` the cheaper path, qm.Machine and qm.launch_all from this thread,
    then quit sent to all and each exit waited for, as the raw client does."""
    n = p["machines"]
    # Warm up, as the other subjects do: the page cache, and the descriptors qm opens once per
    # process on its first launch (its watchdog's socket and a /dev/null for its fork
    # handler), which the first round's fd_delta counted as 2 left open (issue #20).
    dut.shutdown(dut.launch())
    for r in range(p["rounds"]):
        emit("pair")
        for name in ("raw", "subject") if r % 2 == 0 else ("subject", "raw"):
            gc.collect()
            fds0 = _fds()
            cpu0 = time.process_time()  # user + system CPU of this process
            if name == "raw":
                threads0, rss0 = _threads(), _rss_kib()
                t = time.perf_counter()
                procs = []
                for _ in range(n):
                    ours, theirs = socket.socketpair()
                    proc = subprocess.Popen(
                        [
                            qemu,
                            *BASE,
                            "-chardev",
                            f"socket,id=mon,fd={theirs.fileno()}",
                            "-mon",
                            "chardev=mon,mode=control",
                            *MACHINE,
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        pass_fds=[theirs.fileno()],
                    )
                    theirs.close()
                    procs.append((proc, ours))
                clients = []
                for proc, ours in procs:
                    c = RawQemu.__new__(RawQemu)
                    c.sock, c.buf, c.next_id, c.proc = ours, bytearray(), 0, proc
                    c._line()
                    c.execute("qmp_capabilities")
                    clients.append(c)
                up = time.perf_counter()
                threads1, rss1 = _threads(), _rss_kib()
                for c in clients:
                    c.send("quit")
                for c in clients:
                    c.reply(f"r{c.next_id}")
                for c in clients:
                    c.proc.wait()
                    c.sock.close()
                down = time.perf_counter()
            elif batch:
                import qm

                threads0, rss0 = _threads(), _rss_kib()
                t = time.perf_counter()
                ms = [qm.Machine(qemu, args=MACHINE) for _ in range(n)]
                failed = [e for e in qm.launch_all(ms) if e is not None]
                if failed:
                    die(f"scale_batch: {failed[0]}")
                up = time.perf_counter()
                threads1, rss1 = _threads(), _rss_kib()
                for m in ms:
                    m.cmd("quit")
                for m in ms:
                    m.wait()
                for m in ms:
                    m.close()
                down = time.perf_counter()
                del ms
            else:
                gate = threading.Barrier(n + 1)
                vms: List[Any] = [None] * n
                errors: List[BaseException] = []

                threads = [
                    threading.Thread(
                        target=_launch_worker, args=(gate, dut, vms, i, errors)
                    )
                    for i in range(n)
                ]
                for th in threads:
                    th.start()
                threads0, rss0 = _threads(), _rss_kib()
                t = time.perf_counter()
                gate.wait()
                gate.wait()
                up = time.perf_counter()
                threads1, rss1 = _threads(), _rss_kib()
                gate.wait()
                for th in threads:
                    th.join()
                if errors:
                    die(f"scale: {errors[0]}")
                downs = [
                    threading.Thread(target=dut.shutdown, args=(vm,)) for vm in vms
                ]
                for th in downs:
                    th.start()
                for th in downs:
                    th.join()
                down = time.perf_counter()
                del vms
            gc.collect()
            emit(f"{name} {(down - t) * 1000:.1f}")
            emit(f"stat up_ms {name} {(up - t) * 1000:.1f}")
            emit(f"stat down_ms {name} {(down - up) * 1000:.1f}")
            emit(f"stat threads_per_machine {name} {(threads1 - threads0) / n:.3f}")
            emit(f"stat rss_kib_per_machine {name} {(rss1 - rss0) / n:.2f}")
            emit(f"stat fd_delta {name} {_fds() - fds0}")
            cpu_ms = (time.process_time() - cpu0) * 1000
            emit(f"stat cpu_ms_per_machine {name} {cpu_ms / n:.3f}")


def main() -> None:
    if len(sys.argv) < 2:
        die(
            "usage: qm_bench_py.py METRIC qemu=BIN key=value ... [baseline=raw|seed seed=DIR]"
        )
    metric = sys.argv[1]
    opts = dict(a.split("=", 1) for a in sys.argv[2:])
    qemu = opts.pop("qemu", "qemu-system-x86_64")
    baseline = opts.pop("baseline", "raw")
    seed_dir = opts.pop("seed", "")
    params = {k: int(v) for k, v in opts.items()}
    dut: Side = MachineSide(qemu, dropin_class())
    if baseline == "raw":
        base: Side = RawSide(qemu)
    elif baseline == "seed":
        if metric in ("qmp_threads", "scale"):
            # The seed's QEMUMachine is not thread-safe (one asyncio loop per connection
            # behind a synchronous wrapper): these metrics have no seed baseline.
            print(
                f"skip the seed's QEMUMachine is not thread-safe; {metric} needs threads"
            )
            return
        base = MachineSide(qemu, seed_class(seed_dir))
    else:
        die(f"unknown baseline {baseline}")
    import qm

    emit(
        f"# python {sys.version.split()[0]}, qm {qm.__version__}, libqm {qm.library_path()}"
    )
    runners: Dict[str, Callable[[], None]] = {
        "qmp_rtt": lambda: qmp_rtt(base, dut, params),
        "qmp_threads": lambda: qmp_threads(base, dut, params),
        "launch_ready": lambda: launch_ready(base, dut, params),
        "shutdown": lambda: shutdown(base, dut, params),
        "event_latency": lambda: event_latency(base, dut, params),
        "scale": lambda: scale(qemu, dut, params),
        "scale_batch": lambda: scale(qemu, dut, params, batch=True),
    }
    if metric not in runners:
        die(f"unknown metric {metric}")
    runners[metric]()
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
