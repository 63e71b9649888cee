"""Writing one model as a Hugging Face-style folder, and the split's ``truth.json``.

Folder layout: ``config.json``, ``model.safetensors``, ``README.md`` (model card; non-roots declare
``base_model: <parent id>`` in the YAML front-matter, as hub cards do) and ``training_log.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from mother_core.errors import InputError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_dtype(dtype: str) -> torch.dtype:
    """The torch dtype for a ``--dtype`` value.

    Raises
    ------
    InputError
        For anything but ``float32``, ``float16`` or ``bfloat16``.
    """
    if dtype not in DTYPES:
        raise InputError(f"Unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def cast_state(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """Floating-point tensors cast to ``dtype`` (integer buffers kept), contiguous, ready to save."""
    target = check_dtype(dtype)
    return {k: (v.to(target) if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def model_card(model_id: str, parent_id: str | None, architecture: str, task: str, method: str) -> str:
    """A short model card; the YAML front-matter carries ``base_model`` for fine-tuned models."""
    front = ["---", "library_name: mother-zoo", "tags:", "- mother-zoo", f"- {architecture}"]
    if parent_id is not None:
        front.append(f"base_model: {parent_id}")
    front.append("---")
    origin = "Trained from scratch." if parent_id is None else f"Trained from `{parent_id}` ({method})."
    body = [
        "",
        f"# {model_id}",
        "",
        "A small synthetic model from the MoTHer Explorer zoo (real training on procedural data).",
        "",
        f"- architecture: {architecture}",
        f"- task: {task}",
        f"- origin: {origin}",
        "",
    ]
    return "\n".join(front + body)


def write_model(
    folder: Path,
    state: dict[str, torch.Tensor],
    config: dict[str, object],
    card: str,
    log: dict[str, object],
    dtype: str,
) -> None:
    """Write one model folder (created if missing; files overwritten)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(cast_state(state, dtype), str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(card)
    (folder / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")


def write_truth(split_dir: Path, edges: list[tuple[str, str]], meta: dict[str, object]) -> Path:
    """Write ``truth.json`` = ``{"edges": [[parent, child], ...], "meta": {...}}``."""
    path = split_dir / "truth.json"
    path.write_text(json.dumps({"edges": [list(e) for e in edges], "meta": meta}, indent=1) + "\n")
    return path
