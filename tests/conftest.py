"""Shared fixtures. Tests that train zoo models share one session fixture, so they run in one xdist
group (``pytest -n 2 --dist loadgroup``) and the small zoo is trained once per run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # checkpoint_factory

SMALL_ZOO_SPLITS = ("fft", "lora16", "mixed")


def pytest_configure(config: pytest.Config) -> None:
    """Run torch's CPU ops on one intra-op thread in every test process.

    ``pytest -n 2`` on a 2-core machine starts two workers, each with torch's default of one OpenMP thread per
    core: four threads on two cores. The tests' models are tiny (hidden 32-64), so a second thread gains
    nothing on their ops, and an OpenMP thread spin-waiting for a descheduled partner made training several
    times slower (benchmarks/RESULTS.md, "Test suite time, part A"). One thread also makes every float
    reduction, hence every trained fixture, the same on any machine whatever its core count. numpy's BLAS
    is left alone: the engine limits it itself where it matters (``mother_core.device.one_blas_thread``),
    and a test checks that limit.
    """
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_background_warm_up(monkeypatch: pytest.MonkeyPatch):
    """No app test leaves the demo sets' background warm-up running into the next test of its worker.

    An ``AppTest`` that shows a demo set starts reading the other demo sets on a thread (``mother-warm-demos``)
    that outlives the test: the next test in that xdist worker then ran beside a statistics pass of its own
    (a bit-for-bit comparison of two passes saw its last bits move; a first visit found the set read already).
    Off by default here; the warm-up's own test turns it on and waits for it. Any thread left from before is
    waited for first.
    """
    import threading

    for thread in threading.enumerate():
        if thread.name == "mother-warm-demos":
            thread.join(600)
    monkeypatch.setenv("MOTHER_WARM_DEMOS", "0")
    yield


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Put back the interpreter's ``__main__`` after every test.

    Streamlit's ``AppTest`` runs its script as ``__main__`` and leaves it there. A ``spawn`` process started
    by a later test in the same xdist worker (Dask's local cluster, a process pool) first re-runs that
    script from its temporary file and dies at start, so the test failed or not by the order xdist chose.
    """
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def small_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The zoo's small splits (seed 0), trained once per session: {split name: folder}."""
    from mother_zoo import generate_split

    out = tmp_path_factory.mktemp("zoo")
    return {name: generate_split(name, out, size="small", seed=0) for name in SMALL_ZOO_SPLITS}


@pytest.fixture(scope="session")
def small_typed_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small typed set (seed 0, profile A) made once per session with the real tools (about a minute).

    Tests using it should be in ``pytest.mark.xdist_group("typed-zoo")`` so one worker makes it once.
    Skips when the ``zoo`` extra (transformers, peft, mergekit, gguf, quanto, bitsandbytes) is missing.
    """
    for mod in ("transformers", "peft", "mergekit", "gguf", "optimum.quanto", "bitsandbytes"):
        pytest.importorskip(mod)
    from mother_zoo.typed import generate_typed

    return generate_typed(tmp_path_factory.mktemp("typed"), size="small", seed=0)
