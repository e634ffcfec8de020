"""A task's title and detail, from the findings in its evidence.

The title (the task's ``summary``) leads with the fault a person would name and ends with what to
do: ``GPU 5 uncorrectable ECC error (XID 48, 63): drain and reset to apply the row remap``. Several
findings join one task; the title names the gravest fault among them (the one with the strongest
action; the driver's verdict is an answer, not a fault, and names one only when nothing else does)
and asks for the task's action, in that finding's words when its action is the task's, else in the
words of the finding that decided it. The findings themselves, with their detail, stay in the
evidence, oldest first: ``detail_lines`` gives them as text for pages and the API.

Pure functions over evidence entries (``collector.tasks.join.evidence_entry``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from collector.rules.actions import Action, rank
from collector.rules.wording import advice, title

__all__ = ["DETAIL_LINES_MAX", "detail_lines", "detail_text", "task_title"]

#: At most this many findings are told in a task's detail (the first and the newest).
DETAIL_LINES_MAX: Final = 20

_ACTIONS: Final = frozenset(a.value for a in Action)


def _titled(entries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The entries of findings that carry the two halves of a title."""
    return [
        e
        for e in entries
        if isinstance(e.get("what"), str)
        and isinstance(e.get("todo"), str)
        and e.get("what")
        and e.get("action") in _ACTIONS
    ]


def task_title(entries: Sequence[Mapping[str, Any]], action: Action, source: str) -> str | None:
    """The title of a task with these evidence ``entries``, taking ``action`` (decided by ``source``:
    ``rule``, ``driver`` or ``escalation``); ``None`` when no entry carries a title (a facility or
    fleet task, or evidence written before titles were)."""
    found = _titled(entries)
    if not found:
        return None
    faults = [e for e in found if not e.get("verdict")] or found
    head = max(faults, key=lambda e: rank(Action(e["action"])))  # the first of the gravest
    if source == "escalation":
        return title(str(head["what"]), f"{advice(action)} (escalated)")
    same = [e for e in (head, *faults) if e["action"] == action.value]
    if same:
        todo = str(same[0]["todo"])
    else:
        verdicts = [e for e in found if e.get("verdict") and e["action"] == action.value]
        todo = str(verdicts[-1]["todo"]) if verdicts else advice(action)
    return title(str(head["what"]), todo)


def detail_lines(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """What each finding of the task said in full, oldest first, each once."""
    lines: list[str] = []
    for entry in entries:
        text = entry.get("detail") or entry.get("summary")
        if isinstance(text, str) and text and text not in lines:
            lines.append(text)
    if len(lines) > DETAIL_LINES_MAX:
        lines = [lines[0], *lines[-(DETAIL_LINES_MAX - 1) :]]
    return lines


def detail_text(entries: Iterable[Mapping[str, Any]]) -> str:
    """``detail_lines`` as one text, a line each."""
    return "\n".join(detail_lines(entries))
