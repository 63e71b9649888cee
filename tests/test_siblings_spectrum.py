"""Siblings read as a chain, lifted by the spectrum (effective rank) of the weight differences (issue 12;
:func:`mother_core.recovery.ties.lift_by_spectrum`; benchmarks/RESULTS.md, issue 12, "Siblings told from
chains by the spectrum of the difference"). Real training of tiny models with the fitting recipes of
``benchmarks/generalise.py`` (:mod:`mother_zoo.variety`), no synthetic weights; the rule's bookkeeping is
checked directly below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mother_core.recovery.ties as ties_module
from mother_core import compute_statistics, discover, recover
from mother_core.evaluate import load_truth
from mother_core.recovery.problem import TieSpectrum
from mother_core.recovery.ties import SPECTRAL_LIFT, lift_by_spectrum, spectral_contrast
from tests.test_siblings import assert_only_the_lifts_move, sibling_trees


# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("siblings-spectrum")

@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Those of tests/test_siblings.py (two fitting recipes of benchmarks/generalise.py with the seeds of the
    # fitx-2 collection): continued pre-training and a barely trained Llama tree, each with one sibling that
    # distance hangs under another.
    return sibling_trees(tmp_path_factory.mktemp("spectrum"))


def test_siblings_hung_under_siblings_are_lifted_by_the_spectrum(trees: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    stats = compute_statistics(discover([trees]), device="cpu")
    truth = set(load_truth(trees / "truth.json"))
    # The kurtosis lift set aside (no significance level passes): the spectrum alone lifts both siblings.
    monkeypatch.setattr(ties_module, "LIFT_ALPHA", 0.0)
    rec = recover(stats)
    assert rec.problem is not None and rec.problem.tie_spectra
    lifted = [e for e in rec.edges if e.tie_spectral]
    assert len(lifted) == 2, "one sibling per tree was read as its sibling's child"
    for e in lifted:
        # Right, told as a lift, and the model distance had chosen is the child's true sibling.
        assert e.tie_lifted and e.chosen_by_tie
        assert (e.parent, e.child) in truth and (e.parent, e.tie_displaced) in truth
        c, s, p = (rec.problem.ids.index(m) for m in (e.child, str(e.tie_displaced), e.parent))
        assert spectral_contrast(rec.problem.tie_spectra[c], s, p) > SPECTRAL_LIFT
    # Without the spectral lift too, the same statistics give the chains; nothing else moves.
    monkeypatch.setattr(ties_module, "SPECTRAL_LIFT", float("inf"))
    assert_only_the_lifts_move(recover(stats), rec, lifted)


def test_a_spectral_lift_survives_save_load_and_resolve_and_is_told(trees: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from explorer_ui.views import tie_note
    from mother_core import Constraints, resolve
    from mother_core.recovery.result import Recovery

    monkeypatch.setattr(ties_module, "LIFT_ALPHA", 0.0)
    rec = recover(compute_statistics(discover([trees]), device="cpu"))
    rec.save(tmp_path / "result.json")
    back = Recovery.load(tmp_path / "result.json")
    lifted = [e for e in back.edges if e.tie_spectral]
    assert [(e.parent, e.child, e.tie_displaced) for e in lifted] == \
           [(e.parent, e.child, e.tie_displaced) for e in rec.edges if e.tie_spectral] and lifted
    assert all("by the spectrum of the weight difference" in tie_note(e) for e in lifted)
    assert back.problem is not None and rec.problem is not None
    for c, t in rec.problem.tie_spectra.items():
        np.testing.assert_array_equal(t.layers, back.problem.tie_spectra[c].layers)
    # A global re-solve (a root fixed where it already is) reads the stored spectra: the same tree.
    root = next(m.id for m in back.models if m.is_root)
    again = resolve(back, Constraints(roots=(root,)))
    assert {(e.parent, e.child) for e in again.edges} == {(e.parent, e.child) for e in rec.edges}


def _spec(candidates: tuple[int, ...], per_candidate: list[float], layers: int = 6) -> TieSpectrum:
    return TieSpectrum(candidates, np.array([[v] * layers for v in per_candidate], dtype=np.float64))


def test_lift_by_spectrum_cascades_and_honours_constraints() -> None:
    # 0 -> 1 -> 2 -> 3 read as a chain; the spectra say 2 and 3 are 0's children (siblings of 1): each one's
    # difference to its recovered parent spreads over more directions (log effective rank higher by 0.3).
    parent = np.array([-1, 0, 1, 2])
    spectra = {1: _spec((0, 2), [2.0, 2.5]), 2: _spec((1, 0, 3), [2.3, 2.0, 2.6]),
               3: _spec((2, 0, 1), [2.3, 2.0, 2.6])}
    out, moved = lift_by_spectrum(parent, np.arange(4), spectra)
    # 2 is lifted to 0; then 3, under 2, is asked against 2's new parent 0 and lifted too.
    assert out.tolist() == [-1, 0, 0, 0]
    assert moved[2].displaced == 1 and moved[2].candidates == (0, 1) and moved[2].spectral and moved[2].lifted
    assert moved[3].displaced == 2 and moved[3].candidates == (0, 2)
    assert all(np.isnan(moved[2].kurtosis))  # no kurtosis read: told as not measured
    # Pinned children, a banned edge, a typed leaf as the new parent: nothing moves there.
    assert lift_by_spectrum(parent, np.arange(4), spectra, pinned={2, 3})[0].tolist() == parent.tolist()
    assert lift_by_spectrum(parent, np.arange(4), spectra, banned={(0, 2)})[0][2] == 1
    assert lift_by_spectrum(parent, np.arange(4), spectra, no_children={0})[0].tolist() == parent.tolist()
    # A parent without its own spectra (not a full fine-tune) is not lifted past.
    assert lift_by_spectrum(parent, np.arange(4), {2: spectra[2]})[0].tolist() == parent.tolist()
    # A chain the spectra confirm, or one inside the margin, stays.
    for values in ([2.0, 2.3], [2.05, 2.0]):
        chain = {1: spectra[1], 2: _spec((1, 0), values)}
        assert lift_by_spectrum(parent[:3], np.arange(3), chain)[1] == {}


def test_spectral_contrast_reads_layers_both_measured() -> None:
    t = TieSpectrum((1, 0), np.array([[2.5, 2.5, np.nan], [2.0, 2.0, 9.0]]))
    assert spectral_contrast(t, 1, 0) == pytest.approx(0.5)
    assert np.isnan(spectral_contrast(t, 1, 7))
    assert np.isnan(spectral_contrast(TieSpectrum((1, 0), np.full((2, 2), np.nan)), 1, 0))
