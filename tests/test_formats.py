"""Quantized and converted checkpoint formats, written by the real tools and read in the one pass.

Each test writes tiny files with the library users use (``gguf``'s writer and quantizers, ...), and checks
that the reader gives the source's weights back within the scheme's rounding error, under the source's
names, and that recovery places the quantized copy next to its source.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from format_factory import gguf_roundtrip, llama_state, perturbed, write_gguf
from safetensors.torch import save_file

from mother_core.io.base import ModelRef
from mother_core.io.discovery import discover
from mother_core.io.names import normalise_name
from mother_core.io.readers import open_model

gguf = pytest.importorskip("gguf")


def _ref(path: Path, fmt: str) -> ModelRef:
    return ModelRef(id=path.stem, path=str(path), format=fmt, files=(str(path),))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q5_1", "F16", "Q4_K"])
def test_gguf_dequantized_under_transformers_names(tmp_path, qtype):
    sd = llama_state(0, hidden=256, inter=256) if qtype == "Q4_K" else llama_state(0)
    path = write_gguf(sd, tmp_path / f"m-{qtype}.gguf", qtype=qtype)
    expected = gguf_roundtrip(sd, qtype) if qtype != "F16" else {
        k: v.half().float() if v.ndim == 2 else v for k, v in sd.items()}
    with open_model(_ref(path, "gguf")) as reader:
        infos = reader.tensor_infos()
        assert set(infos) == {normalise_name(k) for k in sd}
        for k, v in sd.items():
            got = reader.read(normalise_name(k)).float()
            assert got.shape == v.shape, k
            # exactly what the package's dequantizer gives, q/k rows back in the transformers order (4- to
            # 6-bit codes rounded to bfloat16: what every read of them gives, so the pass may read them at
            # half width)
            want = expected[k].reshape(v.shape)
            if v.ndim == 2 and qtype in ("Q4_0", "Q5_1", "Q4_K"):
                want = want.bfloat16().float()
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
            # and within the scheme's rounding of the source
            tol = {"Q8_0": 0.01, "Q4_0": 0.15, "Q5_1": 0.08, "F16": 1e-3, "Q4_K": 0.15}[qtype]
            assert (got - v).abs().max() <= tol * v.abs().max() + 1e-6, k


def test_gguf_row_ranges_match_whole_reads(tmp_path):
    sd = llama_state(1)
    path = write_gguf(sd, tmp_path / "m.gguf", qtype="Q8_0")
    with open_model(_ref(path, "gguf")) as reader:
        for name in ("layers.0.self_attn.q_proj.weight", "layers.1.self_attn.k_proj.weight", "embed_tokens.weight"):
            whole = reader.read(name)
            for rows in ((0, 5), (3, 17), (7, whole.shape[0])):
                reader.prefetch(name, rows)  # a hint the pass gives ahead of its reads: changes nothing
                torch.testing.assert_close(reader.read(name, rows), whole[rows[0]:rows[1]], rtol=0, atol=0)
                # and straight into a caller's buffer, as the pass reads it
                buf = torch.full(((rows[1] - rows[0]) * whole.shape[1],), float("nan"))
                torch.testing.assert_close(reader.read_into(name, rows, buf), whole[rows[0]:rows[1]], rtol=0, atol=0)


@pytest.mark.parametrize("threads", [1, 3])
def test_gguf_file_truncated_while_open_is_an_error_not_a_crash(tmp_path, monkeypatch, threads):
    """Chunks are read in pieces and decoded as they arrive; a file cut short after its header was read must
    give a clear error (a short read), never a crash; with several decode threads too (pieces of a few
    blocks, so the short read may happen in a helper thread: the caller raises it)."""
    from mother_core.errors import UnreadableCheckpointError
    from mother_core.io import staged

    monkeypatch.setattr(staged, "_THREADS_ASKED", threads)
    if threads > 1:
        monkeypatch.setattr(staged, "PIECE_BYTES", 34 * 8)

    sd = llama_state(2)
    path = write_gguf(sd, tmp_path / "m.gguf", qtype="Q8_0")
    name = "embed_tokens.weight"
    with open_model(_ref(path, "gguf")) as reader:
        rows = reader.tensor_infos()[name].shape[0]
        cols = reader.tensor_infos()[name].shape[1]
        buf = torch.empty(rows * cols)
        first = reader.read_into(name, (0, rows), buf).clone()  # the file open now
        assert torch.isfinite(first).all()
        with open(path, "r+b") as f:
            f.truncate(reader.header.tensors[next(k for k in reader.header.tensors if "embed" in k)].offset + 1)
        with pytest.raises(UnreadableCheckpointError, match="ends inside tensor"):
            reader.read_into(name, (0, rows), buf)


def test_split_gguf_is_one_model(tmp_path):
    """A GGUF model split by gguf-split (``-00001-of-00003.gguf``) beside other models is one model, read
    tensor for tensor as the unsplit file, and recovered under its source; a missing part is a problem of
    that model with what to do, the rest of the run intact."""
    from mother_core import RecoverySettings, recover_paths

    root = llama_state(35)
    folder = tmp_path / "set"
    for name, sd in (("root", root), ("a", perturbed(root, 36, rel=0.15))):  # model folders beside the parts
        (folder / name).mkdir(parents=True)
        _save(sd, folder / name / "model.safetensors")
    write_gguf(root, folder / "root-q8.gguf", split_max_tensors=8)
    parts = sorted(p.name for p in folder.glob("root-q8-*.gguf"))
    assert len(parts) > 2 and parts[0] == f"root-q8-00001-of-{len(parts):05d}.gguf"
    whole = write_gguf(root, tmp_path / "whole.gguf")
    found = {m.id: m for m in discover([folder]).models}
    assert set(found) == {"root", "a", "root-q8"} and len(found["root-q8"].files) == len(parts)
    with open_model(found["root-q8"]) as split, open_model(discover([whole]).models[0]) as single:
        assert set(split.tensor_infos()) == set(single.tensor_infos())
        for name in single.tensor_infos():
            assert torch.equal(split.read(name), single.read(name)), name
    result = recover_paths([folder], RecoverySettings())
    parents = {e.child: e.parent for e in result.edges}
    assert parents.get("root-q8") == "root" and not result.problems
    (folder / parts[1]).unlink()
    result = recover_paths([folder], RecoverySettings())
    assert {m.id for m in result.models} == {"root", "a"}
    assert "root-q8" in str(result.problems) and "missing parts" in str(result.problems)


def test_gguf_k_quant_and_mixed_types(tmp_path):
    sd = llama_state(2, hidden=256, inter=256, vocab=64, heads=4, kv_heads=4, layers=1)
    path = write_gguf(sd, tmp_path / "k.gguf", qtype="Q4_K", heads=4, kv_heads=4, file_type="Q4_K_M",
                      force_types={"lm_head.weight": "Q8_0"})
    found = discover([path])
    assert found.models[0].format == "gguf:Q4_K_M"
    with open_model(found.models[0]) as reader:
        for k, v in sd.items():
            got = reader.read(normalise_name(k))
            rel = ((got - v).norm() / v.norm()).item()
            assert rel < (0.12 if v.ndim == 2 else 1e-6), (k, rel)


def test_gpt2_gguf_transposed_back(tmp_path):
    g = torch.Generator().manual_seed(3)
    sd = {"transformer.wte.weight": torch.randn(64, 32, generator=g),
          "transformer.wpe.weight": torch.randn(16, 32, generator=g),
          "transformer.h.0.ln_1.weight": torch.ones(32),
          "transformer.h.0.attn.c_attn.weight": torch.randn(32, 96, generator=g),
          "transformer.h.0.attn.c_proj.weight": torch.randn(32, 32, generator=g),
          "transformer.h.0.mlp.c_fc.weight": torch.randn(32, 128, generator=g),
          "transformer.h.0.mlp.c_proj.weight": torch.randn(128, 32, generator=g),
          "transformer.ln_f.weight": torch.ones(32)}
    path = write_gguf(sd, tmp_path / "gpt2.gguf", qtype="Q8_0", arch="gpt2", heads=2, kv_heads=2)
    with open_model(_ref(path, "gguf")) as reader:
        assert set(reader.tensor_infos()) == {normalise_name(k) for k in sd}
        for k, v in sd.items():
            got = reader.read(normalise_name(k))
            assert got.shape == v.shape
            assert (got - v).abs().max() < 0.02 * v.abs().max()
            torch.testing.assert_close(reader.read(normalise_name(k), (1, 3)) if v.ndim == 2 else got,
                                       got[1:3] if v.ndim == 2 else got)


def test_gguf_recovered_as_child_of_its_source(tmp_path):
    from mother_core import RecoverySettings, recover_paths

    root = llama_state(10)
    a, b = perturbed(root, 11), perturbed(root, 12)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, sd in (("root", root), ("a", a), ("b", b)):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / f"{name}.safetensors"))
    write_gguf(a, folder / "a-q8.gguf", qtype="Q8_0", file_type="Q8_0")
    result = recover_paths([folder], RecoverySettings())
    parents = {e.child: e.parent for e in result.edges}
    assert parents["a-q8"] == "a"
    assert parents["a"] == "root" or parents.get("root") == "a"
    assert {m.id: m.format for m in result.models}["a-q8"] == "gguf:Q8_0"


def test_damaged_gguf_is_a_problem_not_a_crash(tmp_path):
    from mother_core import RecoverySettings, recover_paths

    root = llama_state(20)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, sd in (("root", root), ("a", perturbed(root, 21))):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / f"{name}.safetensors"))
    good = write_gguf(root, tmp_path / "good.gguf")
    data = good.read_bytes()
    (folder / "truncated.gguf").write_bytes(data[: len(data) // 2])
    (folder / "garbage.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    result = recover_paths([folder], RecoverySettings())
    assert {m.id for m in result.models} == {"root", "a"}
    messages = str(result.problems)  # (problem records: dicts today, typed soon)
    assert "truncated.gguf" in messages and "garbage.gguf" in messages


# --- quantized safetensors -----------------------------------------------------------------------------

def _save(sd, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def _check_read(path: Path, source, scheme: str, rel_tol: float, exact=None) -> None:
    found = discover([path])
    ref = found.models[0]
    assert ref.format == f"safetensors:{scheme}"
    with open_model(ref) as reader:
        infos = reader.tensor_infos()
        # exactly the source's names: no scale, zero, absmax or quant-map tensor listed as a weight
        assert set(infos) == {normalise_name(k) for k in source}
        for k, v in source.items():
            got = reader.read(normalise_name(k))
            assert got.shape == v.shape, k
            if exact is not None:
                torch.testing.assert_close(got.float(), exact[k].float(), rtol=1e-5, atol=1e-6)
            rel = ((got.float() - v.float()).norm() / v.float().norm()).item()
            assert rel < rel_tol, (k, rel)
            if v.ndim == 2 and v.shape[0] > 8:
                torch.testing.assert_close(reader.read(normalise_name(k), (3, 9)).float(), got[3:9].float())


@pytest.mark.parametrize("weights,scheme,tol", [("qint8", "quanto-int8", 0.01), ("qint4", "quanto-int4", 0.15),
                                                ("qfloat8", "quanto-float8", 0.06)])
def test_quanto(tmp_path, weights, scheme, tol):
    pytest.importorskip("optimum.quanto")
    from format_factory import quanto_state

    sd = llama_state(30)
    path = _save(quanto_state(sd, weights), tmp_path / "q.safetensors")
    if weights != "qint4":
        _check_read(path, sd, scheme, tol)
        return
    # 4-bit weights with 128 inputs are grouped and do not store their shape: alone, they are reported...
    with open_model(discover([path]).models[0]) as reader:
        assert "layers.0.mlp.down_proj.weight" not in reader.tensor_infos()
        assert any("down_proj" in p for p in reader.notes)
        # ... and given a same-named weight elsewhere in the set, read under that shape
        reader.adopt_shapes({normalise_name(k): tuple(v.shape) for k, v in sd.items()})
        assert not reader.notes
        for k, v in sd.items():
            got = reader.read(normalise_name(k))
            assert ((got - v).norm() / v.norm()).item() < tol, k


@pytest.mark.parametrize("kind,tol", [("int8", 0.02), ("nf4", 0.12), ("fp4", 0.2)])
def test_bitsandbytes(tmp_path, kind, tol):
    bnb = pytest.importorskip("bitsandbytes")
    from format_factory import bnb_state

    sd = llama_state(31)
    try:
        q = bnb_state(sd, kind)
    except (RuntimeError, NotImplementedError) as e:  # a bitsandbytes build without its CPU kernels
        pytest.skip(f"bitsandbytes {bnb.__version__} cannot quantize on this CPU: {e}")
    path = _save(q, tmp_path / "b.safetensors")
    _check_read(path, sd, f"bnb-{kind}", tol)
    if kind != "int8":  # the library's own dequantizer agrees with ours
        import bitsandbytes.functional as F

        w = sd["model.layers.0.mlp.up_proj.weight"]
        packed, state = F.quantize_4bit(w, blocksize=64, quant_type=kind, compress_statistics=True)
        with open_model(discover([path]).models[0]) as reader:
            torch.testing.assert_close(reader.read("layers.0.mlp.up_proj.weight"), F.dequantize_4bit(packed, state))


@pytest.mark.parametrize("awq", [False, True])
def test_gptq_awq_packed_int4(tmp_path, awq):
    from format_factory import gptq_state

    sd = llama_state(32)
    q, exact = gptq_state(sd, group=32, awq=awq)
    _check_read(_save(q, tmp_path / "g.safetensors"), sd, "awq-int4" if awq else "gptq-int4", 0.1, exact=exact)


def test_gptq_v2_zeros_read_as_stored(tmp_path):
    """GPTQModel's ``checkpoint_format: gptq_v2`` stores the zero points themselves (v1 stores them minus
    one): read with the config's format, the weights are the quantizer's."""
    import json

    from format_factory import gptq_state

    sd = llama_state(34)
    q, exact = gptq_state(sd, group=32, v2=True)
    (tmp_path / "m").mkdir()
    _save(q, tmp_path / "m" / "model.safetensors")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 32, "checkpoint_format": "gptq_v2"}}))
    with open_model(discover([tmp_path / "m"]).models[0]) as reader:
        for k, v in exact.items():
            torch.testing.assert_close(reader.read(normalise_name(k)).float(), v.float(), rtol=1e-5, atol=1e-6)


def test_fp8_with_scales(tmp_path):
    sd = llama_state(33)
    q, expected = {}, {}
    for i, (k, v) in enumerate(sd.items()):
        if v.ndim != 2:
            q[k] = v
            expected[k] = v
            continue
        if i % 2:  # per-tensor scale (compressed-tensors / FBGEMM style)
            scale = v.abs().max() / 448
            q[k] = (v / scale).to(torch.float8_e4m3fn)
            q[k + "_scale"] = scale.reshape(())
            expected[k] = q[k].float() * scale
        else:  # per-row scale
            scale = v.abs().amax(1, keepdim=True) / 448
            q[k] = (v / scale).to(torch.float8_e4m3fn)
            q[k + "_scale"] = scale
            expected[k] = q[k].float() * scale
    q["model.layers.0.self_attn.q_proj.input_scale"] = torch.tensor(0.5)
    _check_read(_save(q, tmp_path / "f.safetensors"), sd, "fp8", 0.06, exact=expected)


def test_quantized_copies_found_next_to_their_sources(tmp_path):
    """quanto / bnb / GPTQ copies sit at their source's rounding noise: recovery hangs each under it, and
    their scale tensors no longer join unrelated families."""
    pytest.importorskip("optimum.quanto")
    from format_factory import gptq_state, quanto_state

    from mother_core import RecoverySettings, recover_paths

    folder = tmp_path / "set"
    folder.mkdir()
    root, other = llama_state(40), llama_state(50)
    a, b = perturbed(root, 41, rel=0.15), perturbed(root, 42, rel=0.15)
    c = perturbed(other, 51, rel=0.15)
    for name, sd in (("root", root), ("a", a), ("b", b), ("other", other), ("c", c)):
        _save(sd, folder / f"{name}.safetensors")
    _save(quanto_state(a, "qint8"), folder / "a-quanto.safetensors")
    _save(gptq_state(b)[0], folder / "b-gptq.safetensors")
    _save(quanto_state(c, "qint8"), folder / "c-quanto.safetensors")
    result = recover_paths([folder], RecoverySettings())
    parents = {e.child: e.parent for e in result.edges}
    assert parents.get("a-quanto") == "a" and parents.get("b-gptq") == "b" and parents.get("c-quanto") == "c"
    family = {m: t for t, members in enumerate(_trees(result)) for m in members}
    assert family["a-quanto"] == family["root"] != family["c-quanto"] == family["other"]


def _trees(result) -> list[set[str]]:
    children: dict[str, list[str]] = {}
    for e in result.edges:
        children.setdefault(e.parent, []).append(e.child)
    has_parent = {e.child for e in result.edges}
    out = []
    for m in (m.id for m in result.models):
        if m in has_parent:
            continue
        seen, todo = set(), [m]
        while todo:
            x = todo.pop()
            seen.add(x)
            todo.extend(children.get(x, []))
        out.append(seen)
    return out


def test_unknown_quantization_is_a_problem_for_that_model(tmp_path):
    from mother_core import RecoverySettings, recover_paths

    folder = tmp_path / "set"
    folder.mkdir()
    root = llama_state(60)
    for name, sd in (("root", root), ("a", perturbed(root, 61)), ("b", perturbed(root, 62))):
        _save(sd, folder / f"{name}.safetensors")
    # a 3-bit GPTQ layout we do not decode, and a bitsandbytes state that is not JSON
    from format_factory import gptq_state

    q, _ = gptq_state(root)
    (folder / "odd-gptq").mkdir()
    _save(q, folder / "odd-gptq" / "model.safetensors")
    (folder / "odd-gptq" / "config.json").write_text('{"quantization_config": {"quant_method": "gptq", "bits": 3}}')
    broken = dict(root)
    w = broken.pop("model.layers.0.mlp.up_proj.weight")
    broken["model.layers.0.mlp.up_proj.weight"] = torch.zeros(w.numel() // 2, 1, dtype=torch.uint8)
    broken["model.layers.0.mlp.up_proj.weight.absmax"] = torch.ones(4)
    broken["model.layers.0.mlp.up_proj.weight.quant_map"] = torch.ones(16)
    broken["model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4"] = torch.tensor(list(b"{not json"),
                                                                                            dtype=torch.uint8)
    _save(broken, folder / "bad-bnb.safetensors")
    result = recover_paths([folder], RecoverySettings())
    ids = {m.id for m in result.models}
    assert {"root", "a", "b"} <= ids
    messages = str(result.problems)
    assert "odd-gptq" in messages and "3 bits" in messages
    assert "bad-bnb" in messages and "quant state" in messages


# --- Stable Diffusion single-file checkpoints --------------------------------------------------------------

@pytest.mark.slow  # imports diffusers (~10 s)
def test_sd_single_file_reads_as_the_diffusers_unet(tmp_path):
    """A single-file checkpoint's UNet lists and reads exactly as the diffusers UNet, and diffusers' own
    converter agrees with the renaming (the file is built by inverting our table; if the table were wrong,
    diffusers would map the file to other names or tensors)."""
    pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from format_factory import ldm_single_file, tiny_sd_unet

    unet = tiny_sd_unet(0)
    state = {k: v.detach() for k, v in unet.state_dict().items()}
    single = ldm_single_file(state)
    converted = convert_ldm_unet_checkpoint(dict(single), dict(unet.config))
    assert set(converted) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(converted[k].reshape(v.shape), v)

    path = _save(single, tmp_path / "sd-v1.safetensors")
    ref = discover([path]).models[0]
    assert ref.format == "safetensors:sd-single-file"
    with open_model(ref) as reader:
        assert set(reader.tensor_infos()) == {normalise_name(k) for k in state}
        for k, v in state.items():
            torch.testing.assert_close(reader.read(normalise_name(k)), v)
    # the .ckpt form (a torch pickle with a "state_dict") reads the same
    torch.save({"state_dict": single, "global_step": 10}, tmp_path / "sd-v1.ckpt")
    with open_model(discover([tmp_path / "sd-v1.ckpt"]).models[0]) as reader:
        assert set(reader.tensor_infos()) == {normalise_name(k) for k in state}


@pytest.mark.slow
def test_sd_single_file_and_diffusers_folder_compare(tmp_path):
    pytest.importorskip("diffusers")
    from format_factory import ldm_single_file, tiny_sd_unet

    from mother_core import RecoverySettings, recover_paths

    base = tiny_sd_unet(1)
    state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    child = {k: v + 0.1 * v.std() * torch.randn_like(v) if v.ndim > 1 else v for k, v in state.items()}
    other = {k: v.detach().clone() for k, v in tiny_sd_unet(2).state_dict().items()}
    folder = tmp_path / "set"
    for name, sd in (("base", state), ("other", other)):  # diffusers repositories
        (folder / name / "unet").mkdir(parents=True)
        (folder / name / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
        _save(sd, folder / name / "unet" / "diffusion_pytorch_model.safetensors")
    _save(ldm_single_file(child), folder / "child-single-file.safetensors")
    result = recover_paths([folder], RecoverySettings())
    parents = {e.child: e.parent for e in result.edges}
    assert parents.get("child-single-file") == "base" or parents.get("base") == "child-single-file"
    assert "other" not in (parents.get("child-single-file"), parents.get("base"))


#: Where each type keeps its f16 scales in a block (byte ranges), so random blocks get finite ones.
_SCALE_BYTES = {"Q8_0": [(0, 2)], "Q4_0": [(0, 2)], "Q4_1": [(0, 4)], "Q5_0": [(0, 2)], "Q5_1": [(0, 4)],
                "Q4_K": [(0, 4)], "Q5_K": [(0, 4)], "Q6_K": [(208, 210)], "BF16": []}


@pytest.mark.parametrize("kind", sorted(_SCALE_BYTES))
def test_compiled_gguf_kernels_match_the_package(kind):
    """The compiled dequantizers agree with gguf.quants bit for bit, on real blocks (where the package or
    the factory quantizes the type) and on random bytes (every code and scale bit pattern, finite f16
    scales)."""
    from format_factory import quantize

    from mother_core.io import gguf_fast

    q = gguf.GGMLQuantizationType[kind]
    nbytes = gguf.GGML_QUANT_SIZES[q][1]
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, size=nbytes * 64, dtype=np.uint8).reshape(64, nbytes)
    for a, b in _SCALE_BYTES[kind]:
        noise[:, a:b] = rng.uniform(-2, 2, (64, (b - a) // 2)).astype(np.float16).view(np.uint8)
    if kind == "BF16":  # finite values only: the bits of float32 numbers, top halves
        noise = (rng.standard_normal(64 * nbytes // 2).astype(np.float32).view(np.uint32) >> 16).astype(
            np.uint16).view(np.uint8).reshape(64, nbytes)
    samples = [noise.reshape(-1)]
    if kind not in ("Q5_K", "Q6_K"):  # no quantizer for these two: random blocks only
        real = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32)
        samples.append(quantize(real, kind).reshape(-1))
    assert gguf_fast.supports(kind)
    portable = gguf_fast.kernels().get(f"{kind}/portable")  # where a CPU-specific kernel replaced it
    for data in samples:
        ours = gguf_fast.dequantize(data, kind)
        theirs = gguf.quants.dequantize(data.reshape(-1, nbytes), q).reshape(-1)
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))
        buf = np.full(ours.size, np.nan, dtype=np.float32)  # straight into a caller's buffer
        np.testing.assert_array_equal(gguf_fast.dequantize(data, kind, buf).view(np.uint32), theirs.view(np.uint32))
        if portable is not None:
            buf[:] = np.nan
            portable(np.ascontiguousarray(data), gguf_fast._F16, buf)
            np.testing.assert_array_equal(buf.view(np.uint32), theirs.view(np.uint32))


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as torch rounds them to bfloat16 (nearest even), as uint16 bits."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).bfloat16().view(torch.int16).numpy().view(
        np.uint16)


def _bf16_values(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 by torch, as float32 again."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).bfloat16().float().numpy()


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K"])
def test_half_width_gguf_kernels_round_the_package_values(kind):
    """The 4- to 6-bit GGUF types are read as ``gguf.quants.dequantize``'s float32 values rounded to bfloat16
    exactly as torch rounds (nearest even), bit for bit: as bfloat16 bits (the pass's half-width chunks) and
    as float32 (every other read), by the dedicated kernels (Q4_K's ``vpermw`` one, where the CPU has
    AVX-512BW) and the generic ones (float32 scratch, then rounded), on real and random blocks; Q8_0 is not
    rounded."""
    from format_factory import quantize

    from mother_core.io import gguf_fast

    q = gguf.GGMLQuantizationType[kind]
    nbytes = gguf.GGML_QUANT_SIZES[q][1]
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, size=nbytes * 300, dtype=np.uint8).reshape(300, nbytes)  # > one generic step
    for a, b in _SCALE_BYTES[kind]:
        noise[:, a:b] = rng.uniform(-2, 2, (300, (b - a) // 2)).astype(np.float16).view(np.uint8)
    samples = [noise.reshape(-1)]
    if kind not in ("Q5_K", "Q6_K"):  # no quantizer for these two: random blocks only
        real = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32)
        samples.append(quantize(real, kind).reshape(-1))
    assert gguf_fast.half_width(kind) and not gguf_fast.half_width("Q8_0")
    halves = gguf_fast.half_kernels()
    if kind == "Q4_K" and "Q4_K" not in halves:
        from llvmlite import binding

        assert not binding.get_host_cpu_features().get("avx512bw", False), "the vpermw kernel did not compile"
    for data in samples:
        exact = gguf.quants.dequantize(data.reshape(-1, nbytes), q).reshape(-1)
        bits, values = _bf16_bits(exact), _bf16_values(exact)
        assert not np.array_equal(values, exact)  # the rounding is really there
        out = np.full(exact.size, 0xFFFF, dtype=np.uint16)
        np.testing.assert_array_equal(gguf_fast.dequantize(data, kind, out), bits)
        np.testing.assert_array_equal(gguf_fast.dequantize(data, kind, rounded=True).view(np.uint32),
                                      values.view(np.uint32))
        ways = ((f"{kind}/generic", np.uint16, bits), (f"{kind}@float32/generic", np.float32, values),
                (f"{kind}@float32", np.float32, values))
        for key, dtype, expected in ways:
            if key in halves:
                buf = np.zeros(exact.size, dtype=dtype)
                halves[key](np.ascontiguousarray(data), gguf_fast._F16, buf)
                np.testing.assert_array_equal(buf.view(expected.dtype), expected, err_msg=key)
        np.testing.assert_array_equal(gguf_fast.dequantize(data, kind).view(np.uint32), exact.view(np.uint32))
    with pytest.raises(ValueError, match="not rounded"):
        gguf_fast.dequantize(np.zeros(34, np.uint8), "Q8_0", np.zeros(32, np.uint16))


@pytest.mark.parametrize("arch,piece,threads", [("qwen2", None, 0), ("llama", None, 1), ("llama", 1000, 1),
                                                ("llama", 1000, 3)])
def test_q4_k_file_read_as_the_pass_reads_it_is_bit_identical_to_the_package(tmp_path, monkeypatch, arch, piece,
                                                                             threads):
    """A Q4_K GGUF file read the way the pass reads it (row chunks read in pieces, each decoded into a reused
    buffer as it arrives, the next chunks hinted ahead) and whole, gives exactly ``gguf.quants.dequantize``
    of the file's own bytes as ``gguf.GGUFReader`` reads them, rounded to bfloat16 as torch rounds, bit for
    bit, into float32 buffers and into the bfloat16 ones the pass reads at half width; with pieces of a few blocks too
    (``piece``: every chunk spans many pieces, cut between blocks), decoded by one thread or shared by
    several (``threads``: the ``decode_threads`` setting; 0 every core). The file is written by
    ``gguf.GGUFWriter``; its Q4_K blocks come from ``format_factory.quantize_q4_k``, since the ``gguf``
    package dequantizes Q4_K but cannot quantize it. Llama's q/k rows come back in the transformers order."""
    from mother_core.io import staged
    from mother_core.io.gguf_reader import _unpermute_rows

    if piece is not None:
        monkeypatch.setattr(staged, "PIECE_BYTES", piece)
    monkeypatch.setattr(staged, "_THREADS_ASKED", threads)

    sd = llama_state(5, hidden=512, inter=768, vocab=96, heads=4, kv_heads=2, layers=2)
    path = write_gguf(sd, tmp_path / f"q4k-{arch}.gguf", qtype="Q4_K", arch=arch)
    package = gguf.GGUFReader(str(path))
    stored = {t.name: gguf.quants.dequantize(np.array(t.data), t.tensor_type) for t in package.tensors}
    kinds = {t.name: t.tensor_type.name for t in package.tensors}
    del package
    checked = 0
    with open_model(_ref(path, "gguf")) as reader:
        for raw, t in reader.header.tensors.items():
            name = normalise_name(raw)
            expected = stored[t.gguf_name].reshape(t.shape)
            if len(t.shape) < 2:
                continue  # 1-D norms are float32 in the file: no decoding
            assert kinds[t.gguf_name] == "Q4_K", raw
            if t.permute_heads:
                expected = _unpermute_rows(expected, t.permute_heads)
            assert reader.half_width(name)
            expected_bits = _bf16_values(expected).view(np.uint32)
            half_bits = _bf16_bits(expected)
            np.testing.assert_array_equal(reader.read(name).numpy().view(np.uint32), expected_bits)
            rows, cols = expected.shape
            for step in (5, 64, rows):  # the pass's row chunks, uneven ones too
                buf = torch.full((step * cols,), float("nan"))
                half = torch.full((step * cols,), float("nan"), dtype=torch.bfloat16)
                for r0 in range(0, rows, step):
                    r1 = min(rows, r0 + step)
                    reader.prefetch(name, (min(rows, r1), min(rows, r1 + step)))
                    got = reader.read_into(name, (r0, r1), buf[: (r1 - r0) * cols])
                    np.testing.assert_array_equal(got.numpy().view(np.uint32), expected_bits[r0:r1])
                    got = reader.read_into(name, (r0, r1), half[: (r1 - r0) * cols])
                    np.testing.assert_array_equal(got.view(torch.int16).numpy().view(np.uint16), half_bits[r0:r1])
            checked += 1
    assert checked == 2 * 7 + 2  # every 2-D weight of the two layers, the embedding and the head


def test_gguf_type_the_package_cannot_dequantize(tmp_path):
    """A tensor in a type gguf cannot dequantize (Q8_1) is left out with a note; a file of only such tensors
    is a problem for that model; the run goes on."""
    import numpy as np

    from mother_core import RecoverySettings, recover_paths

    root = llama_state(70)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, sd in (("root", root), ("a", perturbed(root, 71))):
        _save(sd, folder / f"{name}.safetensors")

    def write(path: Path, odd: set[str]) -> None:
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_block_count(2)
        writer.add_head_count(4)
        writer.add_head_count_kv(2)
        names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, 2)
        for k, v in root.items():
            name = names.get_name(k, try_suffixes=(".weight",))
            if k in odd:
                block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1]
                raw = np.zeros((*v.shape[:-1], v.shape[-1] // block * size), dtype=np.uint8)
                writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_1)
            else:
                writer.add_tensor(name, v.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    write(folder / "partly.gguf", {"model.layers.0.mlp.up_proj.weight"})
    write(folder / "only-odd.gguf", set(root))
    with open_model(_ref(folder / "partly.gguf", "gguf")) as reader:
        assert "layers.0.mlp.up_proj.weight" not in reader.tensor_infos()
        assert any("Q8_1" in n and "up_proj" in n for n in reader.notes)
    result = recover_paths([folder], RecoverySettings())
    assert {m.id for m in result.models} == {"root", "a", "partly"}
    messages = str(result.problems)
    assert "Q8_1" in messages and "only-odd.gguf" in messages


@pytest.mark.parametrize("piece,threads", [(None, 1), (300, 1), (300, 3)])
def test_int8_read_into_matches_read(tmp_path, monkeypatch, piece, threads):
    """int8 rows read into a caller's buffer (in pieces of whole rows, decoded as they arrive; ``piece``:
    a few rows a piece, so each chunk spans several; ``threads``: pieces shared by that many threads) are
    ``read``'s values bit for bit."""
    pytest.importorskip("optimum.quanto")
    from format_factory import bnb_state, quanto_state

    from mother_core.io import staged

    if piece is not None:
        monkeypatch.setattr(staged, "PIECE_BYTES", piece)
    monkeypatch.setattr(staged, "_THREADS_ASKED", threads)

    sd = llama_state(80)
    states = {"quanto": quanto_state(sd, "qint8")}
    try:
        states["bnb"] = bnb_state(sd, "int8")
    except (ImportError, RuntimeError, NotImplementedError):
        pass
    for label, q in states.items():
        path = _save(q, tmp_path / f"{label}.safetensors")
        with open_model(discover([path]).models[0]) as reader:
            for name in ("layers.0.mlp.up_proj.weight", "layers.1.self_attn.k_proj.weight"):
                whole = reader.read(name)
                buf = torch.full(((9 - 2) * whole.shape[1],), float("nan"))
                torch.testing.assert_close(reader.read_into(name, (2, 9), buf), whole[2:9], rtol=0, atol=0)
            # chunk after chunk, weights taking turns (the scales a reader keeps are the right weight's)
            names = ("layers.0.mlp.up_proj.weight", "layers.1.self_attn.k_proj.weight", "layers.0.mlp.down_proj.weight")
            wholes = {n: reader.read(n) for n in names}
            for r0 in range(0, 16, 5):
                for name in names:
                    r1 = min(r0 + 5, wholes[name].shape[0])
                    buf = torch.full(((r1 - r0) * wholes[name].shape[1],), float("nan"))
                    torch.testing.assert_close(reader.read_into(name, (r0, r1), buf), wholes[name][r0:r1], rtol=0,
                                               atol=0)


@pytest.mark.parametrize("threads,cached", [(1, True), (2, True), (5, True), (5, False)])
def test_pieces_decoded_by_several_threads_cover_the_range_once(tmp_path, monkeypatch, threads, cached):
    """``staged.decode`` hands every piece of a byte range to the decoder exactly once, whole units at the
    right offsets, whichever thread takes it (``cached=False``: helpers find no piece in memory and hand
    each back to the caller, as on a cold file); a file that ends early is a ShortRead in the caller."""
    from mother_core.errors import InputError
    from mother_core.io import staged

    monkeypatch.setattr(staged, "PIECE_BYTES", 7 * 10)  # 10 units of 7 bytes a piece
    if not cached:
        monkeypatch.setattr(staged, "_read_cached", lambda *args: None)
    data = np.random.default_rng(threads).integers(0, 256, 7 * 1003 + 5, dtype=np.uint8)
    path = tmp_path / "bytes.bin"
    path.write_bytes(b"ab" + data.tobytes())
    out = np.zeros(7 * 1003, dtype=np.uint8)
    seen = np.zeros(1003, dtype=np.int64)

    def copy(first: int, piece: np.ndarray) -> None:
        assert piece.size % 7 == 0
        out[first * 7 : first * 7 + piece.size] = piece
        np.add.at(seen, np.arange(first, first + piece.size // 7), 1)

    with open(path, "rb", buffering=0) as f:
        staged.decode(f, 2, 2 + 7 * 1003, 7, copy, threads)
        np.testing.assert_array_equal(out, data[: 7 * 1003])
        assert (seen == 1).all()
        with pytest.raises(staged.ShortRead):
            staged.decode(f, 2, 2 + 7 * 1100, 7, lambda first, piece: None, threads)
    monkeypatch.setattr(staged, "_THREADS_ASKED", 0)
    assert staged.decode_threads() == staged.available_cores() >= 1
    with pytest.raises(InputError):
        staged.set_decode_threads(-1)


def test_pass_statistics_are_the_same_whatever_the_decode_threads(tmp_path, monkeypatch):
    """The whole pass over GGUF (Q8_0, Q4_K) and int8 models gives the same statistics, bit for bit, with one
    decode thread and with several (pieces of a few blocks, so the helpers share every chunk); with the
    setting at 2 the pass's two workers decode alone (shared_by: no helper beside them)."""
    pytest.importorskip("optimum.quanto")
    from format_factory import quanto_state

    from mother_core.io import staged
    from mother_core.stats.compute import compute_statistics

    root = llama_state(90, hidden=256, inter=256)
    write_gguf(root, tmp_path / "q8.gguf", qtype="Q8_0")
    write_gguf(perturbed(root, 91), tmp_path / "q4k.gguf", qtype="Q4_K")
    _save(quanto_state(perturbed(root, 92), "qint8"), tmp_path / "quanto.safetensors")
    monkeypatch.setattr(staged, "PIECE_BYTES", 34 * 16)
    runs = []
    monkeypatch.setattr(staged, "_THREADS_ASKED", staged._THREADS_ASKED)  # restored after the test
    for threads in (1, 5):  # through the library's run setting, as recover_paths passes it
        runs.append(compute_statistics(discover([tmp_path]), device="cpu", cache_dir=None, chunk_elements=5000,
                                       decode_threads=threads))
        assert staged._THREADS_ASKED == threads
    one, many = runs
    assert len(one.models) == 3 and not one.problems
    for field in ("present", "mean", "var", "kurtosis", "norm", "sq_dist"):
        np.testing.assert_array_equal(getattr(one, field), getattr(many, field), err_msg=field)
    assert one.skeletons.keys() == many.skeletons.keys()
    for slot, values in one.skeletons.items():
        np.testing.assert_array_equal(values, many.skeletons[slot])

    monkeypatch.setattr(staged, "_THREADS_ASKED", 2)
    used = set()
    with open(tmp_path / "q8.gguf", "rb", buffering=0) as f, staged.shared_by(2):
        staged.decode(f, 0, 34 * 200, 34, lambda first, piece: used.add(threading.current_thread().name))
    assert used == {threading.current_thread().name}


@pytest.mark.xfail(strict=False, reason="quarantined 2026-12-05 (stop 37): in CI's xdist order since 213a0a1 "
                   "the two chunk paths' means differ by one float32 ulp (the same values every run); passes alone "
                   "and with its file here. Which earlier test in the worker changes the reduction is not found "
                   "yet: remove this mark once it is (stop 37's note)")
def test_pass_reads_4_bit_gguf_at_half_width_with_the_same_statistics(tmp_path, monkeypatch):
    """Two Q4_K GGUF models (every 2-D tensor Q4_K) are reduced from bfloat16 chunks (half the stores); their
    statistics equal, bit for bit, the same pass's from float32 chunks (the same rounded values, widened
    exactly by the kernel), and stay within bfloat16's rounding of the exact float32 decode (the reader
    before half-width reads). Beside a float32 model, a Q4_K model's slots are read as float32."""
    from mother_core.io import gguf_fast
    from mother_core.stats import execute, fused
    from mother_core.stats.compute import compute_statistics

    fused.warm_up()  # the fused kernel takes the chunks (as in any pass worth loading it)
    root = llama_state(90, hidden=256, inter=256)
    write_gguf(root, tmp_path / "a.gguf", qtype="Q4_K")
    write_gguf(perturbed(root, 91), tmp_path / "b.gguf", qtype="Q4_K")
    seen: list[torch.dtype] = []
    add = fused.StreamReduction.add

    def spy(self, x):  # noqa: ANN001, ANN202
        seen.append(x.dtype)
        return add(self, x)

    monkeypatch.setattr(fused.StreamReduction, "add", spy)

    def run(models: int = 2):  # noqa: ANN202
        seen.clear()
        stats = compute_statistics(discover([tmp_path]), device="cpu", cache_dir=None, chunk_elements=20000)
        assert len(stats.models) == models and not stats.problems
        return stats

    half = run()
    assert torch.bfloat16 in seen
    with monkeypatch.context() as m:
        m.setattr(execute, "_half_width", lambda reader, name: False)  # the same values, float32 chunks
        wide = run()
        assert seen and torch.bfloat16 not in seen
    fields = ("present", "mean", "var", "kurtosis", "norm", "sq_dist")
    for field in fields:
        np.testing.assert_array_equal(getattr(half, field), getattr(wide, field), err_msg=field)
    for slot, values in half.skeletons.items():
        np.testing.assert_array_equal(values, wide.skeletons[slot])
    with monkeypatch.context() as m:
        m.setattr(gguf_fast, "HALF_TYPES", frozenset())  # the exact float32 decode
        exact = run()
        assert seen and torch.bfloat16 not in seen
    assert not np.array_equal(half.norm, exact.norm)  # the rounding is there...
    np.testing.assert_allclose(half.norm, exact.norm, rtol=2.0**-9)  # ... and within bfloat16's half ulp
    np.testing.assert_allclose(half.var, exact.var, rtol=2.0**-8)
    # Each value moves by at most 2^-9 of itself, at random: a tensor's excess kurtosis by about
    # 4 sqrt(E[x^8]) / m2^2 * 2^-9 / sqrt(3n), 6e-4 at most here (n = 16K-64K values)
    np.testing.assert_allclose(half.kurtosis, exact.kurtosis, rtol=0, atol=2e-3)
    np.testing.assert_allclose(half.sq_dist, exact.sq_dist, rtol=1e-2)

    _save({k: v.float() for k, v in perturbed(root, 92).items()}, tmp_path / "c.safetensors")
    run(3)
    assert seen and torch.bfloat16 not in seen  # every 2-D slot has a float32 model now


# --- GGUF files of real transformers models, compared with their source in the pass ----------------------

def _tiny_transformers(arch: str):
    """A tiny real transformers model (hidden 32, 2 layers) of ``arch``, the head its users fine-tune."""
    tf = pytest.importorskip("transformers")
    common = {"vocab_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    torch.manual_seed(0)
    if arch == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16))
    if arch == "bert":
        return tf.BertForSequenceClassification(tf.BertConfig(hidden_size=32, max_position_embeddings=16,
                                                              num_labels=3, **common))
    decoder = {"hidden_size": 32, "num_key_value_heads": 2, "max_position_embeddings": 16, **common}
    if arch == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(head_dim=8, **decoder))
    if arch == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**decoder))
    return tf.LlamaForCausalLM(tf.LlamaConfig(**decoder))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gpt2", "bert"])
def test_gguf_and_its_transformers_source_compare_tensor_by_tensor(tmp_path, arch):
    """A GGUF converted from a transformers checkpoint (llama.cpp's renames, permutations and transposes)
    and the checkpoint itself: every source tensor has its GGUF counterpart under the same name and shape
    in the pass, at the distance of Q8_0 rounding (exactly 0 for the float32 norms and biases)."""
    from format_factory import hf_to_gguf

    from mother_core.stats.compute import compute_statistics

    model = _tiny_transformers(arch)
    with torch.no_grad():  # away from the init's constants (ones, zeros) so that every tensor is compared
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    src = tmp_path / "source"
    model.save_pretrained(src, safe_serialization=True)
    hf_to_gguf(src, tmp_path / "converted.gguf", "Q8_0")
    found = discover([src, tmp_path / "converted.gguf"])
    assert [m.format for m in found.models] == ["safetensors", "gguf:Q8_0"], found.problems
    stats = compute_statistics(found, device="cpu", cache_dir=None)
    dropped = ("pooler.",) if arch == "bert" else ()  # llama.cpp pools itself: the converter drops it
    compared = 0
    for t, meta in enumerate(stats.tensors):
        if not stats.present[0, t] or meta.name.startswith(dropped):
            continue
        assert stats.present[1, t], f"{meta.name} {meta.shape}: not in the GGUF under this name and shape"
        rel = float(np.sqrt(stats.sq_dist[t, 0, 1]) / stats.norm[0, t])
        exact = len(meta.shape) < 2 or meta.name.endswith(("position_embeddings.weight",
                                                           "token_type_embeddings.weight"))  # kept float32
        assert rel <= (1e-6 if exact else 0.02), (meta.name, rel)
        compared += 1
    n_source = sum(1 for k in model.state_dict() if not normalise_name(k).startswith(dropped)
                   and not k.endswith((".attn.bias", ".attn.masked_bias", "position_ids")))
    assert compared >= n_source - (1 if arch == "gpt2" else 0)  # GPT-2's tied head is not saved


def test_without_the_gguf_package_gguf_files_are_problems(tmp_path):
    """Where the gguf package does not import, each GGUF file is a problem naming the package, and the
    rest of the run goes on (the package's absence simulated by a ``gguf`` that fails to import, first on
    the path of a separate ``mother recover`` process)."""
    import json
    import os
    import subprocess
    import sys

    root = llama_state(90)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, sd in (("root", root), ("a", perturbed(root, 91))):
        _save(sd, folder / f"{name}.safetensors")
    write_gguf(root, folder / "root-q8.gguf")
    shadow = tmp_path / "shadow" / "gguf"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named gguf (simulated)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(Path(__file__).parent.parent)])}
    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, "-m", "mother_core", "recover", str(folder), "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    result = json.loads(out.read_text())
    assert {m["id"] for m in result["models"]} == {"root", "a"}
    problems = json.dumps(result["problems"])
    assert "root-q8.gguf" in problems and "gguf package" in problems


def _packed_state(sd, keep_float: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``sd`` with its matrices in an ExLlamaV2-like packed layout (``q_weight`` int32, eight 4-bit codes
    each, ``q_scale`` packed, ``q_scale_max`` float16), a scheme the engine does not decode; names in
    ``keep_float`` stay float16."""
    g = torch.Generator().manual_seed(0)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if v.ndim != 2 or k.startswith(keep_float):
            out[k] = v.half()
            continue
        base = k[: -len(".weight")]
        out[base + ".q_weight"] = torch.randint(-2**31, 2**31 - 1, (v.shape[1] // 8, v.shape[0]),
                                                dtype=torch.int32, generator=g)
        out[base + ".q_scale"] = torch.randint(-2**31, 2**31 - 1, (v.shape[1] // 32, v.shape[0] // 8),
                                               dtype=torch.int32, generator=g)
        out[base + ".q_scale_max"] = torch.rand(v.shape[1] // 32, generator=g).half()
    return out


def test_unknown_schemes_are_problems_of_their_model(tmp_path):
    """Weights packed by a quantizer we do not decode are left out with a note naming it (its scales are not
    compared as weights); a model with no matrix left, and a GGUF file with a tensor type the package does
    not know, are problems of that model; the run goes on."""
    import json
    import struct

    from mother_core import RecoverySettings, recover_paths

    root = llama_state(100)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, sd in (("root", root), ("a", perturbed(root, 101))):
        _save(sd, folder / f"{name}.safetensors")
    for name, keep in (("partly-packed", ("model.embed_tokens", "lm_head")), ("all-packed", ())):
        (folder / name).mkdir()
        _save(_packed_state(root, keep), folder / name / "model.safetensors")
        (folder / name / "config.json").write_text(json.dumps(
            {"model_type": "llama", "quantization_config": {"quant_method": "exl2"}}))
    with open_model(discover([folder / "partly-packed"]).models[0]) as reader:
        assert set(reader.tensor_infos()) == {normalise_name(k) for k, v in root.items()
                                              if v.ndim == 1 or k.startswith(("model.embed", "lm_head"))}
        assert any("'exl2'" in n and "q_weight" in n for n in reader.notes)
    # A GGUF tensor type unknown to the package (a newer llama.cpp): the type field of one tensor patched.
    path = write_gguf(root, tmp_path / "odd.gguf")
    field = gguf.GGUFReader(str(path)).tensors[1].field
    at = field.offset + sum(part.nbytes for part in field.parts[:4])  # name length, name, n_dims, dims
    data = bytearray(path.read_bytes())
    assert struct.unpack("<I", data[at:at + 4])[0] == gguf.GGMLQuantizationType.Q8_0
    data[at:at + 4] = struct.pack("<I", 250)
    (folder / "newer-type.gguf").write_bytes(bytes(data))

    result = recover_paths([folder], RecoverySettings())
    assert {m.id for m in result.models} == {"root", "a", "partly-packed"}
    messages = str(result.problems)
    assert "all-packed" in messages and "No weight matrix is left" in messages
    assert "newer-type.gguf" in messages and "pip install -U gguf" in messages


def test_sparse_path_takes_the_decode_threads_setting(tmp_path, monkeypatch):
    """recover_paths on the sparse candidate path (``candidates``) applies ``decode_threads`` as the dense
    path does, and still reads the GGUF models it decodes."""
    from mother_core import recover_paths
    from mother_core.io import staged

    root = llama_state(93, hidden=256, inter=256)
    write_gguf(root, tmp_path / "a.gguf", qtype="Q8_0")
    write_gguf(perturbed(root, 94), tmp_path / "b.gguf", qtype="Q4_K")
    write_gguf(perturbed(root, 95), tmp_path / "c.gguf", qtype="Q8_0")
    monkeypatch.setattr(staged, "_THREADS_ASKED", 0)  # restored after the test
    result = recover_paths([tmp_path], candidates=2, decode_threads=1)
    assert staged._THREADS_ASKED == 1
    assert len(result.model_ids) == 3 and not result.problems


def test_gguf_without_a_head_count_leaves_q_and_k_out_and_says_so(tmp_path):
    # llama.cpp's converter always writes head_count and, without head_count_kv, permutes k with it (its loader
    # defaults head_count_kv the same way): such a file reads whole. Without head_count no order is defined:
    # q/k were read in llama.cpp's order, compared with the source's; now they are left out with a note.
    sd = llama_state(3, heads=4, kv_heads=4, layers=1)
    no_kv = write_gguf(sd, tmp_path / "no-kv.gguf", qtype="F32", kv_heads=4, head_keys=("head_count",))
    with open_model(_ref(no_kv, "gguf")) as reader:
        assert not reader.notes and set(reader.tensor_infos()) == {normalise_name(k) for k in sd}
        for k in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"):
            torch.testing.assert_close(reader.read(normalise_name(k)), sd[k], rtol=0, atol=0)

    for keys in ((), ("head_count_kv",)):
        path = write_gguf(sd, tmp_path / f"no-heads-{len(keys)}.gguf", qtype="F32", kv_heads=4, head_keys=keys)
        with open_model(_ref(path, "gguf")) as reader:
            qk = {normalise_name(f"model.layers.0.self_attn.{p}_proj.weight") for p in "qk"}
            if keys:  # k is permuted with head_count_kv, which the file gives: only q is left out
                qk = {n for n in qk if ".q_proj." in n}
            assert set(reader.tensor_infos()) == {normalise_name(k) for k in sd} - qk
            assert len(reader.notes) == len(qk)
            assert all("gives no head count (llama.attention.head_count" in n and "left out" in n
                       for n in reader.notes), reader.notes
            v = "model.layers.0.self_attn.v_proj.weight"
            torch.testing.assert_close(reader.read(normalise_name(v)), sd[v], rtol=0, atol=0)
