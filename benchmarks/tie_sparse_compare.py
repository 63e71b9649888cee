"""Dense (near-tie rule on / off) against sparse placement (issue 12; docs/SCALE.md): how many edges the
near-tie kurtosis rule, which the sparse path cannot apply, makes the two paths disagree on. FITTING
collections of ``benchmarks/generalise.py`` only.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/tie_sparse_compare.py fit-fft fit2-fft fit-mixed
"""

from __future__ import annotations

import sys
from pathlib import Path

from mother_core import RecoverySettings
from mother_core.evaluate import evaluate, load_truth
from mother_core.pipeline import recover_paths
from mother_core.recovery.result import Recovery

DATA = Path(__file__).resolve().parent / "_data" / "generalise"


def edges(r: Recovery) -> set[tuple[str, str]]:
    return {(e.parent, e.child) for e in r.edges}


def main(names: list[str], k: int = 10) -> None:
    for name in names:
        path = str(DATA / name)
        truth = load_truth(f"{path}/truth.json")
        on = recover_paths([path], cache_dir="/tmp/cache-tiesui")
        off = recover_paths([path], RecoverySettings(kurtosis_ties=False), cache_dir="/tmp/cache-tiesui")
        sp = recover_paths([path], candidates=k, cache_dir="/tmp/cache-tiesui-sp")
        right = {n: evaluate(r, truth).n_correct for n, r in (("on", on), ("off", off), ("sparse", sp))}
        print(f"{name}: {len(truth)} true edges; directed right dense+rule {right['on']}, dense-rule "
              f"{right['off']}, sparse (K={k}) {right['sparse']}; edges chosen by the rule "
              f"{sum(e.chosen_by_tie for e in on.edges)}; sparse edges not in dense+rule {len(edges(sp) - edges(on))}, "
              f"not in dense-rule {len(edges(sp) - edges(off))}; sparse notes {len(sp.notes)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
