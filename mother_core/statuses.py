"""Edge statuses: the one place that names how a recovered edge compares with a reference.

A recovered forest is compared with one of two references: a truth file (``mother evaluate``,
:mod:`mother_core.evaluate`) or the parents the models declare in their cards and configs
(:mod:`mother_core.lineage`). Each comparison gives every edge a status word; the CLI, the exports and
the app (colours, icons, legend) all use these words and this table (issue 10, "one home each").

Examples
--------
>>> EdgeStatus.FLIPPED == "flipped"
True
>>> STATUS_INFO[EdgeStatus.FLIPPED].meaning
'right pair, wrong direction'
>>> [str(s) for s in TRUTH_STATUSES]
['correct', 'flipped', 'wrong', 'missing']
"""

from __future__ import annotations

from dataclasses import dataclass

from mother_core.words import Word

__all__ = ["DECLARED_STATUSES", "STATUS_INFO", "TRUTH_STATUSES", "EdgeStatus", "StatusInfo"]


class EdgeStatus(Word):
    """How an edge compares with the reference. The value is the word written everywhere."""

    # against a truth file
    CORRECT = "correct"
    FLIPPED = "flipped"
    WRONG = "wrong"
    MISSING = "missing"
    # against the declared parents
    AGREE = "agree"
    CONFLICT = "conflict"
    UNDOCUMENTED = "undocumented"
    EXTERNAL = "external"


@dataclass(frozen=True)
class StatusInfo:
    """What a status means and how it is shown.

    Attributes
    ----------
    meaning : str
        A short phrase for legends and tooltips.
    icon : str
        One character for tables and metrics.
    verdict : {"right", "direction", "wrong", "absent", "unknown", "outside"}
        What it says about the recovered edge; statuses with the same verdict share a colour.
    """

    meaning: str
    icon: str
    verdict: str


STATUS_INFO: dict[EdgeStatus, StatusInfo] = {
    EdgeStatus.CORRECT: StatusInfo("correct (in the truth)", "✓", "right"),
    EdgeStatus.FLIPPED: StatusInfo("right pair, wrong direction", "⇄", "direction"),
    EdgeStatus.WRONG: StatusInfo("not in the truth", "✗", "wrong"),
    EdgeStatus.MISSING: StatusInfo("in the reference, not recovered", "–", "absent"),
    EdgeStatus.AGREE: StatusInfo("agrees with the declared parent", "✓", "right"),
    EdgeStatus.CONFLICT: StatusInfo("conflicts with the declared parent", "✗", "wrong"),
    EdgeStatus.UNDOCUMENTED: StatusInfo("no parent declared", "?", "unknown"),
    EdgeStatus.EXTERNAL: StatusInfo("declared parent is outside this set", "↗", "outside"),
}

#: Statuses against a truth file (:func:`mother_core.evaluate.edge_status`), in report order.
TRUTH_STATUSES = (EdgeStatus.CORRECT, EdgeStatus.FLIPPED, EdgeStatus.WRONG, EdgeStatus.MISSING)
#: Statuses against the declared parents (:class:`mother_core.lineage.LineageRow`), in report order.
DECLARED_STATUSES = (EdgeStatus.AGREE, EdgeStatus.CONFLICT, EdgeStatus.UNDOCUMENTED, EdgeStatus.EXTERNAL)
