"""A typed Stable Diffusion family set (issue 11, "the formats users have"; users browse SD family trees).

Every other typed set is transformers LLM / BERT families. This one is a tiny diffusers
``UNet2DConditionModel`` (SD 1.x block structure, ``tests/format_factory.tiny_sd_unet``) trained with the
diffusers text-to-image recipe (``DDPMScheduler.add_noise``, epsilon loss, AdamW) on synthetic latent
"styles" (each a distribution of smooth 4x8x8 latents and its own prompt embedding), and the family made
the ways people make SD checkpoints:

- base: a random init trained ``--base-steps`` steps on all styles; a stranger: another init, other styles;
- full fine-tunes of the base (each its own style, seed, AdamW steps), and a fine-tune of a fine-tune;
- kohya-ss LoRA files (peft LoRA trained with AdamW, written by diffusers' ``convert_state_dict_to_kohya``,
  header ``ss_sd_model_name`` = the base's name, as sd-scripts writes it) of the base and of a fine-tune:
  ``adapter``;
- a LoRA trained on a fine-tune and fused by diffusers (``fuse_lora``), saved as a full model: ``lora``;
- a single-file SD 1.x copy (``model.diffusion_model.*``, LDM names) of a fine-tune and an fp16 cast of
  another: ``convert``;
- the two A1111 / ComfyUI checkpoint-merger modes, written as the same arithmetic on the state dicts
  (mergekit does not merge UNets): weighted sum ``(1 - a) A + a B`` and add difference
  ``A + (B - base) m``: ``merge`` (the add difference lists the base as a parent, as the typed zoo does
  for task arithmetic).

Full models are diffusers pipeline folders (``model_index.json`` + ``unet/``, ``save_pretrained``), ids
are opaque (``m-xxxxxx``); ``truth.json`` has the shape ``mother zoo typed`` writes, so
``benchmarks/typed.py --sets DIR`` scores it.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/sd_typed.py --out /tmp/sdtyped/seed1 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from format_factory import Style, ldm_single_file, tiny_sd_unet  # noqa: E402
from format_factory import denoise_train as train  # noqa: E402

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


def state(unet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in unet.state_dict().items()}


def unet_from(sd: dict[str, torch.Tensor]):
    unet = tiny_sd_unet(0)
    unet.load_state_dict(sd)
    return unet


def save_pipeline(unet, folder: Path, dtype: torch.dtype = torch.float32) -> None:
    """A diffusers pipeline folder holding only its UNet (``save_pretrained``: config.json + safetensors)."""
    folder.mkdir(parents=True)
    unet.to(dtype).save_pretrained(folder / "unet", safe_serialization=True)
    unet.to(torch.float32)
    (folder / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
         "unet": ["diffusers", "UNet2DConditionModel"]}))


def lora_trained(sd: dict[str, torch.Tensor], styles: list[Style], seed: int, steps: int, rank: int = 4,
                 alpha: float = 4.0):
    """A peft LoRA added the way diffusers' train_text_to_image_lora.py adds it, trained with AdamW."""
    from peft import LoraConfig

    unet = unet_from(sd)
    unet.requires_grad_(False)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                target_modules=LORA_TARGETS))
    log = train(unet, styles, steps, 1e-3, seed)
    return unet, log


def save_kohya(unet, path: Path, base_name: str) -> None:
    """The LoRA as a kohya-ss file (diffusers' ``convert_state_dict_to_kohya``), ``.alpha`` = lora_alpha and
    the header metadata sd-scripts writes, naming the base it was trained on."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = unet.peft_config["default"]
    kohya = convert_state_dict_to_kohya({"unet." + k: v for k, v in get_peft_model_state_dict(unet).items()})
    for k in kohya:
        if k.endswith(".alpha"):
            kohya[k] = torch.tensor(float(config.lora_alpha), dtype=torch.float16)
    meta = {"ss_network_dim": str(config.r), "ss_network_alpha": str(config.lora_alpha),
            "ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1", "ss_sd_model_name": base_name}
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path), metadata=meta)


def fused(unet) -> dict[str, torch.Tensor]:
    """diffusers / peft's own merge of the LoRA (``fuse_lora``), under the plain UNet names."""
    unet.fuse_lora()
    return {k.replace(".base_layer.", "."): v.detach().clone() for k, v in unet.state_dict().items()
            if ".lora_" not in k}


def make(out: Path, seed: int, base_steps: int, ft_steps: int) -> Path:
    rng = random.Random(seed)
    ids: dict[str, str] = {}

    def mid(name: str) -> str:
        ids[name] = f"m-{rng.getrandbits(24):06x}"
        return ids[name]

    names = ["base", "ft1", "ft2", "ft3", "ft1a", "lora_base", "lora_ft2", "ft3_lora_fused", "ft1a_single",
             "ft1_fp16", "ws_merge", "ad_merge", "stranger"]
    for n in names:
        mid(n)
    out.mkdir(parents=True, exist_ok=False)
    styles = [Style(1000 * seed + i) for i in range(8)]
    other = [Style(1000 * seed + 500 + i) for i in range(3)]
    s = lambda k: 10_000 * seed + k  # noqa: E731
    models: dict[str, dict] = {}
    t0 = time.perf_counter()

    def log(name: str, op: str, parents: list[str], relation: str | None, **info) -> None:
        models[ids[name]] = {"name": name, "op": op, "relation": relation, "parents": [ids[p] for p in parents],
                             "family": 1 if name == "stranger" else 0, **info}
        print(f"{time.perf_counter() - t0:6.1f}s {name} {ids[name]} {info.get('log', '')}", flush=True)

    unet = tiny_sd_unet(s(1))
    log("base", "root", [], None, log=train(unet, styles[:4], base_steps, 1e-3, s(2)),
        params=sum(p.numel() for p in unet.parameters()))
    base = state(unet)
    save_pipeline(unet, out / ids["base"])

    fts: dict[str, dict[str, torch.Tensor]] = {}
    for k, (name, style, lr) in enumerate([("ft1", 4, 2e-4), ("ft2", 5, 1e-4), ("ft3", 6, 2e-4)]):
        u = unet_from(base)
        log(name, "finetune", ["base"], "finetune", log=train(u, [styles[style]], ft_steps, lr, s(10 + k)))
        fts[name] = state(u)
        save_pipeline(u, out / ids[name])
    u = unet_from(fts["ft1"])
    log("ft1a", "finetune", ["ft1"], "finetune", log=train(u, [styles[7]], ft_steps, 1e-4, s(20)))
    fts["ft1a"] = state(u)
    save_pipeline(u, out / ids["ft1a"])

    for name, parent, style, k in [("lora_base", "base", 5, 30), ("lora_ft2", "ft2", 7, 31)]:
        u, lg = lora_trained(base if parent == "base" else fts[parent], [styles[style]], s(k), ft_steps)
        log(name, "lora-file", [parent], "adapter", log=lg)
        save_kohya(u, out / f"{ids[name]}.safetensors", ids[parent])
    u, lg = lora_trained(fts["ft3"], [styles[4]], s(32), ft_steps)
    log("ft3_lora_fused", "lora-fused", ["ft3"], "lora", log=lg)
    save_pipeline(unet_from(fused(u)), out / ids["ft3_lora_fused"])

    from safetensors.torch import save_file

    torch.manual_seed(s(40))  # the stand-in VAE / text-encoder tensors of the single file
    save_file(ldm_single_file(fts["ft1a"]), str(out / f"{ids['ft1a_single']}.safetensors"))
    log("ft1a_single", "single-file", ["ft1a"], "convert")
    save_pipeline(unet_from(fts["ft1"]), out / ids["ft1_fp16"], torch.float16)
    log("ft1_fp16", "fp16", ["ft1"], "convert")

    a, m = 0.4, 1.0
    ws = {k: (1 - a) * fts["ft1"][k] + a * fts["ft2"][k] for k in base}
    save_pipeline(unet_from(ws), out / ids["ws_merge"])
    log("ws_merge", "weighted-sum", ["ft1", "ft2"], "merge", alpha=a)
    ad = {k: fts["ft3"][k] + (fts["ft2"][k] - base[k]) * m for k in base}
    save_pipeline(unet_from(ad), out / ids["ad_merge"])
    log("ad_merge", "add-difference", ["base", "ft3", "ft2"], "merge", multiplier=m)

    u = tiny_sd_unet(s(50))
    log("stranger", "root", [], None, log=train(u, other, base_steps, 1e-3, s(51)))
    save_pipeline(u, out / ids["stranger"])

    edges = [{"parent": p, "child": c, "relation": info["relation"]}
             for c, info in models.items() for p in info["parents"]]
    relations: dict[str, int] = {}
    for e in edges:
        relations[e["relation"]] = relations.get(e["relation"], 0) + 1
    (out / "truth.json").write_text(json.dumps({
        "edges": edges, "families": {i: info["family"] for i, info in models.items()},
        "meta": {"split": "sd-typed", "seed": seed, "profile": "SD",
                 "description": "typed Stable Diffusion UNet family made with diffusers, peft, kohya conversion; "
                                "A1111 merges as state-dict arithmetic",
                 "n_models": len(models), "n_edges": len(edges), "relations": relations, "n_families": 2,
                 "architectures": ["UNet2DConditionModel"], "models": models}}, indent=1))
    print(f"{len(models)} models, {len(edges)} edges in {time.perf_counter() - t0:.0f}s -> {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--base-steps", type=int, default=300)
    ap.add_argument("--ft-steps", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    make(args.out, args.seed, args.base_steps, args.ft_steps)


if __name__ == "__main__":
    main()
