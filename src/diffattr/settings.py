"""Typed settings of registered things, and the registries that name them.

Every registered thing of diffattr (dataset, model family, counterfactual method, coalition
sampler, estimator, behavior, feature space, executor) owns a pydantic settings model: a
subclass of :class:`Component` whose ``name`` is the tag of a tagged union. A config file
names a thing and sets its fields in one table::

    [method]
    name = "sft"
    ratio = 0.3
    steps = 200

and :meth:`ComponentRegistry.parse` turns that table (or the bare string ``"sft"``) into
``SFTSettings(ratio=0.3, steps=200)``, with a one-line error naming the key and the choices
for anything it does not know. Settings modules import only pydantic, so a whole run plan is
validated in well under a second, before torch or diffusers are imported.

The implementation of a thing is named by ``Component.implementation`` (``"module:attr"``)
and imported only when it is built (:meth:`Component.implementation_class`).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from diffattr.errors import DiffattrError


class Settings(BaseModel):
    """Base of every settings model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/TOML-ready), unset optional fields left out."""
        return self.model_dump(mode="json", exclude_none=True)


class Component(Settings):
    """Settings of one registered thing; ``name`` is the tag that selects the class.

    Subclasses fix ``name`` with a ``Literal`` default and may set:

    * ``kind`` (class variable): what the thing is, e.g. ``"counterfactual method"``;
    * ``implementation`` (class variable): ``"package.module:Attribute"`` of the code that
      runs it, imported on demand by :meth:`implementation_class`.
    """

    name: str
    kind: ClassVar[str] = "component"
    implementation: ClassVar[str | None] = None

    @classmethod
    def implementation_class(cls) -> Any:
        if not cls.implementation:
            raise DiffattrError(f"{cls.kind} {cls.model_fields['name'].default!r} has no code")
        module, _, attr = cls.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)


C = TypeVar("C", bound=Component)


def format_validation_error(error: ValidationError, where: str, model: type | None = None) -> str:
    """The first error of a pydantic ``ValidationError`` as one line: ``where.key: message``.

    For an unknown key the message lists the keys the model knows (and the closest one).
    """
    err = error.errors()[0]
    loc = [f"[{x}]" if isinstance(x, int) else str(x) for x in err["loc"]]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, DiffattrError):
        # raised by a nested registry parse: its message starts with the field's own name
        parent = _join([where, *loc[:-1]])
        return f"{parent}.{cause}" if parent else str(cause)
    key = _join([where, *loc])
    if err["type"] == "extra_forbidden" and model is not None:
        known = _known_keys(model, err["loc"][:-1])
        bad = loc[-1] if loc else "?"
        hint = difflib.get_close_matches(bad, known, n=1)
        msg = f"unknown setting {bad!r}"
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        if known:
            msg += f"; known: {', '.join(known)}"
        return f"{key}: {msg}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{key}: {msg}"


def _join(parts: list[str]) -> str:
    out = ""
    for p in parts:
        if not p:
            continue
        out += p if (not out or p.startswith("[")) else f".{p}"
    return out


def _known_keys(model: type, loc: tuple) -> list[str]:
    """Field names of the (nested) settings model at ``loc`` inside ``model``."""
    node: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(node, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        node = _model_of(ann)
        if node is None:
            return []
    fields = getattr(node, "model_fields", None)
    return sorted(fields) if fields else []


def _model_of(annotation: Any) -> type | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


class ComponentRegistry(Generic[C]):
    """Settings classes by name: the tagged union of one kind of registered thing.

    >>> METHODS = ComponentRegistry("counterfactual method", MethodSettings)
    >>> @METHODS.register
    ... class SFTSettings(MethodSettings):
    ...     name: Literal["sft"] = "sft"
    """

    def __init__(self, kind: str, base: type[C]) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[C]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, cls: type[C], *, aliases: Iterable[str] = ()) -> type[C]:
        name = cls.model_fields["name"].default
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__name__}.name needs a string default (its registry name)")
        if not issubclass(cls, self.base):
            raise TypeError(f"{cls.__name__} is not a {self.base.__name__}")
        if name in self._classes or name in self._aliases:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._classes[name] = cls
        for a in aliases:
            self._aliases[a] = name
        return cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in self._aliases

    def canonical(self, name: str) -> str:
        return self._aliases.get(name, name)

    def get(self, name: str) -> type[C]:
        """The settings class registered as ``name`` (or an alias); unknown -> one-line error."""
        cls = self._classes.get(self.canonical(name))
        if cls is None:
            hint = difflib.get_close_matches(str(name), list(self._classes), n=1)
            msg = f"unknown {self.kind} {name!r}"
            if hint:
                msg += f" (did you mean {hint[0]!r}?)"
            raise DiffattrError(f"{msg}; choose one of: {', '.join(self.names())}")
        return cls

    def parse(self, value: Any, where: str | None = None) -> C:
        """A name, a table ``{name = ..., setting = ...}`` or a settings object -> settings.

        Errors are one-line ``DiffattrError`` messages prefixed by ``where``.
        """
        where = where or self.kind
        if isinstance(value, self.base):
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise DiffattrError(
                f"{where}: expected a {self.kind} name or a table with 'name', got {value!r}"
            )
        if "name" not in value:
            choices = ", ".join(self.names())
            raise DiffattrError(
                f"{where}: missing 'name' (the {self.kind}); choose one of: {choices}"
            )
        try:
            cls = self.get(str(value["name"]))
        except DiffattrError as e:
            raise DiffattrError(f"{where}.name: {e}") from None
        data = dict(value, name=cls.model_fields["name"].default)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise DiffattrError(format_validation_error(e, where, cls)) from None

    def parse_nested(self, value: Any) -> C:
        """``parse`` inside a pydantic validator of a field holding this kind: the error
        becomes a ``ValueError`` whose message pydantic prefixes with the field's place."""
        if isinstance(value, self.base):
            return value
        try:
            return self.parse(value, "@")
        except DiffattrError as e:
            msg = str(e).removeprefix("@: ").removeprefix("@.").removeprefix("name: ")
            raise ValueError(msg) from None

    def defaults(self, name: str) -> C:
        return self.get(name)()
