"""How much a half-width (bfloat16) read of GGUF 4- to 6-bit tensors moves the statistics the engine uses
(issue 11; ``benchmarks/RESULTS.md``, "Q4_K at half width").

For every GGUF model of a 4- to 6-bit type (``gguf_fast.HALF_TYPES``) in the typed sets given, and its
source (its parent in ``truth.json``), each float tensor is read three ways: the source, the GGUF decoded to
float32 exactly (the reader before this change: ``HALF_TYPES`` emptied) and as read now (rounded to
bfloat16). Printed per model: the engine's signals computed both ways and how far they moved:

* ``ku``: the sum over tensors of the excess kurtosis (population moments, float64), as the method orients
  (and the source's, to show how far the quantization itself moved it);
* ``norm``: the Frobenius norm over all tensors;
* ``dist``: l_FT to the source, the mean over tensors of RMS(W_gguf - W_source);
* ``round / grid``: RMS of the bfloat16 rounding against RMS of the quantization's own error (W_gguf - W_source).

``--q4k`` also quantizes each 2-D tensor of those sources to Q4_K (``tests/format_factory.py``'s packer:
the ``gguf`` package has no Q4_K quantizer; blocks of 256 along the flattened tensor, as these small
models' rows are shorter than a block) and measures the same on it.

    .venv/bin/python benchmarks/half_width_check.py --sets /work/data/typedd/seed200/typed ... [--q4k]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _kurtosis(x: np.ndarray) -> float:
    x = x.astype(np.float64).reshape(-1)
    d = x - x.mean()
    m2 = (d * d).mean()
    return float((d ** 4).mean() / (m2 * m2) - 3.0) if m2 > 0 else 0.0


def _read_all(path: Path, exact: bool) -> dict[str, np.ndarray]:
    from mother_core.io import gguf_fast
    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    saved = gguf_fast.HALF_TYPES
    if exact:
        gguf_fast.HALF_TYPES = frozenset()  # the float32 decode, as before the change
    try:
        ref = discover([path]).models[0]
        with open_model(ref) as reader:
            return {n: reader.read(n).float().numpy() for n, i in reader.tensor_infos().items() if i.is_float}
    finally:
        gguf_fast.HALF_TYPES = saved


def _signals(gguf_w: dict[str, np.ndarray], src: dict[str, np.ndarray]) -> dict[str, float]:
    names = [n for n in gguf_w if n in src and src[n].shape == gguf_w[n].shape and gguf_w[n].size > 1]
    return {"ku": sum(_kurtosis(gguf_w[n]) for n in names),
            "norm": float(np.sqrt(sum(float((gguf_w[n].astype(np.float64) ** 2).sum()) for n in names))),
            "dist": float(np.mean([np.sqrt(((gguf_w[n].astype(np.float64) - src[n]) ** 2).mean()) for n in names])),
            "tensors": len(names)}


def _row(label: str, exact: dict[str, np.ndarray], half: dict[str, np.ndarray], src: dict[str, np.ndarray]) -> None:
    a, b = _signals(exact, src), _signals(half, src)
    names = [n for n in exact if n in src and src[n].shape == exact[n].shape and exact[n].size > 1]
    rnd = np.sqrt(np.mean([((half[n].astype(np.float64) - exact[n]) ** 2).mean() for n in names]))
    grid = np.sqrt(np.mean([((exact[n].astype(np.float64) - src[n]) ** 2).mean() for n in names]))
    changed = np.mean([float((half[n] != exact[n]).mean()) for n in names])
    ku_src = sum(_kurtosis(src[n]) for n in names)
    print(f"| {label} | {a['tensors']} | {ku_src:.4f} | {a['ku']:.4f} -> {b['ku']:.4f} ({b['ku'] - a['ku']:+.1e}) | "
          f"{(b['norm'] - a['norm']) / a['norm']:+.1e} | {a['dist']:.3e} -> {b['dist']:.3e} "
          f"({(b['dist'] - a['dist']) / a['dist']:+.1e}) | {rnd / grid:.3f} | {changed:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", type=Path, required=True)
    ap.add_argument("--q4k", action="store_true")
    args = ap.parse_args()
    import torch

    from mother_core.io import gguf_fast
    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    print("| model (type) | tensors | ku of the source | ku: float32 -> bf16 (change) | norm (relative) "
          "| dist to source: float32 -> bf16 (relative) | round / grid (RMS) | values changed |")
    print("| --- " * 8 + "|")
    for folder in args.sets:
        truth = json.loads((folder / "truth.json").read_text())
        parent = {e["child"]: e["parent"] for e in truth["edges"]}
        for model in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = list(model.glob("*.gguf"))
            if not files or parent.get(model.name) is None:
                continue
            kind = files[0].stem.split("-")[-1]
            if kind not in gguf_fast.HALF_TYPES:
                continue
            src_ref = discover([folder / parent[model.name]]).models[0]
            with open_model(src_ref) as reader:
                src = {n: reader.read(n).double().numpy() for n, i in reader.tensor_infos().items() if i.is_float}
            _row(f"{folder.parent.name} {model.name} ({kind})", _read_all(model, True), _read_all(model, False), src)
            if args.q4k:
                from format_factory import quantize

                exact, half = {}, {}
                for n, w in src.items():
                    if w.ndim == 2 and w.size % 256 == 0:  # blocks of 256 along the flattened rows (these
                        # models' rows are shorter than a Q4_K block; the grid per block is Q4_K's all the same)
                        blocks = quantize(w.astype(np.float32).reshape(-1, 256), "Q4_K").reshape(-1)
                        exact[n] = gguf_fast.dequantize(blocks, "Q4_K").reshape(w.shape)
                        half[n] = torch.from_numpy(exact[n]).bfloat16().float().numpy()
                        assert np.array_equal(gguf_fast.dequantize(blocks, "Q4_K", rounded=True).reshape(w.shape),
                                              half[n])
                if exact:
                    _row(f"{folder.parent.name} Q4_K of {parent[model.name]}", exact, half, src)


if __name__ == "__main__":
    main()
