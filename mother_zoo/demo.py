"""The built-in demo sets shipped in ``assets/demo`` (a ViT tree and a mixed forest, fp16)."""

from __future__ import annotations

from pathlib import Path

from .splits import DEMOS, ProgressFn, generate_split


def generate_demo(
    out_dir: Path, *, seed: int = 0, dtype: str = "float16", progress: ProgressFn | None = None
) -> list[Path]:
    """Write every demo set (``vit-tree``, ``mixed-forest``) under ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Parent folder, e.g. ``assets/demo``; each demo goes to ``out_dir / <demo name>``.
    seed : int
        Seed of the demo sets (the shipped ones use 0).
    dtype : str
        Storage dtype; fp16 keeps the shipped assets small.
    progress : callable, optional
        ``progress(done, total, model_id)`` per model.

    Returns
    -------
    list of Path
        The demo folders.
    """
    return [generate_split(name, out_dir, seed=seed, dtype=dtype, progress=progress) for name in DEMOS]
