"""Epoch bookkeeping shared by the training stages (finetune, bmn): resume, history, best, divergence.

A training stage keeps three files in its folder (named by ``runstate.paths.RunPaths``):

* ``last.pt``: the state after the latest finished epoch (model, optimizer, scheduler) and the
  *training fingerprint*, a hash of what the weights depend on (data, settings, seed);
* the best epoch's checkpoint (``checkpoint.pt`` / ``bmn.pt``), with the same fingerprint;
* ``metrics.jsonl``: one record per finished epoch, ``{"epoch": n, ...}``.

At the end of an epoch ``EpochFiles.finish_epoch`` writes, in this order: the best checkpoint
(when the epoch is the best so far), the history (rewritten whole, atomically, with the new
record), then ``last.pt``. "History before ``last.pt``": a crash between the two leaves a
record of an epoch that ``last.pt`` does not hold yet, which ``resume`` drops, so the epoch
is redone and recorded exactly once.

``resume`` continues from ``last.pt`` only when it is readable, has this run's training
fingerprint, and the best checkpoint is readable with the same fingerprint; otherwise it says
why in one line and training starts afresh (the old history is dropped with it).

``check_finite`` stops training at the first non-finite loss with ``TrainingDiverged``: one
line naming the stage, epoch, step and loss. Nothing of that epoch is written, so no
diverged model is ever marked best and the last good ``last.pt`` stays.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runstate import atomic

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite; the message says where."""


def check_finite(loss: float, stage: str, epoch: int, step: int, last_path: Path | None = None) -> None:
    """Raise ``TrainingDiverged`` if ``loss`` is not finite (``epoch`` and ``step`` count from 1).

    ``last_path``, when given, is named in the message as the last good state kept (if it exists).
    """
    if not math.isfinite(loss):
        kept = ""
        if last_path is not None:
            kept = f", the last good state {last_path} is kept" if last_path.is_file() else ", no epoch had finished"
        raise TrainingDiverged(f"{stage}: training diverged at epoch {epoch}, step {step}: loss {loss}; "
                               f"stopped, nothing marked best{kept} (lower the learning rate?)")


def read_history(path: Path) -> list[dict]:
    """The records of a history file (``[]`` when absent); a damaged line ends the readable part."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            break
        records.append(record)
    return records


@dataclass
class Resumed:
    """Where training starts: ``start_epoch`` epochs are done; ``checkpoint`` is ``last.pt`` (or None)."""

    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None


@dataclass
class EpochFiles:
    """The last / best / history files of one training stage.

    Args:
        stage: "finetune" or "bmn" (for messages).
        last_path, best_path, history_path: the three files.
        training_fingerprint: what this run's weights depend on.
        read_checkpoint: reads a checkpoint file into a dict with ``epoch`` and ``training_fingerprint``;
            raises ``ValueError``/``OSError`` when the file is not a whole checkpoint.
    """

    stage: str
    last_path: Path
    best_path: Path
    history_path: Path
    training_fingerprint: str
    read_checkpoint: Callable[[Path], dict[str, Any]]

    def _readable(self, path: Path) -> tuple[dict[str, Any] | None, str]:
        try:
            return self.read_checkpoint(path), ""
        except (ValueError, OSError) as error:
            return None, str(error).splitlines()[0]

    def resume(self) -> Resumed:
        """Load ``last.pt`` when it can be trusted (module docstring); else start afresh."""
        if not self.last_path.is_file():
            self._start_afresh()
            return Resumed()
        last, problem = self._readable(self.last_path)
        if last is None:
            return self._afresh(f"{self.last_path} is damaged ({problem})")
        if last.get("training_fingerprint") != self.training_fingerprint:
            return self._afresh(f"{self.last_path} was trained with other inputs or settings")
        best, problem = self._readable(self.best_path) if self.best_path.is_file() else (None, "missing")
        if best is None or best.get("training_fingerprint") != self.training_fingerprint:
            why = problem or "it comes from another training"
            return self._afresh(f"the best checkpoint {self.best_path} cannot be used ({why})")
        epochs_done = int(last["epoch"])
        records = read_history(self.history_path)
        kept = [record for record in records if record["epoch"] <= epochs_done]
        if [record["epoch"] for record in kept] != list(range(1, epochs_done + 1)):
            return self._afresh(f"{self.history_path} does not hold one record per finished epoch")
        if len(kept) < len(records) or self._has_unreadable_tail(len(kept)):
            atomic.write_jsonl(self.history_path, kept)
        log.info("%s: resuming from %s after epoch %d", self.stage, self.last_path, epochs_done)
        return Resumed(epochs_done, kept, last)

    def _has_unreadable_tail(self, num_records: int) -> bool:
        lines = [line for line in self.history_path.read_text(errors="replace").splitlines() if line.strip()]
        return len(lines) != num_records

    def _afresh(self, why: str) -> Resumed:
        log.warning("%s: %s; training afresh", self.stage, why)
        self._start_afresh()
        return Resumed()

    def _start_afresh(self) -> None:
        for path in (self.last_path, self.best_path, self.history_path):
            path.unlink(missing_ok=True)

    def finish_epoch(self, record: dict, is_best: bool, save_best: Callable[[Path], None],
                     save_last: Callable[[Path], None], history: list[dict]) -> None:
        """Write the files of a finished epoch in the safe order: best, history, last.pt.

        ``history`` is the list of earlier records; ``record`` is appended to it.
        """
        if is_best:
            save_best(self.best_path)
        history.append(record)
        atomic.write_jsonl(self.history_path, history)
        save_last(self.last_path)
