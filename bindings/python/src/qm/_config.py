"""The configuration calls of `qm.Machine`: what the next launch runs."""

from __future__ import annotations

import os
from typing import Iterable, Optional, Union

from . import _ffi
from ._convert import (
    MonitorSpec,
    _bytes,
    _fd,
    _ms,
    _opt_bytes,
)
from ._handle import MachineHandle

_lib = _ffi.lib


class _Config(MachineHandle):
    """Configuration (applies to the next launch unless a method says otherwise)."""

    def add_args(self, *args: str) -> None:
        """Appends arguments for QEMU after the ones qm builds."""
        raw = [_bytes(a, "argument") for a in args]
        self._call(_lib.qm_add_args, _ffi.str_array(raw), len(raw))

    def set_wrapper(self, argv: Iterable[str]) -> None:
        """Sets the argv prefix QEMU runs under, e.g. `["strace", "-f"]` (never a shell)."""
        if isinstance(argv, (str, bytes)):
            raise TypeError("wrapper must be a sequence of strings, not a single string")
        raw = [_bytes(a, "wrapper argument") for a in argv]
        self._call(_lib.qm_set_wrapper, _ffi.str_array(raw), len(raw))

    def set_name(self, name: str) -> None:
        """Names the machine (prefix of its log and socket files)."""
        self._call(_lib.qm_set_name, _bytes(name, "name"))

    def set_base_temp_dir(self, path: str) -> None:
        """Where the temporary directory is created (default /var/tmp)."""
        self._call(_lib.qm_set_base_temp_dir, _bytes(path, "base_temp_dir"))

    def set_sock_dir(self, path: str) -> None:
        """Where qm-named socket files go (default: the temporary directory)."""
        self._call(_lib.qm_set_sock_dir, _bytes(path, "sock_dir"))

    def set_log_dir(self, path: str) -> None:
        """Writes QEMU's output to `<path>/<name>.log`, kept after shutdown."""
        self._call(_lib.qm_set_log_dir, _bytes(path, "log_dir"))

    def set_monitor(self, address: MonitorSpec) -> None:
        """The QMP monitor: None (a socketpair, the default), a unix socket path (str; "" for
        one qm names in the sock dir), or a `(host, port)` TCP address qm listens on."""
        if address is None:
            self._call(_lib.qm_set_monitor_socketpair)
        elif isinstance(address, tuple):
            if (
                len(address) != 2
                or not isinstance(address[1], int)
                or isinstance(address[1], bool)
            ):
                raise TypeError("a TCP monitor address is a (host, port) tuple")
            host, port = address
            if not 0 <= port <= 65535:
                raise ValueError(f"port {port} is out of range 0..65535")
            self._call(_lib.qm_set_monitor_tcp, _bytes(host, "host"), port)
        elif isinstance(address, (str, os.PathLike)):
            path = os.fspath(address)
            self._call(_lib.qm_set_monitor_unix, _bytes(path, "monitor path") if path else None)
        else:
            raise TypeError(
                f"monitor address must be None, a path or a (host, port) tuple, not "
                f"{type(address).__name__}"
            )

    def set_drain_console(self, drain: bool) -> None:
        """A background reader (in qm) keeps the console flowing; bytes wait for you."""
        self._call(_lib.qm_set_drain_console, bool(drain))

    def set_console_log(self, path: Optional[str]) -> None:
        """Appends every console byte to `path` (implies the drain); None turns it off."""
        self._call(_lib.qm_set_console_log, _opt_bytes(path, "console_log"))

    def set_qmp_timer(self, seconds: Optional[float]) -> None:
        """Bounds the QMP handshake at launch; the default timeout of `qmp`/`cmd`."""
        self._call(_lib.qm_set_qmp_timer, _ms(seconds, "qmp_timer", allow_default=False))

    def set_qmp_monitor(self, enabled: bool = True) -> None:
        """Turns the QMP monitor on (default) or off (then shutdown uses SIGTERM)."""
        self._call(_lib.qm_set_qmp_monitor, bool(enabled))

    def set_machine(self, machine_type: str) -> None:
        """Adds `-machine TYPE`."""
        self._call(_lib.qm_set_machine, _bytes(machine_type, "machine_type"))

    def set_console(self, device_type: Optional[str] = None, index: int = 0) -> None:
        """Adds a console on a socketpair (`-serial chardev:console`, or `-device TYPE,...`)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError("console index must be an int")
        if not 0 <= index < 2**32:
            raise ValueError(f"console index {index} is out of range")
        self._call(_lib.qm_set_console, _opt_bytes(device_type, "device_type"), index)

    def add_monitor_null(self) -> None:
        """Adds an unused `-monitor null`."""
        self._call(_lib.qm_add_monitor_null)

    def add_fd(self, fd: int, fdset: int, opaque: str, opts: str = "") -> None:
        """Passes descriptor `fd` to QEMU as `-add-fd fd=FD,set=FDSET,opaque=OPAQUE[,OPTS]`
        (keep it open until launch returns)."""
        fd = _fd(fd)
        if isinstance(fdset, bool) or not isinstance(fdset, int) or not 0 <= fdset < 2**32:
            raise ValueError(f"fdset must be an int in 0..2**32-1, not {fdset!r}")
        self._call(
            _lib.qm_add_fd,
            fd,
            fdset,
            _bytes(opaque, "opaque"),
            _bytes(opts, "opts") if opts else None,
        )

    def set_console_buffer(self, size: int) -> None:
        """Caps the console's memory in bytes: the transcript and the output no wait consumed
        yet (0: the core's default, 1 MiB; the core raises small values to its minimum).
        Output over the cap that no wait consumed is dropped and reported
        (`ConsoleMatch.dropped`, `console_stats()`); the console log file keeps everything.
        Applies to the running console at once and to later launches."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"console_buffer must be a non-negative int, not {size!r}")
        self._call(_lib.qm_set_console_buffer, size)

    def set_guest_agent(self, channel: Union[bool, str] = True) -> None:
        """Gives the guest a channel to its agent (`qemu-ga`) for `agent`: True (a socketpair
        qm owns), a unix socket path qm listens on ("" for one qm names in the sock dir), or
        False (none, the default). Applies to the next launch."""
        if isinstance(channel, bool):
            self._call(_lib.qm_set_guest_agent, channel)
        elif isinstance(channel, (str, os.PathLike)):
            path = os.fspath(channel)
            self._call(
                _lib.qm_set_guest_agent_unix, _bytes(path, "guest agent path") if path else None
            )
        else:
            raise TypeError(
                f"guest_agent must be a bool or a socket path, not {type(channel).__name__}"
            )

    def set_max_queued_events(self, count: Optional[int]) -> None:
        """Caps the queued, unread QMP events (None: no cap, the default). Over the cap the
        oldest is dropped, and the next call that reads events raises `EventsDropped` once
        (`dropped_events` counts them). Applies at once and to later launches."""
        if count is None:
            value = _ffi.QM_EVENTS_UNLIMITED
        elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"max_queued_events must be a non-negative int or None, not {count!r}"
            )
        else:
            value = count
        self._call(_lib.qm_set_max_queued_events, value)

    @property
    def dropped_events(self) -> int:
        """How many QMP events the `max_queued_events` cap dropped since the last launch."""
        return int(self._peek(_lib.qm_dropped_events) or 0)

    def set_max_message_size(self, size: int) -> None:
        """Caps one message from QEMU, in bytes (default 64 MiB)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"max_message_size must be a non-negative int, not {size!r}")
        self._call(_lib.qm_set_max_message_size, size)

    def set_inherit_fds(self, inherit: bool = True) -> None:
        """Lets QEMU inherit every descriptor of this process that is not close-on-exec
        (`os.set_inheritable`), as `subprocess.Popen(close_fds=False)` does, from the next
        launch. Off by default: QEMU gets the descriptors qm makes for it, those of `add_fd`
        and the `pass_fds` of `launch_argv`, and nothing else."""
        self._call(_lib.qm_set_inherit_fds, bool(inherit))

    def set_qmp_transcript(self, path: Optional[str]) -> None:
        """Writes every QMP message to and from QEMU to `path` as JSON lines (`t`, `dir`:
        out/in/event, `msg`), from the next launch; None turns it off. The console and the
        guest agent, when the machine has them, go to the same file (lines with `chan`
        "console" or "agent"), which the fake QEMU replays."""
        self._call(_lib.qm_set_qmp_transcript, _opt_bytes(path, "qmp_transcript"))
