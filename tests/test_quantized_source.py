"""A quantized copy whose source is missing from the set must not be hung under a relative of it.

Two fine-tunes of a base sit on either side of the base's quantized copy; with the base absent, the
nearest fine-tune is not the copy's source, and the orthogonality identity of the rounding noise shows
it (mother_core/relations/copies.py). Weight updates are synthetic: this checks the detector's rule.
"""

from __future__ import annotations

import pytest
from format_factory import llama_state, perturbed, write_gguf
from safetensors.torch import save_file

from mother_core import RecoverySettings, recover_paths

pytest.importorskip("gguf")


def _save(sd, path):
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


@pytest.mark.parametrize("base_present", [True, False])
def test_quantized_copy_of_a_missing_base_stays_a_root(tmp_path, base_present):
    base = llama_state(70)
    a, b = perturbed(base, 71, rel=0.1), perturbed(base, 72, rel=0.1)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, sd in (("a", a), ("b", b)) + ((("base", base),) if base_present else ()):
        _save(sd, folder / f"{name}.safetensors")
    write_gguf(base, folder / "base-q8.gguf", qtype="Q8_0", file_type="Q8_0")
    result = recover_paths([folder], RecoverySettings())
    quantized_edges = [e for e in result.edges if e.child == "base-q8"]
    if base_present:
        assert [(e.parent, e.relation) for e in quantized_edges] == [("base", "quantized")]
    else:
        assert all(e.relation != "quantized" for e in quantized_edges), quantized_edges
        notes = [p["message"] for p in result.problems if p["path"].endswith("base-q8.gguf")]
        assert any("not in the set" in m and "between" in m for m in notes), notes
