"""Fuzz suite of hostile and broken inputs (issue: nothing poisons, crashes, hangs or leaks).

Each input of :mod:`hostile_inputs` is mixed into a good set of ten small models with a known tree and
the whole pipeline runs on it in a forked child under resource limits (address space, CPU time, a wall
clock). Asserted per case: the ten good models recover exactly as without the bad input, the bad input is
named in a clear Problem (no traceback, no torch advice, no ANSI codes), in under 30 CPU seconds and 1 GB of extra
peak memory. Plus: loading a poisoned file and then a clean one changes no global state.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import OrderedDict
from pathlib import Path

import hostile_inputs as hi
import pytest
import torch

from mother_core.errors import UnreadableCheckpointError
from mother_core.io.readers import load_torch_file
from mother_core.pipeline import recover_paths

TIME_LIMIT_S = 30
MEMORY_LIMIT_MB = 1024
pytestmark = pytest.mark.xdist_group("hostile")


run_isolated = hi.run_isolated


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("good-ten")
    states = hi.write_good_set(folder)
    baseline = run_isolated([str(folder)])
    assert "error" not in baseline, baseline
    return {"folder": folder, "states": states, "baseline": baseline}


def test_the_good_set_recovers_its_known_tree(good):
    parents = good["baseline"]["parents"]
    right = sum(parents[m] == p for m, p in hi.PARENTS.items())
    assert right >= 9, parents  # the yardstick every case below is compared with
    assert good["baseline"]["problems"] == []


def _leaf_child(states: dict) -> dict[str, torch.Tensor]:
    """A fine-tune of leaf m9: the content of hostile files that load (they then attach under m9)."""
    g = torch.Generator().manual_seed(99)
    return {k: v + 0.001 * torch.randn(v.shape, generator=g) for k, v in states["m9"].items()}


_BAD_WORDS = re.compile(r"weights_only|\x1b\[|Traceback|re-run", re.IGNORECASE)


@pytest.mark.parametrize("generator", sorted(hi.GENERATORS))
def test_hostile_input_is_contained(good, tmp_path, generator):
    for mid in hi.PARENTS:
        os.symlink(good["folder"] / mid, tmp_path / mid, target_is_directory=True)
    make = hi.GENERATORS[generator]
    case = (make(tmp_path, _leaf_child(good["states"]), good["states"]) if generator == "few_nonfinite"
            else make(tmp_path, _leaf_child(good["states"])))
    got = run_isolated([str(tmp_path)])
    assert "error" not in got, got["error"]
    base = good["baseline"]["parents"]
    assert {m: got["parents"][m] for m in base} == base  # the ten recover exactly as without the input
    mentions = [p for p in got["problems"] if case.name in p["path"] or case.name in p["message"]]
    for p in got["problems"]:
        assert not _BAD_WORDS.search(p["message"]), p["message"]
    if case.outcome == "refused":
        assert case.name not in got["models"]
    if case.outcome in ("refused", "partial"):
        assert mentions, got["problems"]
        text = " ".join(p["message"] for p in mentions).lower()
        assert all(w.lower() in text for w in case.words), (case.words, text)
    else:
        assert case.name in got["models"]
    if case.outcome == "partial":
        assert case.name in got["models"]
    if case.most_problems is not None:
        assert len(mentions) <= case.most_problems, len(mentions)
    assert got["seconds"] < TIME_LIMIT_S
    assert got["peak_mb"] < MEMORY_LIMIT_MB


def test_every_bad_input_at_once(good, tmp_path):
    """All classes in one folder beside the ten: one run, every bad input reported, the ten unchanged."""
    for mid in hi.PARENTS:
        os.symlink(good["folder"] / mid, tmp_path / mid, target_is_directory=True)
    names = []
    for name, make in sorted(hi.GENERATORS.items()):
        if name in ("few_nonfinite", "all_nan", "fifo_config", "deep_config", "nested_pickle", "peft_redos",
                    "odd_tensor_names"):
            continue  # inputs that are (partly) read attach to the tree; each is checked on its own above
        names.append(make(tmp_path, _leaf_child(good["states"])).name)
    got = run_isolated([str(tmp_path)])
    assert "error" not in got, got["error"]
    assert {m: got["parents"][m] for m in hi.PARENTS} == good["baseline"]["parents"]
    reported = " ".join(p["path"] + p["message"] for p in got["problems"])
    assert [n for n in names if n not in reported] == []


# --- global state ------------------------------------------------------------------------------------

def _global_state() -> dict:
    """What a poisoned pickle could change: torch's rebuild functions, storage classes, OrderedDict."""
    snap: dict = {}
    for mod in (torch._utils, torch._tensor, torch.storage, torch.serialization):
        for name, fn in vars(mod).items():
            if callable(fn) and hasattr(fn, "__defaults__"):
                snap[f"{mod.__name__}.{name}"] = (fn.__defaults__, repr(fn.__kwdefaults__),
                                                  sorted(getattr(fn, "__dict__", {})), fn.__code__.co_code)
    for cls in (torch.FloatStorage, torch.storage.TypedStorage, torch.UntypedStorage, OrderedDict, dict, list,
                torch.Tensor, torch.nn.Parameter):
        snap[cls.__name__] = sorted((k, repr(v)[:80]) for k, v in vars(cls).items())
    return snap


def test_a_poisoned_file_then_a_clean_one_changes_nothing(tmp_path):
    sd = hi.good_states()["m3"]
    clean = tmp_path / "clean.pt"
    torch.save(sd, clean)
    before = _global_state()
    for make in (hi.poison_defaults, hi.poison_storage_class, hi.poison_setitems):
        case = make(tmp_path, sd)
        with pytest.raises(UnreadableCheckpointError, match="change"):
            load_torch_file(str(tmp_path / f"{case.name}.pt"))
    after = _global_state()
    assert after == before
    got = load_torch_file(str(clean))
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    reloaded = torch.load(clean, weights_only=True)
    assert torch.equal(reloaded["model.embed_tokens.weight"], sd["model.embed_tokens.weight"])


def test_the_poison_is_real_for_a_plain_unpickler(tmp_path):
    """The same prefix run by the C unpickler (in a child) does change torch: the test above can fail."""
    sd = {"w": torch.ones(3)}
    hi.poison_defaults(tmp_path, sd)
    import pickle
    import zipfile

    with zipfile.ZipFile(tmp_path / "poison-defaults.pt") as zf:
        data = zf.read("archive/data.pkl")
    prefix_end = data.index(b"0") + 1  # the prefix ends with its POP
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            pickle.loads(data[:prefix_end] + b"N.")  # the prefix, then None
            changed = torch._utils._rebuild_tensor_v2.__defaults__ == (True,)
        except BaseException:  # noqa: BLE001
            changed = False
        os.write(write_fd, b"1" if changed else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 1) == b"1"
    assert torch._utils._rebuild_tensor_v2.__defaults__ != (True,)  # and not here


def test_a_pickle_calling_os_system_runs_nothing(tmp_path):
    """GLOBAL os.system + REDUCE: resolved to an inert record, never called (the marker file is not made)."""
    from mother_core.errors import NoTensorsError

    hi.pickle_os_system(tmp_path, {})
    with pytest.raises(NoTensorsError, match="no tensors"):
        load_torch_file(str(tmp_path / "os-system.pt"))
    assert not (tmp_path / "PWNED").exists()


def test_a_pickle_of_junk_operations_is_refused_early_and_real_pickles_are_not(tmp_path, monkeypatch):
    """The unpickler is pure Python, so a file costs its pickle operations: junk that rebuilds no tensor is
    refused after the allowance (scaled down here: a test need not run millions), while a whole ``nn.Module``
    pickle (~160 operations a tensor) and a checkpoint with a log beside its weights read as before."""
    import pickle

    from mother_core.io import unpickler

    monkeypatch.setattr(unpickler, "OPS_ALLOWANCE", 20_000)
    hi._torch_zip(tmp_path / "junk.pt", pickle.dumps({"log": list(range(30_000))}, protocol=2), {})
    with pytest.raises(UnreadableCheckpointError, match="pickle operations than its 0 tensors explain"):
        load_torch_file(tmp_path / "junk.pt")

    torch.manual_seed(0)
    module = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.LayerNorm(8))
                                   for _ in range(40)])
    torch.save(module, tmp_path / "module.pt")
    torch.save({"model": module.state_dict(), "log": [float(i) for i in range(5_000)]}, tmp_path / "ckpt.pt")
    for name in ("module.pt", "ckpt.pt"):
        state = load_torch_file(tmp_path / name)
        assert len(state) == 160 and torch.equal(state["39.0.weight"] if "39.0.weight" in state
                                                 else state["model.39.0.weight"], module[39][0].weight.detach())


def test_numbers_in_tensor_names_that_int_refuses_sort_as_text():
    """A name is data from the file: a superscript digit (str.isdigit but not int()) or a 5,000-digit number
    (over int()'s 4,300-digit limit) must not end a run where layers are sorted by depth."""
    from mother_core.relations.prune import _depth_key

    names = ["model.layers.10.mlp", "model.layers.2.mlp", "model.layers.\u00b2.mlp", "model.layers." + "9" * 5000]
    assert sorted(names, key=_depth_key)[:2] == ["model.layers.2.mlp", "model.layers.10.mlp"]


# --- partial reads -----------------------------------------------------------------------------------

def test_a_model_with_some_odd_dtypes_keeps_its_float_tensors(tmp_path):
    """Unknown dtype codes beside real weights: those tensors are reported, the rest is read."""
    from safetensors.torch import save_file

    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    sd = hi.good_states()["m1"]
    save_file(sd, str(tmp_path / "a.safetensors"))
    raw = (tmp_path / "a.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    header["extra.complex"] = {"dtype": "C64", "shape": [2], "data_offsets": [end, end + 16]}
    text = json.dumps(header).encode()
    (tmp_path / "a.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:] + b"\0" * 16)
    ref = discover([tmp_path / "a.safetensors"]).models[0]
    with open_model(ref) as r:
        assert "extra.complex" not in r.tensor_infos() and len(r.tensor_infos()) == len(sd)
        assert any("complex64" in note and "extra.complex" in note for note in r.notes)
        assert torch.equal(r.read("layers.0.self_attn.q_proj.weight"), sd["model.layers.0.self_attn.q_proj.weight"])


def test_unreadable_sub_folder_does_not_lose_the_set(good, tmp_path, monkeypatch):
    from mother_core.io import discovery

    for mid in hi.PARENTS:
        os.symlink(good["folder"] / mid, tmp_path / mid, target_is_directory=True)
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads any folder: make listing this one fail as it would for another user
        real = os.listdir

        def listdir(p="."):
            if os.fspath(p) == str(locked):
                raise PermissionError(13, "Permission denied", str(p))
            return real(p)

        monkeypatch.setattr(discovery.os, "listdir", listdir)
    try:
        found = discovery.discover([tmp_path])
    finally:
        locked.chmod(0o755)
    assert sorted(m.id for m in found.models) == sorted(hi.PARENTS)
    assert any("locked" in p.path and "Permission denied" in p.message for p in found.problems)


def test_roots_confine_every_path_a_set_points_to(tmp_path):
    """With roots set, a symlinked file, a refs/main naming another place, and a shard index naming an
    absolute path are all refused; without roots the symlink is read."""
    from safetensors.torch import save_file

    from mother_core.io.discovery import discover

    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    sd = hi.good_states()["m2"]
    save_file(sd, str(outside / "secret.safetensors"))
    save_file(sd, str(inside / "own.safetensors"))
    os.symlink(outside / "secret.safetensors", inside / "linked.safetensors")
    (inside / "linked-dir").symlink_to(outside, target_is_directory=True)
    entry = inside / "models--org--x"
    (entry / "refs").mkdir(parents=True)
    (entry / "snapshots" / "abc").mkdir(parents=True)
    (entry / "refs" / "main").write_text(str(outside))
    found = discover([inside], roots=[inside])
    assert [m.id for m in found.models] == ["own"]
    text = " ".join(p.message for p in found.problems)
    assert "linked.safetensors" in text and "outside" in text and str(outside / "secret.safetensors") in text
    assert "linked-dir" in " ".join(p.path for p in found.problems)
    assert "org/x" not in [m.id for m in found.models]
    assert {m.id for m in discover([inside]).models} >= {"own", "linked"}  # no roots: no confinement
    assert discover([outside / "secret.safetensors", inside], roots=[inside]).models[0].id == "own"


def test_a_config_json_outside_the_roots_is_never_read(tmp_path):
    """A GPTQ model inside the roots whose config.json is a symlink to a file outside them: the readers take the
    quantization from that file (before: read, and its 'bits' value quoted in the model's problem), so with
    roots set the model is refused at discovery, naming the link, and nothing of the file reaches a message."""
    from format_factory import gptq_state

    from mother_core.io.discovery import discover

    inside, outside = tmp_path / "inside", tmp_path / "outside"
    outside.mkdir()
    hi.write_good_set(inside)
    hi._gptq_folder(inside, "gptq", gptq_state(hi.good_states()["m9"])[0])
    (outside / "secret.json").write_text(json.dumps(
        {"quantization_config": {"quant_method": "gptq", "bits": "SECRET-TOKEN", "group_size": 32}}))
    (inside / "gptq" / "config.json").unlink()
    (inside / "gptq" / "config.json").symlink_to(outside / "secret.json")
    found = discover([inside], roots=[inside])
    assert "gptq" not in [m.id for m in found.models] and len(found.models) == len(hi.PARENTS)
    [problem] = found.problems
    assert "config.json" in problem.message and "outside" in problem.message
    got = run_isolated([str(inside)])  # no roots (the CLI): read, and the link's target is the config
    assert "SECRET-TOKEN" in " ".join(p["message"] for p in got["problems"])


# --- the statistics cache ----------------------------------------------------------------------------

def _damage_pages(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    rng = __import__("random").Random(5)
    for page in range(1, len(raw) // 4096):  # every page but the first (the header)
        start = page * 4096 + 100
        raw[start:start + 200] = bytes(rng.randrange(256) for _ in range(200))
    path.write_bytes(bytes(raw))


def _sql(statement: str) -> callable:
    def apply(path: Path) -> None:
        import sqlite3

        db = sqlite3.connect(path)
        db.executescript(statement)
        db.commit()
        db.close()
    return apply


CACHE_DAMAGE = {
    "random-pages": (_damage_pages, "set aside"),
    "damaged-header": (lambda p: p.write_bytes(b"\0" * 100 + p.read_bytes()[100:]), "set aside"),
    "changed-schema": (_sql("ALTER TABLE model_slot ADD COLUMN extra REAL;"), "set aside"),
    "blob-lengths": (_sql("UPDATE pair_blob SET data = x'0000';"), "invalid"),
    "null-moments": (_sql("UPDATE model_slot SET m2 = NULL;"), "invalid"),
    "negative-values": (_sql("UPDATE model_slot SET m4 = -1; UPDATE pair_blob SET data = "
                             "(SELECT data FROM pair_blob LIMIT 0);"), "invalid"),
    "text-values": (_sql("UPDATE model_slot SET mean = 'x'; UPDATE model_skeleton SET k1 = 0;"), "invalid"),
    # bytes that still add up to k1 x k2, another shape than the slot's sketch: ended the run (ValueError)
    "skeleton-shape": (_sql("UPDATE model_skeleton SET k1 = k1 * k2, k2 = 1;"), "another shape"),
}


@pytest.mark.parametrize("damage", sorted(CACHE_DAMAGE))
def test_a_damaged_cache_is_set_aside_or_recomputed(good, tmp_path, damage):
    from mother_core.stats.cache import CACHE_VERSION

    cache = tmp_path / "cache"
    first = recover_paths([good["folder"]], cache_dir=cache, device="cpu")
    db = cache / f"mother-stats-v{CACHE_VERSION}.sqlite"
    import sqlite3

    con = sqlite3.connect(db)  # fold the write-ahead log into the main file, then damage that
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    apply, words = CACHE_DAMAGE[damage]
    apply(db)
    again = recover_paths([good["folder"]], cache_dir=cache, device="cpu")
    assert {m: again.parent_of(m) for m in hi.PARENTS} == {m: first.parent_of(m) for m in hi.PARENTS}
    notes = " ".join(p["message"] for p in again.problems)
    assert words in notes and str(cache) in notes
    assert not _BAD_WORDS.search(notes)
    third = recover_paths([good["folder"]], cache_dir=cache, device="cpu")  # the cache works again
    assert third.problems == [] and {m: third.parent_of(m) for m in hi.PARENTS} == good["baseline"]["parents"]


# --- result files ------------------------------------------------------------------------------------

def _result_dict() -> dict:
    from mother_core.recovery.result import Edge, ModelNode, Recovery, TreeInfo

    models = [ModelNode(m, f"/x/{m}", 0, 1.0, m == "a") for m in ("a", "b", "c")]
    edges = [Edge("a", "b", 0.1, 0.9, 0.9, 0.9), Edge("b", "c", 0.1, 0.8, 0.8, 0.8)]
    rec = Recovery(models=models, edges=edges, trees=[TreeInfo(0, ("a", "b", "c"), "a", "fft", 0.9)])
    return rec.to_dict()


def _mutate(change) -> dict:
    d = _result_dict()
    change(d)
    return d


CRAFTED_RESULTS = {
    "confidence-list": (lambda d: d["edges"][0].update(confidence=[1, 2]), "edges[0].confidence"),
    "integer-id": (lambda d: d["models"][1].update(id=7), "models[1].id"),
    "unknown-parent": (lambda d: d["edges"][0].update(parent="ghost"), "not one of the models"),
    "cycle": (lambda d: d["edges"].append({**d["edges"][0], "parent": "c", "child": "a"}), "cycle"),
    "self-loop": (lambda d: d["edges"].append({**d["edges"][0], "parent": "c", "child": "c"}), "own parent"),
    "duplicate-id": (lambda d: d["models"].append(dict(d["models"][0])), "appears twice"),
    "models-not-list": (lambda d: d.update(models={"a": 1}), "models"),
    "edge-missing-field": (lambda d: d["edges"][0].pop("distance"), "distance"),
    "matrix-size": (lambda d: d.update(distance_matrix=[[0.0]]), "distance_matrix"),
    "tree-unknown-member": (lambda d: d["trees"][0].update(members=["a", "zz"]), "trees[0]"),
    "problem-not-text": (lambda d: d.update(problems=[{"path": 1, "message": []}]), "problems[0]"),
    "bool-tree": (lambda d: d["models"][0].update(tree="zero"), "models[0].tree"),
    "unknown-relation": (lambda d: d["edges"][1].update(relation="<script>alert(1)</script>"), "edges[1].relation"),
    "matrix-cell-text": (lambda d: d.update(distance_matrix=[[0.0, 1, None], [1, 0, "x"], [2, 2, 0]]),
                         "distance_matrix[1][2]"),
    "matrix-cell-bool": (lambda d: d.update(cost_matrix=[[0.0, 1, 2], [1, 0, 1], [2, 2, True]]), "cost_matrix[2][2]"),
    "matrix-row-number": (lambda d: d.update(cost_matrix=[[0.0, 1, 2], 3, [2, 2, 0]]), "cost_matrix[1]"),
    "layer-distance-list": (lambda d: d["edges"][1].update(layer_distance=[0.1, [2]]), "edges[1].layer_distance[1]"),
    # hostile5: numpy refused a ragged matrix with a bare ValueError out of the loader (a traceback in the CLI)
    "layer-kurtosis-ragged": (lambda d: d.update(layer_kurtosis=[[1.0, 2.0], [1.0], [1.0, 2.0]]), "layer_kurtosis"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED_RESULTS))
def test_crafted_result_files_are_refused_clearly(tmp_path, name):
    from mother_core.errors import ResultFormatError
    from mother_core.recovery.result import Recovery

    change, where = CRAFTED_RESULTS[name]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(_mutate(change)))
    with pytest.raises(ResultFormatError) as err:
        Recovery.load(path)
    assert where in str(err.value) and str(path) in str(err.value) and "mother recover" in str(err.value)


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe\x00garbage", b'"a string"', b""])
def test_unreadable_result_files_are_refused_clearly(tmp_path, raw):
    from mother_core.errors import ResultFormatError
    from mother_core.recovery.result import Recovery

    path = tmp_path / "result.json"
    path.write_bytes(raw)
    with pytest.raises(ResultFormatError, match="result"):
        Recovery.load(path)


#: A result field and the JSON text that holds an integer literal there (``N``): where a literal past float's
#: range was an int that ``float()`` / numpy refused with an ``OverflowError`` (a traceback in the CLI).
LONG_INT_FIELDS = {
    "distance cell": lambda d: d.update(distance_matrix=[[0.0, "N", 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),
    "layer kurtosis cell": lambda d: d.update(layer_kurtosis=[[1.0, "N"], [1.0, 2.0], [1.0, 2.0]]),
    "edge layer distance": lambda d: d["edges"][0].update(layer_distance=["N", 0.5]),
    "edge layer vote": lambda d: d["edges"][0].update(layer_votes=["N"]),
    "tie kurtosis": lambda d: d["edges"][0].update(tie_kurtosis={"a": "N"}),
    "run seconds": lambda d: d.update(run_seconds="N"),
}


@pytest.mark.parametrize("digits", [400, 5000])
@pytest.mark.parametrize("field", sorted(LONG_INT_FIELDS))
def test_integer_literals_past_floats_range_are_read_or_refused_never_a_traceback(tmp_path, field, digits):
    """``10**400`` written out in a number field loads as an infinity or is refused with the file's name; 5,000
    digits (past Python's 4,300-digit limit on parsing an int) made ``json`` itself raise a bare ValueError."""
    from mother_core.errors import ResultFormatError
    from mother_core.recovery.result import Recovery

    path = tmp_path / "result.json"
    path.write_text(json.dumps(_mutate(LONG_INT_FIELDS[field])).replace('"N"', "1" + "0" * digits))
    try:
        rec = Recovery.load(path)
    except ResultFormatError as e:
        assert str(path) in str(e)
    else:
        assert rec.run_seconds == math.inf if field == "run seconds" else len(rec.models) == 3


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000,
                                 b'{"edges": [["a", "b"]], "n": ' + b"7" * 5000 + b"}"], ids=["nested", "long-int"])
def test_truth_files_nested_deep_or_holding_a_long_integer_are_refused_clearly(tmp_path, raw):
    """A truth file nested 100,000 deep (a ``RecursionError``) or holding a 5,000-digit integer (a ``ValueError``
    of Python's int parse) came out of ``load_truth`` as bare exceptions; the result loader caught the first only."""
    from mother_core.errors import ResultFormatError
    from mother_core.evaluate import load_truth

    path = tmp_path / "truth.json"
    path.write_bytes(raw)
    try:
        edges = load_truth(path)
    except ResultFormatError as e:
        assert "truth file" in str(e).lower() and "nests too deeply" in str(e)
    else:
        assert list(edges) == [("a", "b")]


def test_a_long_result_with_one_repeated_id_is_refused_in_linear_time(tmp_path):
    """50,000 models, the last id repeated (a 4 MB file): the duplicate check counted every id in the whole list
    (quadratic: 40,000 ids took 20 CPU s, these about 30); one pass over a set is what remains, plus the schema."""
    import time

    from mother_core.errors import ResultFormatError
    from mother_core.recovery.result import Recovery

    models = [{"id": f"m{i}", "path": "/x", "tree": 0, "kurtosis": 1.0, "is_root": True} for i in range(50_000)]
    (tmp_path / "r.json").write_text(json.dumps({"models": [*models, models[-1]], "edges": []}))
    start = time.process_time()
    with pytest.raises(ResultFormatError, match="'m49999' appears twice"):
        Recovery.load(tmp_path / "r.json")
    assert time.process_time() - start < 15  # ~4.5 CPU s on a loaded 2-core machine


def test_a_large_results_matrices_are_checked_in_one_plain_pass():
    """A 400-model result (two 400 x 400 matrices, per-layer kurtosis and distances: ~400,000 numbers) is checked
    cell by cell, yet quickly: the schema validator's three-way ``anyOf`` per cell took ~5 CPU s (a 279-model
    result: 3.8 CPU s of the 4.0 its loading took, every time the app first opened it); one plain pass ~0.3."""
    import time

    from mother_core.errors import ResultFormatError
    from mother_core.recovery.schema import check_result

    n, layers = 400, 100
    d = {"models": [{"id": f"m{i}", "path": "/x", "tree": 0, "kurtosis": 1.0, "is_root": i == 0} for i in range(n)],
         "edges": [{"parent": "m0", "child": f"m{i}", "distance": 0.1, "confidence": 0.9, "placement_confidence": 0.9,
                    "direction_confidence": 0.9, "layer_distance": [0.5] * layers} for i in range(1, n)],
         "distance_matrix": [[float(i + j) for j in range(n)] for i in range(n)],
         "cost_matrix": [[None if i == j else "inf" for j in range(n)] for i in range(n)],
         "layer_kurtosis": [[1.5] * layers for _ in range(n)]}
    start = time.process_time()
    check_result(d)
    assert time.process_time() - start < 1.5  # ~0.3 CPU s on a loaded 2-core machine; main's schema: ~5
    d["layer_kurtosis"][n - 1][layers - 1] = "1.5"  # the last cell is still checked
    with pytest.raises(ResultFormatError, match=r"layer_kurtosis\[399\]\[99\]"):
        check_result(d)


def _in_a_thread(fn, timeout_s: float = 60):
    """``fn()``'s exception (or None) if it returns within ``timeout_s``; a hang fails the test, not the run."""
    import threading

    out: list = []

    def run():
        try:
            fn()
            out.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout_s)
    assert out, f"still reading after {timeout_s} s"
    return out[0]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-large"])
@pytest.mark.parametrize("reader", ["result", "truth"])
def test_result_and_truth_files_that_are_not_files_are_refused_at_once(tmp_path, monkeypatch, kind, reader):
    """A result.json (or truth.json) that is a FIFO blocked the reader forever and one linked to /dev/zero read
    without end; a regular file past the size limit is refused before it is parsed."""
    from mother_core import evaluate
    from mother_core.errors import ResultFormatError
    from mother_core.recovery import result
    from mother_core.recovery.result import Recovery

    path = tmp_path / f"{kind}-result.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.write_text(json.dumps(_result_dict() | {"edges": [[["a", "b"]] * 20]}))
        monkeypatch.setattr(result, "MAX_RESULT_BYTES", 200)
        monkeypatch.setattr(evaluate, "MAX_JSON_BYTES", 200)
    load = (lambda: Recovery.load(path)) if reader == "result" else (lambda: evaluate.load_truth_edges(path))
    err = _in_a_thread(load)
    assert isinstance(err, ResultFormatError), err
    what = {"fifo": "named pipe", "dev-zero": "character device", "too-large": "larger than 200 bytes"}[kind]
    assert what in str(err) and str(path) in str(err)


def test_the_app_offers_only_result_files_inside_its_roots(tmp_path, monkeypatch):
    """The "Saved result" list: a result.json linked to a file outside the roots was offered (and read), and
    so were a FIFO and a link to /dev/zero; a truth.json linked out was attached to the set."""
    from explorer_ui.sources import list_result_files, truth_for

    inside, outside = tmp_path / "inside", tmp_path / "outside"
    (inside / "runs").mkdir(parents=True)
    outside.mkdir()
    (outside / "result.json").write_text(json.dumps(_result_dict()))
    (inside / "runs" / "result.json").write_text(json.dumps(_result_dict()))
    (inside / "runs" / "linked-result.json").symlink_to(outside / "result.json")
    (inside / "runs" / "zero-result.json").symlink_to("/dev/zero")
    os.mkfifo(inside / "runs" / "fifo-result.json")
    assert list_result_files([inside]) == [str(inside / "runs" / "result.json")]
    (outside / "truth.json").write_text(json.dumps({"edges": [["a", "b"]]}))
    (inside / "runs" / "truth.json").symlink_to(outside / "truth.json")
    monkeypatch.setenv("MOTHER_BROWSE_ROOTS", str(inside))
    assert truth_for(inside / "runs") is None
    (inside / "runs" / "truth.json").unlink()
    (inside / "runs" / "truth.json").write_text(json.dumps({"edges": [["a", "b"]]}))
    assert truth_for(inside / "runs") == str(inside / "runs" / "truth.json")


@pytest.mark.parametrize("typed", ["nul", "loop", "through-loop"])
def test_a_typed_path_that_cannot_resolve_is_a_clear_refusal(tmp_path, typed):
    """The sidebar's path box (and a shared link's folder) is data: a NUL byte raised ValueError and a symlink
    loop RuntimeError out of the roots check (the page showed only a generic failure); now an InputError that
    names the path, and listing the roots still works beside the loop."""
    from explorer_ui.sources import list_folders, list_result_files, within_roots
    from mother_core.errors import InputError

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    path = {"nul": f"{tmp_path}/a\x00b", "loop": tmp_path / "loop", "through-loop": tmp_path / "loop" / "x"}[typed]
    with pytest.raises(InputError, match="not a path this app can open"):
        within_roots(path, [tmp_path])
    assert list_folders(tmp_path, roots=[tmp_path]) is not None and list_result_files([tmp_path]) == []


def test_the_real_result_still_loads(tmp_path):
    from mother_core.recovery.result import Recovery

    (tmp_path / "r.json").write_text(json.dumps(_result_dict()))
    assert Recovery.load(tmp_path / "r.json").parent_of("c") == "b"


def test_out_is_written_atomically(tmp_path, monkeypatch):
    """A write that dies half-way leaves the previous result whole (and no temporary file)."""
    from mother_core import atomic

    out = tmp_path / "result.json"
    out.write_text("previous")

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OSError):
        atomic.write_text_atomic(out, "new " * 1000)
    assert out.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    monkeypatch.undo()
    atomic.write_text_atomic(out, "new")
    assert out.read_text() == "new"


def test_non_utf8_and_control_names_become_clean_ids(good, tmp_path):
    from mother_core.io.discovery import discover

    for mid in ("m0", "m1"):
        os.symlink(good["folder"] / mid, tmp_path / mid, target_is_directory=True)
    odd = os.fsdecode(b"bad\xff\x1b[31mname")
    os.symlink(good["folder"] / "m2", os.path.join(tmp_path, odd), target_is_directory=True)
    ids = sorted(m.id for m in discover([tmp_path]).models)
    assert ids == ["bad\\xff\\x1b[31mname", "m0", "m1"]
    assert all(i.isprintable() for i in ids)


# --- the app's text and folders ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["![x](https://example.org/p.png)", "<img src=https://example.org/p.png>",
                                  "[click](javascript:alert(1))", "**bold** `code` $x^2$", "a\x1b[31mb\nc",
                                  os.fsdecode(b"caf\xe9")])
def test_names_from_data_render_literally(name):
    """Rendered by the same markdown engine family Streamlit uses (CommonMark): no image, link or HTML
    element comes out of an escaped name, and the text is still all there."""
    import html as html_lib

    from markdown_it import MarkdownIt

    from explorer_ui.safe_text import md, plain

    out = MarkdownIt("commonmark").enable("table").render(md(name))
    assert "<img" not in out and "<a " not in out and "<code" not in out and "<strong" not in out
    assert html_lib.unescape(re.sub(r"<[^>]+>", "", out)).strip() == plain(name).strip()
    plain(name).encode("utf-8")  # sendable to the browser (no lone surrogates)


def test_folder_listing_never_leaves_the_roots(tmp_path):
    from explorer_ui.sources import list_folders

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "models" / "a").mkdir(parents=True)
    for i in range(5):
        (outside / f"private-{i}").mkdir(parents=True)
    (root / "models" / "escape").symlink_to(outside, target_is_directory=True)
    (root / "models" / "inner").symlink_to(root / "models" / "a", target_is_directory=True)
    listed = list_folders(root, roots=[root.resolve()])
    assert not any("private" in f or f.endswith("escape") for f in listed)
    assert str(root / "models" / "inner") in listed


# --- red-team pass four (branch hostile4) ---------------------------------------------------------------------

def test_named_adapters_behind_links_are_refused_or_said_never_skipped(tmp_path):
    """PEFT's named adapters sit in sub-folders of an adapter's folder, each read as a model. A sub-folder that
    is a symbolic link was skipped without a word: one leaving the roots is now refused by the roots' message
    (nothing under it looked at), one pointing back at the folder holding it is called a loop; without roots a
    link to another adapter is read like the set's own linked entries."""
    from mother_core.io.discovery import discover

    inside, outside = tmp_path / "set", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    config = {"peft_type": "LORA", "base_model_name_or_path": "m9", "r": 4, "lora_alpha": 8,
              "target_modules": ["q_proj", "v_proj"]}
    base = hi.good_states()["m9"]
    hi._adapter(outside, "secret", config, base)
    multi = hi._adapter(inside, "multi", config, base)
    hi._adapter(multi, "named", config, base)
    (multi / "linked").symlink_to(outside / "secret", target_is_directory=True)
    (multi / "loop").symlink_to(multi, target_is_directory=True)
    found = discover([inside], roots=[inside])
    assert sorted(m.id for m in found.models) == ["multi", "multi/named"]
    said = {Path(p.path).name: p.message for p in found.problems}
    assert set(said) == {"linked", "loop"}, said
    assert "outside the folders this run may read" in said["linked"] and "secret" in said["linked"]
    assert "loop" in said["loop"]
    free = discover([inside])
    assert sorted(m.id for m in free.models) == ["multi", "multi/linked", "multi/named"]
    assert [Path(p.path).name for p in free.problems] == ["loop"]


@pytest.mark.parametrize("name", ["x" + ".pt" * 5000, "m1" + ".safetensors" * 2000, "/a/" * 50_000 + "m1.bin",
                                  "y" * 10_000_000], ids=["pt-x5000", "safetensors-x2000", "deep-path", "10-MB"])
def test_a_declared_name_of_many_weight_suffixes_is_matched_without_recursion(name):
    """Declared parents are matched to the set's ids taking weight-file suffixes off one by one: that was a
    recursion, which a name of a thousand suffixes ran past Python's limit (RecursionError)."""
    from mother_core.lineage import IdMatcher

    match = IdMatcher(["m1", "m2", "org/m2"])
    assert match(name) == ("m1" if name.endswith(("m1.bin", ".safetensors")) else None)


def test_the_metadata_count_agrees_with_the_gguf_package_on_a_real_file(tmp_path):
    """The GGUF metadata bound counts values from the bytes without parsing them: on a file the package's own
    writer made (strings, string and number arrays, a tensor), the count is the package's."""
    import gguf
    import numpy as np

    from mother_core.io.gguf_header import metadata_entries

    path = tmp_path / "real.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("a name")
    writer.add_head_count(4)
    writer.add_token_list([f"tok{i}" for i in range(1000)] + ["", "é" * 300])
    writer.add_token_scores([0.5] * 1002)
    writer.add_array("test.bools", [True, False, True])
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    fields = gguf.GGUFReader(str(path)).fields.values()
    assert metadata_entries(str(path)) == sum(len(f.data) for f in fields if not f.name.startswith("GGUF."))
    assert metadata_entries(str(path), stop=100) > 100  # the count stops once past the bound


# --- hostile5: corrections ("the later click wins") -------------------------------------------------------
@pytest.fixture(scope="module")
def demo_result():
    from mother_core.pipeline import recover_paths

    return recover_paths([str(Path(__file__).resolve().parent.parent / "assets" / "demo" / "vit-tree")])


def _hostile_constraints(ids: list[str]):
    from mother_core.recovery.result import Constraints

    pairs = [(a, b) for a in ids for b in ids if a != b]
    return {
        "unknown id": Constraints(forced=(("ghost", ids[0]),)),
        "script id": Constraints(forbidden=(("<script>alert(1)</script>", ids[0]),)),
        "every pair forbidden x120": Constraints(forbidden=tuple(pairs) * 120),  # ~19,000 constraints
        "every model a root x1000": Constraints(roots=tuple(ids) * 1000),
        "a forced cycle of three": Constraints(forced=((ids[0], ids[1]), (ids[1], ids[2]), (ids[2], ids[0]))),
    }


@pytest.mark.parametrize("case", ["unknown id", "script id", "every pair forbidden x120", "every model a root x1000",
                                  "a forced cycle of three"])
def test_hostile_constraint_sets_are_refused_clearly_or_solved_quickly(demo_result, case):
    """Thousands of constraints, contradictory ones, ids not in the set: a ``ConstraintError`` naming what to change
    (the id cut and shown as text) or a tree, in well under a second each."""
    import time

    from mother_core.errors import ConstraintError
    from mother_core.recovery.recover import resolve

    constraints = _hostile_constraints(demo_result.model_ids)[case]
    start = time.process_time()
    try:
        out = resolve(demo_result, constraints)
    except ConstraintError as e:
        assert "Remove or change" in str(e) or "unknown model" in str(e) or "roots are needed" in str(e), str(e)
    else:
        assert case == "every model a root x1000" and not out.edges
    assert time.process_time() - start < 10  # ~0.2 CPU s at load 3


def test_forcing_the_reverse_of_a_forced_edge_lifts_it(demo_result):
    """"Use this parent" for ``a``'s parent ``b`` after ``a -> b`` was forced (a later click on the Edge page, or
    ``use_parent`` on a result holding that constraint): the two forced edges made a cycle ``resolve`` refused, and
    the page undid the click; the later choice wins, as for every other contradiction."""
    from mother_core.recovery.recover import resolve, use_parent
    from mother_core.recovery.result import Constraints

    e = next(x for x in demo_result.edges if not x.chosen_by_tie)
    forced = resolve(demo_result, Constraints().with_parent(e.parent, e.child))
    back = use_parent(forced, e.parent, e.child)  # the child as its parent's parent: the later choice
    assert back.parent_of(e.parent) == e.child and back.parent_of(e.child) != e.parent
    assert back.constraints.forced == ((e.child, e.parent),)


# --- hostile5: a norm-plus-one architecture's claim on tensors that are not norms -------------------------------
@pytest.mark.parametrize("arch", ["gemma", "nemotron"])
def test_a_matrix_named_norm_in_a_norm_plus_one_file_is_read_as_stored_in_chunks(tmp_path, arch):
    """Gemma and Nemotron GGUF files store each norm vector as 1 + w, undone on reading, whole (it is a vector).
    A 2-D tensor named ``blk.0.attn_norm.weight`` in such a file (no real one has one) was undone too: read whole
    and held for every chunk, with a copy minus 1 (an 8192 x 8192 float16 one: 901 MB peak against 340 for the
    same file declared llama, 14 s against 4). It is read as stored, by rows; the file's real norm still loses its
    1."""
    import gguf
    import numpy as np

    from mother_core.io.discovery import ModelRef
    from mother_core.io.readers import open_model

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((64, 256)).astype(np.float16)
    norm = (1 + 0.1 * rng.standard_normal(256)).astype(np.float32)
    path = tmp_path / f"{arch}.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("blk.0.attn_norm.weight", matrix)  # a matrix under a norm's name
    writer.add_tensor("blk.0.ffn_norm.weight", norm)  # a real norm, stored as 1 + w
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with open_model(ModelRef(id=arch, path=str(path), format="gguf", files=(str(path),))) as reader:
        names = {n for n in reader.tensor_infos() if n.endswith("norm.weight")}
        mat = next(n for n in names if reader.tensor_infos()[n].shape == (64, 256))
        vec = next(n for n in names if n != mat)
        rows = torch.cat([reader.read(mat, (r, min(64, r + 16))) for r in range(0, 64, 16)])
        assert getattr(reader, "_cached", None) is None  # nothing held whole between the chunks
        np.testing.assert_array_equal(rows.float().numpy(), matrix.astype(np.float32))
        np.testing.assert_allclose(reader.read(vec).float().numpy(), norm - 1, atol=1e-6)


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_folders_linking_to_each_other_are_walked_once(tmp_path, where):
    """Two folders, each holding four links to the other, under a set entry of named adapters (``inside``) or
    outside it (``outside``: reached through one link, no roots): the walk down to 8 folders followed every
    link at every level, 4**8 paths, each adapter on them read again (past 400 s). Each real folder is entered once;
    the links are said once per folder ("and 3 more"), the adapter in them read once, under its own name."""
    import time

    from mother_core.io.discovery import discover

    config = {"peft_type": "LORA", "base_model_name_or_path": "m9", "r": 4, "lora_alpha": 8,
              "target_modules": ["q_proj", "v_proj"]}
    base = hi.good_states()["m9"]
    entry = tmp_path / "set" / "multi"
    entry.mkdir(parents=True)
    hi._adapter(tmp_path / "set", "plain", config, base)  # a model beside it: the set is not empty
    far = entry if where == "inside" else tmp_path / "far"
    far.mkdir(exist_ok=True)
    a, b = far / "a", far / "b"
    hi._adapter(far, "a", config, base)
    b.mkdir()
    for i in range(4):
        (a / f"to-b-{i}").symlink_to(b, target_is_directory=True)
        (b / f"to-a-{i}").symlink_to(a, target_is_directory=True)
    if where == "outside":
        (entry / "far").symlink_to(far, target_is_directory=True)
    start, got = time.perf_counter(), []
    assert _in_a_thread(lambda: got.append(discover([tmp_path / "set"])), 120) is None  # before: past 400 s
    assert time.perf_counter() - start < 60  # ~0.1 s
    found = got[0]
    named = sorted(m.id for m in found.models if m.id.startswith("multi"))
    assert named == (["multi/a"] if where == "inside" else ["multi/far/a"]), named
    links = [p.message for p in found.problems if "symbolic link" in p.message]
    assert 1 <= len(links) <= 3 and all("more such links" in m for m in links), links  # one per folder, at most


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_fork_while_another_thread_settles_torch_does_not_deadlock_the_child():
    """``device.settle_torch_threads`` runs under a lock; a fork while another thread of the parent held it (the
    app's pass on one thread, a forked run started from another) copied it held into the child, whose first
    settle then waited for ever. The child gets a lock of its own."""
    import threading

    from mother_core import device

    held, release = threading.Event(), threading.Event()

    def hold():  # noqa: ANN202
        with device._SETTLE_LOCK:
            held.set()
            release.wait(30)

    worker = threading.Thread(target=hold, daemon=True)
    worker.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: settle (it takes the lock), then leave without running the parent's teardown
        device.settle_torch_threads()
        os._exit(0)
    release.set()
    status = hi.wait_or_kill(pid, 60)
    assert status is not None, "the forked child never came back from settle_torch_threads"
    assert os.waitstatus_to_exitcode(status) == 0


# --- hostile5: GGUF blocks decoded inside the statistics kernel ------------------------------------------------
FP16_SCALES = {"nan": 0x7E00, "nan-payload": 0x7FFF, "-nan": 0xFE01, "inf": 0x7C00, "-inf": 0xFC00,
               "subnormal": 0x0001, "largest": 0x7BFF}


@pytest.mark.parametrize("scale", sorted(FP16_SCALES))
@pytest.mark.parametrize("qtype, offset", [("Q4_K", 0), ("Q4_K", 2), ("Q6_K", 208)],
                         ids=["Q4_K-d", "Q4_K-dmin", "Q6_K-d"])
def test_crafted_block_scales_reduce_in_the_kernel_as_the_bfloat16_path_does(qtype, offset, scale):
    """Every third block's fp16 scale (Q4_K's d or dmin, Q6_K's d) set to NaN (with a payload whose rounding to
    bfloat16 would carry into the sign), an infinity, a subnormal or the largest fp16: the coded kernel (the blocks
    decoded inside the statistics pass) marks the same rows non-finite as the bfloat16 path (whose chunk is then
    read again without them) and gives the same finite statistics, bit for bit; nothing is read past the blocks.
    Probed: contained on main (no change)."""
    import numpy as np
    from format_factory import quantize

    from mother_core.io import gguf_fast
    from mother_core.stats import fused, fused_codes

    if not fused_codes.enabled():
        pytest.skip("no numba kernel here")
    rng = np.random.default_rng(0)
    cols = 256 * 8
    raw = np.ascontiguousarray(quantize((rng.standard_normal((3, cols)) * 0.02).astype(np.float32), qtype))
    raw = raw.view(np.uint8).reshape(3, -1).copy()
    nbytes, _ = gguf_fast.block_layout(qtype)
    blocks = raw[1].reshape(-1, nbytes)  # row 1 only: rows 0 and 2 stay finite
    blocks[::3, offset:offset + 2] = np.array([FP16_SCALES[scale]], np.uint16).view(np.uint8)
    bits = np.stack([gguf_fast.dequantize(r.copy(), qtype, np.empty(cols, np.uint16)) for r in raw])
    plain = fused.StreamReduction(3, True, cols)
    plain.add(torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16))
    coded = fused_codes.CodedReduction(qtype, 3, True, cols)
    coded.add(raw, cols)
    (pm, pd, _), (cm, cd, _) = plain.finish(), coded.finish()
    finite = np.isfinite(pm.m2) & np.isfinite(pm.mean)
    np.testing.assert_array_equal(np.isfinite(cm.m2) & np.isfinite(cm.mean), finite)
    assert finite[0] and finite[2] and finite[1] == (scale in ("subnormal", "largest"))
    for field in ("n", "mean", "m2", "m3", "m4"):
        np.testing.assert_array_equal(getattr(cm, field)[finite], getattr(pm, field)[finite], err_msg=field)
    np.testing.assert_array_equal(cd[0, 2], pd[0, 2])


def test_saved_results_are_listed_by_their_content_not_their_name(tmp_path, monkeypatch):
    """The "Saved result" list took a ``*.json`` whose name held "result": a result saved as ``run-c5.json``
    was not offered and a ``results-table.json`` that is no result was. A file is now a result when it opens
    with the writer's marker; the check reads a bounded prefix (a 50 MB JSON costs 4 KB), never parses.
    A result rewritten with sorted keys has the marker after its matrices (no bounded read reaches it): it is
    not listed, and the list's help said nothing of it; it now says to upload such a file."""
    from streamlit.testing.v1 import AppTest

    from explorer_ui.sources import list_result_files
    from mother_core.recovery.result import RESULT_HEAD_BYTES, Recovery

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "run-c5.json").write_text(json.dumps(_result_dict(), indent=1))  # as `mother recover --out` writes it
    (runs / "results-table.json").write_text(json.dumps({"rows": [1, 2, 3]}))
    (runs / "result-of-nothing.json").write_text("not json at all")
    # A result's marker, but past the prefix the check reads: a huge or hostile JSON is not read through.
    (runs / "huge-result.json").write_text("{" + " " * RESULT_HEAD_BYTES + '"format": "mother-recovery", "version": 1}')
    # Another tool's JSON with "format" first, and a result's keys without the marker.
    (runs / "other.json").write_text(json.dumps({"format": "graphml", "version": 1}))
    (runs / "bare-result.json").write_text(json.dumps({"models": [], "edges": []}))
    # jq -S: "format" after "constraints", "cost_matrix", "distance_matrix", "edges", "extra" (not listed; it loads)
    from mother_core.recovery.result import Edge, ModelNode, TreeInfo

    ids = [f"m{i}" for i in range(40)]  # a chain of 40: its edges alone are well past the 4 KB read
    chain = Recovery(models=[ModelNode(m, f"/x/{m}", 0, 1.0, m == "m0") for m in ids],
                     edges=[Edge(p, c, 0.1, 0.9, 0.9, 0.9) for p, c in zip(ids, ids[1:])],
                     trees=[TreeInfo(0, tuple(ids), "m0", "fft", 0.9)])
    (runs / "sorted.json").write_text(json.dumps(chain.to_dict(), indent=1, sort_keys=True))
    assert list_result_files([tmp_path]) == [str(runs / "run-c5.json")]
    assert Recovery.load(runs / "run-c5.json").model_ids == ["a", "b", "c"]
    assert Recovery.load(runs / "sorted.json").model_ids == ids
    monkeypatch.setenv("MOTHER_BROWSE_ROOTS", str(tmp_path))
    monkeypatch.delenv("MOTHER_DEMO_ROOT", raising=False)
    monkeypatch.setenv("MOTHER_WARM_DEMOS", "0")
    at = AppTest.from_file(str(Path(__file__).parent.parent / "app.py"), default_timeout=180).run()
    at.sidebar.radio(key="source").set_value("Saved result").run()
    listed = at.sidebar.selectbox(key="result_file")
    assert listed.options == [str(runs / "run-c5.json")]
    assert "sort" in listed.proto.help and "Upload a result.json" in listed.proto.help, listed.proto.help
