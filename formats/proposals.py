"""``proposals.json``: class-agnostic proposals, the bmn stage's output (written here, read here).

``{"version": "1.0", "results": {video_id: [{"segment": [start, end], "score": x}, ...]},
"external_data": {}}`` (the ActivityNet proposal format), seconds, each video's proposals sorted by
score (best first). Read into a table ``video_id, start, end, score`` with the submission parser
(``formats.submission``: typed, else validating, the first bad entry named).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from formats.submission import (
    PredictionColumns,
    _bulk_base_columns,
    _check_segment_and_score,
    _ProposalEntry,
    _results,
    _scan,
    _typed_base_columns,
    read_json,
    read_typed,
)
from runstate import atomic

if TYPE_CHECKING:
    import pandas as pd

PROPOSALS_VERSION = "1.0"


def proposal_list(proposals_sec: np.ndarray) -> list[dict]:
    """``(K, 3)`` seconds -> ``[{"segment": [start, end], "score": x}, ...]`` (proposals.json entries)."""
    return [{"segment": [float(start), float(end)], "score": float(score)} for start, end, score in proposals_sec]


def write_proposals_json(path: str | Path, proposals: dict[str, np.ndarray]) -> None:
    """Write ``proposals.json`` atomically from ``{video_id: (K, 3) [start_sec, end_sec, score]}``,
    each video's proposals sorted by score (best first, stable)."""
    results = {}
    for video_id, rows in proposals.items():
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        results[video_id] = proposal_list(rows[np.argsort(-rows[:, 2], kind="stable")])
    atomic.write_json(path, {"version": PROPOSALS_VERSION, "results": results, "external_data": {}})


def proposal_columns(proposals: dict, source: str = "proposals") -> PredictionColumns:
    """Validate an ActivityNet-style proposal file's content; its entries as columns."""
    results = _results(proposals, source)
    base = _bulk_base_columns(results)
    if base is None:
        base = _bulk_base_columns(_scan(results, source, _check_segment_and_score))
    return base[1]


def proposal_predictions(proposals: dict, source: str = "proposals") -> pd.DataFrame:
    """Validate an ActivityNet-style proposal file and return ``video_id, start, end, score``."""
    return proposal_columns(proposals, source).table()


class _ProposalFile(msgspec.Struct):
    """The file around the entries; each video's entries are decoded by ``read_typed``."""

    results: dict[str, msgspec.Raw]


def load_proposal_columns(path: str | Path, workers: int | None = None) -> PredictionColumns:
    """:func:`proposal_columns` of a file (read the typed way, in ``workers`` processes (by default as
    ``formats.submission.read_typed`` picks), else the validating way)."""
    typed = read_typed(path, _ProposalFile, _ProposalEntry, lambda results: _typed_base_columns(results)[1], workers)
    if typed is None:
        return proposal_columns(read_json(path), source=str(path))
    return typed[1]


def load_proposals(path: str | Path) -> pd.DataFrame:
    """:func:`proposal_predictions` of a file (read the typed way, else the validating way)."""
    return load_proposal_columns(path).table()
