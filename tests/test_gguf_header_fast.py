"""The GGUF header walked by byte arithmetic (``io/gguf_header.parse_header``), not by ``gguf.GGUFReader``.

The package's reader builds a numpy view per metadata array entry: 8-9 CPU s for a real tokenizer's header
(128k-262k tokens), paid by every scan and run. The walk steps over the arrays. Asserted here, on files the
package's own writer made (several architectures, split files, a file of the zoo, a big-endian one, nested
arrays): the walk reads exactly the keys, tensor directory, alignment and data offset the package reads;
every hostile header is refused, with the same clear words as before (or clearer ones where the package's
were an ``IndexError`` or a numpy error), and where the package refuses it too; a 262,144-token header is
read in well under a second.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import hostile_inputs as hi
import numpy as np
import pytest
from format_factory import llama_state, write_gguf

from mother_core.errors import UnreadableCheckpointError
from mother_core.io.gguf_header import GGUFArray, parse_header, read_header

gguf = pytest.importorskip("gguf")
_str = hi._gguf_str
_ARCH = hi._ARCH


def _package_view(path: Path) -> tuple[dict, list, int, int]:
    """What ``gguf.GGUFReader`` reads: keys (numbers and strings as values, arrays as (item type, count)),
    the tensor directory (name, dims innermost first, type, absolute offset), the alignment, the data offset."""
    reader = gguf.GGUFReader(str(path))
    fields: dict = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            fields[key] = ("array", int(f.parts[3][0]), int(f.parts[4][0]))
        else:
            try:
                fields[key] = f.contents()
            except UnicodeDecodeError:
                fields[key] = None  # what read_header made of it: absent
    tensors = [(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset))
               for t in reader.tensors]
    return fields, tensors, int(reader.alignment), int(reader.data_offset)


def _walk_view(path: Path) -> tuple[dict, list, int, int]:
    h = parse_header(str(path))
    fields = {k: ("array", v.item_type, v.count) if isinstance(v, GGUFArray) else v for k, v in h.fields.items()}
    return fields, [(t.name, t.dims, t.qtype, t.offset) for t in h.tensors], h.alignment, h.data_offset


def _tokenizer_file(path: Path, endianess=None) -> Path:
    """A file by the package's writer with a tokenizer (tokens, merges, scores, types), strings of every kind,
    bools, nested arrays, an alignment of 64 and four tensors of four types."""
    kw = {} if endianess is None else {"endianess": endianess}
    w = gguf.GGUFWriter(str(path), "llama", **kw)
    w.add_name("tok")
    w.add_string("general.base_model.0.name", "org/base")
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
    w.add_custom_alignment(64)
    w.add_token_list([f"t{i}" for i in range(3000)] + ["", "é" * 300, "\x00\n"])
    w.add_token_merges([f"t{i} t{i + 1}" for i in range(2000)])
    w.add_token_scores([0.25] * 3003)
    w.add_token_types([1] * 3003)
    w.add_array("test.bools", [True, False, True])
    w.add_array("test.nested", [[1, 2, 3], [4]])
    w.add_array("test.nested_strings", [["a", "bc"], ["def"]])
    w.add_float64("test.f64", 1.5)
    w.add_int64("test.i64", -7)
    w.add_bool("test.flag", True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    Q = gguf.GGMLQuantizationType
    w.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(x, Q.Q8_0), raw_dtype=Q.Q8_0)
    w.add_tensor("blk.0.attn_k.weight", x.astype(np.float16))
    w.add_tensor("blk.0.attn_v.weight", gguf.quants.quantize(x, Q.Q5_0), raw_dtype=Q.Q5_0)
    w.add_tensor("output_norm.weight", x[0])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _zoo_file(folder: Path) -> Path:
    """A GGUF file written by the zoo (``mother_zoo.typed.quant.write_gguf``) from a tiny Llama folder."""
    import json

    from safetensors.torch import save_file

    from mother_zoo.typed.quant import write_gguf as zoo_write

    src = folder / "src"
    src.mkdir()
    save_file({k: v.contiguous() for k, v in llama_state(3).items()}, str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 96, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}))
    out = folder / "zoo-q4_0.gguf"
    zoo_write("llama", src, out, "Q4_0", "zoo model", ["org/base"])
    return out


def _real_files(tmp_path: Path) -> list[Path]:
    sd = llama_state(1)
    files = [_tokenizer_file(tmp_path / "tok.gguf"),
             _tokenizer_file(tmp_path / "tok-be.gguf", gguf.GGUFEndian.BIG),
             write_gguf(sd, tmp_path / "llama-q8.gguf", file_type="Q8_0"),
             write_gguf({k: v.repeat(1, 4) if v.dim() == 2 and v.shape[1] == 64 else v for k, v in sd.items()},
                        tmp_path / "llama-k.gguf", force_types={"model.layers.0.mlp.up_proj.weight": "Q4_K"}),
             _zoo_file(tmp_path)]
    embed = sd["model.embed_tokens.weight"]
    gpt2 = {"transformer.wte.weight": embed, "transformer.ln_f.weight": sd["model.norm.weight"],
            "transformer.h.0.attn.c_attn.weight": embed[:, :64].repeat(1, 3)[:64]}
    files.append(write_gguf(gpt2, tmp_path / "gpt2.gguf", arch="gpt2", qtype="F16"))
    files.append(write_gguf(sd, tmp_path / "gemma3.gguf", arch="gemma3", qtype="Q8_0"))
    write_gguf(sd, tmp_path / "split.gguf", split_max_tensors=8)
    files += sorted(tmp_path.glob("split-*-of-*.gguf"))
    return files


def test_the_walk_reads_what_the_package_reads_on_real_files(tmp_path):
    files = _real_files(tmp_path)
    assert len(files) >= 9  # the split made several parts
    for path in files:
        package, walk = _package_view(path), _walk_view(path)
        assert walk == package, path.name
        assert list(walk[0]) == list(package[0])  # the file's order of keys
    header = read_header(str(tmp_path / "tok.gguf"))
    assert (header.architecture, header.file_type, header.head_count, header.head_count_kv) == ("llama", "Q8_0", 4, 2)
    assert header.metadata == {"general.name": "tok", "general.base_model.0.name": "org/base"}
    assert read_header(str(tmp_path / "tok-be.gguf")).metadata == header.metadata
    zoo = read_header(str(tmp_path / "zoo-q4_0.gguf"))
    assert zoo.file_type == "Q4_0" and zoo.metadata["general.base_model.0.name"] == "org/base"
    # read_header's tensors are the package's: name, type, shape, offset and byte size
    for path in files:
        ours = {t.gguf_name: (t.qtype, t.shape, t.offset, t.nbytes)
                for t in (*read_header(str(path)).tensors.values(),)}
        theirs = {t.name: (int(t.tensor_type), tuple(int(d) for d in reversed(t.shape)), int(t.data_offset),
                           int(t.n_bytes)) for t in gguf.GGUFReader(str(path)).tensors}
        assert ours == {k: v for k, v in theirs.items() if k in ours} and ours, path.name


def test_a_262k_token_header_is_read_in_a_fraction_of_a_second(tmp_path):
    """Gemma 3's tokenizer size (262,144 tokens, scores, types), by the package's writer. The package's reader
    took 8.98 CPU s for it (load 10); the bound leaves the walk 10x its own time on a busy machine."""
    path = tmp_path / "big.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_head_count(4)
    w.add_token_list([f"t{i}" for i in range(262_144)])
    w.add_token_scores([0.0] * 262_144)
    w.add_token_types([1] * 262_144)
    w.add_tensor("output_norm.weight", np.ones(32, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    read_header(str(path))  # imports and name tables
    t0 = time.process_time()
    header = read_header(str(path))
    assert time.process_time() - t0 < 0.5
    assert list(header.tensors) == ["model.norm.weight"]
    assert parse_header(str(path)).entries == 2 + 3 * 262_144  # architecture, head count, three arrays


def _file(path: Path, kv: list[tuple[str, int, bytes]], tensors=(("output_norm.weight", [32], 0, 0),),
          data: bytes = b"\0" * 256, **kw) -> Path:
    hi._gguf_raw(path, kv, list(tensors), data, **kw)
    return path


U8, U32, F32, STR, ARR, U64 = 0, 4, 6, 8, 9, 10


def _crafted(tmp: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Hostile headers written byte by byte: name -> (file, words its refusal says)."""
    good = _file(tmp / "good.gguf", [_ARCH])
    raw = good.read_bytes()
    cases: dict[str, tuple[Path, tuple[str, ...]]] = {}

    def put(name: str, data: bytes, *words: str) -> None:
        (tmp / f"{name}.gguf").write_bytes(data)
        cases[name] = (tmp / f"{name}.gguf", words)

    def craft(name: str, kv, *words: str, **kw) -> None:
        cases[name] = (_file(tmp / f"{name}.gguf", kv, **kw), words)

    put("magic", b"GGUX" + raw[4:], "magic invalid")
    put("version", raw[:4] + struct.pack("<I", 4) + raw[8:], "version 4")
    put("short", raw[:20], "shorter than a gguf header")
    put("truncated", raw[: len(raw) // 4], "past the end")
    put("counts", b"GGUF" + struct.pack("<IQQ", 3, 2**60, 2**60) + b"\0" * 40, "more than its")
    craft("key-1gb", [_ARCH, ("x", U8, b"\1")], "1,073,741,824 bytes claimed, past the end")
    data = (tmp / "key-1gb.gguf").read_bytes()
    at = data.index(_str(b"x"))
    (tmp / "key-1gb.gguf").write_bytes(data[:at] + struct.pack("<Q", 2**30) + data[at + 8:])
    craft("string-1gb", [_ARCH, ("general.name", STR, struct.pack("<Q", 2**30) + b"abc")],
          "the value of 'general.name'", "past the end")
    craft("strings-past-end", [_ARCH, ("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 1000)
                                       + b"".join(_str(b"tok") for _ in range(10)))],
          "strings of 'tokenizer.ggml.tokens'", "run past the end")
    craft("numbers-past-end", [_ARCH, ("tokenizer.ggml.scores", ARR, struct.pack("<IQ", F32, 100_000))],
          "values of 'tokenizer.ggml.scores'", "past the end")
    craft("value-type", [_ARCH, ("x", 13, b"\0" * 8)], "13 is not a valid ggufvaluetype")
    craft("item-type", [_ARCH, ("x", ARR, struct.pack("<IQ", 77, 1) + b"\0" * 8)], "77 is not a valid ggufvaluetype")
    craft("nested-item-type", [_ARCH, ("x", ARR, struct.pack("<IQ", ARR, 2) + struct.pack("<IQ", U8, 1) + b"\1"
                                       + struct.pack("<IQ", 99, 1) + b"\0" * 8)], "99 is not a valid ggufvaluetype")
    craft("duplicate-key", [_ARCH, _ARCH], "duplicate general.architecture")
    craft("reserved-key", [_ARCH, ("GGUF.version", U32, struct.pack("<I", 3))], "duplicate gguf.version")
    craft("duplicate-tensor", [_ARCH], "duplicated tensor", tensors=[("a", [32], 0, 0), ("a", [32], 0, 128)])
    craft("alignment-type", [_ARCH, ("general.alignment", U64, struct.pack("<Q", 32))], "bad type", "alignment")
    craft("tensor-type", [_ARCH], "does not know", tensors=[("a", [32], 200, 0)])
    craft("tensor-past-end", [_ARCH], "ends at byte", tensors=[("a", [32], 0, 2**40)])
    craft("dims-past-end", [_ARCH], "dimensions", "past the end", tensors=[("a", [1] * 3, 0, 0)])
    data = (tmp / "dims-past-end.gguf").read_bytes()
    at = data.index(_str(b"a")) + len(_str(b"a"))
    (tmp / "dims-past-end.gguf").write_bytes(data[:at] + struct.pack("<I", 2**31) + data[at + 4:])
    craft("key-not-utf8", [_ARCH, ("KEYX", U8, b"\1")], "utf-8")
    data = (tmp / "key-not-utf8.gguf").read_bytes()
    (tmp / "key-not-utf8.gguf").write_bytes(data.replace(b"KEYX", b"\xff\xfe\xfd\xfc"))
    return cases


def test_hostile_headers_are_refused_with_their_reason(tmp_path):
    """Each crafted header is refused, saying why; the package's reader refuses each too (the walk refuses
    nothing the package reads, and says more: an ``IndexError`` there is "past the end" here)."""
    cases = _crafted(tmp_path)
    for name, (path, words) in cases.items():
        with pytest.raises(UnreadableCheckpointError) as caught:
            read_header(str(path))
        text = str(caught.value).lower()
        assert all(w.lower() in text for w in words), (name, words, text)
        assert "cannot read" in text and len(text) < 800, (name, text)
        with pytest.raises(Exception):  # noqa: B017 - whatever the package raises
            gguf.GGUFReader(str(path)).tensors[0].data.sum()


def test_the_hostile_suite_gguf_headers_are_still_refused_with_their_words(tmp_path):
    """The GGUF generators of the hostile suite whose header is refused (tests/hostile_inputs.py), read here
    directly: refused with their words, in a fraction of a second each (the 6-million-value flood too)."""
    for make in (hi.gguf_huge_counts, hi.gguf_huge_string, hi.gguf_shape_overflow, hi.gguf_alignment_zero,
                 hi.gguf_alignment_odd, hi.gguf_long_metadata, hi.gguf_count_lie, hi.gguf_zero_dims,
                 hi.gguf_metadata_flood):
        folder = tmp_path / make.__name__
        folder.mkdir()
        case = make(folder, {})
        (path,) = folder.glob("*.gguf")
        t0 = time.process_time()
        with pytest.raises(UnreadableCheckpointError) as caught:
            read_header(str(path))
        assert time.process_time() - t0 < 1.0, make.__name__
        text = str(caught.value).lower()
        assert all(w.lower() in text for w in case.words), (make.__name__, text)


def test_odd_values_the_package_reads_are_read_alike(tmp_path):
    """A ``general.name`` that is not UTF-8 (the package's reader fails on it when asked, which read_header took
    as absent: the walk gives None) and an empty array of a type no GGUF has (the package never looks at it):
    the header is read, as the package reads it."""
    path = _file(tmp_path / "name.gguf", [_ARCH, ("general.name", STR, _str(b"\xff\xfe")),
                                          ("x.empty", ARR, struct.pack("<IQ", 77, 0)),
                                          ("llama.attention.head_count", U32, struct.pack("<I", 4))])
    header = read_header(str(path))
    assert header.metadata == {} and header.head_count == 4 and list(header.tensors) == ["model.norm.weight"]
    assert _walk_view(path) == _package_view(path)


def test_a_duplicate_named_like_a_type_is_refused_as_a_broken_file(tmp_path):
    """A tensor type newer than the package is told apart from a broken header by its own exception, not by
    searching the error's text: a duplicated tensor named ``GGMLQuantizationType`` was refused with "update
    the gguf package" instead of "re-download or remove it"."""
    path = _file(tmp_path / "dup.gguf", [_ARCH],
                 tensors=[("GGMLQuantizationType", [32], 0, 0), ("GGMLQuantizationType", [32], 0, 128)])
    with pytest.raises(UnreadableCheckpointError) as caught:
        read_header(str(path))
    text = str(caught.value)
    assert "duplicated tensor" in text and "re-download or remove it" in text
    assert "does not know" not in text and "pip install -U gguf" not in text
