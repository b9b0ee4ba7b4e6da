"""Debian releases the stack can be built from: a declarative table of what differs.

Image recipes name release-specific packages with placeholders (``{xen}``), filled from here;
the apt sources of another release are the host's own with the suite names replaced, so a
mirror or snapshot configured on the host is used for every release.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Release:
    name: str          # the Debian suite: bookworm, trixie
    version: str       # "12", "13"
    xen: str           # the Xen version of its xen-hypervisor-<xen>-amd64
    summary: str

    def fill(self, text: str) -> str:
        """A recipe string with this release's placeholders filled in."""
        return text.replace("{xen}", self.xen).replace("{suite}", self.name)


RELEASES: dict[str, Release] = {r.name: r for r in (
    Release("bookworm", "12", "4.17", "Debian 12: Xen 4.17, Linux 6.1, QEMU 7.2"),
    Release("trixie", "13", "4.20", "Debian 13: Xen 4.20, Linux 6.12, QEMU 10.0"),
)}
DEFAULT_RELEASE = "bookworm"
HOST_RELEASE = "bookworm"    # what scripts/setup.sh supports today; its apt sources name this suite


def get(name: str) -> Release:
    try:
        return RELEASES[name]
    except KeyError:
        raise ConfigError(f"unknown release {name!r}", hint="choose one of: " + ", ".join(RELEASES)) from None


def rewrite_sources(text: str, release: Release, host: str = HOST_RELEASE) -> str:
    """The host's apt sources for another release: every ``host`` suite name becomes ``release``'s
    (``bookworm-security`` -> ``trixie-security`` and so on)."""
    return text.replace(host, release.name)
