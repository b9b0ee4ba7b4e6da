"""The SSH layer's host-key pin, held against stub SSH servers on 127.0.0.1 (no VM).

Two paramiko servers run in threads: "dom0", which allows ``direct-tcpip`` to the other one, and
"domu", which allows none. Host keys (ed25519) and the client key are generated here; auth is by
public key only. The stubs' exec handler knows a few argv commands (``Stub._exec``) and they serve
SFTP from a temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fabric import Config, Connection

from harness.errors import GuestCommandError, LaunchError
from harness.vm.ssh import Endpoint, Shell, pinned_connection, wait_for_shell


def _ed25519(path: Path) -> paramiko.Ed25519Key:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def _pin(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


# --- the stub servers ---------------------------------------------------------------------
class _Handle(paramiko.SFTPHandle):
    def stat(self):
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.file.fileno()))

    def chattr(self, attr):
        return paramiko.SFTP_OK


class _Files(paramiko.SFTPServerInterface):
    """SFTP on a directory: remote ``/x`` is ``root/x``."""

    def __init__(self, server, root: Path):
        super().__init__(server)
        self.root = root

    def _real(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def open(self, path, flags, attr):
        try:
            f = open(self._real(path), "wb" if flags & (os.O_WRONLY | os.O_RDWR) else "rb")  # noqa: SIM115
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        handle = _Handle(flags)
        handle.file = handle.readfile = handle.writefile = f
        return handle

    def stat(self, path):
        try:
            return paramiko.SFTPAttributes.from_stat(self._real(path).stat())
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    lstat = stat

    def chattr(self, path, attr):
        if attr.st_mode is not None:
            self._real(path).chmod(attr.st_mode & 0o7777)
        return paramiko.SFTP_OK


class _Auth(paramiko.ServerInterface):
    """One per connection; ``hops``: this connection's direct-tcpip channels by id."""

    def __init__(self, stub: Stub):
        self.stub = stub
        self.hops: dict[int, tuple[str, int]] = {}

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        self.stub.users.append(username)
        ok = username == "root" and key.asbytes() == self.stub.client_key.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        if self.stub.forward_to is None or tuple(destination) != ("127.0.0.1", self.stub.forward_to):
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self.hops[chanid] = tuple(destination)
        self.stub.hops.append(tuple(destination))
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        threading.Thread(target=self.stub.exec, args=(channel, command.decode()), daemon=True).start()
        return True


class Stub:
    """One SSH server on 127.0.0.1; ``forward_to``: the one port direct-tcpip may reach."""

    def __init__(self, name: str, host_key: paramiko.PKey, client_key: paramiko.PKey, root: Path,
                 forward_to: int | None = None):
        self.name, self.host_key, self.client_key, self.root = name, host_key, client_key, root
        self.forward_to = forward_to
        self.commands: list[str] = []
        self.users: list[str] = []
        self.hops: list[tuple[str, int]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint(self, key: paramiko.PKey | None = None) -> Endpoint:
        return Endpoint(self.name, "127.0.0.1", self.port, _pin(key or self.host_key))

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return      # closed at teardown
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        t = paramiko.Transport(sock)
        t.add_server_key(self.host_key)
        t.set_subsystem_handler("sftp", paramiko.SFTPServer, _Files, self.root)
        auth = _Auth(self)
        try:
            t.start_server(server=auth)
        except (paramiko.SSHException, EOFError, OSError):
            return          # the client refused our key: expected in half the tests
        while t.is_active():
            chan = t.accept(0.2)
            if chan is not None and chan.get_id() in auth.hops:
                threading.Thread(target=_pump, args=(chan, auth.hops[chan.get_id()]), daemon=True).start()

    def exec(self, chan: paramiko.Channel, command: str) -> None:
        self.commands.append(command)
        time.sleep(0.05)    # the transport thread sends the exec request's reply first (no close before it)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):   # the client went away
            status = self._exec(chan, shlex.split(command))
            if status is not None:
                chan.send_exit_status(status)
                chan.shutdown_write()
                chan.close()

    def _exec(self, chan: paramiko.Channel, argv: list[str]) -> int | None:
        match argv:
            case ["echo", *words]:
                chan.sendall(" ".join(words).encode() + b"\n")
            case ["hostname"]:
                chan.sendall(self.name.encode() + b"\n")
            case ["fail", status, msg]:
                chan.sendall_stderr(msg.encode() + b"\n")
                return int(status)
            case ["sleep", seconds]:
                end = time.monotonic() + float(seconds)
                while time.monotonic() < end and not chan.closed:
                    time.sleep(0.02)
            case ["cat"]:
                while data := chan.recv(4096):
                    chan.sendall(data)
            case ["ticks", n, gap]:
                for i in range(int(n)):
                    if i:
                        time.sleep(float(gap))
                    chan.sendall(f"tick {i}\n".encode())
            case ["cut"]:   # a power cut: the peer is gone, no SSH close, no exit status
                chan.sendall(b"a\nb\n")
                time.sleep(0.2)
                chan.get_transport().sock.shutdown(socket.SHUT_RDWR)
                return None
            case _:
                chan.sendall_stderr(b"stub: unknown command\n")
                return 127
        return 0


def _pump(chan: paramiko.Channel, dest: tuple[str, int]) -> None:
    """The dom0 side of a direct-tcpip channel: bytes both ways until either end closes."""
    with contextlib.suppress(OSError, EOFError):     # a cut: either end may be gone already
        try:
            with socket.create_connection(dest, timeout=5) as s:
                s.settimeout(None)
                while not chan.closed:
                    ready, _, _ = select.select([chan, s], [], [], 0.2)
                    if chan in ready:
                        data = chan.recv(65536)
                        if not data:
                            break
                        s.sendall(data)
                    if s in ready:
                        data = s.recv(65536)
                        if not data:
                            break
                        chan.sendall(data)
        finally:
            chan.close()


@dataclass
class Lab:
    dom0: Stub
    domu: Stub
    client_key: Path
    wrong_key: paramiko.PKey


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    d = tmp_path_factory.mktemp("ssh-stubs")
    client = _ed25519(d / "client_key")
    for name in ("dom0-files", "domu-files"):
        (d / name).mkdir()
    domu = Stub("domu", _ed25519(d / "domu_host_key"), client, d / "domu-files")
    dom0 = Stub("dom0", _ed25519(d / "dom0_host_key"), client, d / "dom0-files", forward_to=domu.port)
    yield Lab(dom0, domu, d / "client_key", _ed25519(d / "wrong_host_key"))
    dom0.listener.close()
    domu.listener.close()


@pytest.fixture
def dom0(lab: Lab) -> Iterator[Shell]:
    shell = Shell.connect(lab.dom0.endpoint(), lab.client_key, timeout=5)
    yield shell
    shell.close()


@pytest.fixture
def domu(lab: Lab, dom0: Shell) -> Iterator[Shell]:
    shell = Shell.connect(lab.domu.endpoint(), lab.client_key, timeout=5, gateway=dom0)
    yield shell
    shell.close()


# --- the pin --------------------------------------------------------------------------------
def test_pinned_key_runs_commands(lab: Lab, dom0: Shell):
    argv = ["echo", "a  b", "$HOME", "it's"]
    res = dom0.run(argv, timeout=10)
    assert (res.status, res.stdout, res.stderr) == (0, "a  b $HOME it's\n", "")
    assert lab.dom0.commands[-1] == shlex.join(argv)
    assert lab.dom0.users[-1] == "root"


def test_nonzero_status_raises_unless_check_is_false(dom0: Shell):
    with pytest.raises(GuestCommandError, match="failed with status 3: oops") as err:
        dom0.run(["fail", "3", "oops"], timeout=10)
    assert (err.value.exit_status, err.value.stderr) == (3, "oops\n")
    res = dom0.run(["fail", "3", "oops"], timeout=10, check=False)
    assert (res.status, res.stdout, res.stderr) == (3, "", "oops\n")


def test_wrong_pinned_key_is_refused(lab: Lab):
    with pytest.raises(paramiko.BadHostKeyException):
        Shell.connect(lab.dom0.endpoint(lab.wrong_key), lab.client_key, timeout=5)


def test_wrong_key_fails_wait_for_shell_at_once(lab: Lab):
    start = time.monotonic()
    with pytest.raises(LaunchError, match="does not match the pinned key"):
        wait_for_shell(lambda: Shell.connect(lab.dom0.endpoint(lab.wrong_key), lab.client_key, timeout=5),
                       60, "dom0")
    assert time.monotonic() - start < 5


def _unpinned(conn: Connection) -> Connection:
    conn.client.get_host_keys().clear()
    return conn


def test_unknown_host_is_refused(lab: Lab):
    conn = _unpinned(pinned_connection(lab.dom0.endpoint(), lab.client_key, timeout=5))
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts") as err:
        conn.open()
    assert not isinstance(err.value, paramiko.BadHostKeyException)
    conn.close()


def test_domu_through_the_gateway(lab: Lab, domu: Shell):
    assert domu.run(["hostname"], timeout=10).stdout == "domu\n"
    assert ("127.0.0.1", lab.domu.port) in lab.dom0.hops


def test_wrong_pinned_key_through_the_gateway_is_refused(lab: Lab, dom0: Shell):
    with pytest.raises(paramiko.BadHostKeyException):
        Shell.connect(lab.domu.endpoint(lab.wrong_key), lab.client_key, timeout=5, gateway=dom0)
    assert dom0.run(["hostname"], timeout=10).stdout == "dom0\n"     # the gateway is unharmed


def test_unknown_host_through_the_gateway_is_refused(lab: Lab, dom0: Shell):
    conn = _unpinned(pinned_connection(lab.domu.endpoint(), lab.client_key, gateway=dom0.conn, timeout=5))
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        conn.open()
    conn.close()


def test_unknown_gateway_is_refused(lab: Lab):
    """fabric opens the gateway itself: the gateway's own pin holds there too."""
    gateway = _unpinned(pinned_connection(lab.dom0.endpoint(), lab.client_key, timeout=5))
    conn = pinned_connection(lab.domu.endpoint(), lab.client_key, gateway=gateway, timeout=5)
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        conn.open()
    gateway.close()


def test_no_ssh_or_fabric_config_is_read(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        "Host 127.0.0.1\n    HostName 203.0.113.1\n    Port 1\n    User mallory\n    ProxyJump mallory@203.0.113.2\n")
    (tmp_path / ".fabric.json").write_text(json.dumps({"gateway": "nc 203.0.113.3 22", "user": "mallory"}))
    monkeypatch.setenv("HOME", str(tmp_path))
    # what fabric would do by default with these files
    assert Config().gateway == "nc 203.0.113.3 22"
    default = Connection("127.0.0.1")
    assert (default.host, default.port, default.user) == ("203.0.113.1", 1, "mallory")
    assert isinstance(default.gateway, Connection)
    # the harness reads neither
    conn = pinned_connection(lab.dom0.endpoint(), lab.client_key, timeout=5)
    assert (conn.host, conn.port, conn.user, conn.gateway) == ("127.0.0.1", lab.dom0.port, "root", False)
    conn.close()
    shell = Shell.connect(lab.dom0.endpoint(), lab.client_key, timeout=5)
    try:
        assert shell.run(["hostname"], timeout=10).stdout == "dom0\n"
        assert lab.dom0.users[-1] == "root"
    finally:
        shell.close()


# --- commands, files, streams ---------------------------------------------------------------
def test_timeout_raises_and_the_connection_lives_on(dom0: Shell):
    start = time.monotonic()
    with pytest.raises(GuestCommandError, match="timed out"):
        dom0.run(["sleep", "5"], timeout=0.5)
    assert time.monotonic() - start < 3
    assert dom0.run(["hostname"], timeout=10).stdout == "dom0\n"


def test_output_is_decoded_whole(dom0: Shell):
    """invoke decodes every read on its own; a UTF-8 character split across two reads survives."""
    word = "x" + "\u00e9" * 5000
    assert dom0.run(["echo", word], timeout=10).stdout == word + "\n"
    with pytest.raises(GuestCommandError) as err:
        dom0.run(["fail", "1", word], timeout=10)
    assert err.value.stderr == word + "\n"


def test_stdin_is_sent_then_closed(dom0: Shell):
    assert dom0.run(["cat"], timeout=10, stdin="h\u00e9llo\n".encode()).stdout == "h\u00e9llo\n"
    assert dom0.run(["cat"], timeout=10).stdout == ""      # the command reads EOF, it does not hang
    with pytest.raises(ValueError, match="put_bytes"):
        dom0.run(["cat"], stdin=b"x" * 5000)


def test_a_closed_shell_is_not_reopened(lab: Lab):
    shell = Shell.connect(lab.dom0.endpoint(), lab.client_key, timeout=5)
    shell.close()
    shell.close()
    assert not shell.is_active()
    with pytest.raises(GuestCommandError, match="SSH connection is closed"):
        shell.run(["hostname"])


@pytest.mark.parametrize("guest", ["dom0", "domu"])
def test_sftp_round_trip(lab: Lab, dom0: Shell, domu: Shell, guest: str):
    shell, stub = (dom0, lab.dom0) if guest == "dom0" else (domu, lab.domu)
    data = bytes(range(256)) * 300
    shell.put_bytes(data, "/plan.json", 0o600)
    assert (stub.root / "plan.json").read_bytes() == data
    assert (stub.root / "plan.json").stat().st_mode & 0o777 == 0o600
    assert shell.get_bytes("/plan.json") == data


def _drain(lines: Iterator[tuple[float, str]], limit: float = 5.0) -> list[tuple[float, str]]:
    """Read ``lines`` in a thread, so that a hang fails the test instead of blocking it."""
    got: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: got.extend(lines), daemon=True)
    reader.start()
    reader.join(limit)
    assert not reader.is_alive(), f"lines() did not end within {limit} s"
    return got


def test_stream_stamps_lines_as_they_arrive(dom0: Shell):
    stream = dom0.stream(["ticks", "4", "0.2"])
    got = _drain(stream.lines())
    assert [line for _, line in got] == ["tick 0", "tick 1", "tick 2", "tick 3"]
    assert all(b[0] - a[0] > 0.1 for a, b in zip(got, got[1:], strict=False))
    assert stream.exit_status() == 0


def test_stream_idle_timeout_and_stderr(dom0: Shell):
    stream = dom0.stream(["sleep", "5"])
    start = time.monotonic()
    assert _drain(stream.lines(idle_timeout=0.3)) == []
    assert time.monotonic() - start < 2
    stream.close()
    stream = dom0.stream(["fail", "3", "oops"])
    assert _drain(stream.lines()) == []
    assert (stream.stderr_tail(), stream.exit_status()) == ("oops", 3)


def test_stream_ends_when_the_peer_is_cut(lab: Lab):
    """A power cut: the peer's socket goes away without any SSH close."""
    shell = Shell.connect(lab.dom0.endpoint(), lab.client_key, timeout=5)
    try:
        stream = shell.stream(["cut"])
        assert [line for _, line in _drain(stream.lines())] == ["a", "b"]
        assert stream.exit_status() is None     # paramiko says -1: no status, not a workload that exited
        time.sleep(0.1)
        assert not shell.is_active()
        with pytest.raises(GuestCommandError, match="SSH connection is closed"):
            shell.run(["hostname"])
    finally:
        shell.close()


def test_domu_stream_ends_when_dom0_is_cut(lab: Lab):
    """The real cut kills dom0's QEMU, so the hop dies first; the domU's stream must end too."""
    dom0 = Shell.connect(lab.dom0.endpoint(), lab.client_key, timeout=5)
    domu = Shell.connect(lab.domu.endpoint(), lab.client_key, timeout=5, gateway=dom0)
    try:
        lines = domu.stream(["ticks", "1000", "0.05"]).lines()
        assert next(lines)[1] == "tick 0"
        dom0.stream(["cut"])
        assert len(_drain(lines)) < 200
        time.sleep(0.1)
        assert not domu.is_active()
    finally:
        domu.close()
        dom0.close()
