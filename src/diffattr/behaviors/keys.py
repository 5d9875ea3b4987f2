"""Behavior keys: a behavior's name and the feature space it is measured in.

Every measured value is keyed ``name[space]`` (``fid[digits-cnn]``, ``is[inception]``) so
nobody mistakes a metric in a small offline classifier's space for Inception FID.
``BehaviorKey`` parses and prints that form in one place; plain data, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffattr.errors import DiffattrError

#: Behaviors where a smaller value is better (everything else: larger is better).
LOWER_IS_BETTER = frozenset({"fid"})


@dataclass(frozen=True, order=True)
class BehaviorKey:
    name: str
    space: str | None = None

    @classmethod
    def parse(cls, text: str) -> BehaviorKey:
        """``"fid[digits-cnn]"`` -> ``BehaviorKey("fid", "digits-cnn")``; ``"fid"`` has no
        space."""
        text = str(text).strip()
        if "[" not in text:
            if not text or "]" in text:
                raise DiffattrError(f"not a behavior key: {text!r} (expected name[space])")
            return cls(text, None)
        name, _, rest = text.partition("[")
        if not name or not rest.endswith("]") or "[" in rest[:-1]:
            raise DiffattrError(f"not a behavior key: {text!r} (expected name[space])")
        return cls(name, rest[:-1])

    def __str__(self) -> str:
        return self.name if self.space is None else f"{self.name}[{self.space}]"

    @property
    def lower_is_better(self) -> bool:
        return self.name in LOWER_IS_BETTER

    def matches(self, query: str) -> bool:
        """Whether ``query`` names this key: the full key, or the bare behavior name."""
        return query == str(self) or query == self.name
