"""LyCORIS Stable Diffusion files read against the library (issue 11, formats users have).

Makes (under ``--out``) a tiny SD UNet base and one LyCORIS file per case of ``tests/test_sd_lycoris.py``
(the library's kohya network, one real AdamW step, saved by its ``save_weights``), then for each file: how
discovery takes it, and, where it is read, the largest difference between the reader's merged tensors and the
weight the library's own forward applies, next to the largest update and to what LyCORIS's ``merge_to``
writes into the layers.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/lycoris_check.py --out /tmp/lycoris-check
    # the same files through another checkout's engine (discovery only: what that version makes of them)
    PYTHONPATH=/work/main .venv/bin/python benchmarks/lycoris_check.py --out /tmp/lycoris-check --discover-only
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_script_main  # noqa: E402


def make(out: Path) -> dict[str, dict[str, float]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from format_factory import lycoris_applied_weights, lycoris_unet, tiny_sd_unet
    from safetensors.torch import save_file
    from test_sd_lycoris import CASES, _expected

    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    base_state = {k: v.detach().clone().contiguous() for k, v in tiny_sd_unet(1).state_dict().items()}
    (out / "set" / "base" / "unet").mkdir(parents=True, exist_ok=True)
    save_file(base_state, str(out / "set" / "base" / "unet" / "diffusion_pytorch_model.safetensors"))
    (out / "set" / "base" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    figures: dict[str, dict[str, float]] = {}
    for case, (algo, kwargs, _) in CASES.items():
        unet, network = lycoris_unet(algo, out, **kwargs)
        want = _expected(lycoris_applied_weights(network), base_state)
        network.save_weights(str(out / "set" / f"{case}.safetensors"), torch.float32, {"ss_sd_model_name": "base"})
        merged_by_library = None
        if algo != "full":  # merge_to writes into the layers (a full module has taken the layer's weight over)
            network.merge_to(None, unet, network.state_dict(), torch.float32, "cpu")
            merged_by_library = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        found = {m.id: m for m in discover([out / "set"]).models}
        worst = biggest = merge_gap = 0.0
        t0 = time.perf_counter()
        with open_model(found["base"]) as base, open_model(found[case], base=base) as reader:
            for name, expected in want.items():
                got = reader.read(name)
                worst = max(worst, float((got - expected).abs().max()))
                biggest = max(biggest, float((expected - base_state[name]).abs().max()))
                if merged_by_library is not None:
                    merge_gap = max(merge_gap, float((merged_by_library[name] - expected).abs().max()))
        figures[case] = {"tensors": len(want), "max_abs_vs_forward": worst, "max_update": biggest,
                         "merge_to_vs_forward": merge_gap if merged_by_library is not None else float("nan"),
                         "read_s": time.perf_counter() - t0}
        print(case, json.dumps(figures[case]), flush=True)
    return figures


if __name__ == "__main__":
    check_script_main(__doc__, make, lambda out: out / "set")
