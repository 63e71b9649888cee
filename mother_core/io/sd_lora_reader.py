"""The reader of Stable Diffusion LoRA files (:mod:`.sd_lora`: layouts, names, base, the formulas): the base
UNet's reader with the LoRA merged in, as diffusers' ``fuse_lora`` merges a LoRA and LyCORIS's forward applies
its other module types. Kept apart from :mod:`.sd_lora` so that discovery, which sniffs files, never imports
torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from mother_core.device import one_torch_thread
from mother_core.errors import AdapterMismatchError, UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef
from mother_core.io.lora import LoraReader, _load_adapter, _number, _pattern_value, _patterns, _Update
from mother_core.io.safetensors_header import read_header
from mother_core.io.sd_lora import (
    DIFFUSERS, KIND_NAMES, KOHYA, DitTargets, _Module, adapter_metadata, dit_resolve, lora_modules, plain_lora, refusal,
    resolve, sniff,
)


def _positive_scalar(t: torch.Tensor, path: str, key: str) -> float:
    """A kohya ``.alpha`` tensor's value (one positive number)."""
    value = float(t.float().reshape(-1)[0]) if t.numel() == 1 else math.nan
    if not math.isfinite(value) or value <= 0:
        raise UnreadableCheckpointError(f"{path}: {key} must hold one positive number; the file is damaged.", path)
    return value


def _open_impl(ref: ModelRef, base: ModelReader) -> ModelReader:
    path = ref.files[0]
    header = read_header(path)
    layout = sniff(t.name for t in (*header.tensors, *header.unsupported)) or ""
    if layout.startswith("unsupported:"):
        raise UnreadableCheckpointError(refusal(path, layout), path)
    if layout not in (KOHYA, DIFFUSERS):
        raise UnreadableCheckpointError(f"{path} is not a Stable Diffusion LoRA file (kohya-ss or diffusers).", path)
    shapes = {t.name: t.shape for t in header.tensors}
    modules = lora_modules(path, layout, list(shapes))
    if not modules:
        raise UnreadableCheckpointError(
            f"{path} holds text-encoder LoRA layers only; the engine compares UNets, so there is nothing to "
            "compare it by.", path)
    dit = dit_resolve(path, layout, modules, shapes, base.tensor_infos(), base.ref.id)
    targets = resolve(path, layout, modules, shapes, base.tensor_infos(), base.ref.id) if dit is None else {}
    tensors = _load_adapter(path)
    config = adapter_metadata(header.metadata) if layout == DIFFUSERS else {}
    alpha_default = _number(config, "lora_alpha", 1, path) if "lora_alpha" in config else None
    alpha_pattern = _patterns(config, "alpha_pattern", path)

    reader = SDLoraReader.__new__(SDLoraReader)  # LoraReader.__init__ parses a PEFT folder: not this file
    reader._start(ref, base)
    splits: dict[str, DitTargets] = {}
    if dit is not None:  # a kohya-ss Flux / SD3 network: each update's rows split onto the modules it fuses
        for m in modules:
            if not plain_lora(m):
                pieces = dit[m.key]
                if len(pieces) == 1 and pieces[0][1] == ((0, base.tensor_infos()[pieces[0][0]].shape[0]),):
                    targets[m.key] = pieces[0][0]  # one diffusers module, whole: read as on an SD UNet
                else:
                    splits[m.key] = pieces
                continue
            a, b = tensors[m.down].float(), tensors[m.up].float()
            network = _positive_scalar(tensors[m.alpha], path, m.alpha) if m.alpha is not None else a.shape[0]
            for name, ranges in dit[m.key]:
                # the rows of B @ A are B's rows @ A: diffusers' converter splits lora_up the same way
                rows = torch.cat([b[start:stop] for start, stop in ranges])
                reader._updates.setdefault(name, []).append(_Update(a, rows, float(network / a.shape[0]), "linear"))
        modules = [m for m in modules if not plain_lora(m)]
    for m in modules:
        if m.key in splits:
            _add_split(reader, m, tensors, splits[m.key], path)
            continue
        name = targets[m.key]
        target = base.tensor_infos()[name].shape
        if m.kind in ("full", "norm"):  # added whole, as LoraReader adds a LoRA's bias (sd_lora: the formulas)
            # kept as stored: a difference is the size of the layer, and float32 += fp16 rounds as upcasting first
            weight_part, bias_part = ("diff", "diff_b") if m.kind == "full" else ("w_norm", "b_norm")
            reader._bias[name] = tensors[m.parts[weight_part]].reshape(target)
            bias = name.removesuffix(".weight") + ".bias"
            if bias_part in m.parts and bias in reader._infos:
                reader._bias[bias] = tensors[m.parts[bias_part]]
            continue
        got = {part: tensors[key].float() for part, key in m.parts.items() if part != "alpha"}
        if m.kind == "oft":  # rotations of the output rows, applied to whole blocks of rows when read
            constraint = float(tensors[m.alpha].float().reshape(-1)[0]) if m.alpha is not None else 0.0
            if not math.isfinite(constraint) or constraint < 0:
                raise UnreadableCheckpointError(f"{path}: {m.alpha} must be a number >= 0; the file is damaged.", path)
            reader._mixes[name] = _RowMix(got["oft_blocks"], got.get("rescale"), constraint * target[0])
            continue
        if m.kind == "ia3":  # W * (1 + weight) along the outputs, or the inputs with on_input
            gain = got["weight"].reshape(-1) + 1
            if float(got["on_input"].reshape(-1)[0]) != 0:
                if gain.numel() != target[1]:
                    raise AdapterMismatchError(f"{path}: the IA3 module {m.key!r} scales {gain.numel()} inputs of a "
                                               f"layer of {target[1]}; the file is damaged.", path)
                # one value per input channel, repeated over the kernel as the flattened rows lay it out
                vector = gain.repeat_interleave(math.prod(target[2:])).reshape(1, -1)
            elif gain.numel() != target[0]:
                raise AdapterMismatchError(f"{path}: the IA3 module {m.key!r} scales {gain.numel()} outputs of a "
                                           f"layer of {target[0]}; the file is damaged.", path)
            else:
                vector = gain.reshape(-1, 1)
            reader._updates.setdefault(name, []).append(_Update(vector, vector, 1.0, "scale"))
            continue
        if m.kind != "lora":
            alpha = _positive_scalar(tensors[m.alpha], path, m.alpha) if m.alpha is not None else None
            update = _lycoris_update(m, got, alpha)
        else:
            a, b = got["lora_down.weight"], got["lora_up.weight"]
            r = a.shape[0]  # the tensors are the truth (as lora.LoraReader)
            if m.alpha is not None:
                alpha = _positive_scalar(tensors[m.alpha], path, m.alpha)
            else:  # diffusers: the saved LoraConfig, else alpha = r (get_peft_kwargs without network alphas)
                alpha = _pattern_value(alpha_pattern, m.key) or alpha_default or r
            scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
            if "lora_mid.weight" in got:  # Tucker LoCon: the kernel joins the down factor, (r, in, kh, kw)
                a = torch.einsum("ij...,jr->ir...", got["lora_mid.weight"], a.reshape(r, -1))
            # Laid out as the base tensor (resolve() checked the sizes): a convolution (LoCon 3x3, or a 1x1 layer
            # given a linear or a conv LoRA) as B (out, r, 1, 1) and A (r, in, kh, kw), whose product _Update
            # reshapes to the kernel; a linear layer as B (out, r) and A (r, in).
            a = a.reshape(r, *target[1:])
            b = b.reshape(b.shape[0], r, *([1] * (len(target) - 2)))
            mode = "conv" if len(target) > 2 else "linear"
            update = _Update(a, b, float(scale), mode)
        reader._updates.setdefault(name, []).append(update)
        if "dora_scale" in got:  # resolve() checked it is (out, 1, ...) or (1, in, ...)
            dora = got["dora_scale"]
            reader._decompose[name] = (dora, dora.shape[0] == target[0] and dora.numel() == target[0])
    return reader


def _add_split(reader: SDLoraReader, m: _Module, tensors: dict[str, torch.Tensor], pieces: DitTargets,
               path: str) -> None:
    """Queue a LyCORIS module made on a fused Flux / SD3 module (a qkv, Flux's ``linear1``, a swapped modulation) as
    its updates of the diffusers tensors it fuses, each taking its rows of the module's update (``rows_of``).

    The update is the one the module's forward applies to the fused weight (the formulas of :mod:`.sd_lora`); LoHa,
    LoKr, LoRA / LoCon and IA3 updates are row-separable, so each part's rows are the fused update's rows; a full
    difference is cut by rows; a DoRA scale per output row is cut with them. A DoRA scale per input channel needs
    the norms of the whole fused weight, and is refused."""
    rows = sum(b - a for _, ranges in pieces for a, b in ranges)
    inner = reader._infos[pieces[0][0]].shape[1]
    got = {part: tensors[key].float() for part, key in m.parts.items() if part != "alpha"}
    alpha = _positive_scalar(tensors[m.alpha], path, m.alpha) if m.alpha is not None else None
    if m.kind == "full":  # as stored, cut by rows (the difference is the fused weight's)
        diff = tensors[m.parts["diff"]].reshape(rows, inner)
        for name, ranges in pieces:
            reader._bias[name] = torch.cat([diff[a:b] for a, b in ranges])
            bias = name.removesuffix(".weight") + ".bias"
            if "diff_b" in m.parts and bias in reader._infos:
                reader._bias[bias] = torch.cat([tensors[m.parts["diff_b"]][a:b] for a, b in ranges])
        return
    if m.kind == "ia3":  # W * (1 + weight): one gain per fused output row, or per input (on_input)
        gain = got["weight"].reshape(-1) + 1
        vector = gain.reshape(1, -1) if float(got["on_input"].reshape(-1)[0]) != 0 else gain.reshape(-1, 1)
        if vector.shape[0] not in (1, rows) or vector.shape[1] not in (1, inner):
            raise AdapterMismatchError(f"{path}: the IA3 module {m.key!r} scales {gain.numel()} rows or inputs of a "
                                       f"module of {(rows, inner)}; the file is damaged.", path)
        update = _Update(vector, vector, 1.0, "scale")
    elif m.kind in ("loha", "lokr"):
        update = _lycoris_update(m, got, alpha)
    elif m.kind == "lora" and "lora_mid.weight" not in got:  # LoCon with DoRA on a linear layer
        a, b = got["lora_down.weight"], got["lora_up.weight"]
        update = _Update(a, b.reshape(b.shape[0], -1), float((alpha or a.shape[0]) / a.shape[0]), "linear")
    else:  # discovery refuses OFT / BOFT / norm modules on fused modules; a Tucker kernel is a convolution's
        raise UnreadableCheckpointError(
            f"{path}: the {KIND_NAMES[m.kind]} module {m.key!r} is on a fused module of the transformer, whose rows "
            "this version cannot split for that type. Merge it with the tool that made it and add the merged "
            "checkpoint instead.", path)
    dora = got.get("dora_scale")
    if dora is not None and not (dora.shape[0] == rows and dora.numel() == rows):
        raise UnreadableCheckpointError(
            f"{path}: the module {m.key!r} decomposes its weight per input channel (DoRA, wd_on_output false) on a "
            "fused module of the transformer, whose norms span every part; this version does not merge that. Merge "
            "it with the tool that made it and add the merged checkpoint instead.", path)
    for name, ranges in pieces:
        reader._updates.setdefault(name, []).append(replace(update, rows_of=ranges))
        if dora is not None:  # one scale per output row: each part's rows
            reader._decompose[name] = (torch.cat([dora.reshape(-1, 1)[a:b] for a, b in ranges]), True)


def _lycoris_update(m: _Module, got: dict[str, torch.Tensor], alpha: float | None) -> _Update:
    """The update of a LyCORIS LoHa or LoKr module from its parts ``got`` (float32), in :class:`_Update`'s
    hadamard and kron modes, which add it row range by row range (formulas: :mod:`.sd_lora`)."""
    if m.kind == "loha":
        w1a, w1b, w2a, w2b = got["hada_w1_a"], got["hada_w1_b"], got["hada_w2_a"], got["hada_w2_b"]
        r = w1b.shape[0]
        if "hada_t1" in got:
            # einsum(t, w_a, w_b)[o, i, k] = sum_pq t[p, q, k] w_a[p, o] w_b[q, i] = (w_a.T @ (t x_q w_b))[o, (i, k)]:
            # a product of an (out, r) and an (r, in * kh * kw) matrix, as the plain form
            w1a, w1b = w1a.T, torch.einsum("pq...,qi->pi...", got["hada_t1"], w1b)
            w2a, w2b = w2a.T, torch.einsum("pq...,qi->pi...", got["hada_t2"], w2b)
        scale = 1.0 if alpha is None else alpha / r
        return _Update(w1a, w1b.flatten(1), scale, "hadamard", c=w2a, d=w2b.flatten(1))
    w1 = got["lokr_w1"] if "lokr_w1" in got else got["lokr_w1_a"] @ got["lokr_w1_b"]
    if "lokr_w2" in got:
        w2 = got["lokr_w2"]
    elif "lokr_t2" in got:  # einsum(t2, w2a, w2b)[o, i, k] = sum_pq t2[p, q, k] w2a[p, o] w2b[q, i]
        w2 = torch.einsum("pq...,po,qi->oi...", got["lokr_t2"], got["lokr_w2_a"], got["lokr_w2_b"])
    else:
        w2 = got["lokr_w2_a"] @ got["lokr_w2_b"].flatten(1)
    # the rank of the factored half; both halves whole: scale 1 (LokrModule sets alpha = r then)
    factored = got.get("lokr_w1_b", got.get("lokr_w2_b"))
    scale = 1.0 if factored is None or alpha is None else alpha / factored.shape[0]
    # kron of the flattened factors is the flattened kron of the kernels (the kernel rides on w2)
    return _Update(w1, w2.flatten(1), scale, "kron")


@dataclass(frozen=True)
class _RowMix:
    """A LyCORIS OFT or BOFT module: a rotation mixing the output rows of its layer within blocks (Diag-OFT,
    ``oft_blocks`` (k, s, s)) or butterfly groups (BOFT, (m, k, b, b)), then ``rescale`` per row (formulas:
    :mod:`.sd_lora`). ``constraint`` is the module's, ``alpha * out`` (``DiagOFTModule`` / ``BOFTModule``)."""

    blocks: torch.Tensor
    rescale: torch.Tensor | None
    constraint: float

    @property
    def span(self) -> int:
        """The rows that mix together: a block (Diag-OFT), or a butterfly group of the last stage (BOFT)."""
        if self.blocks.dim() == 3:
            return int(self.blocks.shape[1])
        return int(2 ** (self.blocks.shape[0] - 1) * self.blocks.shape[2])

    def rotations(self) -> torch.Tensor:
        """LyCORIS ``functional/diag_oft.py`` ``get_r``: ``Q = B - B.T``, scaled to Frobenius norm ``constraint``
        (over every block at once) when that is set and exceeded, ``R = (I + Q) @ (I - Q)^-1``."""
        eye = torch.eye(self.blocks.shape[-1])
        while eye.dim() < self.blocks.dim():
            eye = eye.unsqueeze(0)
        q = self.blocks - self.blocks.transpose(-1, -2)
        if self.constraint > 0:
            norm = torch.norm(q) + 1e-8
            if norm > self.constraint:
                q = q * self.constraint / norm
        return (eye + q) @ (eye - q).float().inverse()

    def apply(self, w: torch.Tensor, r: torch.Tensor, rows: tuple[int, int]) -> torch.Tensor:
        """The merged rows ``rows`` (whole spans) of the layer from its base rows ``w`` (float32) and the
        rotations ``r``, in the library's operations (``_diff_weight``: the difference, then added)."""
        shape = w.shape[1:]
        scale = None if self.rescale is None else self.rescale[rows[0]:rows[1]].reshape(-1, *([1] * len(shape)))
        if self.blocks.dim() == 3:  # Diag-OFT: block j of rows becomes (R_j - I).T @ W_j, added to W
            k0, k1 = rows[0] // self.span, rows[1] // self.span
            eye = torch.eye(self.blocks.shape[1])
            diff = torch.einsum("k n m, k n ... -> k m ...", r[k0:k1] - eye, w.reshape(k1 - k0, self.span, *shape))
            diff = diff.reshape(w.shape)
            if scale is not None:  # rescale * (R.T W) = W + (rescale * diff + (rescale - 1) * W)
                diff = scale * diff + (scale - 1) * w
            return w + diff
        # BOFT: the library's stages on these rows (whole groups of the last stage, so the same pairs of blocks)
        m, _, b, _ = self.blocks.shape
        first = rows[0] // b
        inp = w
        for i in range(m):
            k = 2 ** i * (b // 2)
            inp = inp.unflatten(0, (-1, 2, k)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, b))
            inp = torch.einsum("b i j, b j ...-> b i ...", r[i, first:first + inp.shape[0]], inp)
            inp = inp.flatten(0, 1).unflatten(0, (-1, k, 2)).transpose(1, 2).flatten(0, 2)
        if scale is not None:
            inp = inp * scale
        return w + (inp - w)


class SDLoraReader(LoraReader):
    """A base UNet with a Stable Diffusion LoRA file merged in: :class:`LoraReader`'s updates, then LyCORIS's
    weight decomposition (DoRA, ``dora_scale``) on the tensors that have one (:mod:`.sd_lora`)."""

    def _start(self, ref: ModelRef, base: ModelReader) -> None:
        super()._start(ref, base)
        # tensor name -> (dora_scale, whether it is per output (out, 1, ...) rather than per input (1, in, ...))
        self._decompose: dict[str, tuple[torch.Tensor, bool]] = {}
        self._input_norms: dict[str, torch.Tensor] = {}  # per-input decomposition: the whole tensor's norms
        self._mixes: dict[str, _RowMix] = {}  # LyCORIS OFT / BOFT: tensor name -> its row rotation
        self._rotations: dict[str, torch.Tensor] = {}  # their rotation blocks, made on first read
        # the last rows merged by a row rotation: (name, first, end) -> rows; a BOFT group can be the whole
        # tensor, which the executor reads in row chunks
        self._mixed: tuple[tuple[str, int, int], torch.Tensor] | None = None

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        mix = self._mixes.get(name)
        if mix is None:
            return super().read(name, rows)
        n = self._infos[name].shape[0]
        r0, r1 = rows if rows is not None else (0, n)
        if r1 <= r0:
            return self._base_read(name, (r0, r1))
        # the whole blocks / butterfly groups that hold the rows asked for
        a0, a1 = r0 // mix.span * mix.span, min(n, -(-r1 // mix.span) * mix.span)
        if self._mixed is None or self._mixed[0] != (name, a0, a1):
            w = self._base_read(name, (a0, a1))
            if name not in self._rotations:
                with one_torch_thread():  # many tiny inverses: threads gain nothing (as lora.py's rotations)
                    self._rotations[name] = mix.rotations()
            merged = mix.apply(w.to(torch.float32), self._rotations[name], (a0, a1)).to(w.dtype)
            self._mixed = ((name, a0, a1), merged)
        return self._mixed[1][r0 - a0:r1 - a0].clone()

    def _apply(self, name: str, merged: torch.Tensor, rows: tuple[int, int] | None) -> None:
        super()._apply(name, merged, rows)
        decompose = self._decompose.get(name)
        if decompose is None or merged.numel() == 0:
            return
        # LyCORIS weight_decompose: W' * dora_scale / (||W'|| + eps), the norm over each output row (so rows are
        # read apart) or each input channel (the whole merged tensor's norms, computed once)
        scale, on_output = decompose
        eps = torch.finfo(torch.float32).eps
        if on_output:
            flat = merged.view(merged.shape[0], -1)
            per_row = scale.reshape(-1, 1) if rows is None else scale.reshape(-1, 1)[rows[0]:rows[1]]
            flat.mul_(per_row / (flat.norm(dim=1, keepdim=True) + eps))
            return
        if name not in self._input_norms:
            whole = self._base_read(name).to(torch.float32, copy=True)
            super()._apply(name, whole, None)
            self._input_norms[name] = whole.transpose(0, 1).reshape(whole.shape[1], -1).norm(dim=1)
        shape = (1, -1, *([1] * (merged.dim() - 2)))
        merged.mul_(scale.reshape(shape) / (self._input_norms[name].reshape(shape) + eps))

    def close(self) -> None:
        super().close()
        self._decompose = {}
        self._input_norms = {}
        self._mixes = {}
        self._rotations = {}
        self._mixed = None


def open_sd_lora(ref: ModelRef, base: ModelReader | None) -> ModelReader:
    """The registry's opener of ``"sd-lora"`` files (``base`` is checked by ``open_model``)."""
    assert base is not None
    return _open_impl(ref, base)


__all__ = ["open_sd_lora"]
