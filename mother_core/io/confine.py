"""Path confinement: when a caller names *roots* (the app's browse roots), every file a model set points
to must resolve inside them.

A set can point outside its folder in several ways besides its own path: a symlinked weight file or
folder, a Hugging Face ``refs/main`` naming another snapshot, a shard index listing ``../../x`` or an
absolute path. Discovery resolves each of them (``os.path.realpath``: symlinks followed, ``..`` removed)
and refuses those outside the roots, so a deployed app never reads a file its operator did not expose.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass


def at_or_below(real: str, folder: str) -> bool:
    """Whether the resolved path ``real`` is the resolved folder ``folder`` or lies below it (a whole path
    component: ``/a/bc`` is not below ``/a/b``).

    >>> at_or_below("/a/b/c", "/a/b"), at_or_below("/a/bc", "/a/b"), at_or_below("/a", "/")
    (True, False, True)
    """
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class Roots:
    """Resolved root folders; a path is inside when its real path is a root or lies below one."""

    paths: tuple[str, ...]

    @classmethod
    def of(cls, roots: Iterable[str | os.PathLike[str]] | None) -> Roots | None:
        """``Roots`` of the given folders, or None (no confinement) when ``roots`` is None."""
        if roots is None:
            return None
        return cls(tuple(dict.fromkeys(os.path.realpath(os.fspath(r)) for r in roots)))

    def contains(self, path: str | os.PathLike[str]) -> bool:
        real = os.path.realpath(os.fspath(path))
        return any(at_or_below(real, r) for r in self.paths)

    def refusal(self, path: str | os.PathLike[str]) -> str | None:
        """Why ``path`` may not be read (it resolves outside the roots), or None when it may."""
        if self.contains(path):
            return None
        real = os.path.realpath(os.fspath(path))
        shown = "" if real == os.path.abspath(os.fspath(path)) else f" (it resolves to {real})"
        return (f"{os.fspath(path)} lies outside the folders this run may read{shown}. Only files under "
                f"{', '.join(self.paths) or '(none)'} are read; the operator can add folders "
                "(MOTHER_BROWSE_ROOTS).")


def within(path: str | os.PathLike[str], roots: Roots | None) -> bool:
    """True when there is no confinement or ``path`` resolves inside ``roots``."""
    return roots is None or roots.contains(path)
