"""Converters: the exact upstream files of a converted named dataset -> its stored text file, byte for byte."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from longrec.data.readers import integer
from longrec.data.readers_columns import file_lines
from longrec.errors import DataError


def akt_folds(sources: Sequence[Path], out: IO[bytes]) -> None:
    """AKT `assist2017_pid_test{1..5}.csv` -> `user problem skill correct` lines. Each fold holds 4-line
    records (`student_index,original_id`, problems, skills, correct flags; an empty trailing field is dropped);
    records are sorted by student index (stable), one line written per event: the stored README's recipe."""
    records: list[tuple[int, list[list[str]]]] = []
    for path in sources:
        lines = [line for _, line in file_lines(path)]
        if len(lines) % 4:
            raise DataError(f"{path}: {len(lines)} lines is not a whole number of 4-line student records")
        for start in range(0, len(lines), 4):
            fields = [line.split(",") for line in lines[start : start + 4]]
            fields = [f[:-1] if f and not f[-1] else f for f in fields]
            if len({len(f) for f in fields[1:]}) != 1:
                raise DataError(f"{path}:{start + 2}: the problem, skill and correct lists differ in length")
            records.append((integer(fields[0][0], str(path), start + 1, "student_index"), fields[1:]))
    records.sort(key=lambda r: r[0])
    for user, (problems, skills, correct) in records:
        out.write("".join(f"{user} {p} {s} {c}\n" for p, s, c in zip(problems, skills, correct, strict=True)).encode())


def stan_npy(sources: Sequence[Path], out: IO[bytes]) -> None:
    """STAN `NYC.npy` (int32 [N, 3]: user, poi, minute) -> `user poi minute` lines, sorted stably by user and
    then by minute: the stored README's recipe."""
    (path,) = sources
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None
    if a.ndim != 2 or a.shape[1] != 3 or a.dtype.kind not in "iu":
        raise DataError(f"{path}: expected an integer array of shape (N, 3), got {a.dtype} {a.shape}")
    a = a[np.lexsort((a[:, 2], a[:, 0]))]
    for chunk in np.array_split(a, max(1, len(a) // 100_000)):
        out.write("".join(f"{u} {p} {m}\n" for u, p, m in chunk.tolist()).encode())


CONVERTERS: dict[str, Callable[[Sequence[Path], IO[bytes]], None]] = {"akt-folds": akt_folds, "stan-npy": stan_npy}
