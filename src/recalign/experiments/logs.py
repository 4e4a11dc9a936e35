"""Experiments that run seeds in parallel processes: `pool_map` runs them, and every progress
line a process writes to stderr starts with its label (`[seed N] `), whole lines at a time."""

from __future__ import annotations

import multiprocessing as mp
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any


def pool_map(fn: Callable, args: list[tuple], jobs: int) -> list[Any]:
    """`[fn(*a) for a in args]`, `jobs` at a time in spawned processes (in this process when
    `jobs` is 1 or there is at most one call); results in the order of `args`."""
    if jobs <= 1 or len(args) <= 1:
        return [fn(*a) for a in args]
    with ProcessPoolExecutor(max_workers=min(jobs, len(args)), mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(fn, *zip(*args)))


class LabelledStream:
    """A text stream that starts every line it passes on to `stream` with `label` (also after a
    carriage return: progress bars), writing whole lines at a time so that the lines of parallel
    processes do not mix mid-line. Other attributes (isatty, fileno, encoding) are the stream's."""

    def __init__(self, stream, label: str):
        self.stream, self.label, self.buffer, self.at_start = stream, label, "", True

    def write(self, text: str) -> int:
        self.buffer += text
        cut = max(self.buffer.rfind("\n"), self.buffer.rfind("\r")) + 1
        if cut:
            self._emit(self.buffer[:cut])
            self.buffer = self.buffer[cut:]
        return len(text)

    def _emit(self, text: str) -> None:
        if not text:
            return
        out = re.sub(r"([\n\r])(?=[^\n\r])", lambda m: m.group(1) + self.label, text)
        self.stream.write((self.label if self.at_start and text[0] not in "\r\n" else "") + out)
        self.at_start = text[-1] in "\r\n"

    def flush(self) -> None:
        self._emit(self.buffer)
        self.buffer = ""
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextmanager
def labelled_stderr(label: str) -> Iterator[None]:
    """Every line written to `sys.stderr` meanwhile (ours, the training loop's, warnings) starts
    with `label`."""
    old = sys.stderr
    sys.stderr = stream = LabelledStream(old, label)
    try:
        yield
    finally:
        stream.flush()
        sys.stderr = old
