"""A chain of fine-tunes trained with SGD and strong L2 weight decay lies near one ray (every child a
shrunk copy of its parent plus a small update), so its middle model is a near-exact affine combination
of its parent and its child: the merge detector must not read it as a merge (issue 11, the generalise
collection ``fitw``; :func:`mother_core.relations.merge.off_ray_ratio`). Real training, real savers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from checkpoint_factory import hf_folder
from mother_core import compute_statistics, discover, recover
from mother_core.recovery.result import RecoverySettings
from mother_core.relations.evidence import PairLayers, pair_layers
from mother_core.relations.merge import EXACT, affine_fit, off_ray_ratio

# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("merge-ray")

NAMES = ("model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
         "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight")


def _train(start: dict[str, torch.Tensor], seed: int, steps: int, weight_decay: float) -> dict[str, torch.Tensor]:
    """A two-block MLP trained ``steps`` SGD steps on a random regression task of its own."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 32, generator=g)
    y = torch.tanh(x @ torch.randn(32, 32, generator=g) / 6)
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    opt = torch.optim.SGD(list(params.values()), lr=0.05, weight_decay=weight_decay)
    for _ in range(steps):
        h = x
        for i in range(2):
            h = h + torch.relu(h @ params[NAMES[2 * i]].T) @ params[NAMES[2 * i + 1]].T
        loss = ((h - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in params.items()}


@pytest.fixture(scope="module")
def ray_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    g = torch.Generator().manual_seed(0)
    init = {k: torch.randn((64, 32) if "up" in k else (32, 64), generator=g) * 0.2 for k in NAMES}
    base = _train(init, seed=1, steps=50, weight_decay=0.0)
    # Each step shrinks the weights by 1 - lr * wd = 0.985: 14% in 10 steps, more than the task moves them.
    child = _train(base, seed=2, steps=10, weight_decay=0.3)
    grandchild = _train(child, seed=3, steps=10, weight_decay=0.3)
    for name, sd in {"a-base": base, "b-child": child, "c-grandchild": grandchild}.items():
        hf_folder(root / name, sd)
    return compute_statistics(discover([root]), device="cpu")


def test_ray_chain_is_an_exact_affine_fit(ray_chain):
    """The premise: along the ray the middle model is an interpolation of its parent and its child."""
    sq = np.nansum(ray_chain.sq_dist, axis=0)
    ids = [m.id for m in ray_chain.models]
    b, c, g = (ids.index(n) for n in ("a-base", "b-child", "c-grandchild"))
    a, res = affine_fit(np.array([sq[c, b], sq[c, g]]), np.array([[0, sq[b, g]], [sq[b, g], 0]]))
    assert res / min(sq[c, b], sq[c, g]) < EXACT and (a > 0).all()
    # Off the ray (its own direction projected out per layer) only the child's new update is left.
    assert off_ray_ratio(pair_layers(ray_chain), c, (b, g)) > 0.2


def test_ray_chain_has_no_merge(ray_chain):
    rec = recover(ray_chain, RecoverySettings())
    # Without the guard: b-child a merge of a-base (0.46) and c-grandchild (0.54) at confidence 0.986.
    assert all(e.relation == "finetune" for e in rec.edges), rec.edges
    # The chain itself is found (its direction is another matter: weight decay shrinks the norm from
    # parent to child, and three models give the direction cues little to go on).
    assert {frozenset((e.parent, e.child)) for e in rec.edges} == {
        frozenset(("a-base", "b-child")), frozenset(("b-child", "c-grandchild"))}


def _pair_layers(models: list[list[np.ndarray]]) -> PairLayers:
    """PairLayers of models given as lists of layer vectors (exact squared norms and distances)."""
    n, n_layers = len(models), len(models[0])
    sq = np.array([[[float(((models[i][t] - models[j][t]) ** 2).sum()) for j in range(n)] for i in range(n)]
                   for t in range(n_layers)])
    norm2 = np.array([[float((m[t] ** 2).sum()) for m in models] for t in range(n_layers)])
    scale2 = (norm2[:, :, None] + norm2[:, None, :]) / 2
    rel = np.sqrt(sq / scale2)
    numel = np.full((n, n), float(sum(len(v) for v in models[0])))
    return PairLayers(rel, sq, scale2, np.diag(numel).copy(), numel, np.full((n, n), np.nan))


def test_off_ray_ratio_keeps_merges_and_drops_rescalings():
    rng = np.random.default_rng(0)
    base = [rng.normal(size=400) for _ in range(3)]
    p = [w + 0.1 * rng.normal(size=400) for w in base]
    q = [w + 0.1 * rng.normal(size=400) for w in base]
    linear = [0.3 * a + 0.7 * b for a, b in zip(p, q)]

    def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
        theta = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        return (np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)

    sl = [slerp(a, b, 0.4) for a, b in zip(p, q)]  # off the chord by 0.002 of d(C, P) on all layers
    # A weight-decayed chain: each model a shrunk copy of the one before plus a small new update.
    child = [0.85 * w + 0.02 * rng.normal(size=400) for w in p]
    grandchild = [0.85 * w + 0.02 * rng.normal(size=400) for w in child]
    pl = _pair_layers([p, q, linear, sl, child, grandchild])
    assert off_ray_ratio(pl, 2, (0, 1)) < 1e-9
    # SLERP is a per-layer combination of its two parents: its arc's departure from the chord lies
    # along the child and goes (a t varying by layer leaves about the same residual here as on all layers).
    assert off_ray_ratio(pl, 3, (0, 1)) < 1e-6
    assert off_ray_ratio(pl, 4, (0, 5)) > 0.3  # the chain's middle: only its own update is left
