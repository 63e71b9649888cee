"""One exception hierarchy for the whole engine.

Every error a user can cause derives from :class:`MotherError` and carries a message that names the
offending file (when there is one) and says what to do about it. The CLI prints ``str(error)`` and
exits non-zero; the app shows it in the page. Nothing else should escape the engine for bad input.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Union

#: What a solver error can say about models: one model index, an edge or other tuple of indices, or a
#: list of those. Kept as data so that a caller can name the models (:meth:`ConstraintError.named`).
ModelRefs = Union[int, tuple[int, ...], Sequence["ModelRefs"]]


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
    """User constraints (forced/forbidden edges, fixed roots) cannot all be honoured.

    A solver works on model indices; the models an error is about are kept as data (``models``, by
    field name of ``template``) so that the caller, who knows the models' ids, composes the message
    with them (:meth:`named`) instead of rewriting numbers in the text.

    Parameters
    ----------
    message : str
        The message as shown (models by index when raised by a solver).
    path : str or Path, optional
        The file the error is about, if any.
    template : str, optional
        ``str.format`` template of the message; its fields named in ``models`` are rendered by model,
        the others from ``values``. Format spec ``names`` joins a list (at most 8 shown), ``chain``
        joins it with arrows; a list is otherwise written ``[a, b]`` and a tuple ``(a, b)``.
    models : mapping of str to ModelRefs, optional
        The model indices the message is about.
    values : mapping of str to object, optional
        The template's other fields (counts, limits).

    Examples
    --------
    >>> e = ConstraintError.about("Model {child} is forced to have two parents ({first} and {second}).",
    ...                           child=2, first=0, second=1)
    >>> str(e)
    'Model 2 is forced to have two parents (0 and 1).'
    >>> e.models
    {'child': 2, 'first': 0, 'second': 1}
    >>> str(e.named(["base", "chat", "code"]))
    'Model code is forced to have two parents (base and chat).'
    """

    def __init__(self, message: str, path: str | Path | None = None, *, template: str | None = None,
                 models: Mapping[str, ModelRefs] | None = None, values: Mapping[str, object] | None = None) -> None:
        super().__init__(message, path)
        self.template = template
        self.models: dict[str, ModelRefs] = dict(models or {})
        self.values: dict[str, object] = dict(values or {})

    @classmethod
    def about(cls, template: str, values: Mapping[str, object] | None = None, /,
              **models: ModelRefs) -> "ConstraintError":
        """An error about the models ``models`` (indices), its message rendered with the indices."""
        text = _compose(template, models, values or {}, str)
        return cls(text, template=template, models=models, values=values)

    def named(self, ids: Sequence[str], index: Sequence[int] | None = None, advice: str = "") -> "ConstraintError":
        """The same error in terms of model ids.

        Parameters
        ----------
        ids : sequence of str
            Model ids, by (global) model index.
        index : sequence of int, optional
            When the solver saw a subset, ``index[k]`` is the global index of its model ``k``; the new
            error's ``models`` are global indices.
        advice : str
            A sentence appended to the message (what to do).
        """
        to_global: Callable[[int], int] = (lambda k: int(k)) if index is None else (lambda k: int(index[k]))
        models = {k: _map_refs(v, to_global) for k, v in self.models.items()}
        if self.template is None:
            text = self.message
        else:
            text = _compose(self.template, models, self.values, lambda i: ids[i])
        suffix = (" " + advice) if advice else ""
        template = None if self.template is None else self.template + suffix.replace("{", "{{").replace("}", "}}")
        return ConstraintError(text + suffix, self.path, template=template, models=models, values=self.values)


class AdapterMismatchError(CheckpointError):
    """A LoRA adapter does not fit the base model it was given (missing tensor or wrong shape)."""


def _map_refs(refs: ModelRefs, f: Callable[[int], int]) -> ModelRefs:
    if isinstance(refs, tuple):
        return tuple(f(int(r)) for r in refs)  # an edge or other tuple of indices
    if isinstance(refs, Sequence):
        return [_map_refs(r, f) for r in refs]
    return f(refs)


class _ModelFormatter(string.Formatter):
    """Renders a template's model fields with a naming function (see :class:`ConstraintError`)."""

    def __init__(self, models: Mapping[str, ModelRefs], name: Callable[[int], str]) -> None:
        self.models = models
        self.name = name

    def get_value(self, key: int | str, args: Sequence[object], kwargs: Mapping[str, object]) -> object:
        if isinstance(key, str) and key in self.models:
            return _Refs(self.models[key])
        return super().get_value(key, args, kwargs)

    def format_field(self, value: object, format_spec: str) -> str:
        if not isinstance(value, _Refs):
            return super().format_field(value, format_spec)
        refs = value.refs
        items: list[ModelRefs] = list(refs) if isinstance(refs, Sequence) else [refs]
        if format_spec == "names":
            shown = ", ".join(self.render(r) for r in sorted(items, key=_order)[:8])
            return shown + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
        if format_spec == "chain":
            return " -> ".join(self.render(r) for r in items)
        return self.render(refs)

    def render(self, refs: ModelRefs) -> str:
        if isinstance(refs, tuple):
            return "(" + ", ".join(self.name(int(r)) for r in refs) + ")"  # type: ignore[call-overload]
        if isinstance(refs, Sequence):
            return "[" + ", ".join(self.render(r) for r in refs) + "]"
        return self.name(int(refs))


def _order(refs: ModelRefs) -> tuple[int, ...]:
    if isinstance(refs, int):
        return (refs,)
    return tuple(r if isinstance(r, int) else -1 for r in refs)


class _Refs:
    __slots__ = ("refs",)

    def __init__(self, refs: ModelRefs) -> None:
        self.refs = refs


def _compose(template: str, models: Mapping[str, ModelRefs], values: Mapping[str, object],
             name: Callable[[int], str]) -> str:
    return _ModelFormatter(models, name).format(template, **values)
