"""How many tensors of an SD single-file UNet the reader lists under the wrong diffusers name (issue 11).

Builds, on the meta device (names only, no weights), diffusers ``UNet2DConditionModel`` s with the block
structure of the published SDXL base and SD 1.5 UNets, writes their LDM names (``tests/format_factory.py``,
``ldm_unet_names``), takes diffusers' own ``convert_ldm_unet_checkpoint`` as the truth for each tensor's
diffusers name, and counts what a version of :mod:`mother_core.io.sd_single_file` lists: right, LDM name
kept, or a name diffusers does not have.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/sdxl_names.py
    git show 1ed2d45:mother_core/io/sd_single_file.py > /tmp/old_sd_single_file.py
    PYTHONPATH=$PWD .venv/bin/python benchmarks/sdxl_names.py --module /tmp/old_sd_single_file.py
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

#: The published UNets' block structure (diffusers configs of stabilityai/stable-diffusion-xl-base-1.0 and
#: the UNet2DConditionModel defaults, which are SD 1.x's).
CONFIGS = {
    "SDXL base": dict(
        sample_size=128, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816),
    "SD 1.5": dict(sample_size=64, cross_attention_dim=768),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", type=Path, default=ROOT / "mother_core" / "io" / "sd_single_file.py",
                        help="the sd_single_file.py to measure (default: this checkout's)")
    args = parser.parse_args()
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    sys.path.insert(0, str(ROOT / "tests"))
    from format_factory import ldm_unet_names

    spec = importlib.util.spec_from_file_location("measured", args.module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    prefix = "model.diffusion_model."
    for label, config in CONFIGS.items():
        with torch.device("meta"):
            unet = UNet2DConditionModel(**config)
        names = list(unet.state_dict())
        single = {prefix + ldm: ldm for ldm in ldm_unet_names(names).values()}  # values: the LDM name itself
        truth = convert_ldm_unet_checkpoint(dict(single), dict(unet.config))  # diffusers name -> LDM name
        assert set(truth) == set(names)
        diffusers_of = {ldm: hf for hf, ldm in truth.items()}
        listed = dict(mod.read_unet(single).names) if hasattr(mod, "read_unet") else mod.unet_names(single)
        counts: collections.Counter[str] = collections.Counter()
        for hf, raw in listed.items():
            ldm = raw[len(prefix):]
            counts["right" if hf == diffusers_of[ldm] else "LDM name kept" if hf == ldm
                   else "a name diffusers does not have" if hf not in truth else "another tensor's name"] += 1
        print(f"{label}: {len(names)} UNet tensors: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))


if __name__ == "__main__":
    main()
