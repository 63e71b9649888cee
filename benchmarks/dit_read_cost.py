"""What reading a Flux single file under the diffusers names costs, against a plain read of the same file.

Makes (under ``--out``) one Flux-shaped transformer with diffusers (``FluxTransformer2DModel``, width
``--width``, 2 double and 4 single blocks, bf16 as Flux ships), written in the BFL / ComfyUI single-file layout
(``tests/dit_factory.flux_single_file``, checked against diffusers' converter by the tests). Then, on the warm
file, reads every tensor in row chunks of ``--rows`` rows (as the streaming pass asks for them) two ways:

* plain: the safetensors reader under the file's own names (``double_blocks.0.img_attn.qkv.weight``, ...);
* diffusers: ``open_model`` as the engine opens it, under the diffusers names (``transformer_blocks.0.attn.to_q
  .weight``, ...), the fused tensors split and the modulation halves swapped while reading.

Prints the bytes each read, the best of ``--repeats`` wall times and their ratio (diffusers / plain), and checks
that the two give the same values (the concatenated pieces equal the stored tensors).

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/dit_read_cost.py --out /tmp/dit-read-cost
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _make(path: Path, width: int) -> int:
    from diffusers import FluxTransformer2DModel
    from dit_factory import flux_single_file, state_of
    from safetensors.torch import save_file

    torch.manual_seed(0)
    heads = width // 128
    model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4,
                                   attention_head_dim=128, num_attention_heads=heads, joint_attention_dim=256,
                                   pooled_projection_dim=128, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
    state = {k: v.to(torch.bfloat16) for k, v in state_of(model).items()}
    save_file(flux_single_file(state, "model.diffusion_model."), str(path))
    return sum(v.numel() for v in state.values())


def _sweep(reader, rows: int) -> tuple[int, float]:
    """Every tensor of ``reader`` in chunks of ``rows`` rows; (bytes, seconds)."""
    total = 0
    start = time.perf_counter()
    for name, info in reader.tensor_infos().items():
        n = info.shape[0] if info.shape else 0
        if n == 0:
            total += reader.read(name).numel() * 2
            continue
        for a in range(0, n, rows):
            t = reader.read(name, (a, min(a + rows, n)))
            total += t.numel() * t.element_size()
    return total, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=1024, help="the transformer's width (a multiple of 128)")
    parser.add_argument("--rows", type=int, default=256, help="rows per chunk")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from mother_core.io.base import ModelRef
    from mother_core.io.discovery import discover
    from mother_core.io.readers import SafetensorsReader, open_model

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "flux-single.safetensors"
    params = _make(path, args.width)
    [ref] = discover([path]).models
    print(f"file: {path} ({os.path.getsize(path) / 1e6:.1f} MB, {params / 1e6:.1f} M parameters), format {ref.format}")
    plain_ref = ModelRef(id="plain", path=str(path), format="safetensors", files=(str(path),))
    timings: dict[str, list[float]] = {"plain": [], "diffusers": []}
    sizes = {}
    for _ in range(args.repeats):
        for kind in ("plain", "diffusers"):
            reader = SafetensorsReader(plain_ref) if kind == "plain" else open_model(ref)
            with reader:
                sizes[kind], seconds = _sweep(reader, args.rows)
            timings[kind].append(seconds)
    with SafetensorsReader(plain_ref) as plain, open_model(ref) as split:
        qkv = plain.read("double_blocks.0.img_attn.qkv.weight")
        parts = [split.read(f"transformer_blocks.0.attn.to_{x}.weight") for x in "qkv"]
        assert torch.equal(torch.cat(parts), qkv)
    best = {k: min(v) for k, v in timings.items()}
    median = {k: statistics.median(v) for k, v in timings.items()}
    for kind in ("plain", "diffusers"):
        print(f"{kind:10s} {sizes[kind] / 1e6:8.1f} MB read  best {best[kind] * 1e3:8.1f} ms  median "
              f"{median[kind] * 1e3:8.1f} ms  (runs: {', '.join(f'{t * 1e3:.0f}' for t in timings[kind])} ms)")
    print(f"ratio diffusers / plain: best {best['diffusers'] / best['plain']:.3f}, median "
          f"{median['diffusers'] / median['plain']:.3f}  (rows per chunk {args.rows}, "
          f"load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
