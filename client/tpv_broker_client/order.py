"""TPV's own order, and the broker's answer mapped back onto TPV's objects.

TPV does not check what a rank clause returns: a Destination that was not a
candidate is accepted and the job is sent there, an empty list fails the job.
So the result is always built from the candidate objects themselves, each
exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def default_order(candidates: Sequence[Any], entity: Any) -> tuple[list[Any], list[int | None]]:
    """TPV's default ranker, ``sorted(candidates, key=lambda d: d.score(entity),
    reverse=True)``, and each destination's tag score in that order. If a
    score cannot be had (no ``entity``, or ``score`` raises), the candidates
    stay in the order TPV gave them, without scores."""
    try:
        scores = [d.score(entity) for d in candidates]
        ranked = sorted(zip(candidates, scores), key=lambda pair: pair[1], reverse=True)
    except Exception:  # noqa: BLE001 - the fallback must not fail
        return list(candidates), [None] * len(candidates)
    return [d for d, _ in ranked], [s for _, s in ranked]


def apply_answer(ordered: Sequence[Any], sent_ids: Sequence[str], answer_ids: Sequence[str]) -> list[Any] | None:
    """The candidates in the broker's order, those it did not mention after
    them in ``ordered`` (TPV's) order; None if the answer names an id that
    was not sent, or one twice: an answer that does not match its question is
    not trusted at all."""
    sent = set(sent_ids)
    if len(set(answer_ids)) != len(answer_ids) or not sent.issuperset(answer_ids):
        return None
    # The first object with each id (ids are unique in a TPV config; this
    # only guards against a list that repeats one).
    by_id: dict[Any, Any] = {}
    for d in ordered:
        by_id.setdefault(getattr(d, "id", None), d)
    ranked = [by_id[i] for i in answer_ids]
    placed = {id(d) for d in ranked}
    return ranked + [d for d in ordered if id(d) not in placed]
