"""One shape for everything that owns running machines: ``start()`` brings it up and, if that
fails in any way (an interrupt included), stops what was started before re-raising; ``stop()``
is idempotent; ``with`` does both."""

from __future__ import annotations

from typing import Self


class Lifecycle:
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError
