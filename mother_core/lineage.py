"""Declared lineage (``base_model:`` in model cards, configs) checked against the recovered tree.

A model hub's "model tree" is built from what uploaders declare; nothing checks it against the weights
(docs/METHOD.md, "Related work"). This module compares, for every model, the parent it declares with the
parent recovered from its weights.

Statuses (one per model)
------------------------
``"agree"``
    The declared parent is the recovered parent (or: nothing declared and the model is a recovered root,
    or the declared parent is not in this set and the model is a recovered root).
``"conflict"``
    The model declares a parent in this set, but the recovered parent differs (``reversed`` when the
    weights say the declared parent descends from this model).
``"undocumented"``
    The weights give the model a parent, but it declares none.
``"external"``
    It declares a parent that is not in this set while the weights give it a parent inside the set:
    possibly consistent (an intermediate model), not checkable here.

Examples
--------
>>> from mother_core.recovery.result import Edge, ModelNode, Recovery
>>> m = lambda i, p=None: ModelNode(i, "", 0, 0.0, p is None, declared_parent=p)
>>> e = lambda p, c: Edge(p, c, 1.0, 1.0, 1.0, 1.0)
>>> rec = Recovery([m("base"), m("chat", "base"), m("code")], [e("base", "chat"), e("base", "code")], [])
>>> [(r.model, r.status) for r in compare_declared(rec)]
[('base', 'agree'), ('chat', 'agree'), ('code', 'undocumented')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mother_core.io.discovery import IdMatcher, match_model_id  # the one matching rule, re-exported here
from mother_core.statuses import DECLARED_STATUSES, EdgeStatus

if TYPE_CHECKING:  # pragma: no cover
    from mother_core.recovery.result import Recovery

__all__ = ["IdMatcher", "LineageRow", "compare_declared", "declared_edges", "declared_in_set", "declared_text",
           "edge_lineage", "findings", "match_model_id"]

STATUSES = DECLARED_STATUSES  # the words: mother_core/statuses.py


@dataclass(frozen=True)
class LineageRow:
    """Declared vs recovered parent of one model.

    Attributes
    ----------
    model : str
        The model id.
    declared_parent : str or None
        What the model declares, as written.
    declared_in_set : str or None
        The model of this set that the declaration names, if any (hub ids match folder names).
    recovered_parent : str or None
        The parent recovered from the weights (``None``: a recovered root).
    status : str
        One of ``"agree"``, ``"conflict"``, ``"undocumented"``, ``"external"``.
    note : str
        One sentence for people.
    """

    model: str
    declared_parent: str | None
    declared_in_set: str | None
    recovered_parent: str | None
    status: str
    note: str


def declared_in_set(model: str, declared: str | None, match: IdMatcher) -> str | None:
    """The model of the set that ``model``'s declared parent names (``match``: the set's ids), or None.

    A declaration is a hub id or a path on the machine the model was made on (an adapter's
    ``base_model_name_or_path``): ``/home/someone/llama`` names the set's ``llama`` by its last component.
    A model naming itself says nothing (None).

    Examples
    --------
    >>> match = IdMatcher(["llama", "chat"])
    >>> declared_in_set("chat", "/home/someone/llama/", match), declared_in_set("chat", "chat", match)
    ('llama', None)
    """
    found = match(declared)
    return None if found == model else found


def declared_text(declared: str | None, in_set: str | None) -> tuple[str, str]:
    """How a declared parent reads: ``(shown, as_written)``.

    ``shown`` is the model of the set the declaration names (:func:`declared_in_set`), else the text as
    written ("" when nothing is declared); ``as_written`` is the text as written when ``shown`` is not it
    (a path on another machine, a hub id), else "". The app shows ``as_written`` as a second line or a
    column of its own: a listing read "/home/someone/runs/llama" where the set holds "llama".

    Examples
    --------
    >>> declared_text("/home/someone/llama", "llama"), declared_text("org/gone", None), declared_text(None, None)
    (('llama', '/home/someone/llama'), ('org/gone', ''), ('', ''))
    """
    shown = in_set or declared or ""
    return shown, declared if declared and shown != declared else ""


def compare_declared(recovery: "Recovery") -> list[LineageRow]:
    """Compare each model's declared parent with its recovered parent.

    Parameters
    ----------
    recovery : Recovery
        A recovery whose models carry ``declared_parent`` (``None`` where nothing is declared).

    Returns
    -------
    list of LineageRow
        One row per model, in the recovery's model order.
    """
    match = IdMatcher(recovery.model_ids)
    parent = {e.child: e.parent for e in recovery.edges}
    rows: list[LineageRow] = []
    for m in recovery.models:
        rec_parent = parent.get(m.id)
        declared = m.declared_parent or None
        in_set = declared_in_set(m.id, declared, match)
        if declared is None:
            if rec_parent is None:
                status, note = EdgeStatus.AGREE, "Declares no parent and was recovered as a root."
            else:
                status = EdgeStatus.UNDOCUMENTED
                note = f"Declares no parent; its weights say it descends from {rec_parent}."
        elif in_set is None:
            if rec_parent is None:
                status = EdgeStatus.AGREE
                note = f"Declares {declared} (not in this set) and was recovered as a root here."
            else:
                status = EdgeStatus.EXTERNAL
                note = f"Declares {declared}, which is not in this set; recovered from {rec_parent}."
        elif in_set == rec_parent:
            status, note = EdgeStatus.AGREE, f"Declared and recovered parent: {in_set}."
        elif parent.get(in_set) == m.id:
            status = EdgeStatus.CONFLICT
            note = f"Reversed: declares {in_set} as its parent, but the weights say {in_set} descends from it."
        elif rec_parent is None:
            status, note = EdgeStatus.CONFLICT, f"Declares {in_set} as its parent, but was recovered as a root."
        else:
            status = EdgeStatus.CONFLICT
            note = f"Declares {in_set} as its parent, but the weights point to {rec_parent}."
        rows.append(LineageRow(m.id, declared, in_set, rec_parent, status.value, note))  # the plain word
    return rows


def declared_edges(recovery: "Recovery") -> list[tuple[str, str]]:
    """The declared lineage as (parent, child) edges between models of this set."""
    return [(r.declared_in_set, r.model) for r in compare_declared(recovery) if r.declared_in_set]


def edge_lineage(recovery: "Recovery") -> dict[tuple[str, str], str]:
    """Status of every recovered edge against the declared lineage.

    Returns
    -------
    dict of (parent, child) to str
        ``"agree"``, ``"conflict"``, ``"undocumented"`` or ``"external"`` (the child's row status).
    """
    rows = {r.model: r for r in compare_declared(recovery)}
    return {(e.parent, e.child): rows[e.child].status for e in recovery.edges if e.child in rows}


def findings(rows: list[LineageRow]) -> list[str]:
    """The conflicts, as sentences (the page's list of findings)."""
    return [f"{r.model}: {r.note}" for r in rows if r.status == EdgeStatus.CONFLICT]
