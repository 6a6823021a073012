"""The README and docs/*.md stay true to the repository and the CLI.

1. Every relative link and image resolves: the file exists relative to the page, and an
   anchor (`page.md#heading`) names a heading of the target page under GitHub's slug rules.
2. Every `scaling ...` command line shown in a fenced code block parses with today's CLI
   (`scaling.cli.build_parser`). Nothing is executed.

Command lines are read as a reader would type them: a line starting with `scaling `,
`$ scaling ` or `.venv/bin/scaling `, joined across trailing `\\`, cut at a ` #` comment and
at the shell's `|`, `&&`, `||`, `;`, `>`, `2>` (standalone tokens). Usage notation is read too:
`[...]` around optional parts is dropped (the parts are checked), and `a|b|c` inside one token
(alternatives) is read as its first choice. A placeholder (`UPPER_CASE`, `<...>`) that the
option's type refuses is retried as `1`, so `--jobs N` is checked for the flag, not the value.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
COMMAND = re.compile(r"^\s*(?:\$\s+)?(?:\./)?(?:\.venv/bin/)?(scaling\s.*)$")
SHELL_STOP = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>>", "&>", "2>&1", "<"}
PLACEHOLDER = re.compile(r"^(<[^>]+>|[A-Z][A-Z0-9_]*(?:\.[A-Za-z0-9]+)?|[A-Z][A-Z0-9_]*:[A-Z][A-Z0-9_]*)$")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _lines(text: str, in_code: bool):
    """(line number, line) of the lines inside fenced code blocks (in_code) or outside them."""
    fence = False
    for i, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fence = not fence
            continue
        if fence == in_code:
            yield i, line


def _prose_lines(text: str):
    return _lines(text, in_code=False)


def _code_lines(text: str):
    return _lines(text, in_code=True)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup removed, lower case, punctuation other
    than `-` and `_` dropped, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                         # `*_ stay word characters: _ kept
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(page.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def _links():
    for page in PAGES:
        for lineno, line in _prose_lines(page.read_text(encoding="utf-8")):
            line = re.sub(r"`[^`]*`", "", line)   # links inside inline code are not links
            for m in LINK.finditer(line):
                target = m.group(1)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # http:, https:, mailto:, ...
                    continue
                yield pytest.param(page, lineno, target, id=f"{_rel(page)}:{lineno}:{target}")


def check_link(page: Path, target: str) -> str | None:
    """None if `target`, linked from `page`, resolves; else the reason."""
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return f"{_rel(dest)} does not exist"
    if anchor:
        if dest.suffix != ".md" or dest.is_dir():
            return f"an anchor on {dest.name}, which is not a markdown page"
        if anchor not in anchors(dest):
            return f"no heading of {_rel(dest)} has the anchor #{anchor}"
    return None


@pytest.mark.parametrize("page,lineno,target", list(_links()))
def test_relative_link_resolves(page, lineno, target):
    reason = check_link(page, target)
    assert reason is None, f"{_rel(page)}:{lineno}: link ({target}): {reason}"


def command_lines(text: str):
    """(line number, command line) of the `scaling` commands shown in fenced code blocks."""
    lines = list(_code_lines(text))
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        m = COMMAND.match(line)
        i += 1
        if not m:
            continue
        command = m.group(1).rstrip()
        while command.endswith("\\") and i < len(lines) and lines[i][0] == lines[i - 1][0] + 1:
            command = command[:-1].rstrip() + " " + lines[i][1].strip()
            i += 1
        yield lineno, command.rstrip("\\ ")


def argv_of(command: str) -> list[str]:
    """The arguments after `scaling`, read as described in the module docstring."""
    command = re.split(r"\s#", command, maxsplit=1)[0]
    tokens = shlex.split(command)
    argv = []
    for token in tokens[1:]:
        if token in SHELL_STOP or re.match(r"^(\d?>|&>|<)", token):
            break
        stop = token.endswith(";")
        token = token.rstrip(";")
        if "|" in token:
            token = token.split("|")[0]
        token = token.strip("[]")
        if token and token != "...":
            argv.append(token)
        if stop:
            break
    return argv


def _commands():
    for page in PAGES:
        for lineno, command in command_lines(page.read_text(encoding="utf-8")):
            yield pytest.param(page, lineno, command, id=f"{_rel(page)}:{lineno}")


def parse_error(argv: list[str]) -> str | None:
    """None if `scaling ARGV` parses with today's CLI; else what argparse said."""
    import contextlib
    import io

    from scaling.cli import build_parser

    def attempt(args):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parser = build_parser(args)
                _no_abbreviations(parser)
                parser.parse_args(args)
        except SystemExit as e:
            return err.getvalue().strip() or f"exit {e.code}"
        return None

    def attempt_with_stand_ins(args):
        error = attempt(args)
        if error is None:
            return None
        stand_in = ["1" if PLACEHOLDER.match(a) else a for a in args]
        if stand_in != args and attempt(stand_in) is None:
            return None
        return error

    error = attempt_with_stand_ins(argv)
    if error is None and argv and argv[0] in ("report", "plot") and "--plan" in argv:
        # `--plan` takes the rest of the line as `scaling plan`'s arguments: check them as such.
        error = attempt_with_stand_ins(["plan", *argv[argv.index("--plan") + 1:]])
    return error


def _no_abbreviations(parser) -> None:
    """Flags must be spelled in full in the docs: a prefix that argparse accepts today may name
    another flag tomorrow."""
    import argparse

    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


@pytest.mark.parametrize("page,lineno,command", list(_commands()))
def test_shown_command_parses(page, lineno, command):
    argv = argv_of(command)
    error = parse_error(argv)
    assert error is None, f"{_rel(page)}:{lineno}: `{command}` does not parse: {error}"


def test_the_checks_can_fail(tmp_path):
    """A broken link, a bad anchor and a bad flag are caught."""
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n## Some `code`: here -> there\n", encoding="utf-8")
    assert check_link(page, "missing.md")
    assert check_link(page, "#no-such-heading")
    assert check_link(page, "#some-code-here---there") is None
    assert parse_error(argv_of("scaling fit results.parquet --no-such-flag")) is not None
    assert parse_error(argv_of("scaling sweep collect")) is not None   # its directory is required
    assert parse_error(argv_of("scaling fit results.parquet --bootstrap N --out FILE")) is None
    assert parse_error(argv_of("scaling fit results.parquet --holdout 5")) is not None   # abbreviated
    assert parse_error(argv_of("scaling report runs/x --out r.html --plan --params 20B --no-such")) is not None


def test_found_some():
    """The collectors find what the pages show (a broken regex would pass everything)."""
    assert len(list(_links())) > 20
    assert len(list(_commands())) > 20


def test_slug_follows_github():
    assert slug("`scaling train`: one run") == "scaling-train-one-run"
    assert slug("`scaling prepare`: corpus -> token shards") == "scaling-prepare-corpus---token-shards"
    assert slug('Inference in the bill (after Sardana et al. 2023, "Beyond Chinchilla-optimal")') == (
        "inference-in-the-bill-after-sardana-et-al-2023-beyond-chinchilla-optimal")
    assert slug("Launch, relaunch, status") == "launch-relaunch-status"
    assert slug("snake_case name") == "snake_case-name"


# A relative path of the project (not /etc/slurm/..., not a glob such as bench/results/train-*.json).
_SOURCE_PATH = re.compile(r"(?<![/\w])(?:scaling|tests|bench|sweeps|slurm|analysis|docs)/[\w./-]*\w(?![\w*-])")


def _source_paths():
    for page in PAGES:
        for lineno, line in enumerate(page.read_text().splitlines(), 1):
            for m in _SOURCE_PATH.finditer(line):
                yield page, lineno, m.group(0)


def test_named_source_files_exist():
    """A path of the project that a page names (`scaling/train/run.py`, `sweeps/demo-cpu.toml`)
    exists: pages name the code a reader should open, and a move must not leave them stale."""
    found = list(_source_paths())
    assert len(found) > 20
    stale = [f"{_rel(page)}:{lineno}: {path}" for page, lineno, path in found
             if not (ROOT / path).exists() and not any(ch in path for ch in "*<")]
    assert not stale, "pages name files that do not exist:\n" + "\n".join(stale)


_DOTTED = re.compile(r"`(scaling(?:\.\w+)+)")


def test_named_python_objects_exist():
    """A dotted name a page gives in code (`scaling.fit.text.format_fit`) imports: the module
    part imports and the rest is an attribute of it."""
    import importlib

    found = [(page, n, m.group(1)) for page in PAGES for n, line in enumerate(page.read_text().splitlines(), 1)
             for m in _DOTTED.finditer(line)]
    assert len(found) > 5
    stale = []
    for page, lineno, name in found:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                stale.append(f"{_rel(page)}:{lineno}: {name}")
            break
        else:
            stale.append(f"{_rel(page)}:{lineno}: {name}")
    assert not stale, "pages name Python objects that do not exist:\n" + "\n".join(stale)
