"""The embedded default corpus: English documentation written by people, already on disk.

A laptop demo must train without network access and without repeating data, so the lab needs
>= 10M tokens of real text that every installation already has. The documentation of its own
dependencies is exactly that: the docstrings of torch, scipy, numpy, polars, sympy, plotly,
networkx, SQLAlchemy, Lightning, ... and of Python's standard library, plus the .rst/.md/.txt
files the packages ship. All are open-source licensed (BSD, MIT, Apache-2.0, PSF); the
provenance (package, version, licence, documents, bytes) is recorded with the corpus.

Extraction is deterministic: packages and files in sorted order, docstrings found with `ast`
(module, class and function docstrings; torch's `add_docstr(obj, "...")` texts), doctest
examples (`>>>` blocks) removed because they are code and printed arrays rather than prose,
documents shorter than MIN_CHARS or less than half letters skipped, exact duplicates dropped.
The result depends only on the installed package versions, so the cache key is computed from
those versions without reading any file.

Layout of a built corpus (in $SCALING_CACHE/corpus/<key>/):
    docs.jsonl        one {"text": ..., "source": package} per line (also a valid --corpus input)
    provenance.json   sources with version and licence, document/byte counts, sha256 of the text
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import inspect
import json
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from scaling.base.errors import UserError
from scaling.base.rundir import temp_dir_beside
from scaling.base.threads import worker_processes

# Bump when the extraction rules change: it is part of the cache key.
CORPUS_VERSION = 3
MIN_CHARS = 200  # a document (all pieces of one file, joined)
MIN_PIECE_CHARS = 30  # one docstring or comment block
MIN_LETTER_FRACTION = 0.5
# Dependencies of scaling-lab (direct or transitive), so a fresh install always has them.
SOURCES = (
    "python",  # the standard library (PSF licence)
    "alembic",
    "fsspec",
    "huggingface-hub",
    "jinja2",
    "lightning",
    "lightning-utilities",
    "mpmath",
    "narwhals",
    "networkx",
    "numpy",
    "optuna",
    "plotly",
    "polars",
    "pytorch-lightning",
    "scipy",
    "sqlalchemy",
    "submitit",
    "sympy",
    "tokenizers",
    "torch",
    "torchmetrics",
    "tqdm",
)
_SKIP_DIRS = {"tests", "test", "testing", "benchmarks", "_vendor", "vendor", "site-packages", "idlelib", "turtledemo", "__pycache__"}
_TEXT_SUFFIXES = (".rst", ".md", ".txt")
_C_SUFFIXES = (".h", ".hpp", ".cuh")


def cache_root() -> Path:
    """$SCALING_CACHE, else ~/.cache/scaling-lab."""
    env = os.environ.get("SCALING_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scaling-lab"


def _license_of(dist) -> str:
    meta = dist.metadata
    expr = meta.get("License-Expression")
    if expr:
        return expr.strip()
    lic = (meta.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) <= 60:
        return lic
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return "; ".join(classifiers)
    return lic.splitlines()[0][:60] if lic else "unknown (see the package's metadata)"


def _python_files() -> list[str]:
    std = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for f in sorted(std.rglob("*")):
        rel = f.relative_to(std).parts
        if f.suffix == ".py" and not (_SKIP_DIRS & set(rel[:-1])) and f.is_file():
            out.append(str(f))
    return out


def _dist_files(dist) -> list[str]:
    out = []
    for f in dist.files or []:
        parts = f.parts
        if not str(f).endswith((".py", ".pyi") + _TEXT_SUFFIXES + _C_SUFFIXES) or parts[0].endswith((".dist-info", ".data")):
            continue
        if _SKIP_DIRS & set(parts[:-1]) or parts[0] in ("..",):
            continue
        p = Path(dist.locate_file(f))
        if p.is_file():
            out.append(str(p))
    return sorted(out)


def sources() -> list[dict]:
    """The corpus's sources present in this environment: name, version, licence, files."""
    found = []
    for name in SOURCES:
        if name == "python":
            version = ".".join(map(str, sys.version_info[:3]))
            found.append({"name": "python-stdlib", "version": version, "license": "PSF-2.0", "files": _python_files})
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found.append({"name": name, "version": dist.version, "license": _license_of(dist), "files": (lambda d=dist: _dist_files(d))})
    return found


def corpus_key() -> str:
    """Cheap identity of the default corpus: rules version + the source packages' versions."""
    ident = [CORPUS_VERSION, sys.version_info[:2], [(s["name"], s["version"]) for s in sources()]]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


_DOCTEST = re.compile(r"^\s*(>>>|\.\.\.)( |$)")
_LETTER = re.compile(r"[^\W\d_]")


def clean(text: str) -> str:
    """Drop doctest blocks (prompt lines and the output that follows up to a blank line),
    trailing spaces, and runs of blank lines."""
    out, in_example = [], False
    for line in text.splitlines():
        if _DOCTEST.match(line):
            in_example = True
            continue
        if in_example and line.strip():
            continue
        in_example = False
        out.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _letters(text: str) -> int:
    return len(_LETTER.findall(text))


def _prose(text: str, min_chars: int) -> bool:
    """Mostly letters and spaces, a few words: a sentence rather than code or a table."""
    if len(text) < min_chars or len(text.split()) < 5:
        return False
    letters = _letters(text)
    return letters >= MIN_LETTER_FRACTION * len(text) and letters + text.count(" ") >= 0.8 * len(text)


# Licence headers repeat in every file with small variations; they are not what we want to model.
_BOILERPLATE = re.compile(r"Licensed under|Copyright|SPDX-License|Permission is hereby granted|://")
_PY_COMMENTS = re.compile(r"(?:^[ \t]*#[^\n]*\n)+", re.M)
_C_LINE_COMMENTS = re.compile(r"(?:^[ \t]*//[^\n]*\n)+", re.M)
_C_BLOCK_COMMENTS = re.compile(r"/\*.*?\*/", re.S)
_COMMENT_MARK = re.compile(r"^\s*(?:#+|///?|/\*+|\*/|\*)\s?")


def _comment_text(block: str) -> str:
    lines = (_COMMENT_MARK.sub("", line).removesuffix("*/").rstrip() for line in block.splitlines())
    return "\n".join(lines).strip()


def _comments(source: str, patterns) -> list[str]:
    out = []
    for pat in patterns:
        for m in pat.finditer(source):
            text = _comment_text(m.group(0))
            if _prose(text, MIN_PIECE_CHARS) and not _BOILERPLATE.search(text):
                out.append(text)
    return out


_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")


def _add_docstr_text(call: ast.Call) -> str | None:
    """torch documents its C functions with add_docstr(torch.abs, r\"\"\"...\"\"\".format(**common))."""
    f = call.func
    name = getattr(f, "attr", None) or getattr(f, "id", None) or ""
    if not name.endswith("add_docstr") or len(call.args) < 2:
        return None
    arg = call.args[1]
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format":
        arg = arg.func.value  # the template; its {placeholders} are left as written
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return inspect.cleandoc(arg.value)
    return None


def _docstrings(node: ast.AST, out: list[str] | None = None) -> list[str]:
    """Docstrings of a module and every class and function in it, in source order.

    Walks statements only (ast.walk would visit every expression node, 3x slower overall)."""
    out = [] if out is None else out
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            out.append(doc)
    for name in _BODIES:
        for child in getattr(node, name, None) or ():
            if isinstance(child, ast.Expr) and isinstance(child.value, ast.Call):
                text = _add_docstr_text(child.value)
                if text:
                    out.append(text)
            elif isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                _docstrings(child, out)
    return out


def extract_file(path: str) -> list[tuple[str, list[str]]]:
    """The documents of one file as (kind, pieces): a .py gives its docstrings (one document,
    in source order) and its comments (another); a C/C++ header its comments; a .rst/.md/.txt
    its whole text. The caller drops pieces already seen elsewhere, then joins the rest."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    if path.endswith((".py", ".pyi")):
        try:
            tree = ast.parse(data)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return []  # a file this Python cannot parse (templates, other versions) has no docs for us
        docs = [d for d in map(clean, _docstrings(tree)) if len(d) >= MIN_PIECE_CHARS and _letters(d) >= MIN_LETTER_FRACTION * len(d)]
        return [("docstrings", docs), ("comments", _comments(text, [_PY_COMMENTS]))]
    if path.endswith(_C_SUFFIXES):
        return [("comments", _comments(text, [_C_LINE_COMMENTS, _C_BLOCK_COMMENTS]))]
    return [("docs", [clean(text)])]


def _n_workers() -> int:
    return worker_processes()


def build_default_corpus(out_dir: Path, progress: bool = True) -> dict:
    """Extract the corpus into out_dir (docs.jsonl, provenance.json); return the provenance."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    srcs = sources()
    jobs = [(s["name"], f) for s in srcs for f in s["files"]()]
    workers = _n_workers()
    seen: set[bytes] = set()
    digest = hashlib.sha256()
    stats = {s["name"]: {"n_docs": 0, "n_bytes": 0} for s in srcs}
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "docs.jsonl", "w", encoding="utf-8") as fh:
        # fork where there is one: spawn would re-run a caller's unguarded __main__ script. The
        # workers only parse files with `ast`, so inheriting torch's thread pools is harmless.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) if workers > 1 else _Inline() as pool:
            results = pool.map(extract_file, [f for _, f in jobs], chunksize=32)
            bar = tqdm(total=len(jobs), desc="default corpus: reading documentation", unit="file", disable=not progress, file=sys.stderr)
            for (name, path), docs in zip(jobs, results):
                bar.update()
                for kind, pieces in docs:
                    fresh = []
                    for piece in pieces:  # drop text seen before (plotly and torch repeat a lot)
                        h = hashlib.blake2b(piece.encode("utf-8"), digest_size=16).digest()
                        if h not in seen:
                            seen.add(h)
                            fresh.append(piece)
                    text = "\n\n".join(fresh)
                    if len(text) < MIN_CHARS:
                        continue
                    blob = text.encode("utf-8")
                    digest.update(blob + b"\0")
                    fh.write(json.dumps({"text": text, "source": name, "kind": kind}, ensure_ascii=False) + "\n")
                    stats[name]["n_docs"] += 1
                    stats[name]["n_bytes"] += len(blob)
            bar.close()
    provenance = {
        "corpus_version": CORPUS_VERSION,
        "description": "docstrings, comments and shipped .rst/.md/.txt documentation of Python's standard library and installed packages",
        "sha256": digest.hexdigest(),
        "n_docs": sum(s["n_docs"] for s in stats.values()),
        "n_bytes": sum(s["n_bytes"] for s in stats.values()),
        "sources": [
            {"name": s["name"], "version": s["version"], "license": s["license"], **stats[s["name"]]} for s in srcs
        ],
    }
    (out_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


class _Inline:
    """A one-worker stand-in for a process pool (no spawn cost on one core)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, chunksize=1):
        return map(fn, items)


def _remove_stale(parent: Path, max_age_s: float = 6 * 3600) -> None:
    """Temp dirs of builders that were killed mid-build (a live build takes about a minute)."""
    import time

    for p in parent.glob(".*.tmp-*"):
        try:
            if time.time() - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def default_corpus_dir(progress: bool = True) -> Path:
    """The built default corpus (building it into the cache on first use).

    Concurrent builders each write a private temp dir and rename it into place; the loser of
    the race discards its copy, so a reader never sees a half-built corpus.
    """
    final = cache_root() / "corpus" / corpus_key()
    if (final / "provenance.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final.parent)

    tmp = temp_dir_beside(final)
    try:
        prov = build_default_corpus(tmp, progress=progress)
        if prov["n_docs"] == 0:
            raise UserError("default corpus: no documentation found in the installed packages")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "provenance.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_default_corpus(progress: bool = True) -> tuple[list[str], dict]:
    """The default corpus's documents (in their fixed order) and its provenance."""
    d = default_corpus_dir(progress=progress)
    provenance = json.loads((d / "provenance.json").read_text())
    with open(d / "docs.jsonl", encoding="utf-8") as fh:
        docs = [json.loads(line)["text"] for line in fh]
    return docs, provenance
