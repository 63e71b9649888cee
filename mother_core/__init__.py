"""MoTHer Explorer's engine: recover the family tree of neural-network models from their weights.

Method: Horwitz, Shul & Hoshen, "On the Origin of Llamas: Model Tree Heritage Recovery" (2024),
ICLR 2025 as "Unsupervised Model Tree Heritage Recovery". See README.md and docs/.

Typical use::

    from mother_core import recover_paths
    result = recover_paths(["path/to/models"])
    result.save("result.json")
"""

from mother_core.errors import MotherError
from mother_core.io.base import Discovery, ModelRef, Problem
from mother_core.io.discovery import discover
from mother_core.pipeline import recover_paths
from mother_core.recovery.recover import recover, resolve
from mother_core.recovery.result import Constraints, Recovery, RecoverySettings
from mother_core.relations import RELATIONS, Relation
from mother_core.stats.compute import compute_statistics
from mother_core.stats.progress import Progress
from mother_core.stats.result import WeightStatistics

__version__ = "0.1.0"

__all__ = [
    "Constraints", "Discovery", "ModelRef", "MotherError", "Problem", "Progress", "RELATIONS", "Recovery",
    "RecoverySettings", "Relation", "WeightStatistics", "compute_statistics", "discover", "recover",
    "recover_paths", "resolve",
]
