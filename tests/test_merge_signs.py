"""High-density DELLA and Breadcrumbs merges read by the signs of their entries (issue 11;
:mod:`mother_core.relations.merge_signs`).

Real mergekit merges of really trained tiny Llamas (AdamW steps), stored in bfloat16 as the hub's are: a DELLA
merge (density 0.75, epsilon 0.05) and a Breadcrumbs merge (density 0.8, gamma 0.02) of a root and three of its
fine-tunes. At such densities the inputs rarely all drop an entry, so the merge keeps too few of its base's
entries for ``merge.EQUAL_SHARE``, and its dropped entries leave more of its distance unexplained than the
distance fit allows without them: on main the DELLA merge reads as a fine-tune (of the Breadcrumbs merge).
Wherever the three task vectors agree in sign, each merge differs from the root with that sign (or not at all);
a fine-tune's own update flips some, so the fine-tunes of the set stay fine-tunes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint_factory import adam_steps, tiny_llama
from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.relations.detect import DETECTORS, OPTIONAL_DETECTORS
from mother_core.relations.merge_signs import against_share, confirms

#: Fine-tunes of the root: (name, task seed, AdamW steps); m-d and m-e are not merged (m-e: a child of m-a).
TREE = (("m-a", 1, 10), ("m-b", 2, 8), ("m-c", 3, 12), ("m-d", 4, 8))


def _run_mergekit(merge: dict, out: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(merge), str(out),
              MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=0,
                           write_model_card=False, lazy_unpickle=False))


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mergekit")
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("signs")
    adam_steps(tiny_llama(seed=0), 0, 20, 3e-3).to(torch.bfloat16).save_pretrained(root / "m-root")
    for name, seed, steps in TREE:
        model = LlamaForCausalLM.from_pretrained(root / "m-root", dtype=torch.float32)
        adam_steps(model, seed, steps, 2e-3).to(torch.bfloat16).save_pretrained(root / name)
    model = LlamaForCausalLM.from_pretrained(root / "m-a", dtype=torch.float32)
    adam_steps(model, 5, 6, 2e-3).to(torch.bfloat16).save_pretrained(root / "m-e")
    inputs = (("m-a", 0.25), ("m-b", 0.45), ("m-c", 0.22))
    _run_mergekit({"merge_method": "della", "dtype": "float32", "out_dtype": "bfloat16",
                   "base_model": str(root / "m-root"),
                   "models": [{"model": str(root / m), "parameters": {"weight": w, "density": 0.75, "epsilon": 0.05}}
                              for m, w in inputs]}, root / "m-della")
    _run_mergekit({"merge_method": "breadcrumbs", "dtype": "float32", "out_dtype": "bfloat16",
                   "base_model": str(root / "m-root"),
                   "models": [{"model": str(root / m), "parameters": {"weight": w, "density": 0.8, "gamma": 0.02}}
                              for m, w in inputs]}, root / "m-crumbs")
    return root


@pytest.mark.xdist_group("sparse-merge")
def test_high_density_della_and_breadcrumbs_merges_are_read_with_their_parents(family: Path) -> None:
    stats = compute_statistics(discover([family]), device="cpu")
    # (the sign reading is opt-in: mother_core.relations.detect.OPTIONAL_DETECTORS)
    rec = recover(stats, RecoverySettings(relations=",".join(DETECTORS + OPTIONAL_DETECTORS)))
    parents: dict[str, dict[str, str]] = {}
    for e in rec.edges:
        parents.setdefault(e.child, {})[e.parent] = str(e.relation)
    for merge in ("m-della", "m-crumbs"):
        # main: a fine-tune of one input
        assert set(parents[merge]) == {"m-root", "m-a", "m-b", "m-c"}, (merge, parents[merge])
        assert all(r.endswith("merge") for r in parents[merge].values())
    # nothing else is a merge: the fine-tunes keep their one parent
    for child in ("m-a", "m-b", "m-c", "m-d", "m-e"):
        got = parents.get(child, {})
        assert len(got) <= 1 and not any(r.endswith("merge") for r in got.values()), (child, got)


@pytest.mark.xdist_group("sparse-merge")
def test_signs_of_a_merge_and_of_a_fine_tune(family: Path) -> None:
    """The premise on the files: the DELLA merge has no entry against its inputs' common sign; a fine-tune read on
    its parent and that parent's siblings has entries against, and so has the merge read without one input."""
    from safetensors.torch import load_file

    def flat(name: str) -> np.ndarray:
        tensors = load_file(family / name / "model.safetensors")
        return np.concatenate([t.float().numpy().ravel() for k, t in sorted(tensors.items()) if t.ndim == 2])

    root, a, b, c, e = (flat(m) for m in ("m-root", "m-a", "m-b", "m-c", "m-e"))
    assert confirms(*against_share(flat("m-della"), root, [a, b, c]))
    assert not confirms(*against_share(flat("m-della"), root, [a, b]))
    assert not confirms(*against_share(e, root, [a, b, c]))
