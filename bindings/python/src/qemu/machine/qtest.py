"""QEMU's qtest: QEMUQtestProtocol (the qtest line protocol on a socket) and
QEMUQtestMachine (a QEMUMachine with a qtest socket and `-accel qtest`)."""

from __future__ import annotations

import os
import socket
from typing import List, Optional, Sequence, TextIO

import qm

from .machine import QEMUMachine, SocketAddrT


class QEMUQtestProtocol:
    """A connection to a qtest socket.

    :param address: a unix socket path, or a (host, port) tuple
    :param server: listen on the address (QEMU connects) instead of connecting

    No connection is made by the constructor: `connect()` or `accept()` does.
    """

    def __init__(self, address: SocketAddrT, server: bool = False):
        self._address = address
        family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sockfile: Optional[TextIO] = None
        if server:
            self._sock.bind(address)
            self._sock.listen(1)

    def connect(self) -> None:
        """Connects to the qtest socket."""
        self._sock.connect(self._address)
        self._sockfile = self._sock.makefile(mode="r")

    def accept(self, timeout: Optional[float] = None) -> None:
        """Waits for QEMU to connect (at most `timeout` seconds; None: the socket's)."""
        if timeout is not None:
            self._sock.settimeout(timeout)
        listener = self._sock
        self._sock, _ = listener.accept()
        listener.close()
        self._sock.settimeout(None)
        self._sockfile = self._sock.makefile(mode="r")

    def cmd(self, qtest_cmd: str) -> str:
        """Sends one qtest command and returns QEMU's reply line."""
        if self._sockfile is None:
            raise RuntimeError("qtest socket is not connected")
        self._sock.sendall((qtest_cmd + "\n").encode("utf-8"))
        return self._sockfile.readline()

    def close(self) -> None:
        """Closes the socket."""
        self._sock.close()
        if self._sockfile:
            self._sockfile.close()
            self._sockfile = None

    def settimeout(self, timeout: Optional[float]) -> None:
        """Sets a timeout, in seconds, for the replies."""
        self._sock.settimeout(timeout)


class QEMUQtestMachine(QEMUMachine):
    """A QEMU VM with a qtest socket available."""

    def __init__(
        self,
        binary: str,
        args: Sequence[str] = (),
        wrapper: Sequence[str] = (),
        name: Optional[str] = None,
        base_temp_dir: str = "/var/tmp",
        sock_dir: Optional[str] = None,
        qmp_timer: Optional[float] = None,
    ):
        # pylint: disable=too-many-arguments
        if name is None:
            name = f"qemu-{os.getpid()}"
        if sock_dir is None:
            sock_dir = base_temp_dir
        super().__init__(
            binary,
            args,
            wrapper=wrapper,
            name=name,
            base_temp_dir=base_temp_dir,
            sock_dir=sock_dir,
            qmp_timer=qmp_timer,
        )
        self._qtest: Optional[QEMUQtestProtocol] = None
        self._qtest_path = os.path.join(sock_dir, name + "-qtest.sock")

    @property
    def _base_args(self) -> List[str]:
        args = super()._base_args
        args.extend(["-qtest", f"unix:path={self._qtest_path}", "-accel", "qtest"])
        return args

    def _pre_launch(self) -> None:
        super()._pre_launch()
        self._remove_if_exists(self._qtest_path)
        self._qtest = QEMUQtestProtocol(self._qtest_path, server=True)

    def _post_launch(self) -> None:
        assert self._qtest is not None
        super()._post_launch()
        # QEMU connected while starting, before QMP came up: this does not wait, but is
        # bounded anyway (the QMP timer, or the core's default).
        self._qtest.accept(self._qmp_timer if self._qmp_timer is not None else qm.DEFAULT_TIMEOUT)

    def _post_shutdown(self) -> None:
        if self._qtest is not None:
            self._qtest.close()
            self._qtest = None
        super()._post_shutdown()
        self._remove_if_exists(self._qtest_path)

    def qtest(self, cmd: str) -> str:
        """Sends a qtest command and returns QEMU's reply."""
        if self._qtest is None:
            raise RuntimeError("qtest socket not available")
        return self._qtest.cmd(cmd)
