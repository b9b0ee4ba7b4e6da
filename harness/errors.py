"""One exception root, so the CLI can turn any harness failure into one line."""


class XdhError(Exception):
    """Root of every error the harness raises on purpose.

    ``hint`` names the fix; the CLI prints ``error: <msg> (<hint>)`` and exits 2.
    """

    def __init__(self, msg: str, hint: str = ""):
        super().__init__(msg)
        self.hint = hint

    def oneline(self) -> str:
        text = str(self).strip().splitlines()[0] if str(self).strip() else type(self).__name__
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(XdhError):
    """Bad user input: unknown backend, bad value, ..."""


class ImageError(XdhError):
    """Images missing, stale or failing to build."""


class LaunchError(XdhError):
    """QEMU or a guest failed to come up. Carries the tail of the serial log."""

    def __init__(self, msg: str, hint: str = "", log_tail: str = "", argv: list[str] | None = None):
        super().__init__(msg, hint)
        self.log_tail = log_tail
        self.argv = argv or []

    def details(self) -> str:
        parts = [str(self)]
        if self.log_tail:
            parts.append("--- last lines of the serial log ---\n" + self.log_tail)
        return "\n".join(parts)


class GuestCommandError(XdhError):
    """A command run over SSH in dom0 or the domU failed."""

    def __init__(self, msg: str, exit_status: int = -1, stdout: str = "", stderr: str = ""):
        super().__init__(msg)
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


class Interrupted(XdhError):
    """SIGINT/SIGTERM/SIGHUP arrived; raised so every exit goes through one cleanup path."""
