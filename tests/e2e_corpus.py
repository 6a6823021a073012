"""An outside corpus for the end-to-end test: English prose that every Python has and the lab
does not ship.

Three kinds of document, read from the running interpreter's standard library (sorted file
order, so the corpus depends only on the Python version):
- every docstring (module, class, function) of at least MIN_CHARS characters;
- every comment block (consecutive `#` lines, joined) of at least MIN_CHARS characters,
  licence headers left out;
- the language reference's topics (`pydoc_data.topics`, what `help("if")` prints).
One document per piece, not per module: a 5% validation split by document then samples
thousands of pieces of every kind, not a few dozen modules. About 3.0 MB of text in 4.5K
documents on Python 3.11.

    python tests/e2e_corpus.py OUT.jsonl     # writes {"text": ...} per line
"""

from __future__ import annotations

import ast
import functools
import io
import json
import sys
import sysconfig
import tokenize
from pathlib import Path

# Folders of the standard library that are not its documentation (tests, the IDE, a vendored
# copy of the topics read below) or not on every install.
_SKIP = {"test", "tests", "idlelib", "turtledemo", "site-packages", "__pycache__", "lib2to3", "pydoc_data"}
MIN_CHARS = 150


def _modules() -> list[Path]:
    std = Path(sysconfig.get_paths()["stdlib"])
    return [f for f in sorted(std.rglob("*.py")) if not (_SKIP & set(f.relative_to(std).parts[:-1]))]


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    nodes = (n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))
    return [d for d in (ast.get_docstring(n) for n in nodes) if d and len(d) >= MIN_CHARS]


def _comments(source: str) -> list[str]:
    """Blocks of consecutive comment lines, each block one line of text."""
    blocks: list[list[str]] = []
    last = -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                if tok.start[0] != last + 1 or not blocks:
                    blocks.append([])
                blocks[-1].append(tok.string.lstrip("#").strip())
                last = tok.start[0]
    except (tokenize.TokenError, SyntaxError):
        return []
    texts = (" ".join(b).strip() for b in blocks)
    return [t for t in texts if len(t) >= MIN_CHARS and "Copyright" not in t]


@functools.cache
def documents() -> list[str]:
    """The corpus's documents, in a fixed order (built once per process: reading the whole
    standard library takes ~14 s, and two test modules use it)."""
    return build_documents()


def build_documents() -> list[str]:
    """The corpus's documents, built afresh."""
    import pydoc_data.topics

    docs = []
    for f in _modules():
        try:
            source = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs += _docstrings(source) + _comments(source)
    docs += [pydoc_data.topics.topics[k].strip() for k in sorted(pydoc_data.topics.topics)]
    return docs


def write_corpus(path: Path) -> Path:
    """PATH as .jsonl, one {"text": ...} per document. Returns PATH."""
    path = Path(path)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents()))
    return path


if __name__ == "__main__":
    out = write_corpus(Path(sys.argv[1]))
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB")
