"""Flux and SD3 single files against diffusers (issue 11, the formats users have).

For each family, makes (under ``--out``) with diffusers 0.42 on CPU: a tiny transformer as a diffusers
repository (``model_index.json`` + ``transformer/``, no ``unet/``), the same weights as a single file (the
inverse of diffusers' converter, ``tests/dit_factory.py``), a fine-tune (3 real AdamW steps) as a single file,
and an unrelated one (and, for Flux, a LoRA saved by ``FluxPipeline.save_lora_weights`` whose model card names
the single file). Prints, per family: the format discovery gives each model, the largest difference
between diffusers' own converter applied to the single file and the diffusers weights, the largest difference
between our reader's tensors and the diffusers weights, and the recovered edges with their relation and
confidence.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/dit_check.py --out /tmp/dit-check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _flux_lora(folder: Path, base: dict) -> tuple[float, float]:
    """A LoRA of the tiny Flux (peft, 3 AdamW steps of its factors) saved by ``FluxPipeline.save_lora_weights``
    into ``folder`` with a model card naming ``base-single``, and the same factors in the kohya-ss layout; returns,
    for each, the largest difference between our reader (on the single file) and diffusers' ``load_lora_weights`` +
    ``fuse_lora`` (for kohya, diffusers' kohya Flux converter with its Flux.1 split sizes set to the tiny model's)."""
    from unittest import mock

    from diffusers import FluxPipeline
    from diffusers.loaders import lora_pipeline
    from dit_factory import (flux_single_file, kohya_flux_lora, patched_kohya_flux_converter, state_of,
                             tiny_flux, trained_flux_lora)
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    model = trained_flux_lora(3)
    FluxPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(model),
                                   transformer_lora_adapter_metadata=model.peft_config["default"].to_dict(),
                                   safe_serialization=True)
    (folder / "README.md").write_text("---\nbase_model: base-single\n---\n")
    pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=tiny_flux(0))
    pipe.load_lora_weights(folder)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = state_of(pipe.transformer)
    # the same factors in the kohya-ss layout (fused qkv / linear1 modules), read by diffusers' kohya converter
    kohya = kohya_flux_lora({"transformer." + k: v for k, v in get_peft_model_state_dict(model).items()}, 4.0)
    save_file(kohya, str(folder.parent / "kohya-lora.safetensors"), metadata={"ss_sd_model_name": "base-single"})
    pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=tiny_flux(0))
    with mock.patch.object(lora_pipeline, "_convert_kohya_flux_lora_to_diffusers",
                           patched_kohya_flux_converter(16, 64)):
        pipe.load_lora_weights(str(folder.parent / "kohya-lora.safetensors"))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused_kohya = state_of(pipe.transformer)
    save_file(flux_single_file(base), str(folder.parent / "base-single.safetensors"))
    models = {m.id: m for m in discover([folder.parent]).models}
    with open_model(models["base-single"]) as b, open_model(models["lora"], b) as lora, \
            open_model(models["kohya-lora"], b) as lora_kohya:
        return (max((lora.read(n) - fused[n]).abs().max().item() for n in fused),
                max((lora_kohya.read(n) - fused_kohya[n]).abs().max().item() for n in fused))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from dit_factory import (flux_converter, flux_single_file, flux_steps, sd3_converter, sd3_single_file,
                             sd3_steps, state_of, tiny_flux, tiny_sd3)
    from safetensors.torch import save_file

    from mother_core import RecoverySettings, recover_paths
    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    families = {"flux": (tiny_flux, flux_steps, flux_single_file, flux_converter(16), "FluxPipeline"),
                "sd3": (tiny_sd3, sd3_steps, sd3_single_file, sd3_converter(), "StableDiffusion3Pipeline")}
    for family, (make, steps, single, convert, pipeline) in families.items():
        folder = args.out / family
        model = make(0)
        base = state_of(model)
        tuned = state_of(steps(model, seed=5))
        (folder / "base" / "transformer").mkdir(parents=True, exist_ok=True)
        save_file(base, str(folder / "base" / "transformer" / "diffusion_pytorch_model.safetensors"))
        (folder / "base" / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
        save_file(single(base), str(folder / "base-single.safetensors"))
        save_file(single(tuned), str(folder / "finetune.safetensors"))
        save_file(single(state_of(make(7))), str(folder / "unrelated.safetensors"))
        if family == "flux":
            lora_diff = _flux_lora(folder / "lora", base)
        converted = convert(single(base))
        diff_converter = max((converted[k] - v).abs().max().item() for k, v in base.items())
        found = discover([folder])
        ref = next(m for m in found.models if m.id == "base-single")
        with open_model(ref) as reader:
            got = {n: reader.read(n) for n in reader.tensor_infos()}
        assert set(got) == set(base)
        diff_reader = max((got[k] - v).abs().max().item() for k, v in base.items())
        print(f"== {family}: {len(base)} tensors; diffusers converter vs diffusers weights: max |diff| "
              f"{diff_converter}; our reader vs diffusers weights: max |diff| {diff_reader}")
        if family == "flux":
            print(f"   Flux LoRA on base-single vs diffusers load_lora_weights + fuse_lora: max |diff| "
                  f"{lora_diff[0]} (diffusers layout), {lora_diff[1]} (kohya-ss layout)")
        for m in found.models:
            print(f"   {m.id:14s} {m.format:32s} {m.component or ''}")
        result = recover_paths([folder], RecoverySettings())
        for e in result.edges:
            print(f"   edge {e.parent} -> {e.child}: {e.relation}, confidence {e.confidence:.2f}")
        print(f"   problems: {[p['message'] for p in result.problems] if result.problems else 'none'}")


if __name__ == "__main__":
    main()
