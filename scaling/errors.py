"""The one exception type a user sees: a bad input, reported as a single line with exit code 2."""


class UserError(Exception):
    """A problem with what the user gave us (file, argument, run directory).

    The CLI prints ``error: <message>`` on one line and exits with code 2. The message should
    name what is wrong and where (file, key, column, path).
    """

    exit_code = 2
