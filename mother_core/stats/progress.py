"""Progress reports of the streaming pass (for the CLI's bar and the app's status box)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Progress:
    """A snapshot of the pass; ``eta_s`` is None until there is a rate to extrapolate from."""

    stage: str
    tensors_done: int
    tensors_total: int
    bytes_read: int
    bytes_total: int
    elapsed_s: float
    eta_s: float | None
    device: str


ProgressCallback = Callable[[Progress], None]
