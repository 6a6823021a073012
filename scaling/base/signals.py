"""Holding submitit's checkpoint signal (USR2) back until a step boundary.

Torch-free on purpose: a sweep job blocks the signal before it imports torch or starts any
thread, since threads inherit the mask and a signal taken by another thread makes the main
thread run the handler at its next bytecode, i.e. mid-step.
"""

from __future__ import annotations

import contextlib
import signal
import threading


def hold_checkpoint_signal() -> set | None:
    """Block USR2 (submitit's checkpoint signal) in the calling thread, before any other
    thread starts: threads inherit the mask, so none of them can take the signal and have the
    main thread run the handler mid-step. The trainer lets it through only at step
    boundaries (on_train_batch_end). Returns the previous mask for release_checkpoint_signal."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})


def release_checkpoint_signal(previous: set | None) -> None:
    if previous is not None and signal.SIGUSR2 not in previous:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})


@contextlib.contextmanager
def checkpoint_signal_held():
    """`with checkpoint_signal_held():` blocks USR2 for the block (see hold_checkpoint_signal)
    and gives the caller back its own mask after it."""
    held = hold_checkpoint_signal()
    try:
        yield
    finally:
        release_checkpoint_signal(held)
