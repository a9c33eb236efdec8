"""The paper's settings next to a ``paper`` profile's: :class:`PaperSetting` and :class:`PaperRecord`.

A record lists, for one experiment, what the paper (or its reference code) used for each setting
and where that is written, keyed by the profile fields the setting corresponds to.
:func:`compare` checks a profile against its record: wherever a setting names profile fields and a
paper value, the profile must have that value, unless the setting declares a ``deviation`` (the
reason the profile differs), in which case the profile must differ. :func:`rows` gives the rows of
the table ``docs/experiments.md`` shows (``setting | this paper profile | the paper | source``),
every setting of the profile included: the ones no record entry names are listed as ``ours``.

Sources (``PaperSetting.source``):

* ``paper``: read in the paper (``where``: section, table or appendix);
* ``code``: read in the reference implementation (``where``: repository and file);
* ``unverified``: a secondary source or memory, not checked against the paper (METHODS notes
  marked *verify*, [M] or [?]);
* ``ours``: the paper is silent or the setting is this library's (``paper`` is None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from warpgrad.errors import UsageError
from warpgrad.experiments.base import SCHEDULE_FIELDS, Profile

SOURCES = ("paper", "code", "unverified", "ours")

#: profile fields that are engine mechanics, not protocol: listed as ``ours`` unless a record names them
MECHANICS = {
    "checkpoint_every": "how often a checkpoint is written (engine)",
    "threads": "torch threads of the run (engine)",
}


@dataclass(frozen=True)
class PaperSetting:
    """One setting of the paper's protocol.

    Attributes:
        setting: what it is, for people ("inner learning rate").
        paper: the paper's value, comparable with the profile's (a number, a string, a tuple), or
            a text where no profile field holds it; None when ``source`` is ``ours``.
        source: one of :data:`SOURCES`.
        where: the section/table, the reference file, or (``ours``) why the paper has no value.
        keys: the profile fields (``inner_lr``, ``meta_steps``, ``warpgrad.warp_lr``,
            ``data.image_size``) that hold this setting; all must equal ``paper`` unless
            ``deviation`` says why not. With several keys and a tuple ``paper`` of as many
            values, key i holds value i (``("ways", "shots")`` and ``(5, 1)``).
        deviation: why the profile differs from the paper ("" when it does not).
        profile: what the profile does, for a setting no profile field holds.
    """

    setting: str
    paper: Any
    source: str
    where: str = ""
    keys: tuple[str, ...] = ()
    deviation: str = ""
    profile: str = ""


@dataclass(frozen=True)
class PaperRecord:
    """The paper's settings for one experiment's ``paper`` profile."""

    experiment: str
    reference: str  # the paper (and reference code) the profile follows
    settings: tuple[PaperSetting, ...]
    notes: dict[str, str] = field(default_factory=dict)  # profile field -> why it is ours (listed as such)


_MISSING = object()


def profile_value(profile: Profile, key: str) -> Any:
    """The value of setting ``key`` in ``profile``: a schedule field, an option (dots for nested
    options) or a registered method's resolved config field (``maml.meta_lr``)."""
    if key in SCHEDULE_FIELDS:
        return getattr(profile, key)
    node: Any = profile.options
    for part in key.split("."):
        node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is _MISSING:
            break
    if node is not _MISSING:
        return node
    method, _, name = key.partition(".")
    if name and "." not in name:
        from warpgrad.methods.registry import config_fields, registered

        if method in registered() and name in config_fields(registered()[method].config):
            from warpgrad.experiments.methods import resolved_config

            return getattr(resolved_config(method, profile.options), name)
    raise UsageError(f"setting {key!r} is not in the profile; its settings: {', '.join(profile.setting_names())}")


def same(a: Any, b: Any) -> bool:
    """Values equal as settings: numbers within 1e-12 relative, tuples and lists alike."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return bool(a == b)


def expected(s: PaperSetting) -> list[tuple[str, Any]]:
    """``(key, the paper's value for it)`` for each key of ``s`` (paired when ``paper`` is a tuple
    of as many values as there are keys, else the same value for every key)."""
    if len(s.keys) > 1 and isinstance(s.paper, tuple) and len(s.paper) == len(s.keys):
        return list(zip(s.keys, s.paper))
    return [(key, s.paper) for key in s.keys]


def check_record(record: PaperRecord) -> None:
    """Raise UsageError (naming the entry) for a malformed record."""
    for s in record.settings:
        name = f"{record.experiment}: {s.setting!r}"
        if s.source not in SOURCES:
            raise UsageError(f"{name}: source {s.source!r}; allowed: {', '.join(SOURCES)}")
        if s.source == "ours" and (s.paper is not None or s.deviation):
            raise UsageError(f"{name}: an 'ours' setting has no paper value and no deviation")
        if s.source != "ours" and (s.paper is None or not s.where):
            raise UsageError(f"{name}: a {s.source!r} setting needs the paper's value and where it is written")
        if not s.keys and not s.profile:
            raise UsageError(f"{name}: name the profile fields (keys) or say what the profile does (profile)")
        if isinstance(s.keys, str):
            raise UsageError(f"{name}: keys must be a tuple of field names, got the string {s.keys!r}")


def compare(record: PaperRecord, profile: Profile) -> list[str]:
    """The problems of ``profile`` against ``record``: an undeclared difference from the paper, a
    declared deviation where the values agree, a field the profile does not have. Empty when the
    profile is faithful (every difference declared)."""
    check_record(record)
    problems = []
    for s in record.settings:
        differs = []
        for key, paper in expected(s):
            try:
                value = profile_value(profile, key)
            except UsageError as error:
                problems.append(f"{s.setting}: {error}")
                continue
            if paper is None or s.source == "ours":
                continue
            if not same(value, paper):
                differs.append(key)
                if not s.deviation:
                    problems.append(f"{s.setting}: {key} = {value!r}, the paper's {paper!r} (no deviation declared)")
        if s.deviation and s.keys and s.source != "ours" and not differs:
            problems.append(f"{s.setting}: a deviation is declared, but {', '.join(s.keys)} equal the paper's")
    return problems


def fmt(value: Any) -> str:
    """A value as the docs show it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(fmt(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}" if value else "defaults"
    return str(value)


def _source(s: PaperSetting) -> str:
    text = {"paper": "paper", "code": "reference code", "unverified": "*unverified*", "ours": "ours"}[s.source]
    parts = [f"{text}: {s.where}" if s.where else text]
    if s.deviation:
        parts.append(f"**differs**: {s.deviation}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(record: PaperRecord, profile: Profile) -> list[tuple[str, str, str, str]]:
    """``(setting, this paper profile, the paper, source)`` for every record entry, then every
    profile setting no entry names (as ``ours``, with the record's note or :data:`MECHANICS`)."""
    out = []
    named: set[str] = set()
    for s in record.settings:
        named.update(s.keys)
        if s.keys:
            values = [fmt(profile_value(profile, k)) for k in s.keys]
            if len(set(values)) == 1 and len(values) > 1:
                ours = f"{values[0]} ({', '.join(f'`{k}`' for k in s.keys)})"
            else:
                ours = "; ".join(f"`{k}` = {v}" for k, v in zip(s.keys, values))
        else:
            ours = s.profile
        out.append((s.setting, ours, "—" if s.paper is None else fmt(s.paper), _source(s)))
    for key in profile.setting_names():
        if key in named:
            continue
        reason = record.notes.get(key) or record.notes.get(key.split(".")[0]) or MECHANICS.get(key, "not compared")
        out.append((f"`{key}`", fmt(profile_value(profile, key)), "—", f"ours: {reason}"))
    return [tuple(_cell(c) for c in row) for row in out]  # type: ignore[misc]


def table(record: PaperRecord, profile: Profile) -> str:
    """The Markdown table of :func:`rows`, with the paper named above it."""
    lines = [
        f"Paper profile of `{record.experiment}` against {record.reference}:",
        "",
        "| setting | this paper profile | the paper | source |",
        "|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows(record, profile)]
    return "\n".join(lines)
