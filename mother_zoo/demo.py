"""The built-in demo sets shipped in ``assets/demo``: a ViT tree and a mixed forest (fp16), and a small
typed set (``typed``: adapters, merges, GGUF and other quantizations, conversions; needs the ``zoo`` extra)."""

from __future__ import annotations

from pathlib import Path

from mother_core.errors import InputError

from .splits import DEMOS, ProgressFn, generate_split

TYPED_DEMO = "typed"


def generate_demo(
    out_dir: Path, *, seed: int = 0, dtype: str = "float16", progress: ProgressFn | None = None
) -> list[Path]:
    """Write every demo set (``vit-tree``, ``mixed-forest``, ``typed``) under ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Parent folder, e.g. ``assets/demo``; each demo goes to ``out_dir / <demo name>``.
    seed : int
        Seed of the demo sets (the shipped ones use 0).
    dtype : str
        Storage dtype of the tree demos; fp16 keeps the shipped assets small (the typed set's dtypes
        are part of what it shows).
    progress : callable, optional
        ``progress(done, total, model_id)`` per model.

    Returns
    -------
    list of Path
        The demo folders.
    """
    try:
        from .typed import generate_typed
    except ImportError as exc:
        raise InputError(f"The typed demo needs the 'zoo' extra ({exc.name} is missing): "
                         "pip install 'mother-explorer[zoo]' \"torch==2.13.0\"") from exc
    paths = [generate_split(name, out_dir, seed=seed, dtype=dtype, progress=progress) for name in DEMOS]
    paths.append(generate_typed(out_dir, size="small", seed=seed, progress=progress, name=TYPED_DEMO))
    return paths
