"""Find the model weights inside whatever a PyTorch checkpoint file holds.

Rule (documented for users in :func:`find_state_dict`):

1. A mapping whose values are all tensors (``None`` tolerated) or, recursively, such mappings is a
   *candidate*; nested mappings are flattened with dotted names (``{"enc": {"w": t}}`` -> ``enc.w``).
   A mapping holding only sub-mappings, one of them under a preferred key (``{"model": sd, "ema": sd}``),
   is not a candidate itself: its children compete.
2. The loaded object is searched up to depth 5 through mappings, lists, tuples and placeholder objects
   (unknown classes; a pickled ``nn.Module`` is read back from its ``_parameters``/``_buffers``/
   ``_modules``), **skipping optimizer / scheduler / scaler state** (keys such as ``optimizer``).
3. The candidate with the most elements wins. Ties go to the key earliest in :data:`PREFERRED_KEYS`
   (``state_dict`` before ``model`` ... before ``ema``), then to the shallowest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mother_core.io.unpickler import Placeholder

#: Keys under which training checkpoints keep the model weights, most preferred first.
PREFERRED_KEYS: tuple[str, ...] = (
    "state_dict", "model_state_dict", "model", "module", "net", "network", "params", "model_ema",
    "ema", "ema_model", "weights",
)

#: Keys whose subtrees are never model weights (optimizer moments would otherwise compete).
SKIPPED_KEYS: frozenset[str] = frozenset({
    "optimizer", "optimizers", "optimizer_state_dict", "optim", "opt", "optimizer_states",
    "scheduler", "lr_scheduler", "lr_schedulers", "scaler", "grad_scaler", "amp", "rng_state",
})

_MAX_DEPTH = 5
#: Most nodes visited in one search, and most entries one candidate may flatten to: a pickle of shared
#: references (a list holding itself a thousand times, nested) is small on disk but huge to walk.
_MAX_NODES = 2_000_000
_MAX_FLAT = 500_000
_MAX_FLAT_DEPTH = 32


def _flatten(obj: Mapping, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> bool:
    """Flatten a nested mapping of tensors into ``out``; False when it holds anything else (or nests
    deeper than a model does, or flattens to more entries than a search may visit)."""
    if depth > _MAX_FLAT_DEPTH:
        return False
    for key, value in obj.items():
        if not isinstance(key, str):
            return False
        if isinstance(value, torch.Tensor):
            out[prefix + key] = value
            if len(out) > _MAX_FLAT:
                return False
        elif value is None:
            continue
        elif isinstance(value, Mapping) and value:
            if not _flatten(value, f"{prefix}{key}.", out, depth + 1):
                return False
        else:
            return False
    return True


def _module_state(obj: Placeholder, depth: int = 0) -> dict[str, Any] | None:
    """The state dict of a pickled ``nn.Module`` read back as a placeholder, else None."""
    state = obj.state
    if isinstance(state, tuple) and state and isinstance(state[0], dict):  # (dict, slots)
        state = state[0]
    if not isinstance(state, dict) or "_parameters" not in state:
        return None
    out: dict[str, Any] = {}
    for group in ("_parameters", "_buffers"):
        for k, v in (state.get(group) or {}).items():
            if isinstance(v, torch.Tensor):
                out[k] = v
    for k, child in (state.get("_modules") or {}).items():
        if isinstance(child, Placeholder) and depth < _MAX_FLAT_DEPTH:
            sub = _module_state(child, depth + 1)
            if sub:
                out[k] = sub
    return out


def _children(obj: Any) -> list[tuple[str | None, Any]]:
    if isinstance(obj, Mapping):
        return [(k if isinstance(k, str) else None, v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(None, v) for v in obj]
    if isinstance(obj, Placeholder):
        kids: list[tuple[str | None, Any]] = [(None, a) for a in obj.args]
        kids += [(k if isinstance(k, str) else None, v) for k, v in obj.items.items()]
        kids += [(None, v) for v in obj.list]
        if isinstance(obj.state, dict):
            kids += [(k if isinstance(k, str) else None, v) for k, v in obj.state.items()]
        elif obj.state is not None:
            kids.append((None, obj.state))
        return kids
    return []


def find_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The model weights in a loaded checkpoint object (see the module docstring for the rule).

    Parameters
    ----------
    obj : Any
        What ``torch.load`` (or the restricted unpickler) returned.

    Returns
    -------
    dict of str to Tensor
        Raw (not yet normalised) names to tensors; empty when the object holds no tensors.
    """
    best: tuple[tuple[int, int, int], dict[str, torch.Tensor]] | None = None

    def consider(candidate: Mapping, key: str | None, depth: int) -> None:
        nonlocal best
        direct = any(isinstance(v, torch.Tensor) for v in candidate.values())
        if not direct and any(k in PREFERRED_KEYS for k in candidate):
            return  # {"model": sd, "ema": sd}: the two children compete, not their union
        flat: dict[str, torch.Tensor] = {}
        if not _flatten(candidate, "", flat) or not flat:
            return
        numel = sum(t.numel() for t in flat.values())
        rank = PREFERRED_KEYS.index(key) if key in PREFERRED_KEYS else len(PREFERRED_KEYS)
        score = (numel, -rank, -depth)
        if best is None or score > best[0]:
            best = (score, flat)

    seen: set[int] = set()

    def walk(node: Any, key: str | None, depth: int) -> None:
        if depth > _MAX_DEPTH or (key is not None and key.lower() in SKIPPED_KEYS):
            return
        if isinstance(node, (Mapping, list, tuple, Placeholder)):
            if id(node) in seen or len(seen) > _MAX_NODES:
                return  # each shared container once: a DAG of references is walked in linear time
            seen.add(id(node))
        if isinstance(node, Placeholder):
            state = _module_state(node)
            if state:
                consider(state, key, depth)
                return
        if isinstance(node, Mapping):
            consider(node, key, depth)
        for child_key, child in _children(node):
            walk(child, child_key, depth + 1)

    walk(obj, None, 0)
    return best[1] if best is not None else {}
