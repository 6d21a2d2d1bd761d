"""ConsoleSocket: a `socket.socket` attached to a QEMU character device.

Made by `QEMUMachine.console_socket` on a descriptor from qm; there, draining and logging are
qm's (a reader thread in the core keeps QEMU's side flowing and appends to the console log), so
this object is a plain socket: `recv` returns what is there (at least one byte, or `b''` at end
of file), `settimeout`/`setblocking` behave as on any socket.

Made by hand with `drain=True` (as QEMU's harnesses sometimes do, on an `address` or `sock_fd`
of their own), a thread reads the socket into memory (and into `file`) so the peer never blocks,
and `recv` serves from that buffer with the socket's timeout semantics.
"""

from __future__ import annotations

import socket
import threading
from typing import BinaryIO, Optional

_CHUNK = 65536


class ConsoleSocket(socket.socket):
    """A socket attached to a char device (`address`: a unix socket path, or `sock_fd`)."""

    def __init__(
        self,
        address: Optional[str] = None,
        sock_fd: Optional[int] = None,
        file: Optional[str] = None,
        drain: bool = False,
    ):
        if address is None and sock_fd is None:
            raise ValueError("one of 'address' or 'sock_fd' must be specified")
        if address is not None and sock_fd is not None:
            raise ValueError("can't specify both 'address' and 'sock_fd'")
        if sock_fd is not None:
            super().__init__(fileno=sock_fd)
        else:
            super().__init__(socket.AF_UNIX, socket.SOCK_STREAM)
            self.connect(address)  # type: ignore[arg-type]
        self._logfile: Optional[BinaryIO] = None
        if file:
            self._logfile = open(file, "ab")  # noqa: SIM115 - closed in close()
        self._cond = threading.Condition()
        self._buffer = bytearray()
        self._eof = False
        self._timeout: Optional[float] = None
        self._drain_thread: Optional[threading.Thread] = None
        if drain:
            self._drain_thread = threading.Thread(
                target=self._drain, daemon=True, name="ConsoleSocket-drain"
            )
            self._drain_thread.start()

    def __repr__(self) -> str:
        return (
            f"{super().__repr__().rstrip('>')}, logfile={self._logfile}, "
            f"drain_thread={self._drain_thread}>"
        )

    def _drain(self) -> None:
        """Reads until end of file (or close), keeping every byte for `recv`."""
        while True:
            try:
                data = socket.socket.recv(self, _CHUNK)
            except OSError:
                data = b""
            if data and self._logfile is not None:
                self._logfile.write(data)
                self._logfile.flush()
            with self._cond:
                if data:
                    self._buffer += data
                else:
                    self._eof = True
                self._cond.notify_all()
            if not data:
                return

    def recv(self, bufsize: int = 1, flags: int = 0) -> bytes:
        """Up to `bufsize` bytes: at least one, or `b''` at end of file."""
        if self._drain_thread is None:
            return super().recv(bufsize, flags)
        if flags:
            raise ValueError("flags are not supported by a draining ConsoleSocket")
        with self._cond:
            if not self._cond.wait_for(lambda: self._buffer or self._eof, self._timeout):
                raise socket.timeout("timed out")
            data = bytes(self._buffer[:bufsize])
            del self._buffer[:bufsize]
            return data

    def settimeout(self, value: Optional[float]) -> None:
        """As `socket.settimeout`; for a draining socket, bounds `recv`."""
        if self._drain_thread is None:
            super().settimeout(value)
        else:
            self._timeout = value

    def setblocking(self, flag: bool) -> None:
        """As `socket.setblocking`; for a draining socket, `recv` then waits or not."""
        if self._drain_thread is None:
            super().setblocking(flag)
        else:
            self._timeout = None if flag else 0.0

    def close(self) -> None:
        """Closes the socket (and stops the drain thread, and closes the log)."""
        thread, self._drain_thread = self._drain_thread, None
        if thread is not None:
            try:
                self.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            thread.join()
        super().close()
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None
