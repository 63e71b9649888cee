"""Tesseract LSTM models (``.traineddata``): read under their layer paths, int8 models dequantized.

The files are written byte for byte as Tesseract serializes a recognizer (:func:`write_traineddata`);
the real models of ``benchmarks/real_families.py`` (tessdata and fine-tunes of tessdata_best) are read
by the same code.
"""

from __future__ import annotations

import pytest
import torch
from format_factory import perturbed, tesseract_state, write_traineddata

from mother_core.io.discovery import discover
from mother_core.io.readers import open_model


@pytest.mark.parametrize("int8", [False, True])
def test_traineddata_weights_read_back(tmp_path, int8):
    sd = tesseract_state(1)
    path = write_traineddata(sd, tmp_path / "tiny.traineddata", int8=int8)
    found = discover([path])
    assert not found.problems
    ref = found.models[0]
    assert ref.id == "tiny" and ref.format == ("tesseract:int8" if int8 else "tesseract")
    with open_model(ref) as reader:
        infos = reader.tensor_infos()
        assert set(infos) == set(sd)
        for name, w in sd.items():
            got = reader.read(name)
            assert got.dtype == torch.float32 and tuple(got.shape) == tuple(w.shape)
            # float64 values come back as float32; int8 codes within half a step (max |row| / 127 / 2)
            tol = (w.abs().amax(dim=1, keepdim=True) / 127 / 2 + 1e-6) if int8 else 1e-6
            assert bool(((got.double() - w).abs() <= tol).all()), name
            torch.testing.assert_close(reader.read(name, (2, 7)), got[2:7])


def test_int8_copy_and_fine_tunes_placed_under_their_base(tmp_path):
    from mother_core import RecoverySettings, recover_paths

    base = tesseract_state(2)
    folder = tmp_path / "set"
    folder.mkdir()
    write_traineddata(base, folder / "base.traineddata")
    write_traineddata(base, folder / "base-int.traineddata", int8=True)
    for i in (1, 2):
        write_traineddata(perturbed(base, 10 + i, rel=0.2), folder / f"tuned{i}.traineddata")
    write_traineddata(tesseract_state(3), folder / "other.traineddata")  # same network, unrelated weights
    result = recover_paths([folder], RecoverySettings())
    parents = {e.child: e.parent for e in result.edges}
    relation = {e.child: e.relation for e in result.edges}
    assert parents["base-int"] == "base" and relation["base-int"] == "quantized"
    assert parents["tuned1"] == "base" and parents["tuned2"] == "base"
    assert "other" not in parents and "other" not in parents.values()


def test_damaged_or_legacy_traineddata_is_a_problem(tmp_path):
    from mother_core import RecoverySettings, recover_paths

    folder = tmp_path / "set"
    folder.mkdir()
    base = tesseract_state(4)
    write_traineddata(base, folder / "a.traineddata")
    write_traineddata(perturbed(base, 5, rel=0.2), folder / "b.traineddata")
    data = (folder / "a.traineddata").read_bytes()
    (folder / "cut.traineddata").write_bytes(data[: len(data) // 2])
    write_traineddata(base, folder / "legacy.traineddata", lstm=False)
    (folder / "noise.traineddata").write_bytes(b"\x7f\xff\xff\xff" + b"\x00" * 64)
    result = recover_paths([folder], RecoverySettings())
    assert {m.id for m in result.models} == {"a", "b"}
    messages = str(result.problems)
    for name in ("cut", "legacy", "noise"):
        assert f"{name}.traineddata" in messages
    assert "no LSTM network" in messages


def _archive(network: bytes) -> bytes:
    import struct

    n = 24
    offsets = [-1] * n
    offsets[17] = 4 + 8 * n
    return struct.pack("<i", n) + struct.pack(f"<{n}q", *offsets) + network


def _layer(kind: str, name: str = "x", flags: int = 0) -> bytes:
    import struct

    def s(text: str) -> bytes:
        return struct.pack("<I", len(text)) + text.encode()

    return b"\x00" + s(kind) + b"\x00\x00" + struct.pack("<iiii", flags, 4, 4, 0) + s(name)


@pytest.mark.parametrize("case, message", [("huge-matrix", "claims more bytes"), ("deep-nesting", "nests too deep"),
                                           ("many-layers", "sub-layers"), ("unknown-type", "'TensorFlow'")])
def test_hostile_network_refused_without_allocating(tmp_path, case, message):
    """A corrupt or hostile network is refused with a message, before anything the size of its claims
    is allocated: matrix sizes are checked against the component, nesting and layer counts are bounded."""
    import struct

    from mother_core.errors import UnreadableCheckpointError
    from mother_core.io.tesseract_reader import read_header

    if case == "huge-matrix":
        net = _layer("Tanh") + bytes([128]) + struct.pack("<II", 2**31, 2**31) + b"\x00" * 64
    elif case == "deep-nesting":
        net = (_layer("Series") + struct.pack("<I", 1)) * 40 + _layer("Input") + b"\x00" * 20
    elif case == "many-layers":
        net = _layer("Series") + struct.pack("<I", 2**31) + (_layer("Input") + b"\x00" * 20) * 3
    else:
        net = _layer("TensorFlow")
    path = tmp_path / f"{case}.traineddata"
    path.write_bytes(_archive(net))
    with pytest.raises(UnreadableCheckpointError) as refused:
        read_header(str(path))
    assert message in str(refused.value) and path.name in str(refused.value)
