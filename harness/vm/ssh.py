"""SSH to dom0 (through QEMU's loopback hostfwd) and to the domU (dom0 as gateway), over fabric.

Host keys are the ones generated at image build, and they are pinned. fabric's ``Connection``
installs paramiko's AutoAddPolicy when it is built (fabric#1804, #2071), so ``pinned_connection``
replaces it on that instance with RejectPolicy and adds the one pinned key: an unknown or changed
key refuses the connection. No SSH or fabric config file is read (a ``~/.ssh/config`` ProxyJump
would become an internal, unpinned Connection), and the hop through dom0 to the domU is always an
explicit gateway that is itself pinned. tests/unit/test_ssh_pinning.py holds all this against
stub SSH servers.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection  # type: ignore[import-untyped]
from invoke.exceptions import CommandTimedOut, ThreadException, UnexpectedExit

from ..errors import GuestCommandError, LaunchError

LOG = logging.getLogger(__name__)

CHANNEL_TIMEOUT = 30.0   # opening a session, an SFTP channel or the direct-tcpip hop to the domU
KEEPALIVE = 15           # seconds between SSH keepalives
MAX_STDIN = 1024         # see _stdin
# invoke decodes every read (up to 1000 bytes) on its own, which splits UTF-8 characters. latin-1
# maps bytes to str one to one both ways; _text decodes a command's whole output as UTF-8 once.
WIRE = "latin-1"


@dataclass(frozen=True)
class Endpoint:
    name: str          # "dom0" / "domu"
    host: str
    port: int
    host_key: str      # "ssh-ed25519 AAAA..." as recorded at image build
    user: str = "root"

    def known_hosts_line(self) -> str:
        return f"{_known_name(self)} {self.host_key}"


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def _known_name(ep: Endpoint) -> str:
    """The name paramiko looks the host key up under."""
    return ep.host if ep.port == 22 else f"[{ep.host}]:{ep.port}"


def _pkey(host_key: str) -> paramiko.PKey:
    """The pinned key. Image builds make ed25519 host keys; any other type is refused."""
    kind, b64 = host_key.split()[:2]
    if kind != "ssh-ed25519":
        raise ValueError(f"unsupported pinned host key type {kind}")
    return paramiko.PKey.from_type_string(kind, base64.b64decode(b64))


def command_string(cmd: Sequence[str] | str) -> str:
    """Remote commands are argv lists, quoted for the remote shell; a str is a script."""
    return cmd if isinstance(cmd, str) else shlex.join(cmd)


def _config() -> Config:
    """fabric's defaults and these overrides, nothing else: ``lazy`` skips the system and user
    fabric/invoke files (``~/.fabric.yaml`` could name a gateway), and the empty ``ssh_config``
    with ``load_ssh_configs`` off keeps ``~/.ssh/config`` (HostName, ProxyJump, ProxyCommand) out."""
    return Config(lazy=True, ssh_config=paramiko.SSHConfig(), overrides={
        "load_ssh_configs": False,
        "run": {"hide": True, "warn": True, "pty": False, "encoding": WIRE},
    })


def pinned_connection(endpoint: Endpoint, key_file: Path, gateway: Connection | None = None,
                      timeout: float = 20.0) -> Connection:
    """A fabric Connection (not opened yet) that accepts only ``endpoint``'s pinned host key.

    ``gateway``: a pinned Connection to hop through (direct-tcpip); never left to configuration.
    """
    kwargs: dict[str, Any] = {"key_filename": [str(key_file)], "look_for_keys": False, "allow_agent": False,
                              "banner_timeout": timeout, "auth_timeout": timeout}
    conn = Connection(endpoint.host, user=endpoint.user, port=endpoint.port, config=_config(),
                      gateway=gateway if gateway is not None else False,   # False: no configured one either
                      forward_agent=False, connect_timeout=timeout, connect_kwargs=kwargs)
    # fabric set AutoAddPolicy on this client; it is read again only at connect time.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.get_host_keys().add(_known_name(endpoint), endpoint.host_key.split()[0], _pkey(endpoint.host_key))
    return conn


def _result(r: Any) -> Result:
    """The harness's Result of an invoke Result (its text decoded as UTF-8, see WIRE)."""
    return Result(r.exited, _text(r.stdout), _text(r.stderr))


def _text(wire: str) -> str:
    return wire.encode(WIRE).decode("utf-8", errors="replace")


def _failed(name: str, text: str, res: Result) -> GuestCommandError:
    msg = (res.stderr.strip() or res.stdout.strip()).splitlines()
    return GuestCommandError(f"{name}: `{text}` failed with status {res.status}: {msg[-1] if msg else ''}",
                             res.status, res.stdout, res.stderr)


@contextlib.contextmanager
def _guest_errors(name: str, text: str, timeout: float) -> Iterator[None]:
    """invoke's failures as the harness's GuestCommandError: the one place they are mapped."""
    try:
        yield
    except CommandTimedOut as exc:
        res = _result(exc.result)
        raise GuestCommandError(f"{name}: `{text}` timed out after {timeout:.0f} s", -1,
                                res.stdout, res.stderr) from None
    except UnexpectedExit as exc:     # not with warn=True; mapped all the same
        raise _failed(name, text, _result(exc.result)) from None
    except ThreadException as exc:    # the channel failed under invoke's I/O threads
        inner = exc.exceptions[0].value if exc.exceptions else exc
        raise GuestCommandError(f"{name}: `{text}`: SSH I/O failed: {inner!r}") from exc


def _stdin(data: bytes | None) -> io.StringIO:
    """What invoke copies to the command's stdin; at its end invoke closes that stdin (EOF).

    invoke copies ``in_stream`` one character per ``input_sleep`` (10 ms), so this is for a line
    or two. Data goes by ``put_bytes``.
    """
    if data and len(data) > MAX_STDIN:
        raise ValueError(f"stdin of {len(data)} bytes: send data with put_bytes (limit {MAX_STDIN})")
    return io.StringIO(data.decode(WIRE) if data else "")   # invoke encodes it back with WIRE


class Shell:
    """One authenticated SSH connection to a guest."""

    def __init__(self, endpoint: Endpoint, conn: Connection):
        self.endpoint = endpoint
        self.conn = conn
        self._sftp_lock = threading.Lock()   # fabric keeps one SFTP session per connection

    @property
    def client(self) -> paramiko.SSHClient:
        return self.conn.client

    @classmethod
    def connect(cls, endpoint: Endpoint, key_file: Path, timeout: float = 20.0, gateway: Shell | None = None) -> Shell:
        """Open a pinned connection, directly or through ``gateway`` (dom0 for the domU)."""
        if gateway is not None and not gateway.is_active():
            # fabric would reopen the gateway silently, without keepalive; the caller decides.
            raise paramiko.SSHException(f"gateway {gateway.endpoint.name}: SSH connection is closed")
        conn = pinned_connection(endpoint, key_file, gateway.conn if gateway else None, timeout)
        try:
            conn.open()
            conn.transport.set_keepalive(KEEPALIVE)
            conn.transport.channel_timeout = CHANNEL_TIMEOUT
        except BaseException:
            with contextlib.suppress(Exception):
                conn.client.close()      # also closes a direct-tcpip channel opened through the gateway
            raise
        return cls(endpoint, conn)

    def is_active(self) -> bool:
        t = self.conn.transport
        return t is not None and t.is_active()

    def _live(self) -> Connection:
        """The open connection. fabric would reconnect a dead one by itself; here a guest that went
        away (a cut, a reboot) is an error, and the caller reconnects if it means to."""
        if not self.is_active():
            raise GuestCommandError(f"{self.endpoint.name}: SSH connection is closed")
        return self.conn

    def run(self, cmd: Sequence[str] | str, timeout: float = 120.0, check: bool = True,
            stdin: bytes | None = None) -> Result:
        """Run a command, wait for it (bounded), return its output.

        ``stdin``: a few bytes for the command (see ``_stdin``); without it the command reads EOF.
        """
        text = command_string(cmd)
        LOG.debug("%s$ %s", self.endpoint.name, text)
        conn = self._live()
        with _guest_errors(self.endpoint.name, text, timeout):
            r = conn.run(text, timeout=timeout, warn=True, hide=True, pty=False, in_stream=_stdin(stdin))
        res = _result(r)
        if check and res.status != 0:
            raise _failed(self.endpoint.name, text, res)
        return res

    def stream(self, cmd: Sequence[str] | str) -> Stream:
        """Start a command and read its stdout line by line as it arrives.

        A raw session channel on the connection's transport rather than invoke's asynchronous
        run: ``Stream.lines`` needs an idle timeout, a ``close`` from another thread
        (``KernelLogTap.stop``) and a stderr peek that does not block, and it must end as soon as
        the transport dies. A power cut kills the guest without closing SSH; paramiko then closes
        every channel of the dead transport, and ``recv`` returns b"".
        """
        chan = self._live().transport.open_session(timeout=CHANNEL_TIMEOUT)
        chan.exec_command(command_string(cmd))
        return Stream(chan)

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        conn = self._live()
        with self._sftp_lock:
            conn.put(io.BytesIO(data), remote)
            conn.sftp().chmod(remote, mode)

    def get_bytes(self, remote: str) -> bytes:
        buf = io.BytesIO()
        conn = self._live()
        with self._sftp_lock:
            conn.get(remote, buf)
        return buf.getvalue()

    def close(self) -> None:
        """Idempotent and quiet: closing a connection that died with its guest is not an error.

        A gateway's own connection stays open (it belongs to its own Shell).
        """
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.conn.client.close()   # fabric skips this when the transport is already dead


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
        """The command's exit status; None until it is known, and for a channel that closed
        without one or a command killed by a signal (paramiko says -1 for both)."""
        if not self.chan.exit_status_ready():
            return None
        status = self.chan.recv_exit_status()
        return None if status < 0 else status

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
