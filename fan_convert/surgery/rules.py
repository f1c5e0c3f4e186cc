"""The rule table: the one place that decides what each module becomes.

A :class:`Rule` matches a module (by class, optionally narrowed by a predicate on its attributes
or tensor shapes), names the layer that replaces it, builds that layer from the original (copying
its weights) and turns the layer back into a plain module for one frame count. The planner
(:func:`fan_convert.plan`, ``fan-convert inspect``), :func:`fan_convert.apply_plan`,
:func:`fan_convert.specialize` and the FAN-file loader all consult this table, and nothing else.

User rules are consulted before the built-in ones (in registration order), so a user rule can
claim a module a built-in rule would report as unsupported. Their names go into saved files.

Example (a fixed-T rule; see docs/conversion-rules.md for the whole recipe)::

    fan_convert.register_rule(fan_convert.Rule(
        name="mylib.time_table", kind="fixed_t", match=MyTimeTable, layer=InterpolatedTimeTable,
        note="temporal table interpolated to each clip"))
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from .. import extensions

__all__ = [
    "Rule", "BuildContext", "register_rule", "register_norm", "rules", "rule_named", "match", "near_miss",
    "fan_layer_types", "user_rule_names", "known_norm_types", "leaf_types", "unregister_rule", "missing_rules", "KINDS",
    "register_integration", "model_defaults",
]

KINDS = ("norm", "alteration", "fixed_t")


@dataclass(frozen=True)
class BuildContext:
    """What a rule's ``build`` may need: the module's path, the trained frame counts (keys), the
    frame count the weights were trained at, the alteration kernel size, and the model the
    module sits in (``root``: e.g. a transformers model's shared config)."""

    path: str = ""
    keys: tuple[int, ...] = ()
    trained_at: int | None = None
    kernel_size: int = 1
    root: nn.Module | None = None


def _default_build(rule: "Rule", module: nn.Module, ctx: BuildContext) -> nn.Module:
    if rule.kind == "fixed_t":
        return rule.layer(module, trained_frames=ctx.trained_at)
    if rule.kind == "norm":
        return rule.layer(module, ctx.keys, default_key=ctx.trained_at, site=ctx.path)
    return rule.layer(module, ctx.keys, site=ctx.path)


@dataclass(frozen=True)
class Rule:
    """One conversion rule.

    Args:
        name: unique name, recorded in plans and saved files (e.g. ``"mylib.time_table"``).
        kind: ``"norm"``, ``"alteration"`` or ``"fixed_t"``.
        match: the class(es) the rule applies to: classes, or ``"package.module:Class"`` strings,
            resolved only once ``package`` has been imported (a model holding that class has
            imported it), so a rule never imports a library by itself.
        subclasses: also match subclasses (default: exact classes only; a fixed-T subclass that
            is not matched is reported unsupported, since its forward may differ).
        when: optional predicate on the module (attributes, parameter shapes); the rule applies
            only where it returns True.
        layer: the layer class the module becomes; None makes matching modules *unsupported*
            sites (reported, left alone).
        build: ``build(module, ctx) -> layer`` (default: ``layer(module, trained_frames=...)`` for
            fixed-T rules, ``layer(module, keys, ...)`` for norms and alterations). It must copy
            the original's weights and keep its parameter names.
        specialize: ``specialize(layer, frames) -> plain module`` for one frame count (default:
            ``layer.specialize(frames)``).
        note: the plan's note for a site: a string or ``note(module) -> str``.
        find: fixed-T rules only, when the class is not enough to decide: ``find(path, module,
            trained_at, observed) -> Site | None`` makes the site itself (None: not a site here,
            later rules are tried). ``observed`` maps ``id(module)`` to the ``(T in, T out)`` of
            each call on the example input (time on dim -3) when ``observe`` is set and an
            example was given, else it is None.
        observe: record the time steps in and out of matching modules on the example input.
        check: fixed-T rules only: ``check(module, ctx)`` raises ValueError when the module
            cannot serve the frame counts ``ctx.keys`` (e.g. a tubelet embedding of 2 frames
            and an odd key), so :func:`plan` refuses them as :func:`adapt` would.
    """

    name: str
    kind: str
    match: type | str | Sequence[type | str] = ()
    subclasses: bool = False
    when: Callable[[nn.Module], bool] | None = None
    layer: type | None = None
    build: Callable[[nn.Module, BuildContext], nn.Module] | None = None
    specialize: Callable[[nn.Module, int], nn.Module] | None = None
    note: str | Callable[[nn.Module], str] = ""
    find: Callable | None = None
    observe: bool = False
    check: Callable[[nn.Module, BuildContext], None] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a rule needs a non-empty string name, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"rule {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.layer is not None and not (isinstance(self.layer, type) and issubclass(self.layer, nn.Module)):
            raise TypeError(f"rule {self.name!r}: layer must be an nn.Module subclass, got {self.layer!r}")
        entries = (self.match,) if isinstance(self.match, (type, str)) else tuple(self.match)
        for entry in entries:
            if not (isinstance(entry, str) and ":" in entry) and not (isinstance(entry, type) and issubclass(entry, nn.Module)):
                raise TypeError(
                    f"rule {self.name!r}: match entries must be nn.Module classes or 'package.module:Class' strings, got {entry!r}")
        object.__setattr__(self, "match", entries)

    def types(self) -> tuple[type, ...]:
        """The matched classes that are importable now (string entries of unloaded packages skipped)."""
        return tuple(t for t in (_resolve(e) for e in self.match) if t is not None)

    def exact_match(self, module: nn.Module) -> bool:
        return type(module) in self.types()

    def applies_to(self, module: nn.Module) -> bool:
        types = self.types()
        hit = isinstance(module, types) if self.subclasses else type(module) in types
        return hit and (self.when is None or bool(self.when(module)))

    def make(self, module: nn.Module, ctx: BuildContext) -> nn.Module:
        """The layer replacing ``module``."""
        if self.layer is None:
            raise ValueError(f"rule {self.name!r} marks {type(module).__name__} unsupported; it has no layer to build")
        return (self.build or (lambda m, c: _default_build(self, m, c)))(module, ctx)

    def plain(self, layer: nn.Module, frames: int) -> nn.Module:
        """``layer`` specialised to ``frames``: the plain module for one frame count."""
        return self.specialize(layer, frames) if self.specialize else layer.specialize(frames)

    def describe(self, module: nn.Module) -> str:
        return self.note(module) if callable(self.note) else self.note


_resolved: dict[str, type | None] = {}


def _resolve(entry: type | str) -> type | None:
    if isinstance(entry, type):
        return entry
    if entry in _resolved:
        return _resolved[entry]
    module_name, _, qualname = entry.partition(":")
    if module_name.split(".")[0] not in sys.modules:
        return None  # the library is not loaded, so no model holds its classes
    try:
        found = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        found = None  # a version of the library without this class
    _resolved[entry] = found if isinstance(found, type) else None
    return _resolved[entry]


_user: list[Rule] = []
_builtin: list[Rule] = []
_integrated: list[Rule] = []  # integrations' rules: after the built-in ones, before the fallbacks
_fallback: list[Rule] = []
_defaults: list[Callable[[nn.Module], dict]] = []
_loaded = False


def _table() -> list[Rule]:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import builtin_rules

        for rule in builtin_rules.RULES:
            _add(_builtin, rule)
        for rule in builtin_rules.FALLBACK_RULES:
            _add(_fallback, rule)
        # integrations with other libraries, declared by the package root (fan_convert.extensions):
        # each registers its rules and defaults through register_integration()
        extensions.load_declared()
    return _user + _builtin + _integrated + _fallback


def register_integration(rules: Sequence[Rule], defaults: Callable[[nn.Module], dict] | None = None) -> None:
    """Add a library integration's rules to the built-in table (after the generic built-in rules,
    before the catch-all ones) and, optionally, ``defaults(model) -> dict``: plan options such as
    ``trained_at`` or ``frame_axis`` that models of that library imply (an empty dict when
    ``model`` is not one of them). Called once, by the integration module when it is imported:
    the package root declares the integrations (:mod:`fan_convert.extensions`), and the table
    imports them when it first loads."""
    for rule in rules:
        _add(_integrated, rule)
    if defaults is not None:
        _defaults.append(defaults)


def model_defaults(model: nn.Module) -> dict:
    """The plan options that ``model``'s library implies (see :func:`register_integration`)."""
    _table()
    found: dict = {}
    for defaults in _defaults:
        found = {**defaults(model), **found}
    return found


def _add(table: list[Rule], rule: Rule) -> None:
    for other in _user + _builtin + _integrated + _fallback:
        if other.name == rule.name:
            raise ValueError(f"a rule named {rule.name!r} is already registered; give the new rule another name")
        shared = (set(other.match) & set(rule.match)) | (set(other.types()) & set(rule.types()))
        if (other.kind == rule.kind and rule.when is None and other.when is None and rule.find is None
                and shared and other.subclasses == rule.subclasses):
            shared = next(iter(shared))
            shown = shared if isinstance(shared, str) else shared.__name__
            raise ValueError(
                f"rule {rule.name!r} duplicates rule {other.name!r} (both convert {shown}); "
                "narrow one of them with when=... or drop one")
    table.append(rule)


def register_rule(rule: Rule) -> Rule:
    """Add a user rule to the table (consulted before the built-in rules). Refuses a name or an
    unconditional class match that is already taken.

    Example::

        fan_convert.register_rule(fan_convert.Rule(
            name="mylib.time_table", kind="fixed_t", match=MyTimeTable, layer=InterpolatedTimeTable))
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"register_rule expects a fan_convert.Rule, got {type(rule).__name__}")
    _table()
    _add(_user, rule)
    return rule


def unregister_rule(name: str) -> None:
    """Remove a user rule (built-in rules stay)."""
    _user[:] = [r for r in _user if r.name != name]


def register_norm(cls: type) -> type:
    """Declare ``cls`` a normalisation layer to bank by copy (usable as a class decorator).

    Example::

        @fan_convert.register_norm
        class MyNorm(nn.Module): ...
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_norm expects an nn.Module subclass, got {cls!r}")
    name = f"norm:{cls.__module__}.{cls.__qualname__}"
    if any(r.kind == "norm" and cls in r.match for r in _table()):
        return cls  # registering twice is harmless
    from ..nn.norm_bank import NormBank

    register_rule(Rule(name=name, kind="norm", match=cls, layer=NormBank))
    return cls


def rules(kind: str | None = None) -> list[Rule]:
    """Every rule (user rules first), or those of one kind."""
    return [r for r in _table() if kind is None or r.kind == kind]


def rule_named(name: str) -> Rule | None:
    return next((r for r in _table() if r.name == name), None)


def match(module: nn.Module, kind: str) -> Rule | None:
    """The first rule of ``kind`` that applies to ``module``."""
    return next((r for r in rules(kind) if r.applies_to(module)), None)


def near_miss(module: nn.Module, kind: str) -> Rule | None:
    """An exact-class rule of ``kind`` whose class ``module`` merely subclasses."""
    return next((r for r in rules(kind) if not r.subclasses and r.types() and isinstance(module, r.types())
                 and not r.exact_match(module)), None)


def fan_layer_types(*kinds: str) -> tuple[type, ...]:
    """The layer classes the rules of ``kinds`` (default: all) put into a model."""
    wanted = kinds or KINDS
    return tuple(dict.fromkeys(r.layer for r in _table() if r.kind in wanted and r.layer is not None))


def rule_for_layer(layer: nn.Module) -> Rule | None:
    """The rule that builds layers of ``layer``'s class (or of a class it was made from: the
    transformers adapters subclass the module they replace at run time)."""
    exact = next((r for r in _table() if r.layer is type(layer)), None)
    return exact or next((r for r in _table() if r.layer is not None and isinstance(layer, r.layer)), None)


def user_rule_names(names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are user rules (in order, once each)."""
    users = {r.name for r in _user}
    return [n for n in dict.fromkeys(names) if n in users]


def missing_rules(names: Sequence[str]) -> list[str]:
    """Those of ``names`` that no registered rule carries (e.g. a saved file's user rules)."""
    known = {r.name for r in _table()}
    return [n for n in names if n not in known]


def known_norm_types() -> tuple[type, ...]:
    """Every class a norm rule banks by exact class (torch's, timm's, torchvision's, the user's)."""
    return tuple(dict.fromkeys(t for r in rules("norm") if not r.subclasses for t in r.types()))


def leaf_types() -> tuple[type, ...]:
    """Modules the tracer keeps whole: norms, and everything that can carry an alteration."""
    from .builtin_rules import NORM_BASES

    return known_norm_types() + NORM_BASES + (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)
