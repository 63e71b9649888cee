"""More collections for the confidence constants (issue 12, item 5): second draws of generalise.py's.

``benchmarks/generalise.py`` has three fitting and three held-out collections of ~27 edges each; the
confidence constants were fitted on its 78 fitting edges, and a held-out ECE over 27 edges, whose
errors come tree by tree, is mostly noise. This module draws each collection again from the *same
recipes* with new seeds: ``fit2-*`` from the fitting recipes only (more data to fit on) and
``held2-*`` from the held-out recipes only (a second held-out check, generated after the rules of
``mother_core/recovery/confidence.py`` were chosen). Settings stay disjoint as in generalise.py.

    python benchmarks/confidence_data.py        # generate both (cached under benchmarks/_data/generalise)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalise import _FIT, _HELD, DATA  # noqa: E402

from mother_zoo.variety import Collection, generate_collection  # noqa: E402

FITTING2 = [
    Collection("fit2-fft", ((_FIT["vit-fft"], 21), (_FIT["vit-fft-keep"], 22), (_FIT["llama-fft"], 23))),
    Collection("fit2-lora", ((_FIT["vit-lora-qv"], 24), (_FIT["llama-lora-attn"], 25), (_FIT["vit-lora-attn"], 26))),
    Collection("fit2-mixed", ((_FIT["vit-family"], 27), (_FIT["vit-family"], 28), (_FIT["vit-family"], 29),
                              (_FIT["vit-continued"], 30), (_FIT["llama-barely"], 31), (_FIT["vit-fft"], 32)),
               strangers=(0, 3)),
]
HELD2 = [
    Collection("held2-fft", ((_HELD["vit-fft"], 121), (_HELD["llama-fft"], 122), (_HELD["vit-fft-repeat"], 123))),
    Collection("held2-lora", ((_HELD["vit-lora-all"], 124), (_HELD["llama-lora-qv"], 125),
                              (_HELD["vit-lora-wd"], 126))),
    Collection("held2-mixed", ((_HELD["llama-family"], 127), (_HELD["llama-family"], 128),
                               (_HELD["llama-family"], 129), (_HELD["llama-continued"], 130),
                               (_HELD["vit-barely"], 131), (_HELD["vit-lora-all"], 132)), strangers=(0, 5)),
]


def folders(which: str) -> list[Path]:
    """Generate (if needed) and return the folders of ``"fitting2"`` or ``"held2"``."""
    out = []
    for c in FITTING2 if which == "fitting2" else HELD2:
        t = time.perf_counter()
        out.append(generate_collection(c, DATA))
        print(f"{c.name}: ready ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return out


if __name__ == "__main__":
    folders("fitting2")
    folders("held2")
