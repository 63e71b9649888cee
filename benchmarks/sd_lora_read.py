"""What reading a Stable Diffusion LoRA file costs next to reading its base (issue 11, formats users have).

Makes (once, under ``--out``) an SD 1.5-sized UNet (diffusers' ``UNet2DConditionModel()`` defaults: 860M
parameters, fp16, a diffusers folder) and a kohya-ss LoRA of it made by peft (``add_adapter``) and
converted by diffusers' ``convert_state_dict_to_kohya`` (attention, feed-forward, proj_in/out, with ``--locon``
the ResNets' 3x3 convolutions too; fp16), then times, warm, every tensor read through the base's reader
and through the LoRA's reader (base + alpha/r up @ down), each in the row chunks the pass reads.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/sd_lora_read.py --rank 32 [--locon] --repeat 3 --threads 1

With ``--peft`` the same is timed for a PEFT adapter folder instead: a Llama-architecture model (bf16,
8 layers of width 1024, 170M parameters) and a LoRA of every linear layer made by peft
(``get_peft_model`` then ``save_pretrained``), read through :mod:`mother_core.io.lora`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def make(out: Path, rank: int, locon: bool) -> Path:
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    path = out / "loras" / f"lora-r{rank}{'-locon' if locon else ''}.safetensors"
    if path.exists():
        return path
    torch.manual_seed(0)
    unet = UNet2DConditionModel()
    if not (out / "base" / "unet").exists():
        (out / "base").mkdir(parents=True, exist_ok=True)
        (out / "base" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
        unet.half().save_pretrained(out / "base" / "unet")
        unet.float()
    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
    targets += ["conv1", "conv2"] if locon else []
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank / 2, init_lora_weights="gaussian", target_modules=targets))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    kohya = convert_state_dict_to_kohya({"unet." + k: v for k, v in get_peft_model_state_dict(unet).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in kohya.items()}, str(path),
              metadata={"ss_sd_model_name": "base", "ss_network_dim": str(rank), "ss_network_alpha": str(rank / 2)})
    return path


def make_peft(out: Path, rank: int) -> tuple[Path, Path]:
    """A Llama base folder and a PEFT LoRA adapter of all its linear layers (made once under ``out``)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base, adapter = out / "llama-base", out / f"llama-lora-r{rank}"
    if adapter.exists():
        return base, adapter
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                         num_key_value_heads=4, vocab_size=32000)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(base)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)  # an untrained adapter's B is zero: give the timing a real product to add
    peft_model.save_pretrained(adapter)
    (adapter / "adapter_config.json").write_text(
        (adapter / "adapter_config.json").read_text().replace('"base_model_name_or_path": null',
                                                              '"base_model_name_or_path": "llama-base"'))
    return base, adapter


def read_all(reader, chunk: int) -> tuple[int, float, float]:
    """Bytes read (as listed), wall and CPU seconds to read every float tensor in row chunks."""
    t0, c0, nbytes = time.perf_counter(), time.process_time(), 0
    for name, info in reader.tensor_infos().items():
        if not info.is_float:
            continue
        rows = info.shape[0] if info.shape else 1
        step = max(1, chunk // max(1, info.numel // max(rows, 1)))
        for r0 in range(0, rows, step):
            nbytes += reader.read(name, (r0, min(rows, r0 + step))).numel() * 2
    return nbytes, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/_data/sd_lora"))
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--locon", action="store_true", help="also the ResNets' 3x3 convolutions (LoCon)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=1 << 22, help="elements per read, as the pass's chunks")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--peft", action="store_true", help="a PEFT adapter of a Llama model instead of an SD LoRA")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared machine, spinning intra-op threads blur the figures

    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    if args.peft:
        base_path, lora_path = make_peft(args.out, args.rank)
    else:
        base_path, lora_path = args.out / "base", make(args.out, args.rank, args.locon)
    refs = {m.id: m for m in discover([base_path, lora_path]).models}
    base_ref, lora_ref = refs[base_path.name], refs[lora_path.stem if not args.peft else lora_path.name]
    print(f"base {base_ref.size_bytes / 1e9:.2f} GB ({base_ref.format}), LoRA {lora_ref.size_bytes / 1e6:.1f} MB "
          f"({lora_ref.format}, rank {args.rank})")
    print("| repeat | base read (s) | LoRA open (s) | LoRA read (s) | LoRA / base | CPU s base / LoRA |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rep in range(args.repeat):
        with open_model(base_ref) as base:
            _, b_wall, b_cpu = read_all(base, args.chunk)
            t0 = time.perf_counter()
            with open_model(lora_ref, base=base) as lora:
                opened = time.perf_counter() - t0
                _, l_wall, l_cpu = read_all(lora, args.chunk)
        total = opened + l_wall
        print(f"| {rep + 1} | {b_wall:.2f} | {opened:.2f} | {l_wall:.2f} | **{total / b_wall:.2f}x** | "
              f"{b_cpu:.2f} / {l_cpu:.2f} |")


if __name__ == "__main__":
    main()
