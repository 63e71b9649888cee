"""PEFT OFT, BOFT, VeRA and LN-tuning adapters read against PEFT's own merge (issue 11, formats users have).

Makes (under ``--out``) the set of ``tests/test_peft_oft_vera.py``: a tiny Llama base and one adapter per
config there (made by PEFT, 4 real AdamW steps, saved unmerged), then for each adapter: how discovery takes it,
and, where it is read, the largest difference between the reader's tensors (whole, and in the row ranges 0-5,
5-13, 13-n) and ``merge_and_unload()``'s, next to the largest change the adapter makes to its base.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/peft_other_check.py --out /tmp/peft-other-check
    # the same folders through another checkout's engine (discovery only)
    PYTHONPATH=/work/main .venv/bin/python benchmarks/peft_other_check.py --out /tmp/peft-other-check --discover-only
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_script_main  # noqa: E402


def make(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from format_factory import peft_llama_set
    from test_peft_oft_vera import _configs

    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    merged = peft_llama_set(out, _configs(), seed=20)  # the test's seeds: the same files
    for kind, want in merged.items():
        refs = {m.id: m for m in discover([out]).models}
        whole = rows = moved = 0.0
        with open_model(refs["base"]) as base, open_model(refs[kind], base) as reader:
            for name, info in reader.tensor_infos().items():
                if name not in want:
                    continue
                got = reader.read(name)
                n = info.shape[0]
                cuts = [0, min(5, n), min(13, n), n]
                pieces = torch.cat([reader.read(name, rows=(a, b)) for a, b in zip(cuts, cuts[1:])])
                whole = max(whole, (got - want[name]).abs().max().item())
                rows = max(rows, (pieces - want[name]).abs().max().item())
                moved = max(moved, (want[name] - base.read(name)).abs().max().item())
        print(kind, json.dumps({"format": refs[kind].format, "max_abs_whole": whole, "max_abs_rows": rows,
                                "largest_change": moved}), flush=True)


if __name__ == "__main__":
    check_script_main(__doc__, make, lambda out: out)
