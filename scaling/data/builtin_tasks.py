"""Tasks in the box: two small deterministic tasks drawn from the validation split of any
shard directory whose text allows them, so no example was ever trained on (prepare.py puts
whole documents in one split or the other), and the names a run's `eval` list resolves.

- `docsum` (generative; the seed's MLSum in a bottle): a docstring's one-line summary given
  the rest of it. A paragraph of one line (12-120 characters, a capital first and a full stop
  last) followed by a paragraph of at least 40 characters: the prompt is the second
  paragraph and a blank line, the answer the one-line paragraph.
- `nextsent` (multiple choice, 4 choices): the true next sentence of a paragraph among three
  sentences from other validation documents. The prompt is a sentence and a space; the
  correct choice the sentence after it in the same paragraph.

The validation documents are the shards' own tokens decoded with their tokenizer (so the text
is in the shards' form: spoken-form shards have no paragraphs, and docsum is refused there).
At most MAX_EXAMPLES of each, spread over the split, at most one of each kind per document
before any second one; choices and the correct one's position from a fixed seed. The same
shard directory gives the same tasks, whatever the run.
"""

from __future__ import annotations

import re

import numpy as np

from scaling.base.errors import UserError
from scaling.data.layout import read_meta
from scaling.data.prepare import spoken_form
from scaling.data.shards import TokenShards
from scaling.data.tasks import BUILTIN_EXAMPLES, BUILTIN_NAMES, CHOICE, NEXTSENT_CHOICES, GENERATIVE, EncodedTask, Task, TaskExample, encode_task, read_task_file
from scaling.data.tokenizer_files import load_tokenizer

MAX_EXAMPLES = BUILTIN_EXAMPLES
N_CHOICES = NEXTSENT_CHOICES
SEED = 24
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def validation_texts(shards_dir) -> list[str]:
    """The validation split's documents, decoded (each without its <eos>)."""
    shards = TokenShards.open(shards_dir, "val")
    tok = load_tokenizer(shards_dir)
    starts = shards.doc_starts
    return [tok.decode(shards.tokens[starts[i]: starts[i + 1] - 1].tolist()) for i in range(len(starts) - 1)]


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _spread(per_doc: list[list], n: int) -> list:
    """Up to n items, first one from each document (round robin), in document order."""
    out, depth = [], 0
    while len(out) < n and any(len(c) > depth for c in per_doc):
        out += [c[depth] for c in per_doc if len(c) > depth][: n - len(out)]
        depth += 1
    return out


def _summary_line(p: str) -> bool:
    """A docstring's summary, by its look: one line, a capital first, a full stop last."""
    return "\n" not in p and 12 <= len(p) <= 120 and p[0].isupper() and p.endswith(".")


def docsum(texts: list[str], n: int = MAX_EXAMPLES) -> Task:
    per_doc = []
    for text in texts:
        paras = _paragraphs(text)
        per_doc.append([TaskExample(paras[i + 1] + "\n\n", answer=p) for i, p in enumerate(paras[:-1])
                        if _summary_line(p) and len(paras[i + 1]) >= 40])
    return Task("docsum", GENERATIVE, tuple(_spread(per_doc, n)))


def _sentences(text: str) -> list[list[str]]:
    return [[s.strip() for s in _SENTENCE_END.split(" ".join(p.split()))] for p in _paragraphs(text)]


def nextsent(texts: list[str], n: int = MAX_EXAMPLES) -> Task:
    ok = lambda s: 20 <= len(s) <= 200  # noqa: E731
    pairs = [[(a, b) for para in _sentences(t) for a, b in zip(para, para[1:]) if ok(a) and ok(b)] for t in texts]
    pool = [(d, b) for d, doc in enumerate(pairs) for _, b in doc]   # candidate wrong choices, by document
    chosen = _spread([[(d, a, b) for a, b in doc] for d, doc in enumerate(pairs)], n)
    rng = np.random.default_rng(SEED)
    examples = []
    for d, a, b in chosen:
        others = [s for doc, s in pool if doc != d and s != b]
        if len(set(others)) < N_CHOICES - 1:
            break
        wrong: list[str] = []
        while len(wrong) < N_CHOICES - 1:
            s = others[int(rng.integers(len(others)))]
            if s not in wrong:
                wrong.append(s)
        label = int(rng.integers(N_CHOICES))
        examples.append(TaskExample(a + " ", choices=tuple(wrong[:label] + [b] + wrong[label:]), label=label))
    return Task("nextsent", CHOICE, tuple(examples))


BUILTIN = {"docsum": docsum, "nextsent": nextsent}
assert tuple(BUILTIN) == BUILTIN_NAMES


def load_tasks(names, shards_dir) -> list[Task]:
    """The tasks of a run's `eval` list: built-in names (drawn from `shards_dir`'s validation
    split) and task files. UserError for an unknown name, a bad file, a built-in task the
    split has no examples for, or two tasks of one name."""
    tasks, texts = [], None
    for name in names:
        if name in BUILTIN:
            if texts is None:
                texts = validation_texts(shards_dir)
            task = BUILTIN[name](texts)
            if not task.examples:
                raise UserError(f"eval task {name}: the validation split of {shards_dir} has no examples for it "
                                f"(see docs/tasks.md for what it needs)")
        elif str(name).endswith(".jsonl"):
            task = read_task_file(name)
        else:
            raise UserError(f"eval task {name!r}: neither a built-in task ({', '.join(BUILTIN)}) nor a .jsonl task file")
        if any(t.name == task.name for t in tasks):
            raise UserError(f"eval task {name}: a second task named {task.name!r} (its columns would collide)")
        tasks.append(task)
    return tasks



def encode_tasks(names, shards_dir, window: int) -> list[EncodedTask]:
    """The tasks of `names` as rows for a model of `window` positions trained on
    `shards_dir`: tokenised by the shards' tokenizer, after their normalisation."""
    if not names:
        return []
    tasks = load_tasks(names, shards_dir)
    tok = load_tokenizer(shards_dir)
    spoken = bool(read_meta(shards_dir).get("spoken", False))
    normalise = (lambda texts: [spoken_form(t) for t in texts]) if spoken else (lambda texts: list(texts))
    return [encode_task(t, tok, window, normalise) for t in tasks]
