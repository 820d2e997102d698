"""Progress of long work (downloads, evaluation), drawn by whoever runs segnet, never by the library.

The library asks ``progress(...)`` for a bar and reports into it; by default that bar does nothing. A
front-end that wants bars plugs in a factory with ``set_progress_factory`` (the CLI draws tqdm bars on a
terminal). Folder and video runs report through ``segnet.run``'s events instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def reset(self, total: int | None = None) -> object: ...

    def close(self) -> object: ...


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


Factory = Callable[..., Bar]
_factory: Factory | None = None


def set_progress_factory(factory: Factory | None) -> None:
    """``factory(total=, desc=, unit=, bytes=)`` makes a bar; None turns bars off again."""
    global _factory
    _factory = factory


def progress(total: int | None, desc: str, unit: str = "it", bytes: bool = False) -> Bar:
    """A bar for ``total`` steps (None: unknown) from the plugged-in factory, or one that draws nothing."""
    if _factory is None:
        return _Silent()
    return _factory(total=total, desc=desc, unit=unit, bytes=bytes)
