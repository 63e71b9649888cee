"""Start-up and stage timings (issue 15, "the one pass at disk speed"): the commands that read no weights
start without torch, ``mother recover --timings`` reports where its time went, and the small SVDs of the
tree step run on one thread without changing their answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint_factory import llama_state, save_safetensors
from mother_core.cli import main as cli_main
from mother_core.stats.skeleton import singular_values
from mother_core.timing import StageClock, seconds_since_process_start, stage

ROOT = Path(__file__).resolve().parent.parent


def _loaded_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running ``code``."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return {m.split(".")[0] for m in out.stdout.split()}


@pytest.mark.parametrize("code", [
    "import mother_core",
    "from mother_core import MotherError",
    "from mother_core.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from mother_core.cli import main\nmain(['relations'])",
    # ``scan`` reads headers only: safetensors, sharded, quantized-scheme detection (the demo sets hold them)
    "from mother_core.cli import main\nmain(['scan', 'assets/demo/vit-tree'])",
    "from mother_core.cli import main\nmain(['scan', 'assets/demo/mixed-forest'])",
])
def test_commands_that_read_no_weights_start_without_torch(code):
    loaded = _loaded_after(code)
    assert "torch" not in loaded and "numba" not in loaded and "mother_zoo" not in loaded


def test_scanning_gguf_files_starts_without_torch(tmp_path):
    """Issue 15: the GGUF header is read by ``io/gguf_header.py`` (the gguf package and numpy), not by the
    reader module, which imports torch."""
    pytest.importorskip("gguf")
    from format_factory import llama_state as gguf_ready_llama
    from format_factory import write_gguf

    path = write_gguf(gguf_ready_llama(0), tmp_path / "tiny.gguf", qtype="Q8_0")
    loaded = _loaded_after(f"from mother_core.cli import main\nmain(['scan', {str(path)!r}])")
    assert "gguf" in loaded and "torch" not in loaded and "numba" not in loaded


def test_public_names_still_import_from_the_package():
    import mother_core

    for name in mother_core.__all__:
        assert getattr(mother_core, name) is not None
    from mother_core import recover_paths  # the README's import

    assert callable(recover_paths)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        mother_core.no_such_name  # noqa: B018


def test_the_zoo_command_is_listed_and_runs_its_own_parser(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "zoo" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["zoo", "--help"])
    assert "--size" in capsys.readouterr().out  # the zoo's real options, not the placeholder


def test_stage_clock_times_only_inside_it():
    with stage("outside"):  # no clock running: nothing recorded, nothing raised
        pass
    with StageClock() as clock:
        with stage("a"):
            sum(range(10_000))
        with stage("a"):
            pass
        with stage("b"):
            pass
    assert list(clock.seconds) == ["a", "b"] and all(s >= 0 for s in clock.seconds.values())
    assert "total" in clock.table().splitlines()[-1]
    started = seconds_since_process_start()
    assert started is None or 0 < started < 24 * 3600


def test_recover_timings_name_every_stage(tmp_path, capsys):
    for i in range(3):
        save_safetensors(tmp_path / "set" / f"m{i}" / "model.safetensors", llama_state(seed=i))
    out = tmp_path / "result.json"
    assert cli_main(["recover", str(tmp_path / "set"), "--out", str(out), "--quiet", "--timings"]) == 0
    err = capsys.readouterr().err
    for name in ("start-up (interpreter + imports)", "finding models (headers)", "opening models", "planning",
                 "read + reduce", "assembling statistics", "tree step", "writing the result", "total"):
        assert name in err
    assert out.exists()


def test_singular_values_on_one_thread_agree_with_numpy_and_restore_threads():
    batch = np.random.default_rng(0).standard_normal((5, 24, 16))
    batch[0] = np.outer(np.arange(24.0), np.arange(16.0))  # rank 1
    threads = torch.get_num_threads()
    # Test processes may run torch on one thread already (tests/conftest.py): start from two, so that the
    # switch to one thread and back is what is checked.
    torch.set_num_threads(2)
    try:
        s = singular_values(batch)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert s.shape == (5, 16) and s.dtype == np.float64
    np.testing.assert_allclose(s, np.linalg.svd(batch, compute_uv=False), rtol=1e-10, atol=1e-10)
    assert (s[0] > 1e-8 * s[0, 0]).sum() == 1


def test_the_command_keeps_its_exit_codes_when_it_skips_finalisation(tmp_path):
    """``python -m mother_core`` (and the ``mother`` script) leave through ``os._exit``: same codes, all output."""
    ok = subprocess.run([sys.executable, "-m", "mother_core", "relations"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "finetune" in ok.stdout and ok.stdout.endswith("\n")
    bad = subprocess.run([sys.executable, "-m", "mother_core", "recover", str(tmp_path / "missing"), "--out",
                          str(tmp_path / "r.json"), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
