"""Where model sets come from: demo sets, operator-approved folders, the HF cache, presets, result files.

No Streamlit here: plain functions the sidebar calls (and tests can call).

Folder browsing is limited to *browse roots*: the operator lists them in ``MOTHER_BROWSE_ROOTS``
(``os.pathsep``-separated, e.g. ``/data/models:/scratch/ckpts``). Default: the project's ``assets/``
folder only (demo sets live in ``assets/demo/``, or ``MOTHER_DEMO_ROOT``), so a shared deployment never
exposes the server's file system by accident. The local
Hugging Face cache is reachable through its own source (read-only scan), not through browsing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mother_core.errors import InputError
from mother_core.io.discovery import WEIGHT_SUFFIXES
from mother_core.io.filekind import not_a_regular_file
from mother_core.recovery.result import RESULT_HEAD_BYTES, is_result_head

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEMO_ROOT = PROJECT_ROOT / "assets" / "demo"
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", ".mother_cache", ".pytest_cache"}


@dataclass(frozen=True)
class ModelSet:
    """A hashable reference to what the user picked; the engine resolves it to models.

    Attributes
    ----------
    kind : str
        ``"demo"``, ``"folder"``, ``"hf"``, ``"preset"`` or ``"result"``.
    label : str
        What the page calls it.
    paths : tuple of str
        Model folders / files (or the folder holding them) handed to ``discover``.
    truth : str or None
        A truth file (``truth.json``), when the lineage is known.
    result : str or None
        A saved ``result.json`` (kind ``"result"``): nothing is recomputed.
    component : str or None
        Sub-folder of multi-component repositories (``"unet"``).
    known_edges : tuple of (str, str)
        Known (parent, child) edges given by a preset.
    regime : str or None
        Regime suggested by a preset.
    auto_run : bool
        Recover at once when picked (small demo sets, result files).
    """

    kind: str
    label: str
    paths: tuple[str, ...] = ()
    truth: str | None = None
    result: str | None = None
    component: str | None = None
    known_edges: tuple[tuple[str, str], ...] = ()
    regime: str | None = None
    auto_run: bool = False

    @property
    def key(self) -> str:
        """A short stable id of this set (used for session state and cache keys)."""
        return hashlib.sha1(repr(self).encode()).hexdigest()[:16]


def demo_root() -> Path:
    """Where demo sets live: ``MOTHER_DEMO_ROOT`` or the project's ``assets/demo/``."""
    return Path(os.environ.get("MOTHER_DEMO_ROOT") or DEFAULT_DEMO_ROOT)


def demo_sets(root: Path | None = None) -> list[ModelSet]:
    """The built-in demo sets (``<demo root>/<name>/``), sorted with ``MOTHER_DEFAULT_DEMO`` first."""
    root = demo_root() if root is None else root
    if not root.is_dir():
        return []
    preferred = os.environ.get("MOTHER_DEFAULT_DEMO", "")
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        truth = d / "truth.json"
        out.append(ModelSet("demo", d.name, (str(d),), truth=str(truth) if truth.is_file() else None,
                            auto_run=True))
    out.sort(key=lambda s: s.label != preferred)
    return out


def browse_roots() -> list[Path]:
    """Folders the operator allows browsing: ``MOTHER_BROWSE_ROOTS`` or the project's ``assets/``."""
    env = os.environ.get("MOTHER_BROWSE_ROOTS", "").strip()
    raw = [p for p in env.split(os.pathsep) if p.strip()] if env else [str(PROJECT_ROOT / "assets")]
    roots = []
    for p in raw:
        path = Path(p).expanduser().resolve()
        if path.is_dir() and path not in roots:
            roots.append(path)
    return roots


def within_roots(path: str | Path, roots: list[Path] | None = None) -> Path:
    """``path`` resolved, if it lies inside a browse root; else :class:`InputError`."""
    roots = browse_roots() if roots is None else roots
    try:  # a typed or linked path is data: a NUL byte (ValueError) or a link loop (RuntimeError) is the user's
        p = Path(path).expanduser().resolve()
    except (ValueError, RuntimeError, OSError) as e:
        raise InputError(f"{str(path)[:200]!r} is not a path this app can open ({e}). Type a folder's path.",
                         str(path)[:200]) from None
    for r in roots:
        if p == r or r in p.parents:
            return p
    allowed = ", ".join(str(r) for r in roots) or "(none)"
    raise InputError(f"{path} is outside the folders this app may browse ({allowed}). "
                     "The operator can add folders with MOTHER_BROWSE_ROOTS.", path)


def read_roots() -> list[Path]:
    """Every folder the app may read models from: the browse roots, the demo root and the local Hugging
    Face cache (its own source). Discovery refuses any file a set points to outside them (a symlink, an
    HF ``refs/main``, a shard index naming another place)."""
    roots = list(browse_roots())
    extra = [demo_root(), os.environ.get("HF_HUB_CACHE")]
    try:
        from huggingface_hub import constants

        extra.append(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - a dependency of the engine
        pass
    for p in extra:
        if p and Path(p).is_dir() and Path(p).resolve() not in roots:
            roots.append(Path(p).resolve())
    return roots


def _inside(path: Path, roots: list[Path]) -> bool:
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return any(real == r or r in real.parents for r in roots)


def list_folders(root: Path, max_depth: int = 3, limit: int = 400, roots: list[Path] | None = None) -> list[str]:
    """Sub-folders of ``root`` (itself first), breadth-first, at most ``max_depth`` levels deep.

    A symlinked folder is listed only when it resolves inside ``roots`` (default: the browse roots, and
    ``root`` itself): the picker never shows folder names from outside what the operator exposed.
    """
    allowed = [Path(root).resolve(), *(browse_roots() if roots is None else roots)]
    out = [str(root)]
    frontier = [root]
    for _ in range(max_depth):
        nxt = []
        for d in frontier:
            try:
                kids = sorted(k for k in d.iterdir() if k.is_dir() and not k.name.startswith(".")
                              and k.name not in SKIP_DIRS and (not k.is_symlink() or _inside(k, allowed)))
            except OSError:
                continue
            for k in kids:
                out.append(str(k))
                nxt.append(k)
                if len(out) >= limit:
                    return out
        frontier = nxt
    return out


def list_result_files(roots: list[Path] | None = None, max_depth: int = 4, limit: int = 200) -> list[str]:
    """``*.json`` files under the browse roots that are saved results (``mother recover --out``, the Export
    page's result JSON), told by their content, whatever their name: each file's first
    :data:`~mother_core.recovery.result.RESULT_HEAD_BYTES` bytes must open with the writer's marker
    (:func:`~mother_core.recovery.result.is_result_head`). Only names with "result" were listed, so
    ``run-c5.json`` was not and a ``results-table.json`` of something else was. Regular files only, inside
    the roots once links are followed (a ``result.json`` linked to a file elsewhere was offered and read, one
    linked to ``/dev/zero`` read without end)."""
    roots = browse_roots() if roots is None else roots
    out: list[str] = []
    for root in roots:
        for folder in list_folders(root, max_depth=max_depth):
            try:
                files = sorted(Path(folder).glob("*.json"))
            except OSError:
                continue
            out.extend(str(f) for f in files if _readable_inside(f, roots) and _opens_as_result(f))
            if len(out) >= limit:
                return out[:limit]
    return out


def _opens_as_result(path: Path) -> bool:
    """Whether the regular file ``path`` opens with a result's marker: a bounded read (a huge JSON costs
    its first few kilobytes), never a parse."""
    try:
        with open(path, "rb") as f:
            return is_result_head(f.read(RESULT_HEAD_BYTES))
    except OSError:
        return False


def _readable_inside(path: Path, roots: list[Path]) -> bool:
    """``path`` is a regular file (never opened to find out) that resolves inside one of ``roots``."""
    if not_a_regular_file(path):
        return False
    try:
        within_roots(path, roots)
    except InputError:
        return False
    return True


def truth_for(folder: str | Path) -> str | None:
    """``truth.json`` in a model folder, if there is one: a regular file inside the folders the app reads."""
    t = Path(folder) / "truth.json"
    return str(t) if _readable_inside(t, read_roots()) else None


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def fingerprint(paths: tuple[str, ...], limit: int = 5000) -> str:
    """Cheap content identity of files under ``paths`` (names, sizes, mtimes): cache keys change
    when a model on disk changes."""
    h = hashlib.sha1()
    n = 0
    for p in paths:
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for f in sorted(filenames):
                try:
                    st = os.stat(os.path.join(dirpath, f))
                except OSError:
                    continue
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns};".encode("utf-8", "surrogateescape"))
                n += 1
                if n >= limit:
                    return h.hexdigest()
        if os.path.isfile(p):
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode("utf-8", "surrogateescape"))
    return h.hexdigest()



def has_weights(folder: str | Path, max_depth: int = 1) -> bool:
    """Whether a weight file lies at most ``max_depth`` levels below ``folder`` (names only, nothing is
    opened): the folder picker offers these first, so it never opens on an empty folder."""
    frontier = [Path(folder)]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                if e.name.startswith(".") or e.name in SKIP_DIRS:
                    continue
                if e.is_file() and e.name.endswith(WEIGHT_SUFFIXES):
                    return True
                if e.is_dir():
                    nxt.append(Path(e.path))
        frontier = nxt
    return False
