"""Downstream tasks a run is scored on: task files (`.jsonl`), read and checked, and every
example cut and tokenised for the run's window with the run's own tokenizer.

A task file holds one JSON object a line (docs/tasks.md):

    {"prompt": "...", "answer": "..."}                        generative: bpb of the answer
    {"prompt": "...", "choices": ["...", ...], "label": 1}    multiple choice: also accuracy
    {"prompt": "...", "answer": "...", "shot": true}          a few-shot example (not scored)

One file is one kind (all generative or all multiple choice). Few-shot lines (`"shot": true`,
either kind; a multiple-choice shot shows its labelled choice) are shown, in file order, in
front of every scored prompt as `prompt + answer + "\\n\\n"`. Blank lines are skipped. A bad
line is refused in one line naming the file and the line number.

Tokenised for a window of W positions (the run's seq_len, its position tables): an answer
keeps at most W // 2 tokens; the prompt (shots included) keeps its last W - len(answer)
tokens, the longest answer of an example's choices deciding for all of them. Prompt and
answer are tokenised separately, without <eos>, after the shards' normalisation (spoken form
when the shards were made in it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaling.base.errors import UserError

GENERATIVE, CHOICE = "generative", "choice"
BUILTIN_NAMES = ("docsum", "nextsent")   # drawn from a shard directory: scaling/data/builtin_tasks.py
BUILTIN_EXAMPLES = 128                   # at most, of each built-in task
NEXTSENT_CHOICES = 4


@dataclass(frozen=True)
class TaskExample:
    """One scored example: a generative one has `answer`, a multiple-choice one `choices`
    and the index `label` of the correct one."""

    prompt: str
    answer: str | None = None
    choices: tuple[str, ...] = ()
    label: int = 0

    @property
    def options(self) -> tuple[str, ...]:
        """The answers scored: the one answer, or every choice."""
        return (self.answer,) if self.answer is not None else self.choices

    @property
    def correct(self) -> str:
        return self.answer if self.answer is not None else self.choices[self.label]


@dataclass(frozen=True)
class Task:
    name: str                         # the file's stem or a built-in task's name: task.<name>.*
    kind: str                         # GENERATIVE or CHOICE
    examples: tuple[TaskExample, ...]
    shots: tuple[TaskExample, ...] = ()

    @property
    def prefix(self) -> str:
        """The few-shot examples shown before every prompt."""
        return "".join(f"{s.prompt}{s.correct}\n\n" for s in self.shots)

    def columns(self) -> list[str]:
        """The stable column names this task writes (docs/tasks.md)."""
        cols = [f"task.{self.name}.bpb", f"task.{self.name}.bpb_clm"]
        return cols + ([f"task.{self.name}.acc", f"task.{self.name}.acc_clm"] if self.kind == CHOICE else [])


def _example(obj, where: str) -> tuple[TaskExample, bool]:
    """One line's object as (example, is a shot); UserError naming `where` (file:line)."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"prompt", "answer", "choices", "label", "shot"})
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (known: prompt, answer, choices, label, shot)")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise UserError(f"{where}: 'prompt' must be a non-empty string")
    shot = obj.get("shot", False)
    if not isinstance(shot, bool):
        raise UserError(f"{where}: 'shot' must be true or false, got {shot!r}")
    if ("answer" in obj) == ("choices" in obj):
        raise UserError(f"{where}: give either 'answer' (generative) or 'choices' and 'label' (multiple choice)")
    if "answer" in obj:
        if "label" in obj:
            raise UserError(f"{where}: 'label' belongs to multiple choice ('choices'), not to an 'answer'")
        if not isinstance(obj["answer"], str) or not obj["answer"]:
            raise UserError(f"{where}: 'answer' must be a non-empty string")
        return TaskExample(prompt, answer=obj["answer"]), shot
    choices, label = obj["choices"], obj.get("label")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise UserError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise UserError(f"{where}: 'label' must be the index of the correct choice, 0..{len(choices) - 1}, got {label!r}")
    return TaskExample(prompt, choices=tuple(choices), label=label), shot


def read_task_file(path) -> Task:
    """A task file, checked: every line one example of one kind, at least one scored."""
    path = Path(path)
    if path.suffix != ".jsonl":
        raise UserError(f"{path}: a task file is .jsonl (one JSON object a line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: task file not found") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise UserError(f"{path}: not a UTF-8 text file") from None
    examples, shots, kind = [], [], None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg})") from None
        ex, shot = _example(obj, where)
        this = GENERATIVE if ex.answer is not None else CHOICE
        if kind is not None and this != kind:
            raise UserError(f"{where}: a {this} example in a file of {kind} ones (one kind per file)")
        kind = this
        (shots if shot else examples).append(ex)
    if not examples:
        raise UserError(f"{path}: no examples to score")
    return Task(path.stem, kind, tuple(examples), tuple(shots))


def checked_eval_list(names, where: str, resolve=lambda name: name) -> list[str]:
    """A run's `eval` list as a run records it: built-in names as they are, task files read
    and checked now (before anything runs), their paths as `resolve` makes them (absolute:
    a run reads them later, from its own directory). `where` names the setting in errors."""
    out = []
    for name in names:
        if not isinstance(name, str) or not name:
            raise UserError(f"{where}: {name!r} is not a task name or file")
        if name in BUILTIN_NAMES:
            out.append(name)
        elif name.endswith(".jsonl"):
            out.append(resolve(name))
            try:
                read_task_file(out[-1])
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
        else:
            raise UserError(f"{where}: {name!r} is neither a built-in task ({', '.join(BUILTIN_NAMES)}) "
                            f"nor a .jsonl task file")
    stems = [Path(n).stem for n in out]
    dup = next((s for s in stems if stems.count(s) > 1), None)
    if dup:
        raise UserError(f"{where}: two tasks named {dup!r} (a task's columns are named by its file's stem)")
    return out


def scored_rows(names) -> int:
    """How many rows (example x option) the tasks `names` score at a point, at most: the
    plan's estimate of their cost (a built-in task may find fewer examples in small data)."""
    rows = {"docsum": BUILTIN_EXAMPLES, "nextsent": BUILTIN_EXAMPLES * NEXTSENT_CHOICES}
    return sum(rows[n] if n in rows else sum(len(ex.options) for ex in read_task_file(n).examples) for n in names)


def write_task_file(path, task: Task) -> Path:
    """`task` as a task file (shots first): read_task_file gives it back."""
    def obj(ex: TaskExample, shot: bool) -> dict:
        d = {"prompt": ex.prompt, **({"answer": ex.answer} if ex.answer is not None
                                     else {"choices": list(ex.choices), "label": ex.label})}
        return {**d, "shot": True} if shot else d

    lines = [obj(s, True) for s in task.shots] + [obj(e, False) for e in task.examples]
    path = Path(path)
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in lines), encoding="utf-8")
    return path


@dataclass
class EncodedTask:
    """A task as rows to score, one per (example, option): the cut prompt and answer ids, the
    answer's UTF-8 bytes (bpb's denominator), and which example and option the row is."""

    task: Task
    prompts: list[np.ndarray] = field(repr=False)
    answers: list[np.ndarray] = field(repr=False)
    n_bytes: np.ndarray = field(repr=False)     # (rows,) bytes of each row's (kept) answer
    example: np.ndarray = field(repr=False)     # (rows,) index of the example
    option: np.ndarray = field(repr=False)      # (rows,) index of the option (0 for generative)
    labels: np.ndarray = field(repr=False)      # (examples,) the correct option of each example

    @property
    def n_rows(self) -> int:
        return len(self.prompts)


def encode_task(task: Task, tokenizer, window: int, normalise=lambda texts: texts) -> EncodedTask:
    """`task`'s rows for a model of `window` positions, tokenised by `tokenizer`
    (`.encode_batch`, `.decode`) after `normalise` (the shards' spoken form, where used)."""
    if window < 4:
        raise UserError(f"task {task.name}: a window of {window} positions is too short to score a task")
    prefix = task.prefix
    prompts = tokenizer.encode_batch(normalise([prefix + ex.prompt for ex in task.examples]))
    options = [o for ex in task.examples for o in ex.options]
    option_ids = iter(tokenizer.encode_batch(normalise(options)))
    normal = iter(normalise(options))
    rows = ([], [], [], [], [])
    for e, (ex, p) in enumerate(zip(task.examples, prompts)):
        ids = [np.asarray(next(option_ids), dtype=np.int64) for _ in ex.options]
        texts = [next(normal) for _ in ex.options]
        if any(len(a) == 0 for a in ids):
            raise UserError(f"task {task.name}: example {e + 1} has an answer with no tokens after normalisation")
        cut = min(window // 2, max(len(a) for a in ids))
        p = np.asarray(p, dtype=np.int64)[-(window - cut):] if len(p) else np.asarray(p, dtype=np.int64)
        if len(p) == 0:
            raise UserError(f"task {task.name}: example {e + 1} has a prompt with no tokens after normalisation")
        for o, (a, text) in enumerate(zip(ids, texts)):
            kept = a[:cut]
            # Bytes of what is scored: the whole answer's, or the kept tokens' text when cut.
            n = len(text.encode("utf-8")) if len(kept) == len(a) else len(tokenizer.decode(kept.tolist()).encode("utf-8"))
            for part, v in zip(rows, (p, kept, max(n, 1), e, o)):
                part.append(v)
    labels = np.array([ex.label for ex in task.examples], dtype=np.int64)
    return EncodedTask(task, rows[0], rows[1], np.array(rows[2], dtype=np.float64),
                       np.array(rows[3], dtype=np.int64), np.array(rows[4], dtype=np.int64), labels)


def chance(task: Task) -> float:
    """The accuracy of guessing: the mean of 1 / choices (NaN for a generative task)."""
    if task.kind != CHOICE:
        return math.nan
    return float(np.mean([1 / len(ex.choices) for ex in task.examples]))
