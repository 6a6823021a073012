"""The one exception type a user sees: a bad input, reported as a single line with exit code 2."""


def one_line(text: str) -> str:
    """`text` with every unprintable character escaped (newlines, and the record separators
    str.splitlines also breaks at, from a file name or a TOML value): an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class UserError(Exception):
    """A problem with what the user gave us (file, argument, run directory).

    The CLI prints ``error: <message>`` on one line and exits with code 2. The message should
    name what is wrong and where (file, key, column, path).
    """

    exit_code = 2


class WriteError(UserError, OSError):
    """A file of a run or a sweep could not be written: the disk is full, the directory is
    read-only or not ours. One line naming the file and the system's reason, exit code 2; the
    file it would have replaced is untouched (rundir.atomic_file). Also an OSError, so code that
    tolerates an unwritable cache (`except OSError`) keeps doing so."""


def first_line(e: BaseException) -> str:
    """An unexpected exception in one line: its type and the first line of its message."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__
