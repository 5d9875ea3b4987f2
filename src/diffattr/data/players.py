"""Players: the unit of credit (each image, or each contributor) and masks over them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffattr.data.base import ImageDataset
from diffattr.errors import DiffattrError


@dataclass(frozen=True)
class Players:
    """Maps player ids 0..n-1 to names and to the sample indices they own.

    A boolean mask over players selects the kept data: ``players.indices(mask)``.
    """

    names: tuple[str, ...]
    members: tuple[np.ndarray, ...]  # sample indices of each player
    unit: str
    n_samples: int

    def __post_init__(self) -> None:
        if len(self.names) != len(self.members):
            raise DiffattrError("players: one member list per name is required")
        if len(set(self.names)) != len(self.names):
            raise DiffattrError("players: names must be unique")
        for name, m in zip(self.names, self.members):
            if len(m) == 0:
                raise DiffattrError(f"player {name!r} owns no data")
        if not self.names:
            raise DiffattrError("players: there are no players")

    @classmethod
    def from_groups(cls, groups: Sequence[str], unit: str = "contributor") -> Players:
        """One player per distinct value of ``groups`` (per-sample group names), sorted."""
        arr = np.asarray(list(groups), dtype=object)
        names = sorted(set(arr.tolist()), key=_natural_key)
        members = tuple(np.flatnonzero(arr == n) for n in names)
        return cls(tuple(names), members, unit, len(arr))

    @classmethod
    def from_dataset(cls, dataset: ImageDataset, unit: str = "contributor") -> Players:
        if unit == "sample":
            return cls(
                tuple(dataset.ids),
                tuple(np.array([i]) for i in range(len(dataset))),
                "sample",
                len(dataset),
            )
        if unit == "contributor":
            return cls.from_groups(dataset.contributor_of(), "contributor")
        raise DiffattrError(f"unknown player unit {unit!r}; use 'sample' or 'contributor'")

    def __len__(self) -> int:
        return len(self.names)

    def check_mask(self, mask: np.ndarray | Sequence[bool]) -> np.ndarray:
        m = np.asarray(mask)
        if m.shape != (len(self),):
            raise DiffattrError(f"mask has shape {m.shape}; expected ({len(self)},) over players")
        if m.dtype != bool:
            if not np.isin(m, (0, 1)).all():
                raise DiffattrError("mask entries must be 0/1 or booleans")
            m = m.astype(bool)
        return m

    def indices(self, mask: np.ndarray | Sequence[bool]) -> np.ndarray:
        """Sorted sample indices owned by the players kept in ``mask``."""
        m = self.check_mask(mask)
        kept = [self.members[i] for i in np.flatnonzero(m)]
        if not kept:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate(kept)).astype(np.int64)

    def sizes(self) -> np.ndarray:
        return np.array([len(m) for m in self.members])


def _natural_key(s: str) -> tuple:
    return (0, int(s), "") if str(s).isdigit() else (1, 0, str(s))
