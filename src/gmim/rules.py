"""What values a setting takes: each configuration field declares its rule where it is declared.

A section of a command's configuration is a dataclass deriving from :class:`Section`, whose fields
say their rule with :func:`setting`::

    @dataclass
    class MaskingConfig(Section):
        base_ratio: float = setting(0.5, between(0, 1, low_open=True))

Building a section, from Python or by :func:`gmim.config.load_config`, checks every field against its
rule, then the rules between fields (:meth:`Section.check`). A wrong value raises
:class:`SettingError`, which names the key, the value and what is allowed; the loader adds where the
value came from (``--set masking.base_ratio=1.5``, a flag, or a YAML file). The loader checks the
types first, so ``bool`` and ``Literal`` fields need no rule; every other field declares one, or
:data:`ANY_VALUE` where any value of its type is right. Null, where the type allows it, is never
refused by a rule.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gmim.errors import InputError

__all__ = [
    "ANY_VALUE",
    "RULE",
    "Rule",
    "Section",
    "SettingError",
    "at_least",
    "between",
    "each",
    "matches",
    "multiple_of",
    "non_empty",
    "plain",
    "rule_of",
    "satisfies",
    "setting",
]

#: The key of a field's rule in its ``dataclasses.field`` metadata.
RULE = "gmim.rule"


def plain(value: Any) -> Any:
    """``value`` as YAML writes it: tuples as lists, so that messages show what the user typed."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class SettingError(InputError):
    """A setting out of its rule: ``'key' must be …, got value``. ``key`` is relative to the section
    that raised it until the sections above prefix it (:meth:`within`); ``related`` are the other keys
    a rule between fields reads, any of which the user may have set."""

    def __init__(self, key: str, value: Any, problem: str, related: Sequence[str] = ()) -> None:
        self.key, self.value, self.problem, self.related = key, value, problem, tuple(related)
        super().__init__(f"'{key}' {problem}, got {plain(value)!r}")

    def within(self, section: str) -> SettingError:
        """The same error with its keys inside ``section``."""
        return SettingError(f"{section}.{self.key}", self.value, self.problem, [f"{section}.{k}" for k in self.related])


@dataclass(frozen=True)
class Rule:
    """What a field allows, in words (``allowed``, completing "must be …"), and its test. A test that
    raises ``TypeError`` or ``ValueError`` refuses the value. ``empty_allowed``: an empty list or mapping
    means something (e.g. "from the data") and is not refused."""

    allowed: str
    test: Callable[[Any], bool]
    empty_allowed: bool = False
    #: Values the rule refuses, for the tests that give every field a wrong value.
    outside: tuple[Any, ...] = ()

    def problem(self, value: Any) -> str | None:
        """ "must be …" when ``value`` breaks the rule; None when it keeps it."""
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError, ArithmeticError):
            ok = False
        return None if ok else f"must be {self.allowed}"


#: For fields where any value of the field's type is right.
ANY_VALUE = Rule("any value", lambda value: True, empty_allowed=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number in [low, high], either end open on request."""
    text = f"{'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
    outside = (low if low_open else low - 1, high if high_open else high + 1)
    return Rule(
        f"in {text}",
        lambda v: _finite(v) and (low < v if low_open else low <= v) and (v < high if high_open else v <= high),
        outside=outside,
    )


def at_least(low: float) -> Rule:
    """A finite number >= ``low``."""
    return Rule(f">= {_number(low)}", lambda v: _finite(v) and v >= low, outside=(low - 1,))


def positive() -> Rule:
    """A finite number > 0."""
    return Rule("positive and finite", lambda v: _finite(v) and v > 0, outside=(0, -1))


def multiple_of(step: int) -> Rule:
    """A positive multiple of ``step``."""
    return Rule(f"a positive multiple of {step}", lambda v: _finite(v) and v > 0 and v % step == 0, outside=(0, step + 1, -step))


def each(rule: Rule, *, empty_allowed: bool = False, distinct: bool = False) -> Rule:
    """A list (or a mapping's values, under non-empty names) whose every item keeps ``rule``;
    non-empty unless ``empty_allowed`` (also for a tuple whose type fixes its length); with
    ``distinct``, no value twice."""

    def test(values: Any) -> bool:
        items = list(values.values()) if isinstance(values, dict) else list(values)
        if not items and not empty_allowed:
            return False
        if distinct and len(set(map(repr, items))) != len(items):
            return False
        return all(rule.problem(item) is None for item in items) and (
            not isinstance(values, dict) or all(isinstance(k, str) and k.strip() for k in values)
        )

    words = ", ".join([*([] if empty_allowed else ["non-empty"]), *(["distinct"] if distinct else []), f"each value {rule.allowed}"])
    return Rule(words, test, empty_allowed, outside=tuple([value] for value in rule.outside))


def non_empty() -> Rule:
    """Text with something in it besides blanks."""
    return Rule("a non-empty text", lambda v: isinstance(v, str) and bool(v.strip()), outside=("", "  "))


def matches(pattern: str, allowed: str, outside: tuple[str, ...] = ("",)) -> Rule:
    """Text that ``pattern`` matches in full."""
    compiled = re.compile(pattern)
    return Rule(allowed, lambda v: isinstance(v, str) and compiled.fullmatch(v) is not None, outside=outside)


def satisfies(problem: Callable[[Any], str | None], allowed: str, outside: tuple[Any, ...]) -> Rule:
    """A value for which ``problem`` (a function saying what is wrong, or None) finds nothing; the
    message gives its words after ``allowed``."""

    class Described(Rule):
        def problem(self, value: Any) -> str | None:
            try:
                found = problem(value)
            except (TypeError, ValueError, ArithmeticError):
                found = "a value of another kind"
            return None if found is None else f"must be {allowed} ({found})"

    return Described(allowed, lambda v: problem(v) is None, outside=outside)


def setting(default: Any = dataclasses.MISSING, rule: Rule | None = None, *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its ``rule``: ``setting(0.5, between(0, 1))``, or with a ``factory``
    for a mutable default."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={RULE: rule})
    return dataclasses.field(default=default, metadata={RULE: rule})


def rule_of(cls: type, name: str) -> Rule | None:
    """The rule of field ``name`` of the dataclass ``cls``, declared there or, where a subclass only
    changes the default (``steps: int | None = 4000``), in the class it derives from."""
    for klass in cls.__mro__:
        fields = {f.name: f for f in dataclasses.fields(klass)} if dataclasses.is_dataclass(klass) else {}
        if name in fields and RULE in fields[name].metadata:
            return fields[name].metadata[RULE]
    return None


class Section:
    """A configuration section whose fields are checked against their rules when it is built."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field against its rule, then :meth:`check`; sections inside were checked
        when they were built."""
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            rule = rule_of(type(self), field.name)
            if rule is None or value is None:
                continue
            problem = rule.problem(value)
            if problem is not None:
                raise SettingError(field.name, value, problem)
        self.check()

    def check(self) -> None:
        """The rules between this section's fields (none unless a section says so)."""
