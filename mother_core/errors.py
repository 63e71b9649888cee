"""One exception hierarchy for the whole engine.

Every error a user can cause derives from :class:`MotherError` and carries a message that names the
offending file (when there is one) and says what to do about it. The CLI prints ``str(error)`` and
exits non-zero; the app shows it in the page. Nothing else should escape the engine for bad input.
"""

from __future__ import annotations

from pathlib import Path


class MotherError(Exception):
    """Base class of every error raised on purpose by ``mother_core``.

    Parameters
    ----------
    message : str
        What went wrong and what to do about it, in one or two sentences.
    path : str or Path, optional
        The file or folder the error is about, if any.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        return self.message


class InputError(MotherError):
    """The set of paths or options the user gave cannot be used as it is."""


class ModelNotFoundError(InputError):
    """A path does not exist, or holds nothing that looks like a model."""


class DuplicateModelIdError(InputError):
    """Two models resolve to the same id (folder name or file stem)."""


class TooFewModelsError(InputError):
    """Recovery needs at least two readable models."""


class MissingBaseModelError(InputError):
    """A LoRA adapter was given without its base model."""


class CheckpointError(MotherError):
    """A checkpoint file exists but cannot be used."""


class UnreadableCheckpointError(CheckpointError):
    """A file is truncated, corrupt, or in a format we do not read."""


class NoTensorsError(CheckpointError):
    """A file was read, but holds no (floating-point) tensors to compare."""


class DeviceError(MotherError):
    """The requested compute device is not available."""


class ResultFormatError(MotherError):
    """A result, truth or cache file does not have the expected structure."""


class CacheBusyError(MotherError):
    """The statistics cache stayed locked by another process longer than we wait."""


class ConstraintError(MotherError):
    """User constraints (forced/forbidden edges, fixed roots) cannot all be honoured."""


class AdapterMismatchError(CheckpointError):
    """A LoRA adapter does not fit the base model it was given (missing tensor or wrong shape)."""
