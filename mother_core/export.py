"""Export a :class:`~mother_core.recovery.result.Recovery` to the formats other tools read.

- ``to_networkx``: a ``networkx.DiGraph`` with every model and edge field as attributes;
- ``to_node_link``: node-link JSON (networkx ``node_link_data``; D3 and many web viewers);
- ``to_graphml``: GraphML (Gephi, Cytoscape, yEd); only GraphML-legal scalar attributes;
- ``to_newick``: one Newick tree per recovered tree (phylogenetics tools), with the edge distance as
  branch length and the edge confidence as NHX branch support (Zmasek's NHX extension of Newick);
  a merge (a model with several parents) is written in extended Newick (Cardona, Rossello & Valiente
  2008) as a hybrid node ``name#H1``, listed in full under its first parent and as a leaf under the
  others;
- ``base_model_lines``: suggested model-card front matter (``base_model: <parent>`` and
  ``base_model_relation``, a list of parents for a merge) for every non-root model, the fields a
  model hub's "model tree" is built from.

Every edge keeps its ``relation`` (docs/RELATIONS.md) in node-link JSON and GraphML, one edge per parent.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from typing import Any

import networkx as nx
import newick
import numpy as np

from mother_core.errors import ResultFormatError
from mother_core.recovery.json_numbers import to_json_number
from mother_core.recovery.result import FORMAT_NAME, Edge, ModelNode, Recovery
from mother_core.relations.vocabulary import Relation, parse_relation
from mother_core.walk import Forest

__all__ = ["base_model_lines", "newick_unreadable", "newick_unreadable_note", "to_graphml", "to_networkx", "to_newick",
           "to_node_link"]

_FLOAT_FIELDS = {
    cls: {f.name for f in fields(cls) if f.type in ("float", float)} for cls in (ModelNode, Edge)
}
_NEWICK_PLAIN = re.compile(r"[A-Za-z0-9.\-]+")  # anything else is quoted (underscores read as blanks)
# What forces a label into quotes for the `newick` package's reader: blanks, its punctuation, quotes, comments.
_NEWICK_QUOTED_ONLY = re.compile(r"[\s()\[\]:;,']")
_YAML_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]*")


# --------------------------------------------------------------------------------------------------
# networkx, node-link, GraphML
# --------------------------------------------------------------------------------------------------
def to_networkx(recovery: Recovery) -> nx.DiGraph:
    """The recovered graph as a ``networkx.DiGraph``.

    Nodes are model ids with the :class:`ModelNode` fields (``path``, ``tree``, ``kurtosis``,
    ``is_root``, ...) as attributes; edges carry the :class:`Edge` fields (``distance``,
    ``confidence``, ``alternatives`` as a list of dicts, ...). Graph attributes: ``format``,
    ``settings``, ``roots``.

    Parameters
    ----------
    recovery : Recovery

    Returns
    -------
    networkx.DiGraph

    Raises
    ------
    ResultFormatError
        An edge names a model that is not in ``recovery.models``.
    """
    g = nx.DiGraph(format=FORMAT_NAME, settings=asdict(recovery.settings), roots=recovery.roots)
    for m in recovery.models:
        g.add_node(m.id, **_attrs(m, ModelNode, skip={"id"}))
    for e in recovery.edges:
        for end in (e.parent, e.child):
            if end not in g:
                raise ResultFormatError(f"Edge {e.parent!r} -> {e.child!r} names {end!r}, which is not a model.")
        g.add_edge(e.parent, e.child, **_attrs(e, Edge, skip={"parent", "child"}))
    return g


def _attrs(obj: ModelNode | Edge, cls: type[ModelNode] | type[Edge], skip: set[str]) -> dict[str, Any]:
    # Coerce numpy scalars and declared floats so each attribute has one Python type across the graph.
    out = {}
    for k, v in asdict(obj).items():
        if k in skip:
            continue
        v = _plain(v)
        if k in _FLOAT_FIELDS[cls] and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = float(v)
        out[k] = v
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _json_safe(v: Any) -> Any:
    """NaN -> None and +-inf -> "inf"/"-inf", as in result.json (its one codec), so the output is strict JSON."""
    if isinstance(v, (float, np.floating)):
        return to_json_number(v)
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    return _plain(v) if isinstance(v, np.generic) else v


def to_node_link(recovery: Recovery) -> dict[str, Any]:
    """Node-link data (``networkx.node_link_data`` with ``edges="edges"``), strict-JSON-safe.

    NaN becomes ``null`` and infinities ``"inf"``/``"-inf"``, as in ``result.json``. Read it back with
    ``networkx.node_link_graph(data, edges="edges")``.

    Parameters
    ----------
    recovery : Recovery

    Returns
    -------
    dict
        ``{"directed": true, "multigraph": false, "graph": {...}, "nodes": [...], "edges": [...]}``
    """
    return _json_safe(nx.node_link_data(to_networkx(recovery), edges="edges"))


def to_graphml(recovery: Recovery) -> str:
    """The recovered graph as a GraphML document (``networkx.generate_graphml``).

    Only GraphML-legal attribute values are written: strings, booleans, integers and finite floats.
    Missing values (``None``, NaN, infinities) are left out, as GraphML allows; lists and dicts
    (``alternatives``, ``layer_distance``, ``settings``) are written as JSON strings.

    Parameters
    ----------
    recovery : Recovery

    Returns
    -------
    str
        UTF-8 GraphML text; ``networkx.read_graphml`` reads it back.
    """
    g = to_networkx(recovery)
    h = nx.DiGraph(**_graphml_attrs(g.graph))
    h.add_nodes_from((n, _graphml_attrs(d)) for n, d in g.nodes(data=True))
    h.add_edges_from((u, v, _graphml_attrs(d)) for u, v, d in g.edges(data=True))
    return "\n".join(nx.generate_graphml(h, encoding="utf-8", prettyprint=True)) + "\n"


def _graphml_attrs(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            continue
        if isinstance(v, (list, tuple, dict)):
            v = json.dumps(_json_safe(v), allow_nan=False)
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------------
# Newick
# --------------------------------------------------------------------------------------------------
def to_newick(recovery: Recovery) -> str:
    """One Newick tree per recovered tree, one per line, each ``;``-terminated.

    Every model is a node, named by its id (quoted with ``'...'`` and inner quotes doubled whenever
    it holds anything but letters, digits, ``.`` and ``-``: Newick reserves ``()[]':;,`` and blanks,
    and reads ``_`` in unquoted names as a blank). The branch to a model has the edge distance as its
    length and the edge confidence as NHX support, ``child:0.0123[&&NHX:support=0.930]``. Trees come
    in the order of ``recovery.trees`` (else of the roots), children in model order.

    Parameters
    ----------
    recovery : Recovery

    Returns
    -------
    str
        No trailing newline. Parse it with ``newick.loads``; ``Node.unquoted_name`` gives back the
        model ids (raise ``sys.setrecursionlimit`` first for chains of more than ~400 models: the
        parser recurses per level).

    A merged model (several ``merge`` edges) makes the graph a network, not a forest: it is written
    as a hybrid node of extended Newick, ``'m'#H1`` (its subtree) under its first parent and a leaf
    ``'m'#H1`` under each other parent, with that edge's length and support. Readers of plain Newick
    see the leaf as an extra tip.

    Raises
    ------
    ResultFormatError
        The edges do not form a forest plus merges (two parents without a merge, a cycle, unknown model).
    """
    kids, by_child, hybrids = _forest(recovery)
    lines = []
    with _recursion_room(len(recovery.models)):
        for root in _root_order(recovery):
            lines.append(newick.dumps([_newick_node(root, kids, by_child, hybrids, recovery.edges)]))
    return "\n".join(lines)  # no trailing newline: newick.loads would read an extra empty tree


_HYBRID = "\0hybrid:"  # kids entries naming a hybrid leaf (another parent's edge to a merge)


def _forest(recovery: Recovery) -> tuple[dict[str, list[str]], dict[str, Edge], dict[str, int]]:
    """Children lists (first parents; other merge parents get a hybrid leaf), each model's first
    edge, and the hybrid number of every merged model."""
    ids = recovery.model_ids
    kids: dict[str, list[str]] = {m: [] for m in ids}
    by_child: dict[str, Edge] = {}
    hybrids: dict[str, int] = {}
    extra: list[Edge] = []
    for e in recovery.edges:
        if e.parent not in kids or e.child not in kids:
            raise ResultFormatError(f"Edge {e.parent!r} -> {e.child!r} names a model that is not in the result.")
        if e.child in by_child:
            first = by_child[e.child]
            if Relation.MERGE.value not in (e.relation, first.relation):
                raise ResultFormatError(
                    f"Model {e.child!r} has two parents in the result ({first.parent!r} and {e.parent!r}) "
                    "without a merge; it is neither a forest nor a merge network.")
            hybrids.setdefault(e.child, len(hybrids) + 1)
            extra.append(e)
            continue
        by_child[e.child] = e
    order = {m: i for i, m in enumerate(ids)}
    for e in sorted(recovery.edges, key=lambda e: order[e.child]):
        if by_child[e.child] is e:
            kids[e.parent].append(e.child)
    for e in extra:
        kids[e.parent].append(_HYBRID + str(recovery.edges.index(e)))
    reachable = Forest.from_edges(ids, [(e.parent, e.child) for e in by_child.values()]).reachable(recovery.roots)
    if len(reachable) != len(ids):
        raise ResultFormatError("The edges of the result contain a cycle; it is not a forest. Re-run `mother recover`.")
    return kids, by_child, hybrids


def _root_order(recovery: Recovery) -> list[str]:
    roots = recovery.roots
    ordered = [t.root for t in recovery.trees if t.root in roots]
    return list(dict.fromkeys(ordered + roots))


def _newick_node(model: str, kids: dict[str, list[str]], by_child: dict[str, Edge],
                 hybrids: dict[str, int], edges: list[Edge]) -> newick.Node:
    if model.startswith(_HYBRID):  # a leaf standing for a merge child under one of its other parents
        other = edges[int(model[len(_HYBRID):])]
        return _branch(f"{_newick_name(other.child)}#H{hybrids[other.child]}", other, [])
    e = by_child.get(model)
    descendants = [_newick_node(k, kids, by_child, hybrids, edges) for k in kids[model]]
    name = _newick_name(model) + (f"#H{hybrids[model]}" if model in hybrids else "")
    if e is None:
        return newick.Node(name, descendants=descendants)
    return _branch(name, e, descendants)


def _branch(name: str, e: Edge, descendants: list[newick.Node]) -> newick.Node:
    support = f"&&NHX:support={e.confidence:.3f}" if math.isfinite(e.confidence) else None
    if not math.isfinite(e.distance):
        return newick.Node(name, comment=support, descendants=descendants)
    # newick.Node writes comments before the ':'; NHX readers (e.g. ete) expect them after the length,
    # so the support goes in through the length formatter hook.
    tail = f"[{support}]" if support else ""
    return newick.Node(name, length=float(e.distance), descendants=descendants,
                       length_formatter=lambda x: f"{x:.10g}{tail}")


def _newick_name(model_id: str) -> str:
    r"""``model_id`` as a Newick label that ``newick.loads(...)[i].unquoted_name`` gives back exactly.

    Plain ids stay bare; others are quoted with inner quotes doubled. A backslash (discovery writes
    ``\xff`` for an undecodable folder-name byte) is literal in Newick, but the `newick` package (1.11)
    reads ``\`` inside quotes as an escape and ends the label there ("Unterminated quote!"): an id
    holding one is written bare, where ``\`` is an ordinary character to every reader, whenever it needs
    no quotes otherwise. One that also holds a blank or one of ``()[]:;,'`` has no form that package
    reads; it is written quoted as the standard says (other readers take it) and ``newick.loads``
    refuses the file.

    >>> [_newick_name(i) for i in ("llama-2", r"caf\xffe", "it's", "a b")]
    ['llama-2', 'caf\\xffe', "'it''s'", "'a b'"]
    """
    if _NEWICK_PLAIN.fullmatch(model_id) or ("\\" in model_id and not _NEWICK_QUOTED_ONLY.search(model_id)):
        return model_id
    return "'" + model_id.replace("'", "''") + "'"


def newick_unreadable(model_ids: list[str]) -> list[str]:
    r"""The ids that the `newick` package (1.11) cannot read back from any Newick label, in input order.

    Newick (Felsenstein's specification, and the Newick/NHX readers that follow it) quotes a label with
    blanks or ``()[]':;,`` in single quotes, where every character stands for itself and a quote is written
    twice (``'it''s'``); a backslash is an ordinary character. The `newick` package reads a backslash inside
    quotes as an escape: a quoted ``\`` not followed by ``'`` ends the label ("Unterminated quote!"), and
    ``\'`` is read as a quote, so no quoted label gives a backslash back. Unquoted, a backslash is fine but a
    blank or one of ``()[]':;,`` is not. An id with both, e.g. ``C:\models\my model``, has no form it reads.

    >>> newick_unreadable(["llama-2", r"caf\xffe", "a b", r"C:\models\my model"])
    ['C:\\models\\my model']
    """
    return [m for m in model_ids if "\\" in m and _NEWICK_QUOTED_ONLY.search(m)]


def newick_unreadable_note(recovery: Recovery, shown: int = 3) -> str | None:
    """What to tell someone exporting ``recovery`` as Newick when some ids cannot be read back by the `newick`
    package (:func:`newick_unreadable`), naming up to ``shown`` of them; ``None`` when every id can."""
    bad = newick_unreadable(recovery.model_ids)
    if not bad:
        return None
    # The ids as they are: repr() would double each backslash.
    names = ", ".join(f"“{m}”" for m in bad[:shown]) + (f" and {len(bad) - shown} more" if len(bad) > shown else "")
    return (f"{len(bad)} model id(s) hold a backslash and a blank or one of ()[]':;, ({names}). The Newick file "
            "quotes them as the Newick standard says (every character as itself, a quote doubled), which "
            "standard readers take; the Python `newick` package (1.11) reads a backslash inside quotes as an "
            "escape and refuses the whole file, and no other way of writing these ids survives it. For exact "
            "ids in Python, use the GraphML or the result JSON, or rename those folders.")


@contextmanager
def _recursion_room(depth: int) -> Iterator[None]:
    # newick.Node.newick recurses once per tree level: a long chain of models needs the room.
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 4 * depth + 200))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# --------------------------------------------------------------------------------------------------
# model-card front matter
# --------------------------------------------------------------------------------------------------
def base_model_lines(recovery: Recovery) -> str:
    """Suggested model-card front matter: ``base_model`` and ``base_model_relation`` for every
    non-root model.

    Each suggestion is a YAML comment naming the model, the relation (docs/RELATIONS.md, with its
    detail) and the edge confidence, then the lines, with a blank line between models, in model
    order. A merge lists every parent (``base_model:`` as a YAML list, largest weight first); its comment
    gives the merge's confidence, and a parent another relative could take the place of (``parent_note``)
    gets its own as a comment on its line. A parent the user set (a constraint, ``Edge.constrained``) is
    called so, not "recovered". The
    relation is written in the hub's vocabulary (adapter, merge, quantized, finetune, distill); a
    conversion has no hub word, so its card gets ``base_model`` only. Ids that are not plain
    (letters, digits, ``._/-``) are written as YAML double-quoted strings.

    Parameters
    ----------
    recovery : Recovery

    Returns
    -------
    str
        For example::

            # org/child-model (recovered parent, quantized Q4_0, confidence 0.93)
            base_model: org/base-model
            base_model_relation: quantized
    """
    into: dict[str, list[Edge]] = {}
    for e in recovery.edges:
        into.setdefault(e.child, []).append(e)
    blocks = []
    for m in recovery.models:
        edges = into.get(m.id)
        if not edges:
            continue
        e = edges[0]
        relation = parse_relation(e.relation)
        # A merge's line says the merge's confidence; a parent another relative could take the place of
        # (``parent_note``, docs/RELATIONS.md) says its own beside it.
        shown = e.relation_confidence if relation is Relation.MERGE and math.isfinite(e.relation_confidence) \
            else e.confidence
        conf = f"confidence {shown:.2f}" if math.isfinite(shown) else "confidence unknown"
        what = relation.info.label + (f" {e.relation_detail}" if e.relation_detail else "")
        comment = f"{m.id} ({_parent_source(edges)}, {what}, {conf})"
        lines = [f"# {comment.replace(chr(10), ' ').replace(chr(13), ' ')}"]
        if len(edges) == 1:
            lines.append(f"base_model: {_yaml_scalar(e.parent)}")
        else:
            lines.append("base_model:")
            lines += [f"- {_yaml_scalar(x.parent)}" + (f"  # this parent: confidence {x.confidence:.2f}"
                                                        if x.parent_note else "") for x in edges]
        if relation.info.hub_relation:
            lines.append(f"base_model_relation: {relation.info.hub_relation}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _parent_source(edges: list[Edge]) -> str:
    # A parent the user forced (a constraint: "use this parent", a flip) was not recovered from the
    # weights: a card line calling it "recovered" would pass the user's choice off as the engine's.
    forced = [e for e in edges if e.constrained]
    noun = "parents" if len(edges) > 1 else "parent"
    if not forced:
        return f"recovered {noun}"
    if len(forced) == len(edges):
        return f"{noun} set by you (a constraint), not recovered"
    return f"recovered {noun}, {', '.join(e.parent for e in forced)} set by you (a constraint)"


def _yaml_scalar(s: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar.
    return s if _YAML_PLAIN.fullmatch(s) else json.dumps(s, ensure_ascii=False)
