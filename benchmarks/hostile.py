"""Time and peak memory of every hostile / broken input class, each mixed into a good set of ten.

Each case runs the whole pipeline (discover -> statistics -> recover) in a forked child under an
address-space limit (see ``tests/hostile_inputs.py``); the baseline row is the ten good models alone, in
the same run. Columns: what happened to the bad input, whether the ten recovered exactly as in the
baseline, wall time, peak resident memory added by the run, and the start of the bad input's message.

Usage::

    .venv/bin/python benchmarks/hostile.py            # all cases
    .venv/bin/python benchmarks/hostile.py zip_bomb   # some cases
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402

import hostile_inputs as hi  # noqa: E402


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / "good"
        states = hi.write_good_set(good)
        base = hi.run_isolated([str(good)])
        g = torch.Generator().manual_seed(99)
        leaf = {k: v + 0.001 * torch.randn(v.shape, generator=g) for k, v in states["m9"].items()}
        print(f"| {'case':22s} | {'outcome':8s} | ten same | {'time s':>6s} | {'peak MB':>7s} | message |")
        print(f"|{'-' * 24}|{'-' * 10}|----------|{'-' * 8}|{'-' * 9}|---------|")
        print(f"| {'(ten good models)':22s} | {'-':8s} | -        | {base['seconds']:6.2f} | "
              f"{base['peak_mb']:7.0f} | |")
        for name in names or sorted(hi.GENERATORS):
            case_dir = Path(tmp) / name
            case_dir.mkdir()
            for mid in hi.PARENTS:
                os.symlink(good / mid, case_dir / mid, target_is_directory=True)
            make = hi.GENERATORS[name]
            case = make(case_dir, leaf, states) if name == "few_nonfinite" else make(case_dir, leaf)
            got = hi.run_isolated([str(case_dir)])
            if "error" in got:
                print(f"| {name:22s} | ERROR    | -        |      - |       - | {got['error'][:100]} |")
                continue
            same = all(got["parents"].get(m) == p for m, p in base["parents"].items())
            msgs = [p["message"] for p in got["problems"] if case.name in p["path"] + p["message"]]
            outcome = "read" if case.name in got["models"] and not msgs else (
                "partial" if case.name in got["models"] else "refused")
            text = (msgs[0] if msgs else "").replace(str(case_dir) + "/", "").replace("|", "/")
            print(f"| {name:22s} | {outcome:8s} | {'yes' if same else 'NO':8s} | {got['seconds']:6.2f} | "
                  f"{got['peak_mb']:7.0f} | {text[:110]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
