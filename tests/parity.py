"""One comparison of a runtime result with transformers' for any of the six text tasks,
shared by the property-based, padding-side and thread tests.

Strings, ints and structure must be identical; floats agree within ``atol``. Where the
reference ranks items by score (top-k labels, fill-mask tokens, zero-shot labels, QA
answers) two items whose scores tie within float noise may come in either order, and at
the top-k cut either one may be the one kept.
"""

from __future__ import annotations

from typing import Any

ATOL = 1e-4


def plain(value: Any) -> Any:
    """numpy arrays, torch tensors and tuples as nested lists; numpy scalars as Python."""
    if hasattr(value, "detach"):
        value = value.detach().numpy()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def assert_matches(ours: Any, theirs: Any, atol: float = ATOL) -> None:
    _compare(plain(ours), plain(theirs), "result", atol)


def _compare(ours: Any, theirs: Any, where: str, atol: float) -> None:
    if isinstance(theirs, float):
        assert isinstance(ours, (float, int)) and not isinstance(ours, bool), f"{where}: {_short(ours)} vs {_short(theirs)}"
        assert abs(ours - theirs) <= atol, f"{where}: {_short(ours)} vs {_short(theirs)}"
        return
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), f"{where}: keys {_short(ours)} vs {_short(theirs)}"
        if set(theirs) == {"sequence", "labels", "scores"}:  # zero-shot: parallel ranked lists
            assert ours["sequence"] == theirs["sequence"], where
            _compare(_ranked(ours), _ranked(theirs), f"{where}.labels", atol)
            return
        for key in theirs:
            _compare(ours[key], theirs[key], f"{where}[{key!r}]", atol)
        return
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: {_short(ours)} vs {_short(theirs)}"
        try:
            for index, (a, b) in enumerate(zip(ours, theirs)):
                _compare(a, b, f"{where}[{index}]", atol)
        except AssertionError:
            if not _ranked_by_score(theirs):
                raise
            _compare_near_ties(ours, theirs, where, atol)
        return
    assert type(ours) is type(theirs) and ours == theirs, f"{where}: {_short(ours)} vs {_short(theirs)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


def _ranked(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"label": label, "score": score} for label, score in zip(result["labels"], result["scores"])]


def _ranked_by_score(items: list[Any]) -> bool:
    if len(items) < 2 or not all(isinstance(item, dict) and "score" in item for item in items):
        return False
    scores = [item["score"] for item in items]
    return all(a >= b for a, b in zip(scores, scores[1:]))


def _compare_near_ties(ours: list[Any], theirs: list[Any], where: str, atol: float) -> None:
    """Rank by rank the scores agree; within a run of reference scores tied within atol
    the items are the same set, except in the last run, which a top-k cut may have split."""
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert isinstance(a, dict) and set(a) == set(b), f"{where}[{index}]: {_short(a)} vs {_short(b)}"
        assert abs(a["score"] - b["score"]) <= atol, f"{where}[{index}]: {_short(a)} vs {_short(b)}"
    runs: list[list[int]] = []
    for index in range(len(theirs)):
        if runs and theirs[runs[-1][-1]]["score"] - theirs[index]["score"] <= 2 * atol:
            runs[-1].append(index)
        else:
            runs.append([index])
    strip = lambda item: sorted((k, repr(v)) for k, v in item.items() if k != "score")  # noqa: E731
    for number, run in enumerate(runs):
        mine = sorted(strip(ours[i]) for i in run)
        reference = sorted(strip(theirs[i]) for i in run)
        if number < len(runs) - 1:
            assert mine == reference, f"{where}[{run[0]}:{run[-1] + 1}]: {_short(ours)} vs {_short(theirs)}"
