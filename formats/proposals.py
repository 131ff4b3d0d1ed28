"""``proposals.json``: class-agnostic proposals, the bmn stage's output (written here, read here).

``{"version": "1.0", "results": {video_id: [{"segment": [start, end], "score": x}, ...]},
"external_data": {}}`` (the ActivityNet proposal format), seconds, each video's proposals sorted by
score (best first). Read into a table ``video_id, start, end, score`` with the submission parser
(``formats.submission``: typed, else validating, the first bad entry named).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pandas as pd

from formats.submission import (
    _bulk_base_columns,
    _check_segment_and_score,
    _decode_typed,
    _ProposalEntry,
    _results,
    _scan,
    _typed_base_columns,
    read_json,
)
from runstate import atomic

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


def proposal_predictions(proposals: dict, source: str = "proposals") -> pd.DataFrame:
    """Validate an ActivityNet-style proposal file and return ``video_id, start, end, score``."""
    results = _results(proposals, source)
    base = _bulk_base_columns(results)
    if base is None:
        base = _bulk_base_columns(_scan(results, source, _check_segment_and_score))
    return pd.DataFrame(base[1])


class _ProposalFile(msgspec.Struct):
    results: dict[str, list[_ProposalEntry]]


def load_proposals(path: str | Path) -> pd.DataFrame:
    """:func:`proposal_predictions` of a file (read the typed way, else the validating way)."""
    proposals = _decode_typed(path, _ProposalFile)
    if proposals is None:
        return proposal_predictions(read_json(path), source=str(path))
    return pd.DataFrame(_typed_base_columns(proposals.results)[1])
