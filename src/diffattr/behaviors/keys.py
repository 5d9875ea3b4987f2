"""Behavior keys: a behavior's name and the feature space it is measured in.

Every measured value is keyed ``name[space]`` (``fid[digits-cnn]``, ``is[inception]``) so
nobody mistakes a metric in a small offline classifier's space for Inception FID.
A local behavior attributed per generated image is keyed ``name[space]#i`` (image i,
``ssim[pixel]#3``). ``BehaviorKey`` parses and prints that form in one place; plain data,
no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffattr.errors import DiffattrError

#: Behaviors where a smaller value is better (everything else: larger is better).
LOWER_IS_BETTER = frozenset({"fid", "mse", "nrmse", "denoising-loss"})


@dataclass(frozen=True, order=True)
class BehaviorKey:
    name: str
    space: str | None = None
    image: int | None = None  # the generated image of a per-image local behavior

    @classmethod
    def parse(cls, text: str) -> BehaviorKey:
        """``"fid[digits-cnn]"`` -> ``BehaviorKey("fid", "digits-cnn")``; ``"fid"`` has no
        space; ``"ssim[pixel]#3"`` is image 3 of ``ssim[pixel]``."""
        text = str(text).strip()
        base, hash_, index = text.rpartition("#") if "#" in text else (text, "", "")
        if hash_:
            if not index.isdigit() or not base:
                raise DiffattrError(f"not a behavior key: {text!r} (expected name[space]#image)")
            key = cls.parse(base)
            return cls(key.name, key.space, int(index))
        if "[" not in text:
            if not text or "]" in text:
                raise DiffattrError(f"not a behavior key: {text!r} (expected name[space])")
            return cls(text, None)
        name, _, rest = text.partition("[")
        if not name or not rest.endswith("]") or "[" in rest[:-1]:
            raise DiffattrError(f"not a behavior key: {text!r} (expected name[space])")
        return cls(name, rest[:-1])

    def __str__(self) -> str:
        out = self.name if self.space is None else f"{self.name}[{self.space}]"
        return out if self.image is None else f"{out}#{self.image}"

    @property
    def base(self) -> str:
        """The key without the image index: ``ssim[pixel]`` for ``ssim[pixel]#3``."""
        return self.name if self.space is None else f"{self.name}[{self.space}]"

    @property
    def lower_is_better(self) -> bool:
        return self.name in LOWER_IS_BETTER

    def matches(self, query: str) -> bool:
        """Whether ``query`` names this key: the full key, or the bare behavior name."""
        return query == str(self) or query == self.name or query == self.base


def image_key(base: str, image: int) -> str:
    """The key of generated image ``image`` of the local behavior ``base``."""
    return f"{base}#{int(image)}"


def split_image_key(key: str) -> tuple[str, int | None]:
    """``("ssim[pixel]", 3)`` for ``"ssim[pixel]#3"``; ``(key, None)`` for other keys."""
    base, hash_, index = str(key).rpartition("#")
    if hash_ and base and index.isdigit():
        return base, int(index)
    return str(key), None
