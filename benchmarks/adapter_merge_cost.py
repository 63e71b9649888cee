"""The cost of merging an OFT, HRA or LoRA update into a 4096 x 4096 layer read in 256-row chunks (issue 11).

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/adapter_merge_cost.py
"""

import time

import torch

from mother_core.io.lora import _Update, oft_rotation, hra_reflection
torch.set_num_threads(1)
n = 4096
w = torch.randn(n, n) * 0.02
g = torch.Generator().manual_seed(0)
blocks = oft_rotation(torch.randn(n // 32, 32 * 31 // 2, generator=g) * 0.01, 32, False, 6e-5, True, 5)
rot = _Update(blocks, torch.ones(n, 1), 1.0, "rotate")
a, b = hra_reflection(torch.randn(n, 8, generator=g), False)
hra = _Update(a, b, 1.0, "reflect", c=torch.ones(n, 1))
lora = _Update(torch.randn(16, n) * 0.01, torch.randn(n, 16) * 0.01, 1.0, "linear")
for name, u in (("copy only", None), ("lora r16", lora), ("oft s32", rot), ("hra r8", hra)):
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        for r0 in range(0, n, 256):
            chunk = w[r0:r0 + 256].clone()
            if u is not None:
                u.add_into(chunk, (r0, r0 + 256))
        best = min(best, time.perf_counter() - t)
    print(f"{name}: {best:.3f} s for {n}x{n} in 256-row chunks, one thread")
