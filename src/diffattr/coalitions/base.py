"""The sampler interface shared by every coalition sampler.

A coalition is a boolean mask over ``n_players`` players. A sampler emits masks row by
row; row ``r`` depends only on ``(seed, r)`` (a random generator seeded from
``SeedSequence(seed, spawn_key=(unit,))`` where the unit is the row, the pair or the
permutation the row belongs to), so ``sample(m)`` is deterministic given the seed and
the first ``m`` rows of ``sample(m2)`` equal ``sample(m)`` for every ``m2 > m``: raising the
number of coalitions extends a run instead of replacing it. ``rows(start, stop)`` gives
any window of that stream, so a pipeline can evaluate only the new rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from diffattr.errors import DiffattrError


def unit_rng(seed: int, unit: int) -> np.random.Generator:
    """The generator of one sampling unit (a row, a pair or a permutation)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(unit,))))


def check_count(value: Any, what: str, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``, or a one-line DiffattrError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DiffattrError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise DiffattrError(f"{what} must be >= {minimum}, got {value}")
    return int(value)


class CoalitionSampler(ABC):
    """Base class: ``sample(m)`` returns an ``(m, n_players)`` bool array.

    Subclasses set ``name`` and implement ``_row(r)`` (the mask of row ``r``); they may
    override ``rows`` when rows share work (permutations) and set ``n_required`` when the
    design is a fixed, finite list of masks (leave-one-out, add-one-in).
    """

    name: ClassVar[str] = ""
    #: Number of masks the design needs in full, or None for an unbounded random stream.
    n_required: int | None = None
    #: Most rows the stream has (distinct designs run out), or None for no limit.
    max_rows: int | None = None
    min_players: ClassVar[int] = 1
    #: Whether rows come in antithetic pairs: rows ``2j`` and ``2j + 1`` are a mask and its
    #: complement (see :meth:`pair_ids`).
    paired: bool = False

    def __init__(self, n_players: int, seed: int = 0) -> None:
        self.n_players = check_count(n_players, "n_players", self.min_players)
        self.seed = check_count(seed, "seed", 0)

    def settings(self) -> dict[str, Any]:
        """Everything needed to rebuild this sampler: name, n_players, seed and options."""
        return {"sampler": self.name, "n_players": self.n_players, "seed": self.seed}

    def sample(self, m: int) -> np.ndarray:
        """The first ``m`` masks of this sampler's stream, shape ``(m, n_players)``, bool."""
        m = check_count(m, "number of coalitions m", 0)
        return self.rows(0, m)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start .. stop-1`` of the stream (clipped to ``n_required`` if finite)."""
        start = check_count(start, "start", 0)
        stop = check_count(stop, "stop", 0)
        if self.n_required is not None:
            stop = min(stop, self.n_required)
        if self.max_rows is not None:  # a design drawn without replacement runs out
            stop = min(stop, self.max_rows)
        stop = max(stop, start)
        out = np.zeros((stop - start, self.n_players), dtype=bool)
        for k, r in enumerate(range(start, stop)):
            out[k] = self._row(r)
        return out

    def pair_ids(self, rows: np.ndarray | list[int]) -> np.ndarray | None:
        """The pair of each stream row ``rows`` (row ``r`` is in pair ``r // 2``), or None.

        For paired samplers this is what a caller puts in ``CoalitionTable.pair_ids`` for
        the rows it evaluated (in any order, with any rows missing): the estimator then
        drops a row whose partner is missing instead of treating the table as unpaired.
        Unpaired samplers return None.
        """
        if not self.paired:
            return None
        r = np.asarray(rows, dtype=np.int64).reshape(-1)
        if (r < 0).any():
            raise DiffattrError("stream row indices must be >= 0")
        return r // 2

    @abstractmethod
    def _row(self, r: int) -> np.ndarray: ...

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "sampler")
        return f"{type(self).__name__}({args})"


class DistinctRows:
    """Rows drawn without replacement from a stream of i.i.d. draws: row ``j`` takes draws
    from its own generator ``unit_rng(seed, j)`` until one is not among rows ``0 .. j-1``.
    Rows are made in order and kept, so row ``r`` is still a function of ``(seed, r)`` and a
    prefix of any longer sample. ``capacity`` is the number of distinct rows there are."""

    def __init__(self, seed: int, capacity: int, draw: Any, what: str) -> None:
        self.seed, self.capacity, self.draw, self.what = seed, capacity, draw, what
        self._rows: list[np.ndarray] = []
        self._seen: set[bytes] = set()
        self._n: int | None = None

    def row(self, r: int) -> np.ndarray:
        while len(self._rows) <= r:
            j = len(self._rows)
            if j >= self.capacity:
                raise DiffattrError(
                    f"the {self.what} sampler has drawn all {self.capacity} of its coalitions; "
                    "there are no more"
                )
            rng = unit_rng(self.seed, j)
            while True:
                mask = self.draw(rng)
                key = np.packbits(mask).tobytes()
                if key not in self._seen:
                    break
            self._n = mask.shape[0]
            self._seen.add(key)
            self._rows.append(np.packbits(mask))
        return np.unpackbits(self._rows[r], count=self._n).astype(bool)


def uniform_subset(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """A bool mask with exactly ``size`` of ``n`` entries true, uniform over such masks."""
    mask = np.zeros(n, dtype=bool)
    if size <= n - size:
        mask[rng.choice(n, size=size, replace=False)] = True
    else:
        mask[:] = True
        mask[rng.choice(n, size=n - size, replace=False)] = False
    return mask
