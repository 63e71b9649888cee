"""PEFT adapters on single experts' modules and LyCORIS networks on Flux / SD3, read against their tools (issue 11).

Makes (under ``--out``) the files of ``tests/test_moe.py`` (LoHa, LoKr, IA3, OFT made by PEFT on a tiny Mixtral's
per-expert ``w1`` / ``w2`` / ``w3``, trained 4 AdamW steps; reference PEFT's ``merge_and_unload``) and of
``tests/test_dit_lycoris.py`` (LyCORIS networks on the original modules of a tiny Flux / SD3, as sd-scripts makes
them, and on the diffusers modules; trained 3 AdamW steps; reference the network's forward, mapped by diffusers'
single-file converter for the original layout), then for each file: how discovery takes it and, where it is read
onto its base, the largest difference from the reference and the largest change from the base.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/expert_dit_adapters_check.py --out /tmp/x
    # the same files through another checkout's engine (read only: what that version makes of them)
    cd /work/main && PYTHONPATH=/work/main .venv/bin/python /path/to/benchmarks/expert_dit_adapters_check.py \
        --out /tmp/x --read-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def make(out: Path) -> None:
    """Every file and its reference (``out/ref/<case>.pt``: base tensor name -> what the read must give), indexed in
    ``out/ref/index.json`` (case -> the paths to discover, the file's id, its base's id)."""
    from dit_factory import lycoris_merged, lycoris_network, state_of, tiny_flux, tiny_sd3
    from format_factory import lycoris_applied_weights
    from moe_family import moe_root
    from safetensors.torch import save_file
    from test_dit_lycoris import CASES, original_network
    from test_moe import EXPERT_ADAPTERS, trained_expert_adapter

    (out / "ref").mkdir(parents=True, exist_ok=True)
    index: dict[str, tuple[list[str], str, str]] = {}
    moe_root("mixtral", out / "moe" / "m-root", seed=1, steps=12)
    hub = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
    for kind in EXPERT_ADAPTERS:
        merged = trained_expert_adapter(out / "moe", kind, out / "moe" / f"m-{kind}")
        torch.save({f"layers.{i}.mlp.experts.{p}.weight": torch.stack(
            [merged[f"model.layers.{i}.block_sparse_moe.experts.{e}.{s}.weight"] for e in range(4)])
            for i in range(2) for p, s in hub.items()}, out / "ref" / f"moe-{kind}.pt")
        index[f"moe-{kind}"] = ([str(out / "moe" / "m-root"), str(out / "moe" / f"m-{kind}")], f"m-{kind}", "m-root")
    for arch in ("flux", "sd3"):
        for case in CASES:
            path, want, _ = original_network(arch, case, out / f"{arch}-original")
            torch.save(want, out / "ref" / f"{arch}-original-{case}.pt")
            index[f"{arch}-original-{case}"] = ([str(path.parent)], case, "base")
    for arch, kind, algo in (("flux", "wrapper", "lokr"), ("flux", "kohya", "loha"), ("sd3", "kohya", "lokr"),
                             ("sd3", "wrapper", "loha")):
        model = tiny_flux(0) if arch == "flux" else tiny_sd3(0)
        base = state_of(model)
        network = lycoris_network(model, algo, out, kind=kind)
        folder = out / f"{arch}-diffusers" / "set"
        folder.mkdir(parents=True, exist_ok=True)
        save_file(base, str(folder / "base.safetensors"))
        network.save_weights(str(folder / f"{kind}-{algo}.safetensors"), torch.float32,
                             {"ss_sd_model_name": "base.safetensors"})
        torch.save(lycoris_merged(base, lycoris_applied_weights(network)),
                   out / "ref" / f"{arch}-diffusers-{kind}-{algo}.pt")
        index[f"{arch}-diffusers-{kind}-{algo}"] = ([str(folder)], f"{kind}-{algo}", "base")
    (out / "ref" / "index.json").write_text(json.dumps(index, indent=1))


def read(out: Path) -> dict[str, dict[str, object]]:
    """For every file: its format or the problem discovery reports, and, read onto its base, the largest
    difference from the reference and the largest change from the base (``max_abs`` / ``max_update``)."""
    from mother_core.errors import MotherError
    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    figures: dict[str, dict[str, object]] = {}
    for case, (paths, model_id, base_id) in json.loads((out / "ref" / "index.json").read_text()).items():
        found = discover([Path(p) for p in paths])
        models = {m.id: m for m in found.models}
        row: dict[str, object] = {}
        figures[case] = row
        if model_id not in models:
            row["problem"] = next((p.message for p in found.problems if model_id in p.path), "not found")[:150]
            continue
        row["format"] = models[model_id].format
        want = torch.load(out / "ref" / f"{case}.pt")
        try:
            with open_model(models[base_id]) as base, open_model(models[model_id], base=base) as reader:
                row["max_abs"] = max(float((reader.read(n).float() - w.float()).abs().max()) for n, w in want.items())
                row["max_update"] = max(float((w.float() - base.read(n).float()).abs().max())
                                        for n, w in want.items())
        except MotherError as e:
            row["problem"] = e.message[:150]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--read-only", action="store_true", help="read the files already made under --out")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    if not args.read_only:
        make(args.out)
    for name, row in read(args.out).items():
        print(f"{name:40s} {json.dumps(row)}")


if __name__ == "__main__":
    main()
