"""One settings schema: every recovery and run option once, with its type, choices, default and help.

The library's :class:`RecoverySettings`, the ``mother recover`` options (:mod:`mother_core.cli`), the
app's sidebar widgets (``explorer_ui/settings_widgets.py``), the README's option table and the
accuracy benchmark's ablation rows are all made from :data:`SETTINGS`; ``tests/test_settings.py``
checks that every surface agrees. To add a setting: add a field to :class:`RecoverySettings` and a
:class:`Setting` here; every surface follows.

Examples
--------
>>> setting("layers").default
'matrices'
>>> setting("refine").flag
'--no-refine'
>>> RecoverySettings().layers == setting("layers").default
True
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

#: Kurtosis regimes: inferred per tree, or fixed (docs/METHOD.md, "Direction").
REGIMES = ("auto", "specialization", "generalization")
#: Our method, or the paper's as published.
METHODS = ("mother+", "paper")
#: Named layer selections (a comma-separated list of layer kinds is accepted too).
LAYER_SELECTIONS = ("matrices", "all", "square-attention")
DIRECTION_CUES = ("kurtosis+norm+scale+subspace", "kurtosis+norm+scale", "kurtosis+norm", "kurtosis", "norm")
NORM_DIRECTIONS = ("auto", "growth")
USE_RANK = ("auto", "never", "always")
RELATION_DETECTORS = ("all", "none")
DEVICES = ("auto", "cpu", "cuda")

Scope = Literal["recovery", "run"]


@dataclass(frozen=True)
class Setting:
    """One option, as every surface shows it.

    Attributes
    ----------
    name : str
        The :class:`RecoverySettings` field (``scope="recovery"``) or run option (``"run"``, e.g. the
        device), also the app's widget key.
    label : str
        Short label for the app.
    help : str
        One sentence: what it does (CLI help, app tooltip, README).
    default : object
        The default of library, CLI and app alike.
    type : type
        ``str``, ``float``, ``int`` or ``bool``.
    choices : tuple of str
        The allowed values (empty: free). With ``open_choices`` other values are allowed too.
    open_choices : bool
        Whether a value outside ``choices`` is accepted (a list of layer kinds).
    optional : bool
        Whether ``None`` is a value (``n_trees``: found from the data; ``name_pattern``: no filter).
    minimum, maximum, step : float or None
        Range of a number (the app's slider or number box).
    scope : str
        ``"recovery"`` (a :class:`RecoverySettings` field) or ``"run"`` (how the statistics pass runs).
    """

    name: str
    label: str
    help: str
    default: object
    type: type = str
    choices: tuple[str, ...] = ()
    open_choices: bool = False
    optional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    scope: Scope = "recovery"

    @property
    def flag(self) -> str:
        """The CLI option: ``--name`` (``--no-name`` for a switch that is on by default)."""
        base = self.name.rstrip("_").replace("_", "-")
        return f"--no-{base}" if self.type is bool and self.default is True else f"--{base}"


#: Every setting, in the order surfaces show them.
SETTINGS: tuple[Setting, ...] = (
    Setting("regime", "Kurtosis regime", "specialization: kurtosis falls parent -> child; generalization: it "
            "rises; auto: inferred per tree.", "auto", choices=REGIMES),
    Setting("method", "Method", "mother+: robust distance (rank of differences for LoRA trees) places edges, "
            "kurtosis and norm growth orient them; paper: the published method.", "mother+", choices=METHODS),
    Setting("lambda_", "lambda (direction penalty)", "Weight of the direction penalty in the cost "
            "M = D + lambda * mean(D) * K.", 0.3, type=float, minimum=0.0, maximum=2.0, step=0.05),
    Setting("direction_cues", "Direction cues", "Which cues orient edges (mother+ only): the per-layer "
            "kurtosis trend, norm growth, scale (one rescaling of the parent plus orthogonal updates), subspace "
            "(the update lies in the child's own top singular directions), or a +-joined list.",
            "kurtosis+norm+scale+subspace", choices=DIRECTION_CUES, open_choices=True),
    Setting("norm_direction", "Norm direction", "auto: whether norms grow or (under strong weight decay) shrink "
            "from parent to child is read per tree, shrinking only on evidence beyond the prior odds of growth; "
            "growth: always growth.", "auto", choices=NORM_DIRECTIONS),
    Setting("layers", "Layers", "Layer selection: matrices (2-D and conv weights), all (norms and biases too), "
            "square-attention (the paper's), or layer kinds a,b,c.", "matrices", choices=LAYER_SELECTIONS,
            open_choices=True),
    Setting("name_pattern", "Layer name pattern", "Regular expression: only tensors whose name matches are "
            "used.", None, optional=True),
    Setting("use_rank", "Rank distance (LoRA)", "Place edges by the rank of weight differences in trees whose "
            "models differ at low rank (merged LoRA); auto detects it.", "auto", choices=USE_RANK),
    Setting("n_trees", "Number of trees", "Number of trees, if known (none: found from the data).", None,
            type=int, optional=True, minimum=0, maximum=1000, step=1),
    Setting("refine", "Refine by additivity", "Move attachments while squared distances add up better along "
            "the tree (fine-tuning steps add nearly orthogonal updates); off: the arborescence as solved.",
            True, type=bool),
    Setting("kurtosis_ties", "Near-tied parents by update shape", "In trees whose updates read Adam-like "
            "(platykurtic), a child whose candidate parents the layers cannot tell apart takes the one whose "
            "difference to it is the most platykurtic, and siblings read as a chain are lifted by that kurtosis "
            "or by the spectrum of the difference; off: distance alone.", True, type=bool),
    Setting("relations", "Relation detectors", "Relation detectors run before the fine-tune forest "
            "(docs/RELATIONS.md): all, none, or a list of convert,quantized,adapter,merge,shape,lora (and "
            "merge-signs, opt-in: sparse merges read by the signs of their entries).", "all",
            choices=RELATION_DETECTORS, open_choices=True),
    Setting("device", "Device", "Where the statistics pass runs (auto: a GPU when there is one).", "auto",
            choices=DEVICES, scope="run"),
    Setting("decode_threads", "Decode threads", "Threads that decode each chunk of a quantized file (GGUF "
            "blocks, int8 codes); 0: every core available to the process, 1: one. The values are the same "
            "either way.", 0, type=int, minimum=0, maximum=1024, step=1, scope="run"),
)


def setting(name: str) -> Setting:
    """The setting called ``name``."""
    for s in SETTINGS:
        if s.name == name:
            return s
    raise KeyError(name)


def _default(name: str) -> object:
    return setting(name).default


@dataclass(frozen=True)
class RecoverySettings:
    """Knobs of the recovery step (docs/METHOD.md, "Cost and tree"); defaults and help in :data:`SETTINGS`.

    Attributes
    ----------
    regime : str
        ``"auto"`` (inferred per tree), ``"specialization"`` (kurtosis falls parent -> child) or
        ``"generalization"`` (kurtosis rises).
    method : str
        ``"mother+"`` (default): distances robust to re-initialised layers place the edges and
        per-layer kurtosis votes only orient them; ``"paper"``: the published cost with the summed
        kurtosis sign as a hard penalty.
    lambda_ : float
        Weight of the direction penalty: M = D + lambda * mean(D) * K (paper: 0.3, also our default;
        benchmarks/RESULTS.md has the sweep).
    direction_cues : str
        ``"mother+"`` only: which cues orient edges, a ``+``-joined list of ``kurtosis``, ``norm``,
        ``scale``, ``subspace`` and ``erank``; default ``"kurtosis+norm+scale+subspace"`` (chosen on the
        fitting collections: benchmarks/RESULTS.md, issue 12, "Direction" and "Full fine-tune trees: wrong
        edges by cause"; see
        :func:`mother_core.recovery.recover.direction_evidence`).
    norm_direction : str
        ``"auto"`` (whether norms grow or, under strong weight decay, shrink from parent to child is
        read from each tree's shape, like the kurtosis regime; shrinking only on evidence that outweighs
        the prior odds of growth, :data:`mother_core.recovery.direction.SHRINK_MARGIN`) or ``"growth"``
        (always growth).
    layers : str
        Layer selection: ``"matrices"`` (2-D and conv weights; the default, chosen by benchmark:
        benchmarks/RESULTS.md, "Default settings"), ``"all"`` (every shared float tensor),
        ``"square-attention"`` (the paper's choice), or a comma-separated list of layer kinds.
    name_pattern : str or None
        Optional regular expression; only tensors whose name matches are used.
    use_rank : str
        ``"auto"`` (place edges by the rank of weight differences in trees whose models differ at
        low rank, i.e. merged LoRA fine-tunes), ``"never"`` or ``"always"``.
    n_trees : int or None
        Number of trees if the user knows it; ``None`` finds it from the data.
    refine : bool
        ``"mother+"`` only: after the arborescence, move attachments while squared distances add up
        better along the tree's paths (fine-tuning steps add nearly orthogonal updates; see
        :mod:`mother_core.recovery.additive`). Trees placed by the rank distance are left as solved.
    kurtosis_ties : bool
        ``"mother+"`` only: in trees whose members' differences read platykurtic (Adam-like updates), a
        child whose chosen parent the layers do not prefer beyond the noise over another candidate takes
        the candidate whose difference to it reads the most platykurtic, layer by layer
        (:mod:`mother_core.recovery.ties`; chosen on the fitting collections: benchmarks/RESULTS.md, issue 12,
        "Near-tied parents", "Near-tied parents read layer by layer"). It also switches the sibling lifts:
        by the kurtosis in Adam-like trees, and by the spectrum (effective rank) of the differences in every
        tree placed by distance ("Siblings told from chains by the spectrum of the difference").
    relations : str
        ``"mother+"`` only: which relation detectors run before the fine-tune forest is solved
        (:mod:`mother_core.relations.detect`): ``"all"`` (default), ``"none"`` (every edge a
        fine-tune, as in the paper) or a comma-separated list of ``convert, quantized, adapter,
        merge, shape, lora``.
    """

    regime: str = str(_default("regime"))
    method: str = str(_default("method"))
    lambda_: float = float(_default("lambda_"))  # type: ignore[arg-type]
    direction_cues: str = str(_default("direction_cues"))
    norm_direction: str = str(_default("norm_direction"))
    layers: str = str(_default("layers"))
    name_pattern: str | None = None
    use_rank: str = str(_default("use_rank"))
    n_trees: int | None = None
    refine: bool = bool(_default("refine"))
    kurtosis_ties: bool = bool(_default("kurtosis_ties"))
    relations: str = str(_default("relations"))


def recovery_settings() -> tuple[Setting, ...]:
    """The settings that are :class:`RecoverySettings` fields, in field order."""
    names = [f.name for f in fields(RecoverySettings)]
    return tuple(sorted((s for s in SETTINGS if s.scope == "recovery"), key=lambda s: names.index(s.name)))


def _cell(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def markdown_table() -> str:
    """The README's option table (``mother recover`` flag, library field, default, values, help)."""
    rows = ["| option | library | default | values | what it does |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        if s.choices:
            values = " \\| ".join(f"`{c}`" for c in s.choices) + (" or a list" if s.open_choices else "")
        elif s.type is bool:
            values = "on \\| off"
        elif s.minimum is not None:
            values = f"{s.type.__name__} >= {s.minimum:g}"
        else:
            values = "text"
        lib = f"`{s.name}=`" if s.scope == "recovery" else f"`{s.name}=` (run)"
        rows.append(f"| `{s.flag}` | {lib} | {_cell(s.default)} | {values} | {s.help} |")
    return "\n".join(rows)


def ablation_rows() -> list[tuple[str, RecoverySettings]]:
    """One benchmark row per non-default choice of every recovery setting with choices, after the
    defaults (the accuracy benchmark's ablations; open-ended settings are swept by the benchmark)."""
    rows: list[tuple[str, RecoverySettings]] = [("ours (mother+, defaults)", RecoverySettings())]
    for s in recovery_settings():
        for choice in s.choices:
            if choice != s.default:
                rows.append((f"{s.name}={choice}", RecoverySettings(**{s.name: choice})))  # type: ignore[arg-type]
        if s.type is bool:
            rows.append((f"{s.name}={'off' if s.default else 'on'}",
                         RecoverySettings(**{s.name: not s.default})))  # type: ignore[arg-type]
    return rows


if __name__ == "__main__":  # regenerate the README's option table
    print(markdown_table())
