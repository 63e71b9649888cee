"""Many small models end to end, and the incremental cache (issues "Performance" 7 and 9).

1. ``recover_paths``-equivalent on 200 small models, timed by stage: discovery, the statistics pass,
   recovery (clustering + trees), each in a fresh interpreter, warm and cold page cache.
2. The statistics cache: a first run on N - 1 models, a re-run of the same set (must read nothing),
   then the N-th model added (must read the new model plus each shared tensor of the others once,
   i.e. about N models' worth of bytes, not N^2). Bytes read and time for each.

Models come from the zoo (``python -m mother_zoo ... --out zoo_out``: every ``zoo_out/*/m-*``
folder, splits combined, first 200 by name); without enough of them, 200 synthetic models of the zoo's
ViT shapes (hidden 128, 4 layers, fp32, ~1.1 MB each) are written under ``benchmarks/_data/``.

    python benchmarks/scale.py              # 200 models
    python benchmarks/scale.py --models 500
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, PEAK_RSS, ROOT, drop_page_cache, make_family, run_python  # noqa: E402

STAGES = """
import json, time
t0 = time.perf_counter()
from mother_core import discover, compute_statistics, recover
t1 = time.perf_counter()
found = discover({paths!r})
t2 = time.perf_counter()
stats = compute_statistics(found, device={device!r}, cache_dir={cache!r})
t3 = time.perf_counter()
rec = recover(stats)
t4 = time.perf_counter()
{peak}
print(json.dumps({{"import_s": t1 - t0, "discover_s": t2 - t1, "pass_s": t3 - t2, "recover_s": t4 - t3,
                  "total_s": t4 - t1, "models": stats.n_models, "tensors": len(stats.tensors),
                  "bytes": stats.settings["bytes_read"], "edges": len(rec.edges), "peak_rss_mb": peak_mb}}))
"""


def vit_tiny_shapes(d: int = 128, layers: int = 4, classes: int = 24) -> dict[str, tuple[int, ...]]:
    """The zoo's small ViT (hidden 128, 4 layers): ~277k parameters, like ``zoo_out/fft``."""
    s: dict[str, tuple[int, ...]] = {
        "vit.embeddings.cls_token": (1, 1, d), "vit.embeddings.position_embeddings": (1, 65, d),
        "vit.embeddings.patch_embeddings.projection.weight": (d, 3, 4, 4),
        "vit.embeddings.patch_embeddings.projection.bias": (d,),
        "vit.layernorm.weight": (d,), "vit.layernorm.bias": (d,),
        "classifier.weight": (classes, d), "classifier.bias": (classes,),
    }
    for i in range(layers):
        p = f"vit.encoder.layer.{i}."
        for name in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                     "attention.output.dense"):
            s[p + name + ".weight"], s[p + name + ".bias"] = (d, d), (d,)
        s[p + "intermediate.dense.weight"], s[p + "intermediate.dense.bias"] = (2 * d, d), (2 * d,)
        s[p + "output.dense.weight"], s[p + "output.dense.bias"] = (d, 2 * d), (d,)
        for ln in ("layernorm_before", "layernorm_after"):
            s[p + ln + ".weight"], s[p + ln + ".bias"] = (d,), (d,)
    return s


def model_folders(n: int) -> tuple[list[Path], str]:
    zoo = sorted(p for p in (ROOT / "zoo_out").glob("*/m-*") if (p / "model.safetensors").exists())
    if len(zoo) >= n:
        splits = sorted({p.parent.name for p in zoo[:n]})
        return zoo[:n], f"zoo_out ({', '.join(splits)})"
    import torch

    out: list[Path] = []
    per = 10  # families of 10 (a chain of small perturbations), like small zoo trees
    for f in range((n + per - 1) // per):
        out += make_family(DATA / f"scale-vit/fam-{f:03d}", per, vit_tiny_shapes(), dtype=torch.float32)
    return out[:n], "synthetic ViT-tiny (fp32)"


def stage_run(paths: list[Path], device: str, cache: str | None) -> dict:
    return run_python(STAGES.format(paths=[str(p) for p in paths], device=device, cache=cache, peak=PEAK_RSS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    paths, source = model_folders(args.models)
    files = [p / "model.safetensors" for p in paths]
    gb = sum(f.stat().st_size for f in files) / 1e9
    print(f"{len(paths)} models from {source}, {gb:.3f} GB on disk", file=sys.stderr)

    rows = []
    for cache_state in ("cold",) + ("warm",) * args.repeats:
        if cache_state == "cold":
            drop_page_cache(files)
        r = stage_run(paths, args.device, None)
        r["page_cache"] = cache_state
        rows.append(r)
        print(json.dumps(r), file=sys.stderr)

    inc = []
    cache_dir = tempfile.mkdtemp(prefix="mother-scale-cache-")
    try:
        for label, subset in (("first run, N-1 models", paths[:-1]), ("re-run, same N-1", paths[:-1]),
                              ("N-th model added", paths), ("re-run, same N", paths)):
            r = stage_run(subset, args.device, cache_dir)
            r["step"] = label
            inc.append(r)
            print(json.dumps(r), file=sys.stderr)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    print(f"\n{len(paths)} models ({source}), {gb:.3f} GB; times in seconds, fresh interpreter per run "
          "(torch import excluded)\n")
    print("| page cache | discovery | statistics pass | recovery | end to end | GB read | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['page_cache']} | {r['discover_s']:.2f} | {r['pass_s']:.2f} | {r['recover_s']:.2f} | "
              f"{r['total_s']:.2f} | {r['bytes'] / 1e9:.3f} | {r['peak_rss_mb']:.0f} |")
    per_model = inc[0]["bytes"] / max(inc[0]["models"], 1)
    print("\n| cache step | models | bytes read | = models' worth | pass (s) | end to end (s) |")
    print("|---|---|---|---|---|---|")
    for r in inc:
        print(f"| {r['step']} | {r['models']} | {r['bytes']:,} | {r['bytes'] / per_model:.1f} | "
              f"{r['pass_s']:.2f} | {r['total_s']:.2f} |")


if __name__ == "__main__":
    main()
