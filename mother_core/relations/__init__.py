"""Typed lineage: the relation vocabulary (:mod:`.vocabulary`) and one detector per relation.

Importing this package loads the vocabulary only; detectors are imported where recovery runs them.
"""

from mother_core.relations.vocabulary import (
    RELATIONS,
    SINGLE_PARENT,
    Relation,
    RelationInfo,
    parse_relation,
)

__all__ = ["RELATIONS", "SINGLE_PARENT", "Relation", "RelationInfo", "parse_relation"]
