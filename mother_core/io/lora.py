"""PEFT adapters (LoRA, DoRA, AdaLoRA, LoHa, LoKr, IA3, OFT, BOFT, VeRA, LN tuning, HRA), presented as the base
model with the adapter merged in.

For a module with adapter matrices A (r, in) and B (out, r), the merged weight is
``W + scale * B @ A`` with ``scale = alpha / r`` (``alpha / sqrt(r)`` with ``use_rslora``), where ``r`` and
``alpha`` come from ``rank_pattern`` / ``alpha_pattern`` when a pattern matches the module, else from
``r`` / ``lora_alpha``; when the stored A has another rank than the config says, the tensor's rank is
used. ``fan_in_fan_out`` (GPT-2 ``Conv1D``) transposes the update; embeddings (``lora_embedding_A/B``)
use ``(B @ A).T``; convolutions use ``B.flatten(1) @ A.flatten(1)`` reshaped. The sum is computed in
float32 and returned in the base tensor's dtype. ``modules_to_save`` tensors replace (or add to) the
base's.

DoRA (``use_dora``; Liu et al. 2024) stores a magnitude per output row, ``lora_magnitude_vector`` (m);
PEFT merges a linear layer as ``m / ||W + scale * B @ A||_row * (W + scale * B @ A)``, each row rescaled
to its learned norm (``LoraLayer`` / ``DoraLinearLayer.get_weight_norm``: the norm over the inputs of
each output row), so rows can be read in pieces as for LoRA. On a ``Conv1D`` (``fan_in_fan_out``, GPT-2)
an output is a stored *column*: its norms come from the whole merged tensor, computed once per tensor.
DoRA on an embedding or a convolution is refused.

AdaLoRA (Zhang et al. 2023) stores ``lora_E`` (r, 1), singular values scaling A's rows, beside ``lora_A`` /
``lora_B``, pruned to the ranks its budget kept (``rank_pattern`` holds the masks). PEFT merges
``W + B @ (A * E) * alpha / (init_r + 1e-5)`` (``AdaLoraLayer.get_delta_weight``: ``ranknum`` is the initial rank
and stays so when the pruned adapter is loaded), which is read as a LoRA with A scaled by E.

The other PEFT types this reader merges, each as PEFT 0.21's ``merge`` does (``peft/tuners/loha``, ``lokr``,
``ia3``), all row-separable so rows are still read in pieces:

- LoHa (``hada_w1_a`` (out, r), ``hada_w1_b`` (r, in), ``hada_w2_a``, ``hada_w2_b``):
  ``W + ((w1a @ w1b) * (w2a @ w2b)) * alpha / r``, the Hadamard product of two low-rank products.
- LoKr (``lokr_w1`` or ``lokr_w1_a @ lokr_w1_b``; ``lokr_w2`` or ``lokr_w2_a @ lokr_w2_b``):
  ``W + kron(w1, w2) * alpha / r``; row ``i`` of the Kronecker product is ``w1[i // b] (x) w2[i % b]`` for
  ``w2`` of ``b`` rows, so a row range needs only those rows' factors.
- LoHa and LoKr take ``r`` / ``alpha`` (with ``rank_pattern`` / ``alpha_pattern``) from the config as
  LoRA does, the stored rank winning where the tensors show one; there is no rsLoRA for them. On a
  convolution PEFT factors the kernel flattened, (out, in * kh * kw), and so is it merged here; the
  Tucker forms (``use_effective_conv2d``: ``hada_t1`` / ``hada_t2`` / ``lokr_t2``) are refused.
- IA3 (``ia3_l``) is multiplicative: ``W * l``, with ``l`` of shape (out, 1) scaling output rows (and the
  module's bias, as PEFT does) or, on a ``feedforward_modules`` layer, (1, in) scaling input columns;
  the stored shape says which. ``fan_in_fan_out`` (GPT-2 ``Conv1D``) transposes ``l``. IA3 on a
  convolution is refused (its vector is saved (1, C, 1, 1) either way; only ``feedforward_modules`` would
  say whether C counts outputs or inputs).

The rotations and the shared-projection type, as PEFT 0.21 merges them (``peft/tuners/oft``, ``boft``, ``vera``),
row-separable too:

- OFT (``oft_R.weight`` (k, s * (s - 1) / 2), the strict upper triangles of k skew-symmetric blocks of size s;
  PEFT 0.16's parametrisation): ``W @ blockdiag(R).T``, each block ``R`` made from its skew matrix by the
  Cayley-Neumann series (or, without ``use_cayley_neumann``, the exact Cayley transform), after ``coft``'s
  projection where set, ``block_share`` repeating one block along the input (:func:`oft_rotation`). On an
  embedding (``oft_embedding_R``) ``W @ blockdiag(R)``; on a convolution the kernel flattened, as PEFT views it.
  The layout of PEFT 0.15 and older (``oft_r`` / ``oft_s``, which PEFT 0.21 no longer loads) is refused, and so
  is ``fan_in_fan_out``.
- BOFT (``boft_R`` (factors, k, s, s), ``boft_s`` (out, 1); (1, out) on a convolution):
  ``(W @ blockdiag(R).T) * boft_s`` with ``R`` the Cayley transform of each block (:func:`boft_rotation`). Only
  one butterfly factor (PEFT's default, and all its CPU build trains) is merged: with more, PEFT interleaves
  butterfly permutations, and such a file is refused.
- VeRA (``vera_lambda_b`` (out,), ``vera_lambda_d`` (r,), and ``base_model.vera_A`` (r, max in) / ``vera_B``
  (max out, r) shared by every module): ``W + (lambda_b * B[:out]) @ (lambda_d * A[:, :in])``, transposed with
  ``fan_in_fan_out``. Saved without its projections (``save_projection=False``) it is refused, saying how to
  save it again.
- LN tuning (``<norm>.ln_tuning_layers.weight``): the norm layer's tensors replaced whole, as
  ``modules_to_save``.
- HRA (``hra_u`` (in, r)): ``W @ H`` with ``H`` the product of r Householder reflections (or, with ``apply_GS``,
  one reflection through their Gram-Schmidt span), read as ``W + (W @ U) @ (C @ U.T)`` (:func:`hra_reflection`);
  convolutions on the flattened kernel.

LoRA, LoHa, LoKr, IA3, OFT, BOFT, VeRA and HRA on single experts' modules of a mixture-of-experts model
(transformers 4's Mixtral ``block_sparse_moe.experts.E.w1`` / ``w2`` / ``w3``, one adapter module per expert), on a
base whose experts are listed stacked (:mod:`.experts`): each expert's update is made for its (out, in) matrix as on
a dense module and applied to that expert's row of the stacked tensor (``_Update`` mode ``each_expert``,
:func:`_expert_rows`).

An adapter on an embedding makes PEFT save the embedding's ``base_layer.weight`` beside it: the update is applied
to that copy (a resized vocabulary is then the adapter's own).

Other PEFT types (FourierFT, prompt tuning, ...) are refused at discovery
(:data:`.registry.PEFT_TYPES`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from mother_core.device import one_torch_thread
from mother_core.errors import AdapterMismatchError, UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef, TensorInfo
from mother_core.io.experts import stacked_slot
from mother_core.io.names import normalise_name
from mother_core.io.readers import load_torch_file
from mother_core.io.registry import PEFT_TYPES, peft_refusal
from mother_core.io.safetensors_header import read_header

#: LoHa, LoKr and IA3 tensor names: ``<module>.<part>[.<adapter>]`` (PEFT saves them without ``.weight``).
_OTHER_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<part>hada_w[12]_[ab]|hada_t[12]|lokr_w[12]_[ab]|lokr_w[12]|lokr_t2|ia3_l"
    r"|oft_R|oft_embedding_R|oft_r|oft_s|boft_R|boft_s|vera_lambda_[bd]|hra_u)"
    r"(?:\.(?P<adapter>[^.]+))?$"
)
#: VeRA's shared random projections, saved once for the whole model (``base_model.vera_A[.<adapter>]``).
_VERA_SHARED = re.compile(r"^base_model\.(?P<part>vera_[AB])(?:\.(?P<adapter>[^.]+))?$")

#: AdaLoRA's singular values: ``<module>.lora_E[.<adapter>]`` (r, 1), beside LoRA's ``lora_A`` / ``lora_B``.
_ADALORA_E = re.compile(r"^(?P<module>.+?)\.lora_E(?:\.(?P<adapter>[^.]+))?$")
_LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.lora_(?:(?P<ab>[AB])|embedding_(?P<emb>[AB]))(?:\.(?P<adapter>[^.]+))?"
    r"(?:\.(?P<param>weight|bias))?$"
)


@dataclass(frozen=True)
class _Update:
    """One adapter module's change to one stored tensor, applied to row ranges of it in place.

    ``mode`` says what ``a`` / ``b`` (and ``c`` / ``d``) are; every mode but ``"scale"`` adds ``scale`` times
    a product to the rows, ``"scale"`` (IA3) multiplies them.
    """

    a: torch.Tensor  # (r, in) float32; (r, in, *k) for convolutions; (r, num_embeddings) for embeddings
    b: torch.Tensor  # (out, r) float32; (out, r, 1, ...) for convolutions; (dim, r) for embeddings
    scale: float
    # "linear", "linear_t" (fan_in_fan_out), "embedding", "conv" (LoRA: scale * B @ A);
    # "hadamard" (LoHa: a = w1a (out, r), b = w1b (r, in), c = w2a, d = w2b);
    # "kron" (LoKr: a = w1 (out1, in1), b = w2 (out2, in2), whole factors);
    # "scale" (IA3: a = l in the stored layout, (rows, 1) or (1, columns); b unused);
    # "rotate" (OFT, BOFT: a = the k blocks (k, s, s) of a block-diagonal R, each row becomes row @ R.T; b (out, 1)
    # gives the rows; c, when set, scales them after: BOFT's boft_s);
    # "product", "product_t" (VeRA: a = lambda_d * A (r, in), b = lambda_b * B (out, r); + B @ A, or its
    # transpose with fan_in_fan_out);
    # "reflect" (HRA: each row x becomes x + (x @ a) @ b, a = U (in, r), b = C @ U.T (r, in); c (out, 1) gives
    # the rows);
    # "experts" (LoRA on a 3-D expert parameter, PEFT's ``target_parameters``: a = A per expert (E, r, in),
    # b = B per expert (E, out, r); rows are experts, each gets scale * b[e] @ a[e]);
    # "each_expert" (any other type on single experts' modules: ``experts`` holds expert e's own update of its
    # (out, in) matrix, None where it has none; rows are experts; a and b unused)
    mode: str
    magnitude: torch.Tensor | None = None  # DoRA: (out,) norms of the merged rows
    c: torch.Tensor | None = None
    d: torch.Tensor | None = None
    experts: tuple[_Update | None, ...] | None = None
    # The rows of this update the tensor takes, in order, where it is a part of a fused module's update (a
    # kohya-style Flux / SD3 network on ``img_attn.qkv``, split onto to_q / to_k / to_v): row t of the tensor is
    # row rows_of[...] of the update. None: the update is the tensor's, row for row.
    rows_of: tuple[tuple[int, int], ...] | None = None

    def shape(self) -> tuple[int, ...]:
        """The stored shape of the tensor the update changes (for ``"scale"``, 1 where ``l`` broadcasts)."""
        if self.mode == "linear":
            return (self.b.shape[0], self.a.shape[1])
        if self.mode in ("linear_t", "embedding"):
            return (self.a.shape[1], self.b.shape[0])
        if self.mode == "hadamard":
            return (self.a.shape[0], self.b.shape[1])
        if self.mode == "kron":
            return (self.a.shape[0] * self.b.shape[0], self.a.shape[1] * self.b.shape[1])
        if self.mode == "scale":
            return tuple(self.a.shape)
        if self.mode == "rotate":
            return (self.b.shape[0], self.a.shape[0] * self.a.shape[1])
        if self.mode == "product":
            return (self.b.shape[0], self.a.shape[1])
        if self.mode == "reflect":
            assert self.c is not None
            return (self.c.shape[0], self.a.shape[0])
        if self.mode == "product_t":
            return (self.a.shape[1], self.b.shape[0])
        if self.mode == "experts":
            return (self.a.shape[0], self.b.shape[1], self.a.shape[2])
        if self.mode == "each_expert":
            assert self.experts is not None
            one = next(u for u in self.experts if u is not None)
            return (len(self.experts), *one.shape())
        return (self.b.shape[0], *self.a.shape[1:])

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether the update applies to a stored tensor of ``shape`` (IA3's vector broadcasts)."""
        # a convolution's kernel as PEFT flattens it: (out, in * kh * kw)
        if self.mode == "each_expert":
            assert self.experts is not None
            return len(shape) >= 2 and len(self.experts) == shape[0] \
                and all(u is None or u.fits(tuple(shape[1:])) for u in self.experts)
        if self.mode in ("hadamard", "kron", "rotate", "reflect"):
            return len(shape) >= 2 and tuple(self.shape()) == (shape[0], math.prod(shape[1:]))
        if self.mode != "scale":
            return tuple(self.shape()) == tuple(shape)
        rows, cols = self.a.shape
        if len(shape) == 1:  # a bias: scaled by the per-output vector only
            return cols == 1 and rows == shape[0]
        return len(shape) == 2 and ((rows == shape[0] and cols == 1) or (rows == 1 and cols == shape[1]))

    def add_into(self, merged: torch.Tensor, rows: tuple[int, int] | None) -> None:
        """Apply the update to ``merged`` (rows ``[r0, r1)`` of the tensor), a contiguous float32 tensor, in place.

        LoRA: one ``addmm_`` per update: one pass over the chunk instead of a product, a scaled copy and a
        sum (2-3.5x less CPU on SD 1.5's 3x3 convolutions; benchmarks/RESULTS.md, "Reading a Stable
        Diffusion LoRA"). LoHa and LoKr compute the rows of the update in PEFT's order (the product, times
        the scale, then added) so that the merge rounds as ``merge_and_unload`` does; IA3 multiplies.
        """
        if merged.numel() == 0:  # an empty row range: nothing to change (and no shape to view it by)
            return
        r0, r1 = rows if rows is not None else (0, merged.shape[0])
        if self.rows_of is not None:  # a part of a fused update: each stretch of its rows, as the update's rows
            whole, at = replace(self, rows_of=None), 0
            for a, b in self.rows_of:
                lo, hi = max(r0, at), min(r1, at + b - a)
                if lo < hi:
                    whole.add_into(merged[lo - r0:hi - r0], (a + lo - at, a + hi - at))
                at += b - a
            return
        if self.mode == "each_expert":  # experts r0:r1, each (out, in) changed by its own update
            assert self.experts is not None
            for k, e in enumerate(range(r0, r1)):
                update = self.experts[e]
                if update is not None:
                    update.add_into(merged[k], None)
            return
        flat = merged.view(merged.shape[0], -1)
        if self.mode in ("linear_t", "embedding"):  # rows of (B @ A).T
            flat.addmm_(self.a[:, r0:r1].T, self.b.T, alpha=self.scale)
        elif self.mode == "hadamard":
            assert self.c is not None and self.d is not None
            flat.add_(((self.a[r0:r1] @ self.b) * (self.c[r0:r1] @ self.d)) * self.scale)
        elif self.mode == "kron":  # row i of kron(w1, w2) is w1[i // n2] (x) w2[i % n2]
            idx = torch.arange(r0, r1)
            n2 = self.b.shape[0]
            flat.add_((self.a[idx // n2][:, :, None] * self.b[idx % n2][:, None, :]).reshape(r1 - r0, flat.shape[1])
                      * self.scale)
        elif self.mode == "scale":  # IA3: a per-row vector is cut to the rows, a per-column one broadcasts
            flat.mul_(self.a[r0:r1] if self.a.shape[0] > 1 or self.a.shape[1] == 1 else self.a)
        elif self.mode == "rotate":  # OFT / BOFT: row @ R.T, block by block (R is block-diagonal)
            k, s, _ = self.a.shape
            flat.copy_(torch.einsum("rkj,kcj->rkc", flat.view(-1, k, s), self.a).reshape(flat.shape))
            if self.c is not None:  # BOFT: each output row scaled after the rotation, as PEFT's merge does
                flat.mul_(self.c[r0:r1])
        elif self.mode == "reflect":  # HRA: row @ H = row + (row @ U) @ (C @ U.T), H - I of rank r
            flat.add_((flat @ self.a) @ self.b)
        elif self.mode == "product":  # VeRA: PEFT adds the product, computed first
            flat.add_(self.b[r0:r1] @ self.a)
        elif self.mode == "product_t":  # rows r0:r1 of (B @ A).T: columns r0:r1 of A
            flat.add_((self.b @ self.a[:, r0:r1]).T)
        elif self.mode == "experts":  # experts r0:r1, each (out, in) + scale * B_e @ A_e
            merged.view(r1 - r0, self.b.shape[1], self.a.shape[2]).baddbmm_(self.b[r0:r1], self.a[r0:r1],
                                                                          alpha=self.scale)
        else:  # "linear" (rows, in); "conv" (rows, in * kh * kw), B (out, r, 1, 1) flattened to (out, r)
            flat.addmm_(self.b.flatten(1)[r0:r1], self.a.flatten(1), alpha=self.scale)


def _expert_rows(experts: Mapping[int, _Update], n_experts: int) -> _Update:
    """One ``"each_expert"`` update of a stacked (experts, out, in) tensor from adapters on single experts' modules.

    Adapters made on a model whose experts are modules of their own (transformers 4's Mixtral ``w1`` / ``w2`` /
    ``w3``, Qwen2-MoE's ``experts.E.gate_proj``: ``target_modules`` names them) hold one update per expert, made
    for its (out, in) matrix as on a dense module; the base lists its experts stacked (:mod:`.experts`). Expert
    ``e``'s update changes row ``e``; experts without an adapter are unchanged. The caller checks the shapes.
    """
    empty = torch.empty(0)
    return _Update(empty, empty, 1.0, "each_expert", experts=tuple(experts.get(e) for e in range(n_experts)))


#: The regular-expression subset a rank/alpha pattern from a config may use: literal name characters,
#: escaped dots, ``.``, character classes of digits, and at most two unbounded repeats, no groups or
#: alternation. Matching such a pattern against a module name takes polynomial time; anything else (a
#: nested quantifier such as ``(a+)+``) could take minutes and is matched literally instead.
_SAFE_PATTERN = re.compile(r"^(?:[\w\-]|\\\.|\.|\[0-9\]|\\d)(?:[\w\-]|\\\.|\.|\[0-9\]|\\d|[*+?])*$")
_MAX_PATTERN = 200


def _safe_regex(key: str) -> re.Pattern[str] | None:
    """The compiled pattern when ``key`` stays in the safe subset, else None (match literally)."""
    if len(key) > _MAX_PATTERN or not _SAFE_PATTERN.match(key) or len(re.findall(r"[*+]", key)) > 2:
        return None
    if re.search(r"[*+?]{2,}", key):
        return None
    try:
        return re.compile(rf"(?:.*\.)?(?:{key})$")
    except re.error:
        return None


def _pattern_value(patterns: Mapping[str, Any] | None, module: str) -> Any:
    """PEFT's rule: the first pattern key that matches the end of the module name (as a regex).

    Keys come from an untrusted config: only a safe regular-expression subset is run as one
    (:data:`_SAFE_PATTERN`); other keys match the module name or its dotted suffix literally.
    """
    for key, value in (patterns or {}).items():
        if not isinstance(key, str):
            continue
        if module == key or module.endswith("." + key):
            return value
        rx = _safe_regex(key)
        if rx is not None and len(module) <= 1000 and rx.match(module):
            return value
    return None


def _number(config: Mapping[str, Any], key: str, default: Any, path: str) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UnreadableCheckpointError(
            f"{path}: {key!r} must be a positive number, not {str(value)[:40]!r}. Fix the adapter config.", path)
    return value


def _patterns(config: Mapping[str, Any], key: str, path: str) -> dict[str, float]:
    value = config.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and not isinstance(v, bool)
                                              and isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                              for k, v in value.items()):
        raise UnreadableCheckpointError(
            f"{path}: {key!r} must map module names to positive numbers. Fix the adapter config.", path)
    return value


def _load_adapter(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        header = read_header(path)  # the one validating parser: every range lies inside the file
        out: dict[str, torch.Tensor] = {}
        try:
            with open(path, "rb") as f:  # adapters are small: read whole
                for t in header.tensors:
                    f.seek(t.start)
                    raw = bytearray(f.read(t.nbytes))
                    if len(raw) != t.nbytes:
                        raise OSError("the file ends early")
                    out[t.name] = torch.frombuffer(raw, dtype=getattr(torch, t.dtype)).reshape(t.shape) \
                        if raw else torch.empty(t.shape, dtype=getattr(torch, t.dtype))
        except OSError as e:
            raise UnreadableCheckpointError(
                f"Cannot read {path}: {e}. The file is truncated or corrupt: re-download or remove it.", path
            ) from e
        return out
    return load_torch_file(path)


def _block_size(n: int) -> int | None:
    """The block size s of an OFT block stored as its s * (s - 1) / 2 upper-triangle entries, or None."""
    s = (1 + math.isqrt(1 + 8 * n)) // 2
    return s if s >= 2 and s * (s - 1) // 2 == n else None


def oft_rotation(weight: torch.Tensor, size: int, coft: bool, eps: float, neumann: bool, terms: int) -> torch.Tensor:
    """The blocks (k, s, s) of PEFT's OFT rotation from its stored parameter ``weight`` (k, s * (s - 1) / 2).

    As PEFT 0.21's ``OFTRotationModule.get_weight`` (``peft/tuners/oft/layer.py``; Qiu et al. 2023, "Controlling
    Text-to-Image Diffusion by Orthogonal Finetuning", with the Cayley-Neumann form of Qiu et al. 2025,
    "Orthogonal Finetuning Made Scalable"), operation for operation so that the bits agree: the entries fill
    the strict upper triangle of ``Q`` and ``Q <- Q - Q.T`` (skew-symmetric); with ``coft`` each block is first
    projected to within ``eps / sqrt(k)`` of zero (``_project_batch``); then ``R = I + 2Q + 2Q^2 + ... + 2Q^(n-2)
    + Q^(n-1)`` for ``n`` Neumann terms (``_cayley_batch``), or the exact Cayley transform ``(I - Q)(I + Q)^-1``
    without ``use_cayley_neumann``. The merged weight is ``W @ blockdiag(R).T`` (``Linear.merge``:
    ``mm(R, W.T).T``).
    """
    rows, cols = torch.triu_indices(size, size, 1)

    def skew(vec: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(vec.shape[0], size, size, dtype=vec.dtype)
        m[:, rows, cols] = vec
        return m - m.transpose(-2, -1)

    if coft:  # PEFT's _project_batch: the norm is of the block itself (its "I" is zeros)
        q = skew(weight)
        bound = eps * 1 / torch.sqrt(torch.tensor(q.shape[0]))
        zero = torch.zeros((size, size), dtype=q.dtype).unsqueeze(0).expand_as(q)
        norm = torch.norm(q - zero, dim=(1, 2), keepdim=True)
        weight = torch.where((norm <= bound).bool(), q, zero + bound * ((q - zero) / norm))[:, rows, cols]
    q = skew(weight)
    b = q.shape[0]
    if not neumann:
        eye = torch.eye(size).unsqueeze(0).expand(b, size, size)
        return torch.linalg.solve(eye + q, eye - q, left=False)
    r = torch.eye(size, dtype=q.dtype).repeat(b, 1, 1)
    if terms > 1:
        r.add_(q, alpha=2.0)
        if terms > 2:
            power = torch.bmm(q, q)
            r.add_(power, alpha=2.0)
            for _ in range(3, terms - 1):
                power = torch.bmm(power, q)
                r.add_(power, alpha=2.0)
            r.add_(torch.bmm(power, q))
    return r


def boft_rotation(blocks: torch.Tensor) -> torch.Tensor:
    """The blocks (k, s, s) of a one-factor BOFT rotation from its stored ``boft_R`` blocks (k, s, s).

    As PEFT 0.21's ``BOFTLayer.cayley_batch`` (``peft/tuners/boft/layer.py``; Liu et al. 2024, "Parameter-Efficient
    Orthogonal Finetuning via Butterfly Factorization"): ``Q = (B - B.T) / 2``, ``R = (I - Q)(I + Q)^-1``. With one
    butterfly factor the permutation around it is the identity, so the rotation is ``blockdiag(R)`` and the merged
    weight ``(W @ blockdiag(R).T) * boft_s``, ``boft_s`` (out, 1) scaling each output row (``Linear.merge``).
    """
    b, r, c = blocks.shape
    q = 0.5 * (blocks - blocks.transpose(1, 2))
    eye = torch.eye(r).unsqueeze(0).expand(b, r, c)
    return torch.linalg.solve(eye + q, eye - q, left=False)


def hra_reflection(u: torch.Tensor, gram_schmidt: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """HRA's product of Householder reflections ``H`` (in, in) as ``I + a @ b``, ``a`` (in, r), ``b`` (r, in).

    PEFT 0.21 ``HRALayer.get_delta_weight`` (``peft/tuners/hra/layer.py``; Yuan et al. 2024, "Bridging The Gap
    between Low-rank and Orthogonal Adaptation via Householder Reflection Adaptation") merges ``W @ H`` with, by
    default, ``H = (I - 2 u_0 u_0.T) ... (I - 2 u_(r-1) u_(r-1).T)`` over the columns of ``hra_u`` scaled to unit
    norm, or, with ``apply_GS``, ``H = I - 2 Q Q.T`` for ``Q`` the Gram-Schmidt orthonormalisation of them. Every
    factor changes only the span of ``U``, so ``H = I + U C U.T`` with C (r, r) built factor by factor:
    ``H_k = H_(k-1) - 2 (H_(k-1) u_k) u_k.T`` and ``H_(k-1) u_k = U (e_k + C G[:, k])``, ``G = U.T U``; a row is
    then read as ``x + (x @ U) @ (C @ U.T)``, never forming the (in, in) matrix.
    """
    r = u.shape[1]
    if gram_schmidt:  # PEFT's loop: each column less its projections on the ones before, normalised
        cols = [u[:, 0:1] / u[:, 0].norm()]
        for i in range(1, r):
            ui = u[:, i:i + 1]
            for j in range(i):
                ui = ui - (cols[j].t() @ ui) * cols[j]
            cols.append(ui / ui.norm())
        q = torch.cat(cols, dim=1)
        return q, -2 * q.t()
    unit = u / u.norm(dim=0)
    gram = unit.t() @ unit
    c = torch.zeros(r, r, dtype=unit.dtype)
    for k in range(r):
        hu = c @ gram[:, k]  # H_(k-1) u_k = U (e_k + c @ gram[:, k])
        hu[k] += 1
        c[:, k] -= 2 * hu
    return unit, c @ unit.t()


def _check_rotation_config(peft_type: str, config: Mapping[str, Any], path: str) -> None:
    """Refuse the OFT / BOFT / VeRA config values this reader does not follow, each by name."""
    def refuse(what: str) -> UnreadableCheckpointError:
        return UnreadableCheckpointError(
            f"{path}: a PEFT {peft_type} adapter with {what}, which this version does not merge. Merge it with PEFT "
            "(merge_and_unload) and add the merged model instead.", path)

    if peft_type in ("OFT", "BOFT") and config.get("fan_in_fan_out"):
        raise refuse("fan_in_fan_out (a Conv1D base, stored (in, out))")
    if peft_type != "OFT":
        return
    for key in ("coft", "block_share", "use_cayley_neumann"):
        if not isinstance(config.get(key, False), bool):
            raise refuse(f"{key} = {str(config.get(key))[:40]!r} (not true or false)")
    eps, terms = config.get("eps", 6e-5), config.get("num_cayley_neumann_terms", 5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise refuse(f"eps = {str(eps)[:40]!r} (not a positive number)")
    if isinstance(terms, bool) or not isinstance(terms, int) or not 0 <= terms <= 64:
        raise refuse(f"num_cayley_neumann_terms = {str(terms)[:40]!r} (not a whole number from 0 to 64)")


class LoraReader:
    """A :class:`ModelReader` of a base model with a PEFT adapter (:data:`.registry.PEFT_TYPES`) merged in."""

    def _start(self, ref: ModelRef, base: ModelReader) -> None:
        """The reader's state before any update is added: the base's tensors, unchanged (subclasses that
        parse another adapter format start from it too)."""
        self.ref = ref
        self.base = base
        self._infos: dict[str, TensorInfo] = dict(base.tensor_infos())
        self._updates: dict[str, list[_Update]] = {}
        self._bias: dict[str, torch.Tensor] = {}  # added whole to that tensor (a LoRA bias, a LyCORIS difference)
        self._replaced: dict[str, torch.Tensor] = {}
        self._column_norms: dict[str, torch.Tensor] = {}  # DoRA on Conv1D: norms of the merged columns

    def __init__(self, ref: ModelRef, base: ModelReader) -> None:
        config_path = os.path.join(ref.path, "adapter_config.json")
        try:
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError, RecursionError) as e:
            raise UnreadableCheckpointError(f"Cannot read {config_path}: {str(e)[:200]}. Fix or remove the adapter.",
                                            config_path) from None
        if not isinstance(config, dict):
            raise UnreadableCheckpointError(f"{config_path} is not a JSON object. Fix or remove the adapter.",
                                            config_path)
        adapter_file = ref.files[0]
        tensors = _load_adapter(adapter_file)
        self._start(ref, base)
        peft_type = str(config.get("peft_type", "LORA"))[:40].upper()
        if peft_type not in PEFT_TYPES:  # discovery refuses these first; a caller may open a ref directly
            raise UnreadableCheckpointError(peft_refusal(ref.path, peft_type, config.get("base_model_name_or_path")),
                                            ref.path)
        if peft_type not in ("LORA", "ADALORA"):
            self._read_other(peft_type, config, config_path, tensors)
            return
        adalora = peft_type == "ADALORA"

        pairs: dict[tuple[str, bool], dict[str, torch.Tensor]] = {}
        magnitudes: dict[str, torch.Tensor] = {}
        energies: dict[str, torch.Tensor] = {}  # AdaLoRA's singular values, lora_E (r, 1), per module
        for key, t in tensors.items():
            m = _LORA_KEY.match(key)
            energy_key = _ADALORA_E.match(key) if adalora else None
            if energy_key is not None:
                energies[energy_key["module"]] = t.float().reshape(-1, 1)
                continue
            if m is None:
                if ".lora_magnitude_vector" in key:  # DoRA: PEFT saves <module>.lora_magnitude_vector[.<adapter>]
                    magnitudes[key.split(".lora_magnitude_vector")[0]] = t.float().reshape(-1)
                    continue
                # modules_to_save: a full tensor, saved with PEFT's wrapper components in its name
                name = normalise_name(key.replace(".modules_to_save", "").replace(".default", ""))
                self._replaced[name] = t
                self._infos[name] = TensorInfo(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))
                continue
            if m["param"] == "bias":
                self._bias[normalise_name(m["module"] + ".bias")] = t.float()
                continue
            pairs.setdefault((m["module"], m["emb"] is not None), {})[m["ab"] or m["emb"]] = t.float()

        r_default = _number(config, "r", 8, config_path)
        alpha_default = _number(config, "lora_alpha", r_default, config_path)
        # (AdaLoRA's rank_pattern holds each module's kept-rank mask, not a rank: its tensors are saved pruned)
        rank_pattern = {} if adalora else _patterns(config, "rank_pattern", config_path)
        alpha_pattern = {} if adalora else _patterns(config, "alpha_pattern", config_path)
        fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
        per_expert: dict[str, dict[int, _Update]] = {}
        for (module, is_embedding), ab in sorted(pairs.items()):
            if set(ab) != {"A", "B"}:
                raise AdapterMismatchError(f"{adapter_file}: module {module} has lora_{next(iter(ab))} only.",
                                           adapter_file)
            bare = module.removeprefix("base_model.model.")
            r = _pattern_value(rank_pattern, bare) or r_default
            alpha = _pattern_value(alpha_pattern, bare) or alpha_default
            if ab["A"].dim() < 2 or ab["B"].dim() < 2 or ab["B"].shape[1] != ab["A"].shape[0]:
                raise AdapterMismatchError(
                    f"{adapter_file}: module {module} has lora_A {tuple(ab['A'].shape)} and lora_B "
                    f"{tuple(ab['B'].shape)}, which do not multiply. The adapter is damaged.", adapter_file)
            stored_r = ab["A"].shape[0]
            if stored_r != r:
                r = stored_r  # the tensors are the truth when config and file disagree
            scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
            if adalora:  # PEFT's AdaLoRA merge: B @ (A * E) * alpha / (ranknum + 1e-5), ranknum init_r
                energy = energies.pop(module, None)
                if energy is None or energy.shape[0] != ab["A"].shape[0] or ab["A"].dim() != 2 or is_embedding:
                    raise AdapterMismatchError(f"{adapter_file}: the AdaLoRA module {module} has no lora_E of its "
                                               "rank (or is not a linear layer). The adapter is damaged.", adapter_file)
                ab = {"A": ab["A"] * energy, "B": ab["B"]}
                # (ranknum stays the initial rank when the saved, pruned adapter is loaded: "the scaling is
                # exactly as the previous", AdaLoraModel.resize_modules_by_rank_pattern)
                scale = (alpha if alpha > 0 else r) / (_number(config, "init_r", 12, config_path) + 1e-5)
            if is_embedding:
                mode = "embedding"
            elif ab["A"].dim() > 2:
                mode = "conv"
            else:
                mode = "linear_t" if fan_in_fan_out else "linear"
            magnitude = magnitudes.pop(module, None)
            if magnitude is not None and (mode not in ("linear", "linear_t") or magnitude.numel() != ab["B"].shape[0]):
                raise UnreadableCheckpointError(
                    f"{ref.path} is a DoRA adapter on {module} ({mode}), which this version merges on linear and "
                    "Conv1D layers only. Merge it with PEFT (merge_and_unload) and add the merged model instead.",
                    ref.path)
            name = normalise_name(module + ".weight")
            if name not in self._infos and config.get("target_parameters") and mode == "linear" \
                    and magnitude is None:
                for target, update in self._expert_updates(module, ab["A"], ab["B"], float(alpha), config):
                    self._add(target, update)
                continue
            slot = stacked_slot(name) if name not in self._infos and mode == "linear" and magnitude is None else None
            if slot is not None and slot[0] in self._infos:  # one expert's module, the base's experts stacked
                per_expert.setdefault(slot[0], {})[slot[1]] = _Update(ab["A"], ab["B"], float(scale), mode)
                continue
            self._add(name, _Update(ab["A"], ab["B"], float(scale), mode, magnitude))
        for target, experts in sorted(per_expert.items()):
            n_experts, n_out, n_in = self._infos[target].shape
            wrong = [e for e, u in experts.items() if e >= n_experts or not u.fits((n_out, n_in))]
            if wrong:
                raise AdapterMismatchError(
                    f"The adapter {self.ref.path} updates expert {wrong[0]} of {target} with a shape that the "
                    f"base model {self.base.ref.id!r}'s ({n_experts} experts of {n_out} x {n_in}) does not have: is "
                    "that the right base model?", self.ref.path)
            self._add(target, _expert_rows(experts, n_experts))
        if magnitudes or (config.get("use_dora") and not any(u.magnitude is not None for us in self._updates.values()
                                                              for u in us)):
            raise UnreadableCheckpointError(
                f"{ref.path} is a DoRA adapter whose magnitudes do not match its LoRA matrices "
                f"({', '.join(sorted(magnitudes))[:200] or 'none stored'}). Merge it with PEFT (merge_and_unload) "
                "and add the merged model instead.", ref.path)

    def _expert_updates(self, module: str, a: torch.Tensor, b: torch.Tensor, alpha: float,
                        config: Mapping[str, Any]) -> list[tuple[str, _Update]]:
        """The updates of a LoRA on a 3-D expert parameter (PEFT's ``target_parameters``, ``ParamWrapper``), on
        the base's stacked expert tensors (:mod:`.experts`).

        PEFT stores one ``lora_A`` (experts x r, in) and ``lora_B`` (out, r x experts) per wrapped parameter and
        merges ``einsum("o r e, e r i -> e o i")``: expert ``e`` gets ``B[:, :, e] @ A[e]`` (``ParamWrapper
        .get_delta_weight``, parameters stored (experts, out, in) as transformers 5's are). Several parameters
        of one module wrap each other (``experts.base_layer.lora_A`` is the inner one): which parameter a pair
        updates is told by its shapes, since the config lists them sorted. A fused ``gate_up_proj`` update is
        split by rows onto ``gate_proj`` and ``up_proj`` as the base's tensors are. The scale is ``alpha / r`` with
        ``r`` the rank per expert (the stored ``lora_A`` holds experts x r rows).
        """
        bare = normalise_name(module + ".weight").removesuffix(".weight")  # ``.base_layer`` dropped
        params = [str(t).rpartition(".")[2] for t in config.get("target_parameters") or ()
                  if isinstance(t, str) and bare.endswith(str(t).rpartition(".")[0])]
        r_experts, n_in = a.shape
        n_out = b.shape[0]
        for param in params:
            pieces = ([(f"{bare}.gate_proj.weight", 0), (f"{bare}.up_proj.weight", 1)] if param == "gate_up_proj"
                      else [(f"{bare}.{param}.weight", 0)])
            infos = [self._infos.get(t) for t, _ in pieces]
            if any(i is None or len(i.shape) != 3 for i in infos):
                continue
            shapes = [i.shape for i in infos if i is not None]
            experts, rows, cols = shapes[0][0], sum(sh[1] for sh in shapes), shapes[0][2]
            if cols != n_in or rows != n_out or r_experts % experts or b.shape[1] != r_experts:
                continue
            r = r_experts // experts
            scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
            per_a = a.reshape(experts, r, n_in)
            per_b = b.reshape(n_out, r, experts).permute(2, 0, 1)
            out, start = [], 0
            for (target, _), sh in zip(pieces, shapes):
                out.append((target, _Update(per_a, per_b[:, start:start + sh[1]].contiguous(), scale, "experts")))
                start += sh[1]
            return out
        raise AdapterMismatchError(
            f"The adapter {self.ref.path} updates the expert parameters of {bare} ({', '.join(params) or 'none named'}"
            f" in target_parameters) with lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, which fit none of "
            f"the base model {self.base.ref.id!r}'s stacked expert tensors (experts, out, in): is that the right "
            "base model? Experts stored (experts, in, out), as gpt-oss's, are not merged by this version.",
            self.ref.path)

    def _add(self, name: str, update: _Update) -> None:
        """Queue ``update`` of the base's tensor ``name``, once its shape is checked against the base's."""
        info = self._infos.get(name)
        if info is None:
            raise AdapterMismatchError(
                f"The adapter {self.ref.path} updates {name}, which the base model {self.base.ref.id!r} does not "
                "have: is that the right base model?", self.ref.path,
            )
        if not update.fits(info.shape):
            raise AdapterMismatchError(
                f"The adapter {self.ref.path} updates {name} with shape {update.shape()}, but the base model "
                f"{self.base.ref.id!r} has {info.shape}: is that the right base model?", self.ref.path,
            )
        self._updates.setdefault(name, []).append(update)

    def _read_other(self, peft_type: str, config: Mapping[str, Any], config_path: str,
                    tensors: Mapping[str, torch.Tensor]) -> None:
        """The updates of a LoHa, LoKr, IA3, OFT, BOFT, VeRA or LN-tuning adapter (module docstring), and its
        ``modules_to_save``."""
        path = self.ref.path
        parts: dict[str, dict[str, torch.Tensor]] = {}
        shared: dict[str, torch.Tensor] = {}  # VeRA's vera_A / vera_B
        for key, t in tensors.items():
            v = _VERA_SHARED.match(key)
            if v is not None:
                shared[v["part"]] = t.float()
                continue
            m = _OTHER_KEY.match(key)
            if m is None:  # modules_to_save, as for LoRA; LN tuning's whole norm layer (``ln_tuning_layers``)
                name = normalise_name(key.replace(".modules_to_save", "").replace(".ln_tuning_layers", "")
                                      .replace(".default", ""))
                self._replaced[name] = t
                self._infos[name] = TensorInfo(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))
                continue
            parts.setdefault(m["module"], {})[m["part"]] = t.float()
        factored = peft_type in ("LOHA", "LOKR")
        r_default = _number(config, "r", 8, config_path) if factored else 1.0
        alpha_default = _number(config, "alpha", r_default, config_path) if factored else 1.0
        rank_pattern = _patterns(config, "rank_pattern", config_path)
        alpha_pattern = _patterns(config, "alpha_pattern", config_path)
        if any(k in got for got in parts.values() for k in ("oft_r", "oft_s")):
            raise UnreadableCheckpointError(
                f"{path} is a PEFT OFT adapter saved by PEFT 0.15 or older (oft_r / oft_s), whose parametrisation "
                "PEFT itself no longer loads; this version merges the OFT of PEFT 0.16 and later. Merge it with the "
                "PEFT that made it (merge_and_unload) and add the merged model instead.", path)
        if peft_type == "VERA" and parts and set(shared) != {"vera_A", "vera_B"}:
            raise UnreadableCheckpointError(
                f"{path} is a PEFT VeRA adapter saved without its shared random projections (vera_A / vera_B: "
                "save_projection=False), which only PEFT regenerates from projection_prng_key. Load it with PEFT and "
                "save it again with save_projection=True (VeraConfig's default), or merge it with PEFT "
                "(merge_and_unload) and add the merged model instead.", path)
        if peft_type in ("OFT", "BOFT", "VERA"):
            _check_rotation_config(peft_type, config, config_path)
        per_expert: dict[str, dict[int, _Update]] = {}
        for module, got in sorted(parts.items()):
            name = normalise_name(module + ".weight")
            info = self._infos.get(name)
            # one expert's module (transformers 4's Mixtral w1 / w2 / w3), the base's experts listed stacked
            # (:mod:`.experts`): its update is made for that expert's (out, in) matrix, as on a dense module
            slot = stacked_slot(name) if info is None else None
            stacked = self._infos.get(slot[0]) if slot is not None else None
            if slot is not None and stacked is not None and len(stacked.shape) == 3 and slot[1] < stacked.shape[0]:
                info = TensorInfo(name, tuple(stacked.shape[1:]), stacked.dtype)
            else:
                slot = None
            if info is None:
                raise AdapterMismatchError(
                    f"The adapter {self.ref.path} updates {name}, which the base model {self.base.ref.id!r} does "
                    "not have: is that the right base model?", self.ref.path)
            stored = info.shape
            if "lokr_w2" in got and got["lokr_w2"].dim() > 2:  # a whole conv factor (b, d, *k): kron of the
                got["lokr_w2"] = got["lokr_w2"].flatten(1)  # flattened kernels is the flattened kron
            if any(k in got for k in ("hada_t1", "hada_t2", "lokr_t2")) or (peft_type == "IA3" and len(stored) > 2) \
                    or (peft_type in ("LOHA", "LOKR", "IA3") and any(t.dim() != 2 for t in got.values())):
                form = "IA3 vector" if peft_type == "IA3" else "Tucker (use_effective_conv2d) kernel"
                raise UnreadableCheckpointError(
                    f"{path} is a PEFT {peft_type} adapter with a {form} on the convolution {module}, which this "
                    "version does not merge. Merge it with PEFT (merge_and_unload) and add the merged model instead.",
                    path)
            bare = module.removeprefix("base_model.model.")
            r = _pattern_value(rank_pattern, bare) or r_default
            alpha = _pattern_value(alpha_pattern, bare) or alpha_default
            if peft_type in ("OFT", "BOFT"):
                update = self._rotation_update(peft_type, module, got, stored, config)
            elif peft_type == "HRA":
                update = self._hra_update(module, got, stored, bool(config.get("apply_GS")))
            elif peft_type == "VERA":
                update = self._vera_update(module, got, shared, stored, bool(config.get("fan_in_fan_out")))
            else:
                update = self._other_update(peft_type, module, got, float(r), float(alpha), config)
            if slot is not None:
                if not update.fits(stored):
                    raise AdapterMismatchError(
                        f"The adapter {self.ref.path} updates expert {slot[1]} of {slot[0]} with shape "
                        f"{update.shape()}, but the base model {self.base.ref.id!r}'s experts are {stored}: is that "
                        "the right base model?", self.ref.path)
                per_expert.setdefault(slot[0], {})[slot[1]] = update
                bias_slot = stacked_slot(normalise_name(module + ".bias"))
                # IA3 by output scales each expert's bias too, where the experts have one (stacked (experts, out))
                if peft_type == "IA3" and got["ia3_l"].shape[1] == 1 and bias_slot is not None \
                        and bias_slot[0] in self._infos:
                    per_expert.setdefault(bias_slot[0], {})[slot[1]] = _Update(got["ia3_l"], got["ia3_l"], 1.0, "scale")
                continue
            self._add(name, update)
            bias = normalise_name(module + ".bias")
            # IA3 scales the bias of a layer it scales by output (PEFT: not ``is_feedforward``), which its
            # vector says as saved: (out, 1), whatever the weight's layout
            if peft_type == "IA3" and got["ia3_l"].shape[1] == 1 and bias in self._infos:
                self._add(bias, _Update(got["ia3_l"], got["ia3_l"], 1.0, "scale"))
        for target, experts in sorted(per_expert.items()):  # one update per stacked tensor, expert by expert
            self._add(target, _expert_rows(experts, self._infos[target].shape[0]))

    def _damaged(self, module: str, what: str) -> AdapterMismatchError:
        path = self.ref.files[0]
        return AdapterMismatchError(f"{path}: module {module} {what}. The adapter is damaged.", path)

    def _rotation_update(self, peft_type: str, module: str, got: Mapping[str, torch.Tensor],
                         stored: tuple[int, ...], config: Mapping[str, Any]) -> _Update:
        """The update of one OFT or BOFT module: the blocks of its rotation (:func:`oft_rotation`,
        :func:`boft_rotation`), checked against the flattened columns of the base tensor (``stored``)."""
        columns = math.prod(stored[1:]) if len(stored) >= 2 else 0
        if peft_type == "BOFT":
            if "boft_R" not in got or "boft_s" not in got:
                raise self._damaged(module, "lacks boft_R or boft_s")
            blocks, scale = got["boft_R"], got["boft_s"]
            if len(stored) > 2 and scale.dim() == 2 and scale.shape[0] == 1:  # PEFT's Conv2d keeps it (1, out)
                scale = scale.T  # and transposes it in get_delta_weight
            if blocks.dim() != 4 or blocks.shape[2] != blocks.shape[3] or scale.dim() != 2 or scale.shape[1] != 1:
                raise self._damaged(module, f"has boft_R {tuple(blocks.shape)} and boft_s {tuple(scale.shape)}, "
                                            "not (factors, blocks, size, size) and (out, 1)")
            if blocks.shape[0] != 1:
                raise UnreadableCheckpointError(
                    f"{self.ref.path} is a PEFT BOFT adapter with {blocks.shape[0]} butterfly factors on {module} "
                    "(boft_n_butterfly_factor > 1), which this version does not merge (it merges one factor, "
                    "PEFT's default). Merge it with PEFT (merge_and_unload) and add the merged model instead.",
                    self.ref.path)
            with one_torch_thread():  # many tiny solves, as for OFT
                rotation = boft_rotation(blocks[0])
            return _Update(rotation, scale, 1.0, "rotate", c=scale)
        key = "oft_embedding_R" if "oft_embedding_R" in got else "oft_R"
        if key not in got:
            raise self._damaged(module, "lacks oft_R")
        weight = got[key]
        size = _block_size(weight.shape[-1]) if weight.dim() == 2 else None
        if size is None:
            raise self._damaged(module, f"has oft_R {tuple(weight.shape)}, not (blocks, size * (size - 1) / 2)")
        if bool(config.get("block_share")) and weight.shape[0] == 1 and columns % size == 0:
            weight = weight.expand(columns // size, -1)  # one block shared along the input (``block_share``)
        with one_torch_thread():  # many tiny products: threads gain nothing (and a forked reader must not wait)
            blocks = oft_rotation(weight, size, bool(config.get("coft")), float(config.get("eps", 6e-5)),
                                  bool(config.get("use_cayley_neumann", True)),
                                  int(config.get("num_cayley_neumann_terms", 5)))
        if key == "oft_embedding_R":  # an embedding's rows are rotated as W @ R, not W @ R.T
            blocks = blocks.transpose(1, 2).contiguous()
        return _Update(blocks, torch.ones(stored[0] if stored else 0, 1), 1.0, "rotate")

    def _hra_update(self, module: str, got: Mapping[str, torch.Tensor], stored: tuple[int, ...],
                    gram_schmidt: bool) -> _Update:
        """The update of one HRA module (:func:`hra_reflection`), checked against the flattened columns of the
        base tensor."""
        u = got.get("hra_u")
        if u is None or u.dim() != 2 or u.shape[1] < 1 or len(stored) < 2:
            raise self._damaged(module, f"has hra_u {None if u is None else tuple(u.shape)}, not (in, r)")
        with one_torch_thread():  # r x r products: threads gain nothing
            a, b = hra_reflection(u, gram_schmidt)
        return _Update(a, b, 1.0, "reflect", c=torch.ones(stored[0], 1))

    def _vera_update(self, module: str, got: Mapping[str, torch.Tensor], shared: Mapping[str, torch.Tensor],
                     stored: tuple[int, ...], fan_in_fan_out: bool) -> _Update:
        """The update of one VeRA module: ``(lambda_b * B[:out]) @ (lambda_d * A[:, :in])`` (PEFT
        ``vera/layer.py`` ``get_delta_weight``; Kopiczko et al. 2024, eq. 1), its transpose with
        ``fan_in_fan_out``; A (r, max in) and B (max out, r) are the projections every module shares."""
        if "vera_lambda_b" not in got or "vera_lambda_d" not in got:
            raise self._damaged(module, "lacks vera_lambda_b or vera_lambda_d")
        lb, ld = got["vera_lambda_b"].reshape(-1), got["vera_lambda_d"].reshape(-1)
        A, B = shared["vera_A"], shared["vera_B"]  # noqa: N806 - the paper's names
        if len(stored) != 2:
            raise self._damaged(module, f"is a VeRA update of a {len(stored)}-D tensor {stored}")
        out_f, in_f = (stored[1], stored[0]) if fan_in_fan_out else stored
        if A.dim() != 2 or B.dim() != 2 or not (ld.numel() == A.shape[0] == B.shape[1]) or A.shape[1] < in_f \
                or B.shape[0] < out_f or lb.numel() != out_f:
            raise self._damaged(module, f"has lambda_b {tuple(lb.shape)} and lambda_d {tuple(ld.shape)} against "
                                        f"projections {tuple(A.shape)} and {tuple(B.shape)} and a base tensor {stored}")
        # PEFT's operations in its order (the vectors broadcast over rows, then the product), so the bits agree
        a = ld.unsqueeze(-1) * A[:, :in_f]
        b = lb.unsqueeze(-1) * B[:out_f, :]
        return _Update(a, b, 1.0, "product_t" if fan_in_fan_out else "product")

    def _other_update(self, peft_type: str, module: str, got: Mapping[str, torch.Tensor], r: float, alpha: float,
                      config: Mapping[str, Any]) -> _Update:
        """The update of one module of a LoHa, LoKr or IA3 adapter from its stored parts ``got``."""
        path = self.ref.files[0]

        def need(*keys: str) -> list[torch.Tensor]:
            missing = [k for k in keys if k not in got]
            if missing:
                raise AdapterMismatchError(f"{path}: module {module} lacks {', '.join(missing)}. The adapter is "
                                           "damaged.", path)
            return [got[k] for k in keys]

        def multiplies(x: torch.Tensor, y: torch.Tensor) -> None:
            if x.shape[1] != y.shape[0]:
                raise AdapterMismatchError(f"{path}: module {module} has factors {tuple(x.shape)} and "
                                           f"{tuple(y.shape)}, which do not multiply. The adapter is damaged.", path)

        def product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            multiplies(x, y)
            return x @ y

        if peft_type == "IA3":
            (vector,) = need("ia3_l")
            return _Update(vector.T if config.get("fan_in_fan_out") else vector, vector, 1.0, "scale")
        if peft_type == "LOHA":
            w1a, w1b, w2a, w2b = need("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
            multiplies(w1a, w1b)  # the products are made per row range, when read
            multiplies(w2a, w2b)
            if w1a.shape != w2a.shape or w1b.shape != w2b.shape:
                raise AdapterMismatchError(f"{path}: module {module}'s two LoHa products differ in shape. The "
                                           "adapter is damaged.", path)
            # PEFT's scale is alpha / r with the config's r; the tensors are the truth where they disagree
            return _Update(w1a, w1b, alpha / w1a.shape[1], "hadamard", c=w2a, d=w2b)
        # LoKr: a factor is stored whole or as a low-rank product, whose rank then shows in the tensors
        w1 = got["lokr_w1"] if "lokr_w1" in got else product(*need("lokr_w1_a", "lokr_w1_b"))
        w2 = got["lokr_w2"] if "lokr_w2" in got else product(*need("lokr_w2_a", "lokr_w2_b"))
        stored_r = got["lokr_w2_a"].shape[1] if "lokr_w2_a" in got else \
            got["lokr_w1_a"].shape[1] if "lokr_w1_a" in got else r
        return _Update(w1, w2, alpha / stored_r, "kron")

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def _base_read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The tensor the updates apply to: the base's, or the adapter's own copy where it saved one (a
        ``modules_to_save`` layer; an adapted embedding's ``base_layer.weight``, which PEFT saves with the
        adapter when it targets an embedding and merges the adapter into)."""
        t = self._replaced.get(name)
        if t is None:
            return self.base.read(name, rows)
        return (t if rows is None else t[rows[0]:rows[1]]).clone()

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        w = self._base_read(name, rows)
        updates = self._updates.get(name)
        bias = self._bias.get(name)
        if not updates and bias is None:
            return w
        merged = w.to(torch.float32, copy=True)  # never change the base reader's tensor in place
        self._apply(name, merged, rows)
        return merged.to(w.dtype)

    def _apply(self, name: str, merged: torch.Tensor, rows: tuple[int, int] | None) -> None:
        """Apply the queued updates of tensor ``name`` to ``merged`` (its rows ``rows``, float32) in place: the
        one step of :meth:`read` a subclass extends (the Stable Diffusion reader adds LyCORIS's rescaling)."""
        for u in self._updates.get(name) or ():
            u.add_into(merged, rows)
            if u.magnitude is not None and u.mode == "linear_t":  # DoRA on Conv1D: outputs are columns
                merged *= (u.magnitude / self._dora_columns(name, u).clamp_min(1e-30))[None, :]
            elif u.magnitude is not None:  # DoRA: each merged row rescaled to its learned norm (module docstring)
                mag = u.magnitude if rows is None else u.magnitude[rows[0]:rows[1]]
                merged *= (mag / merged.norm(dim=1).clamp_min(1e-30))[:, None]
        bias = self._bias.get(name)
        if bias is not None:
            merged += bias if rows is None else bias[rows[0]:rows[1]]

    def _dora_columns(self, name: str, update: _Update) -> torch.Tensor:
        """Norms of the columns of the whole merged (stored) tensor ``name``, read once."""
        if name not in self._column_norms:
            whole = self._base_read(name).to(torch.float32, copy=True)
            update.add_into(whole, None)
            self._column_norms[name] = whole.norm(dim=0)
        return self._column_norms[name]

    def close(self) -> None:
        """Release the adapter; the base reader belongs to the caller and stays open."""
        self._updates = {}
        self._replaced = {}
        self._column_norms = {}

    def __enter__(self) -> "LoraReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_lora(ref: ModelRef, base: ModelReader | None) -> ModelReader:
    """The registry's opener of ``"peft-lora"`` adapters, every type of :data:`.registry.PEFT_TYPES` (``base``
    is checked by ``open_model``)."""
    assert base is not None
    return LoraReader(ref, base)
