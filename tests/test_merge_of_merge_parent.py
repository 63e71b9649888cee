"""A merge parent that is itself a merge, read where one of its own inputs would do about as well, reads as one
reading of two (issues 11 and 12; :func:`mother_core.relations.merge._inner_input_contest`).

A merge lies in its inputs' span, so a child read on a merge M' and on some of M''s relatives can as well be read
on one of M''s inputs in its place: the two readings differ only by what M' adds to that input. On main such a
parent kept the merge's 0.99 unless the input left a strictly *smaller* residual (a lower one is the only contest of
an ordinary relative), which a merge with some residual of its own (trimmed entries, storage rounding) can miss in
either direction. Real mergekit merges of really trained tiny Llamas (AdamW steps), float32: a TIES merge (density
0.5) of the root, a fine-tune and a linear merge that weighs one fine-tune 0.7. The engine reads it on that
fine-tune, contested by the merge (a smaller residual in its place); read on the merge, its true reading, the heavy
input in its place leaves 1.14 times the residual, so the merge parent is contested too (the calibrated rate of
contested parents) while the other parents keep the merge's number. On main it reads the merge's number.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint_factory import adam_steps, tiny_llama
from mother_core import compute_statistics, discover
from mother_core.relations.calibration import contested_confidence
from mother_core.relations.evidence import pair_layers
from mother_core.relations.merge import _entries_above_chance, contest_parents, find_merges, rounding_ratio

#: Fine-tunes of the root: (name, task seed, AdamW steps); the m-e* make the tree's chance level of equal entries
#: low, so that the entries the TIES merge keeps stand out (``merge.chance_equal_share``).
TREE = (("m-a", 1, 8), ("m-b", 2, 8), ("m-c", 3, 8)) + tuple((f"m-e{k}", 10 + k, 4) for k in range(5))


def _run_mergekit(merge: dict, out: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(merge), str(out),
              MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=0,
                           write_model_card=False, lazy_unpickle=False))


@pytest.mark.xdist_group("sparse-merge")
def test_a_merge_parent_whose_input_reads_as_well_is_contested(tmp_path: Path) -> None:
    pytest.importorskip("mergekit")
    from transformers import LlamaForCausalLM

    adam_steps(tiny_llama(seed=0), 0, 20, 3e-3).save_pretrained(tmp_path / "m-root")
    for name, seed, steps in TREE:
        model = LlamaForCausalLM.from_pretrained(tmp_path / "m-root", dtype=torch.float32)
        adam_steps(model, seed, steps, 2e-3).save_pretrained(tmp_path / name)
    _run_mergekit({"merge_method": "linear", "dtype": "float32",
                   "models": [{"model": str(tmp_path / m), "parameters": {"weight": w}}
                              for m, w in (("m-b", 0.7), ("m-c", 0.3))]}, tmp_path / "m-inner")
    _run_mergekit({"merge_method": "ties", "dtype": "float32", "base_model": str(tmp_path / "m-root"),
                   "models": [{"model": str(tmp_path / m), "parameters": {"weight": 0.5, "density": 0.5}}
                              for m in ("m-a", "m-inner")]}, tmp_path / "m-merge")
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    ids = [m.id for m in stats.models]
    at = {m: i for i, m in enumerate(ids)}
    labels = np.zeros(len(ids), dtype=int)
    links = find_merges(stats, pair_layers(stats), labels, set())
    found = {ids[x.child]: x for x in links}
    assert {ids[p] for p in found["m-inner"].parents} == {"m-b", "m-c"}  # the inner merge is found

    # The merge read on the inner merge (its true reading) and, in the inner merge's place, on its heavy input.
    link = found["m-merge"]
    parents = {ids[p] for p in link.parents}
    assert parents in ({"m-root", "m-a", "m-inner"}, {"m-root", "m-a", "m-b"})
    if "m-b" in parents:  # the engine's reading: on the heavy input, which the merge in its place contests
        assert link.confidence_of(list(link.parents).index(at["m-b"])) == contested_confidence()
    reading = tuple(at["m-inner"] if ids[p] == "m-b" else p for p in link.parents)
    forced = dataclasses.replace(link, parents=reading, parent_confidence=None, parent_notes=())
    pl = _entries_above_chance(pair_layers(stats), labels, rounding_ratio(stats))
    contested = contest_parents(stats, pl, labels, set(), forced, links)
    own = {ids[p]: contested.confidence_of(k) for k, p in enumerate(contested.parents)}
    assert own["m-inner"] == contested_confidence() < contested.confidence  # main: the merge's own
    assert own["m-a"] == own["m-root"] == contested.confidence
    note = contested.note_of(list(contested.parents).index(at["m-inner"]))
    assert "m-b, an input of this parent" in note
