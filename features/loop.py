"""The extraction loop: decoded clip batches in, features written video by video.

``extract_videos`` runs a DataLoader over ``ClipBatchDataset`` (decoding in worker
processes, so that it overlaps the model, which hand batches back in shared slots,
``ClipSlots``; with ``num_workers=0`` a thread of this process decodes instead,
``decoded_in_thread``), encodes every ``ClipBatch`` with a
``ClipEncoder`` in the main process and hands the features to a ``FeatureWriter``
as they come (``write_chunk``), finishing each video with its last batch. Several
videos are in flight at once (one per worker); each is complete or absent in the
store, never half there.

Failures are per video and never stop the loop:

* a ``VideoFailure`` from a worker (the file is missing or broken);
* an error of the model or the store on one video's batch (e.g. frames too small for
  the network): the video is aborted, its remaining batches are dropped;
* a decoding worker that dies (a decoder crash kills the process, no exception is
  left to catch): the videos that worker may have been on are retried one at a time
  in a fresh single-worker loader; the one that kills its worker again is recorded as
  failed, and the loop resumes over the videos not yet concluded.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from backbone.clips import IMAGENET, Normalization, clips_to_tensor
from features.decode import ClipBatch, ClipBatchDataset, ClipSampling, ClipSlots, VideoFailure, keep_item
from features.sources import VideoSource
from formats.failures import FailedVideo
from formats.feature_writer import FeatureWriter
from runstate.runtime import lower_priority
from runstate.runtime import progress as progress_bar

log = logging.getLogger(__name__)
_PREFETCH_FACTOR = 4  # batches each decoding worker may have ready ahead of the model


class ClipEncoder:
    """Runs the backbone on uint8 clips: ``(n, T, H, W, 3)`` uint8 -> ``(n, D)`` float32 numpy features.

    Inference mode, eval mode; channels-last or contiguous ``(n, 3, T, H, W)`` input, and on CUDA
    optionally bf16 autocast (the CPU runs float32).

    Channels-last is the default on both devices. On the 2-vCPU AVX-512 dev box it took 0.82-0.96x
    the time of contiguous input for a ResNet-50 forward of 8x224x224 frames, and TAda2D's extra
    elementwise work (eq. 7's per-channel temporal filter) runs about 2x faster in it; for the demo's
    width-16 ResNet-10 on 56-pixel frames it is 0.92x with 2 threads and 1.04x with one
    (``bench/tadaconv.py``). Both layouts give the same features up to rounding (about 2e-7 relative).

    Args:
        model: a module with ``forward_features(video (B, 3, T, H, W)) -> (B, D)`` and ``feature_dim``.
        device: "cpu" or "cuda[:i]".
        bf16: bf16 autocast (CUDA only).
        channels_last: channels-last memory format; the decoding workers then hand clips over in
            that layout (``ClipBatchDataset(channels_last=...)``), so that neither process copies them.
        normalization: the frame statistics that go with the model's weights.
    """

    def __init__(self, model: nn.Module, device: str = "cpu", bf16: bool = False,
                 channels_last: bool = False, normalization: Normalization = IMAGENET):
        self.normalization = normalization
        self.device = torch.device(device)
        self.on_cuda = self.device.type == "cuda"
        self.bf16 = bf16 and self.on_cuda
        self.channels_last = channels_last
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.feature_dim = int(model.feature_dim)

    def __call__(self, clips: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            # On the CPU (clips_to_tensor keeps its constants there): (n, T, H, W, 3) uint8 -> (n, 3, T, H, W)
            video = clips_to_tensor(clips, self.normalization).to(self.device)
            # No-ops for ClipBatch clips, which come in the encoder's layout (see features.decode).
            if self.channels_last:
                # (n, 3, T, H, W) stored as (n, T, H, W, 3): the frames the model folds out of it,
                # (n*T, 3, H, W), are then channels-last.
                video = video.contiguous(memory_format=torch.channels_last_3d)
            else:
                video = video.contiguous()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.bf16):
                features = self.model.forward_features(video)  # (n, D)
            return features.float().cpu().numpy()


@dataclass
class ExtractSummary:
    """What one call of ``extract_videos`` did."""

    videos_done: list[str] = field(default_factory=list)
    failures: list[FailedVideo] = field(default_factory=list)
    num_clips: int = 0
    seconds: float = 0.0

    @property
    def clips_per_sec(self) -> float:
        return self.num_clips / self.seconds if self.seconds > 0 else 0.0


def decoded_in_thread(items: Iterable, prefetch: int = 4) -> Iterator:
    """The items of ``items``, produced by a background thread of this process while the caller
    works on the previous ones (at most ``prefetch`` ahead). An exception of the producer is
    raised here, at the point of the stream where it happened; leaving early stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put((False, error))
        finally:
            if hasattr(iterator, "close"):  # a generator: run its cleanup (closing readers) here
                iterator.close()

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            is_item, value = ready.get()
            if not is_item:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


class _WorkerDied(Exception):
    """A DataLoader worker process ended without a Python exception (a decoder crash, the OOM killer)."""


def _is_worker_death(error: BaseException) -> bool:
    # torch reports dead workers as RuntimeError, from next() or (via its SIGCHLD handler) from anywhere.
    return isinstance(error, RuntimeError) and "DataLoader worker" in str(error)


class _Run:
    """State of one ``extract_videos`` call, shared by the loader passes it needs."""

    def __init__(self, sources: list[VideoSource], encoder: ClipEncoder, writer: FeatureWriter,
                 summary: ExtractSummary, progress, decoder_nice: int):
        self.sources = sources
        self.encoder = encoder
        self.writer = writer
        self.summary = summary
        self.progress = progress
        self.decoder_nice = decoder_nice
        self.concluded: set[int] = set()  # source indices finished or failed
        self.in_progress: set[int] = set()
        self.dropped: set[int] = set()  # failed mid-video: later batches are ignored
        self.start_time = self.last_shown = time.perf_counter()

    def fail(self, index: int, reason: str) -> None:
        source = self.sources[index]
        if index in self.in_progress:
            self.writer.abort_video(source.video_id)
            self.in_progress.discard(index)
        reason = " ".join(reason.split())  # one line, no tabs
        self.summary.failures.append(FailedVideo(source.video_id, source.display_path, reason))
        log.warning("video %s failed: %s", source.video_id, reason)
        self._conclude(index)

    def _conclude(self, index: int) -> None:
        self.concluded.add(index)
        self._show_rates(refresh=False)
        self.progress.update(1)

    def _show_rates(self, refresh: bool) -> None:
        """Clips done and clips/s beside the bar (hour-long videos move the bar itself rarely)."""
        self.progress.set_postfix(clips=self.summary.num_clips,
                                  clips_per_s=f"{self.summary.num_clips / max(self.elapsed(), 1e-9):.1f}",
                                  failed=len(self.summary.failures), refresh=refresh)
        self.last_shown = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def handle(self, local_to_global: list[int], item: ClipBatch | VideoFailure) -> None:
        index = local_to_global[item.video_index]
        if isinstance(item, VideoFailure):
            self.fail(index, item.reason)
            return
        if index in self.dropped:
            return
        try:
            if item.clip_start == 0:
                self.writer.begin_video(item.video_id, item.duration_sec, item.native_fps, item.num_clips)
                self.in_progress.add(index)
            features = self.encoder(item.clips)
            self.writer.write_chunk(item.video_id, item.clip_start, features, item.times_sec)
            self.summary.num_clips += len(item.times_sec)
            if time.perf_counter() - self.last_shown > 2.0:
                self._show_rates(refresh=True)
            if item.is_last:
                self.writer.finish_video(item.video_id)
                self.in_progress.discard(index)
                self.summary.videos_done.append(item.video_id)
                self._conclude(index)
        except (RuntimeError, ValueError) as error:  # model or store refused this video's clips
            if _is_worker_death(error):
                raise
            self.dropped.add(index)
            self.fail(index, f"{type(error).__name__}: {error}")

    def run_pass(self, indices: list[int], dataset_args: dict, num_workers: int) -> None:
        """One DataLoader over ``indices`` (with no workers, a decoding thread); raises ``_WorkerDied``
        when a worker process dies."""
        slots = None
        context = None
        if num_workers > 0 and "fork" in multiprocessing.get_all_start_methods():
            # batches come back through slots mapped once for the pass (ClipSlots), not a new segment each
            slots = ClipSlots.for_batches(num_workers, _PREFETCH_FACTOR, dataset_args["batch_size"],
                                          dataset_args["sampling"])
            context = "fork"
        dataset = ClipBatchDataset([self.sources[i] for i in indices], slots=slots, **dataset_args)
        if num_workers == 0:  # decoding in a thread of this process, overlapping the model
            loader = decoded_in_thread(dataset)
        else:
            loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=keep_item,
                                prefetch_factor=_PREFETCH_FACTOR, multiprocessing_context=context,
                                worker_init_fn=partial(_start_decoder, self.decoder_nice))
        try:
            for item in loader:
                if slots is None:
                    self.handle(indices, item)
                    continue
                try:
                    self.handle(indices, slots.receive(item, self.encoder.channels_last))
                finally:
                    slots.release(item)
        except RuntimeError as error:
            if not _is_worker_death(error):
                raise
            for index in list(self.in_progress):  # redone later; partial rows are dropped
                self.writer.abort_video(self.sources[index].video_id)
                self.in_progress.discard(index)
            raise _WorkerDied(str(error).strip().splitlines()[0]) from None


def _start_decoder(niceness: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` of the decoding workers: a lower priority than the model's."""
    lower_priority(niceness)


def extract_videos(sources: list[VideoSource], sampling: ClipSampling, encoder: ClipEncoder,
                   writer: FeatureWriter, clips_per_chunk: int, batch_size: int, num_workers: int,
                   decoder_threads: int = 0, show_progress: bool = True, decoder_nice: int = 10) -> ExtractSummary:
    """Extract every source into ``writer`` (which must not hold them yet); see the module docstring.

    Args:
        sources: the videos to do, in order.
        sampling: clip layout and decode size.
        encoder: the model wrapper.
        writer: an open ``FeatureWriter`` whose attrs match ``sampling`` and the encoder.
        clips_per_chunk: clips decoded together (bounds decode memory).
        batch_size: clips per forward pass.
        num_workers: decoding processes (0 = decode in a thread of this process, which overlaps
            the model as well, without the processes' hand-over of every batch, but a decoder
            crash then ends the process).
        decoder_threads: decord threads per reader (0 = decord's default).
        show_progress: draw a progress bar (videos done, clips/s, ETA).
        decoder_nice: added to the decoding worker processes' nice value. The model is the critical
            path; where decoders outnumber the cores it leaves free, equal priority lets them take
            its core in turn (2 vCPUs, demo model, alternated runs: 3 workers at 0.89 of one worker's rate,
            0.99 niced by 10).

    Returns:
        an ``ExtractSummary`` (videos done in completion order, failures, clips, seconds).
    """
    summary = ExtractSummary()
    dataset_args = dict(sampling=sampling, clips_per_chunk=clips_per_chunk, batch_size=batch_size,
                        decoder_threads=decoder_threads, channels_last=encoder.channels_last)
    with progress_bar(total=len(sources), unit="video", desc="extract", disable=not show_progress) as progress:
        run = _Run(sources, encoder, writer, summary, progress, decoder_nice)
        pending = list(range(len(sources)))
        while pending:
            try:
                run.run_pass(pending, dataset_args, num_workers)
                break
            except _WorkerDied as death:
                log.warning("%s; isolating the video that caused it", death)
                for index in _worker_positions(pending, run.concluded, num_workers):
                    try:  # alone, in a fresh worker: the culprit kills it again
                        run.run_pass([index], dataset_args, num_workers=1)
                    except _WorkerDied as again:
                        run.fail(index, f"decoding process died: {again}")
            pending = [index for index in pending if index not in run.concluded]
        summary.seconds = run.elapsed()
    return summary


def _worker_positions(indices: list[int], concluded: set[int], num_workers: int) -> list[int]:
    """The video each worker was on: worker ``w`` takes ``indices[w::num_workers]`` in order."""
    current = []
    for worker in range(max(num_workers, 1)):
        for index in indices[worker::max(num_workers, 1)]:
            if index not in concluded:
                current.append(index)
                break
    return current
