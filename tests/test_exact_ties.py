"""A BitFit child ties with its parent on every weight matrix (benchmarks/elsewhere_set.py's Phi family, made by
real training: biases and norms trained, every matrix frozen). The same models under two namings (so two input
orders and two id assignments) must give the same tree, the root the parent of its BitFit child and of its
other children, with the tie's confidence no more than the evidence that broke it (:mod:`mother_core.recovery.twins`).
On main the input order decided: with the BitFit child listed first, it parented the root and its siblings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from format_factory import elsewhere_family
from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.recovery.result import Recovery

pytest.importorskip("transformers")
pytest.importorskip("mergekit")

# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("exact-ties")

_ROLES = ("p_root", "p_wd", "p_bitfit", "p_frozen_emb", "p_linear", "p_ta")
#: Two namings: the root listed first, then last (its BitFit child first).
_NAMINGS = ({"p_root": "a_root", "p_bitfit": "z_bitfit", "p_wd": "m_wd", "p_frozen_emb": "n_fe",
             "p_linear": "b_lin", "p_ta": "c_ta"},
            {"p_root": "z_root", "p_bitfit": "a_bitfit", "p_wd": "m_wd", "p_frozen_emb": "n_fe",
             "p_linear": "b_lin", "p_ta": "c_ta"})


@pytest.fixture(scope="module")
def recovered(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, str], Recovery]]:
    made = tmp_path_factory.mktemp("phi")
    elsewhere_family(_ROLES, made)
    out = []
    for k, names in enumerate(_NAMINGS):
        d = tmp_path_factory.mktemp(f"naming{k}")
        for role in _ROLES:  # the same bytes under other names
            (d / names[role]).symlink_to(made / role, target_is_directory=True)
        stats = compute_statistics(discover([d]), device="cpu")
        back = {v: r for r, v in names.items()}
        out.append((back, recover(stats, RecoverySettings())))
    return out


def _finetunes(back: dict[str, str], rec: Recovery) -> set[tuple[str, str]]:
    return {(back[Path(e.parent).name], back[Path(e.child).name]) for e in rec.edges if e.relation == "finetune"}


def test_same_tree_whatever_the_input_order(recovered: list[tuple[dict[str, str], Recovery]]) -> None:
    trees = [_finetunes(back, rec) for back, rec in recovered]
    assert trees[0] == trees[1]
    # the root parents its BitFit child and its other fine-tunes, whichever is listed first
    assert trees[0] == {("p_root", "p_bitfit"), ("p_root", "p_wd"), ("p_root", "p_frozen_emb")}


def test_tie_confidence_is_the_evidence_that_broke_it(recovered: list[tuple[dict[str, str], Recovery]]) -> None:
    from mother_core.recovery.problem import Twins  # here: the order test above runs on code without it

    for back, rec in recovered:
        assert rec.problem is not None
        twins = rec.problem.twins
        assert len(twins) == 1 and isinstance(twins[0], Twins)
        ids = rec.problem.ids
        assert {back[Path(ids[g]).name] for g in twins[0].members} == {"p_root", "p_bitfit"}
        assert back[Path(ids[twins[0].members[0]]).name] == "p_root"
        # the biases and norms that differ all put the root nearer the rest of the tree
        assert 0.5 < twins[0].support <= 1.0
        for e in rec.edges:
            if back[Path(e.parent).name] == "p_root" and back[Path(e.child).name] == "p_bitfit":
                assert e.direction_confidence <= twins[0].support
            if e.relation == "finetune" and back[Path(e.child).name] in ("p_wd", "p_frozen_emb"):
                # a sibling the BitFit child would have parented at the same cost: no more sure than the tie
                assert e.placement_confidence <= twins[0].support
