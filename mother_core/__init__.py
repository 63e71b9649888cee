"""MoTHer Explorer's engine: recover the family tree of neural-network models from their weights.

Method: Horwitz, Shul & Hoshen, "On the Origin of Llamas: Model Tree Heritage Recovery" (2024),
ICLR 2025 as "Unsupervised Model Tree Heritage Recovery". See README.md and docs/.

Typical use::

    from mother_core import recover_paths
    result = recover_paths(["path/to/models"])
    result.save("result.json")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mother_core.errors import MotherError

# Public names -> the module that defines them. They are imported on first use (PEP 562), so that
# `import mother_core` and the commands that read no weights (`mother --help`, `scan`, `evaluate`)
# do not pay for torch (~2.5-4 s here): benchmarks/RESULTS.md, issue 15 "The one pass at disk speed".
_LAZY: dict[str, str] = {
    "Discovery": "mother_core.io.base", "ModelRef": "mother_core.io.base", "Problem": "mother_core.io.base",
    "discover": "mother_core.io.discovery",
    "recover_paths": "mother_core.pipeline",
    "recover": "mother_core.recovery.recover", "resolve": "mother_core.recovery.recover",
    "Constraints": "mother_core.recovery.result", "Recovery": "mother_core.recovery.result",
    "RecoverySettings": "mother_core.recovery.result",
    "RELATIONS": "mother_core.relations", "Relation": "mother_core.relations",
    "compute_statistics": "mother_core.stats.compute",
    "Progress": "mother_core.stats.progress",
    "WeightStatistics": "mother_core.stats.result",
}

if TYPE_CHECKING:
    from mother_core.io.base import Discovery, ModelRef, Problem
    from mother_core.io.discovery import discover
    from mother_core.pipeline import recover_paths
    from mother_core.recovery.recover import recover, resolve
    from mother_core.recovery.result import Constraints, Recovery, RecoverySettings
    from mother_core.relations import RELATIONS, Relation
    from mother_core.stats.compute import compute_statistics
    from mother_core.stats.progress import Progress
    from mother_core.stats.result import WeightStatistics


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mother_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Constraints", "Discovery", "ModelRef", "MotherError", "Problem", "Progress", "RELATIONS", "Recovery",
    "RecoverySettings", "Relation", "WeightStatistics", "compute_statistics", "discover", "recover",
    "recover_paths", "resolve",
]
