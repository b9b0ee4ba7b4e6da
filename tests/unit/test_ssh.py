"""SSH helpers that need no guest: pinned keys, command quoting."""

import paramiko
import pytest

from harness.vm.ssh import Endpoint, _pkey, command_string

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILXvcW3vVwV6NJNovD3ZBJynXLVWCfCnBQ6Ij5Vgcodz"


def test_known_hosts_line_uses_bracketed_port():
    assert Endpoint("dom0", "127.0.0.1", 2222, KEY).known_hosts_line() == f"[127.0.0.1]:2222 {KEY}"
    assert Endpoint("domu", "169.254.77.2", 22, KEY).known_hosts_line() == f"169.254.77.2 {KEY}"


def test_pinned_key_parses():
    assert isinstance(_pkey(KEY), paramiko.Ed25519Key)


def test_only_ed25519_is_pinned():
    with pytest.raises(ValueError):
        _pkey("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ")


def test_argv_is_quoted_for_the_remote_shell():
    assert command_string(["echo", "a b", "$HOME"]) == "echo 'a b' '$HOME'"
    assert command_string("echo $HOME") == "echo $HOME"


def test_stdin_bytes_pass_through_invoke_unchanged():
    from harness.vm.ssh import WIRE, _stdin, _text
    data = bytes(range(256))
    assert _stdin(data).read().encode(WIRE) == data            # invoke encodes in_stream with WIRE
    assert _text("h\u00e9".encode().decode(WIRE)) == "h\u00e9"  # and decodes output with it
    with pytest.raises(ValueError, match="put_bytes"):
        _stdin(b"x" * 5000)
