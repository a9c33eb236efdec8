"""The papers' settings next to each experiment's ``paper`` profile (one module per family).

:data:`PAPER_RECORDS` maps an experiment's name to its :class:`PaperRecord`; :func:`paper_record`
looks one up, :func:`~warpgrad.experiments.papers.base.compare` checks a profile against it and
:func:`~warpgrad.experiments.papers.base.table` renders the table ``docs/experiments.md`` shows
(``<!-- warpgrad paper-profile EXPERIMENT -->`` blocks, :mod:`warpgrad.engine.docs_tables`).

Example:
    >>> from warpgrad.experiments import get_experiment
    >>> record = paper_record("omniglot-multishot")
    >>> compare(record, get_experiment("omniglot-multishot").profile("paper"))
    []
"""

from __future__ import annotations

from warpgrad.errors import UsageError
from warpgrad.experiments.papers import continual, images, rl, rules, sine
from warpgrad.experiments.papers.base import (
    SOURCES,
    PaperRecord,
    PaperSetting,
    compare,
    profile_value,
    rows,
    table,
)

__all__ = [
    "PAPER_RECORDS",
    "SOURCES",
    "PaperRecord",
    "PaperSetting",
    "compare",
    "paper_record",
    "profile_value",
    "rows",
    "table",
]

PAPER_RECORDS: dict[str, PaperRecord] = {
    r.experiment: r for module in (sine, images, continual, rl, rules) for r in module.RECORDS
}


def paper_record(experiment: str) -> PaperRecord:
    """The record of ``experiment``'s paper settings.

    Raises:
        UsageError: for an experiment without a record (naming the ones with one).
    """
    if experiment not in PAPER_RECORDS:
        raise UsageError(f"no paper record for experiment {experiment!r}; records: {', '.join(PAPER_RECORDS)}")
    return PAPER_RECORDS[experiment]
