"""SSH to dom0 (through QEMU's loopback hostfwd) and to the domU (dom0 as jump host).

Host keys are the ones generated at image build; they are pinned here with paramiko's
RejectPolicy, so an unknown or changed key refuses the connection. (Fabric's Connection
installs AutoAddPolicy by default, which is why this module drives paramiko directly.)
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ..errors import GuestCommandError, LaunchError

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    name: str          # "dom0" / "domu"
    host: str
    port: int
    host_key: str      # "ssh-ed25519 AAAA..." as recorded at image build
    user: str = "root"

    def known_hosts_line(self) -> str:
        host = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{host} {self.host_key}"


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def _pkey(host_key: str) -> paramiko.PKey:
    kind, b64 = host_key.split()[:2]
    if kind != "ssh-ed25519":
        raise ValueError(f"unsupported pinned host key type {kind}")
    return paramiko.Ed25519Key(data=base64.b64decode(b64))


def command_string(cmd: Sequence[str] | str) -> str:
    """Remote commands are argv lists, quoted for the remote shell; a str is a script."""
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


class Shell:
    """One authenticated SSH connection to a guest."""

    def __init__(self, endpoint: Endpoint, client: paramiko.SSHClient):
        self.endpoint = endpoint
        self.client = client

    @classmethod
    def connect(cls, endpoint: Endpoint, key_file: Path, sock: paramiko.Channel | None = None,
                timeout: float = 20.0) -> Shell:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        hk_name = endpoint.host if endpoint.port == 22 else f"[{endpoint.host}]:{endpoint.port}"
        client.get_host_keys().add(hk_name, "ssh-ed25519", _pkey(endpoint.host_key))
        client.connect(endpoint.host, port=endpoint.port, username=endpoint.user, key_filename=str(key_file),
                       look_for_keys=False, allow_agent=False, sock=sock, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        return cls(endpoint, client)

    def is_active(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()

    def run(self, cmd: Sequence[str] | str, timeout: float = 120.0, check: bool = True,
            stdin: bytes | None = None) -> Result:
        """Run a command, wait for it (bounded), return its output."""
        text = command_string(cmd)
        LOG.debug("%s$ %s", self.endpoint.name, text)
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise GuestCommandError(f"{self.endpoint.name}: SSH connection is closed")
        chan = transport.open_session(timeout=30)
        chan.settimeout(timeout)
        try:
            chan.exec_command(text)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                else:
                    if time.monotonic() > deadline:
                        raise GuestCommandError(f"{self.endpoint.name}: `{text}` timed out after {timeout:.0f} s")
                    time.sleep(0.02)
            status = chan.recv_exit_status()
        except TimeoutError:
            raise GuestCommandError(f"{self.endpoint.name}: `{text}` timed out after {timeout:.0f} s") from None
        finally:
            chan.close()
        res = Result(status, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and status != 0:
            msg = (res.stderr.strip() or res.stdout.strip()).splitlines()
            raise GuestCommandError(f"{self.endpoint.name}: `{text}` failed with status {status}: "
                                    f"{msg[-1] if msg else ''}", status, res.stdout, res.stderr)
        return res

    def stream(self, cmd: Sequence[str] | str) -> Stream:
        """Start a command and read its stdout line by line as it arrives."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise GuestCommandError(f"{self.endpoint.name}: SSH connection is closed")
        chan = transport.open_session(timeout=30)
        chan.exec_command(command_string(cmd))
        return Stream(chan)

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        with self.client.open_sftp() as sftp:
            with sftp.open(remote, "wb") as f:
                f.write(data)
            sftp.chmod(remote, mode)

    def get_bytes(self, remote: str) -> bytes:
        with self.client.open_sftp() as sftp, sftp.open(remote, "rb") as f:
            return f.read()

    def jump_channel(self, host: str, port: int = 22, timeout: float = 20.0) -> paramiko.Channel:
        """A direct-tcpip channel through this host, used as the socket of a nested connection."""
        transport = self.client.get_transport()
        if transport is None:
            raise GuestCommandError(f"{self.endpoint.name}: SSH connection is closed")
        return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)

    def close(self) -> None:
        """Idempotent and quiet: closing a connection that died with its guest is not an error."""
        with contextlib.suppress(Exception):
            self.client.close()


class Stream:
    """Lines of a running remote command; every line keeps the host time it arrived."""

    def __init__(self, chan: paramiko.Channel):
        self.chan = chan
        self._buf = bytearray()

    def lines(self, idle_timeout: float | None = None) -> Iterator[tuple[float, str]]:
        self.chan.settimeout(idle_timeout)
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl]).decode(errors="replace")
                del self._buf[: nl + 1]
                yield time.time(), line
                continue
            try:
                data = self.chan.recv(65536)
            except TimeoutError:
                return
            if not data:
                if self._buf:
                    yield time.time(), bytes(self._buf).decode(errors="replace")
                    self._buf.clear()
                return
            self._buf += data

    def exit_status(self) -> int | None:
        return self.chan.recv_exit_status() if self.chan.exit_status_ready() else None

    def stderr_tail(self, limit: int = 2000) -> str:
        """What the command wrote to stderr so far (the end of it)."""
        out = bytearray()
        while self.chan.recv_stderr_ready():
            out += self.chan.recv_stderr(65536)
        return bytes(out[-limit:]).decode(errors="replace").strip()

    def close(self) -> None:
        self.chan.close()


def wait_for_shell(connect: Callable[[], Shell], timeout: float, what: str,
                   alive: Callable[[], None] | None = None) -> Shell:
    """Retry ``connect`` until it works; ``alive`` raises if the machine died meanwhile.

    A host-key mismatch is not retried: it means the guest is not the one we built.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive:
            alive()
        try:
            return connect()
        except paramiko.BadHostKeyException as exc:
            raise LaunchError(f"{what}: host key does not match the pinned key: {exc}",
                              hint="rebuild images with `xdh images build --force`") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            last = exc
            time.sleep(2)
    raise LaunchError(f"timed out after {timeout:.0f} s waiting for SSH to {what} (last error: {last})")
