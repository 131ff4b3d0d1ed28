"""Decoding videos into batches of uint8 clips, in DataLoader workers.

``ClipBatchDataset`` is an ``IterableDataset`` over videos. Each worker process takes
every ``num_workers``-th video, opens its own reader (``SourceOpener``) and walks the
video's clip grid chunk by chunk (``features.windows.chunks``): every needed frame is
decoded once, in time order, resized to ``short_side`` by the decoder; the frames that
the next chunk shares stay in a small buffer; clips are built by indexing the buffer.
Memory per worker is bounded by ``clips_per_chunk``, not by the video length.

The worker yields, in order for each video:

* ``ClipBatch`` items of at most ``batch_size`` consecutive clips (the last one has
  ``is_last=True``), or
* one ``VideoFailure`` when anything goes wrong with the video (missing, empty,
  truncated, undecodable, zero frames, or an unexpected error): possibly after some
  of its batches. The worker then goes on with its next video, so one bad file never
  stops the DataLoader.
"""

from __future__ import annotations

import math
import mmap
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from backbone.clips import center_crop
from data.video import VideoError
from features.sources import SourceOpener, VideoSource
from features.windows import chunks, clip_grid


@dataclass(frozen=True)
class ClipSampling:
    """How clips are laid on a video (see ``features.windows``) and how frames are decoded.

    Attributes:
        fps: target decode timeline, frames per second.
        num_frames: frames per clip.
        interval_frames: target frames between a clip's frames.
        stride_frames: target frames between clip starts.
        short_side: frames are resized so that the shorter side has this many pixels.
        crop: "none" (whole frame) or "center" (square center crop of side ``short_side``).
    """

    fps: float
    num_frames: int
    interval_frames: int
    stride_frames: int
    short_side: int
    crop: str = "none"


@dataclass(frozen=True)
class ClipBatch:
    """Consecutive clips of one video.

    Attributes:
        video_index: position of the video in the dataset's source list.
        video_id: its id.
        clip_start: index of the first clip of the batch in the video's clip grid.
        clips: (n, T, H, W, 3) uint8 RGB tensor in the memory layout the model runs in, so that
            ``clips_to_tensor`` gives the model's input without a copy: contiguous ``(n, T, H, W, 3)``
            for a channels-last model (its ``(n, 3, T, H, W)`` view then has channels-last strides),
            else a view of contiguous ``(n, 3, T, H, W)`` memory (the copy is made here, in the
            decoding worker).
        times_sec: (n,) float64 clip-centre seconds.
        num_clips: clips in the whole video (N of the grid).
        duration_sec: the video's duration (seconds, as the reader measured it).
        native_fps: the file's own frame rate.
        is_last: the batch ends the video.
        slot: where the clips wait in the decoding workers' ``ClipSlots`` (-1: they are in ``clips``).
            Such an item crosses the process boundary with ``clips=None`` and ``clips_shape`` set;
            ``ClipSlots.receive`` gives it its clips back as a view of the slot.
        clips_shape: ``(n, T, H, W, 3)`` of clips kept in a slot.
    """

    video_index: int
    video_id: str
    clip_start: int
    clips: torch.Tensor
    times_sec: np.ndarray
    num_clips: int
    duration_sec: float
    native_fps: float
    is_last: bool
    slot: int = -1
    clips_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class VideoFailure:
    """A video that could not be decoded; ``reason`` is one line."""

    video_index: int
    video_id: str
    path: str
    reason: str


def keep_item(item):
    """DataLoader ``collate_fn``: items are already batches."""
    return item


class ClipSlots:
    """Fixed shared-memory slots in which decoding workers hand clip batches to the main process.

    A tensor a DataLoader worker returns travels through a fresh shared-memory segment: the
    worker creates and fills it, its file descriptor is passed over a socket, the main process
    maps it and faults its pages in one by one, then unmaps it. With a small model that costs as
    much as 15 % of the extraction (``bench/extract.py``). Here the main process maps
    ``slots_per_worker`` slots per worker once, before the workers are forked (an anonymous
    ``MAP_SHARED`` mapping, which forked children share and which no ``/dev/shm`` size limit
    applies to); a worker writes each batch into its next slot and sends only the slot's number.

    Slot ``k`` of worker ``w`` is reused for that worker's batch ``k + slots_per_worker``; the
    worker waits until the main process has released the batch before it (``release``, in the
    order the worker sent them: a DataLoader yields each worker's items in order). The DataLoader
    keeps at most ``prefetch_factor`` items per worker in flight, so with ``prefetch_factor + 2``
    slots the wait never happens in practice. A batch larger than a slot (a frame wider than
    ``max_aspect`` times its short side) travels as a tensor, as without slots.

    Only for forked workers (``fork`` start method): the mapping must be inherited, not pickled.

    Args:
        num_workers: DataLoader workers.
        slots_per_worker: slots of each worker.
        slot_bytes: bytes of one slot (one batch of uint8 clips).
    """

    def __init__(self, num_workers: int, slots_per_worker: int, slot_bytes: int):
        self.num_workers = num_workers
        self.slots_per_worker = slots_per_worker
        self.slot_bytes = slot_bytes
        self._owner_pid = os.getpid()  # the workers' parent
        self._memory = mmap.mmap(-1, num_workers * slots_per_worker * slot_bytes)
        self._counts = mmap.mmap(-1, 16 * num_workers)
        self.buffer = np.frombuffer(self._memory, dtype=np.uint8).reshape(num_workers * slots_per_worker, slot_bytes)
        # per worker: batches it has put (written by the worker), batches released (by the main process)
        counts = np.frombuffer(self._counts, dtype=np.int64).reshape(num_workers, 2)
        self.put_count, self.released_count = counts[:, 0], counts[:, 1]

    @classmethod
    def for_batches(cls, num_workers: int, prefetch_factor: int, batch_size: int, sampling: ClipSampling,
                    max_aspect: float = 16 / 9) -> ClipSlots:
        """Slots for ``batch_size`` clips of ``sampling``'s frames, wide up to ``max_aspect`` : 1."""
        side = sampling.short_side
        long_side = side if sampling.crop == "center" else math.ceil(side * max_aspect) + 1
        return cls(num_workers, prefetch_factor + 2, batch_size * sampling.num_frames * side * long_side * 3)

    def slot_array(self, worker_id: int, shape: tuple[int, ...]) -> tuple[int, np.ndarray] | None:
        """The worker's next slot as a uint8 array of ``shape`` to write into, and its number; None when
        the batch does not fit. Waits while the main process still holds the slot's previous batch."""
        if math.prod(shape) > self.slot_bytes:
            return None
        count = int(self.put_count[worker_id])
        while count - int(self.released_count[worker_id]) >= self.slots_per_worker:
            if os.getppid() != self._owner_pid:  # the main process is gone: nobody will release it
                raise RuntimeError("ClipSlots: the process that owns the slots has exited")
            time.sleep(0.0005)
        self.put_count[worker_id] = count + 1
        slot = worker_id * self.slots_per_worker + count % self.slots_per_worker
        return slot, self.buffer[slot, :math.prod(shape)].reshape(shape)

    def receive(self, item: ClipBatch, channels_last: bool) -> ClipBatch:
        """The item with its clips (a view of the slot, laid out as ``ClipBatch`` says); unchanged when
        it carries them itself."""
        if getattr(item, "slot", -1) < 0:  # a VideoFailure, or clips that travelled as a tensor
            return item
        n, frames, height, width, channels = item.clips_shape
        memory = torch.from_numpy(self.buffer[item.slot, :math.prod(item.clips_shape)])
        if channels_last:
            clips = memory.view(n, frames, height, width, channels)
        else:  # (n, 3, T, H, W) in memory, viewed as (n, T, H, W, 3)
            clips = memory.view(n, channels, frames, height, width).permute(0, 2, 3, 4, 1)
        return replace(item, clips=clips)

    def release(self, item: ClipBatch) -> None:
        """The main process is done with ``item``'s slot (call it for every slotted item, in order)."""
        if getattr(item, "slot", -1) >= 0:
            worker_id = item.slot // self.slots_per_worker
            self.released_count[worker_id] += 1


class ClipBatchDataset(IterableDataset):
    """Decodes ``sources`` into ``ClipBatch`` / ``VideoFailure`` items (see the module docstring).

    Args:
        sources: the videos, in the order they are processed (split over workers round-robin).
        sampling: clip layout and decode size.
        clips_per_chunk: clips decoded together (bounds the frame buffer).
        batch_size: clips per ``ClipBatch``.
        decoder_threads: decord threads per reader (0 = decord's default).
        channels_last: give clips in the memory layout of a channels-last model (see ``ClipBatch``).
        slots: in DataLoader workers, hand batches over in these shared slots (``ClipSlots``); the
            consumer must then pass every item through ``slots.receive`` and ``slots.release``.
    """

    def __init__(self, sources: list[VideoSource], sampling: ClipSampling, clips_per_chunk: int,
                 batch_size: int, decoder_threads: int = 0, channels_last: bool = False,
                 slots: ClipSlots | None = None):
        super().__init__()
        if clips_per_chunk < 1 or batch_size < 1:
            raise ValueError(f"ClipBatchDataset: clips_per_chunk ({clips_per_chunk}) and batch_size "
                             f"({batch_size}) must be >= 1")
        self.sources = list(sources)
        self.sampling = sampling
        self.clips_per_chunk = clips_per_chunk
        self.batch_size = batch_size
        self.decoder_threads = decoder_threads
        self.channels_last = channels_last
        self.slots = slots

    def __iter__(self):
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        slots = self.slots if worker is not None else None
        opener = SourceOpener()
        try:
            for video_index in range(worker_id, len(self.sources), num_workers):
                yield from self.video_items(video_index, opener, slots, worker_id)
        finally:
            opener.close()

    def video_items(self, video_index: int, opener: SourceOpener, slots: ClipSlots | None = None,
                    worker_id: int = 0):
        """One video's items: its ``ClipBatch``es, or a ``VideoFailure`` (possibly after some batches).
        With ``slots``, the clips are written straight into worker ``worker_id``'s slots."""
        source = self.sources[video_index]
        try:
            yield from self._decode_batches(video_index, source, opener, slots, worker_id)
        except VideoError as error:
            yield VideoFailure(video_index, source.video_id, source.display_path, error.reason)
        # Anything else a broken file provokes deep in a decoder must not end the DataLoader either:
        # it becomes this video's failure, with the exception type to tell it from a decode error.
        except Exception as error:  # noqa: BLE001
            lines = str(error).strip().splitlines() or [""]
            yield VideoFailure(video_index, source.video_id, source.display_path,
                               f"{type(error).__name__}: {lines[0]}")

    def _decode_batches(self, video_index: int, source: VideoSource, opener: SourceOpener,
                        slots: ClipSlots | None, worker_id: int):
        sampling = self.sampling
        reader = opener.reader(source, sampling.short_side, self.decoder_threads)
        grid = clip_grid(reader.duration, sampling.fps, sampling.num_frames, sampling.interval_frames,
                         sampling.stride_frames)
        buffer = None  # (K, H, W, 3) uint8 frames of the previous chunk
        last_native_index, last_native_frame = -1, None
        for chunk in chunks(grid, self.clips_per_chunk):
            # Target frames -> native frames (nearest presentation time). At a target rate above the
            # native rate neighbouring target frames share a native frame; the one that straddles the
            # chunk boundary is reused instead of decoded again (which would seek backwards).
            native = reader.frame_indices(chunk.decode_times_sec)  # (D,) ascending
            reused = native == last_native_index
            fresh = reader.frames(native[~reused])  # (D - reused, H, W, 3)
            if reused.any():
                fresh = np.concatenate([np.repeat(last_native_frame[None], int(reused.sum()), axis=0), fresh])
            if native.size:
                last_native_index, last_native_frame = int(native[-1]), fresh[-1]
            kept = buffer[chunk.keep_from_previous] if buffer is not None else fresh[:0]
            buffer = np.concatenate([kept, fresh])  # (K + D, H, W, 3), in buffer_frame_ids order
            frames = center_crop(buffer, sampling.short_side) if sampling.crop == "center" else buffer
            for start in range(0, chunk.clip_stop - chunk.clip_start, self.batch_size):
                stop = min(start + self.batch_size, chunk.clip_stop - chunk.clip_start)
                clip_frame_ids = chunk.clip_frame_ids[start:stop]  # (n, T) buffer positions
                shape = (len(clip_frame_ids), sampling.num_frames, *frames.shape[1:])  # (n, T, H, W, 3)
                slot, memory = self._clip_memory(shape, slots, worker_id)
                if self.channels_last:  # memory is (n, T, H, W, 3): the clips gathered straight into it
                    np.take(frames, clip_frame_ids, axis=0, out=memory)
                    clips = None if slot >= 0 else torch.from_numpy(memory)
                else:
                    # memory is (n, 3, T, H, W), the clips viewed back as (n, T, H, W, 3)
                    _gather_transposed(frames, clip_frame_ids, memory)
                    clips = None if slot >= 0 else torch.from_numpy(memory).permute(0, 2, 3, 4, 1)
                first_clip = chunk.clip_start + start
                yield ClipBatch(
                    video_index=video_index,
                    video_id=source.video_id,
                    clip_start=first_clip,
                    clips=clips,
                    times_sec=grid.clip_centers_sec[first_clip:first_clip + (stop - start)],
                    num_clips=grid.num_clips,
                    duration_sec=float(reader.duration),
                    native_fps=float(reader.native_fps),
                    is_last=first_clip + (stop - start) == grid.num_clips,
                    slot=slot,
                    clips_shape=shape if slot >= 0 else (),
                )

    def _clip_memory(self, shape: tuple[int, ...], slots: ClipSlots | None, worker_id: int) -> tuple[int, np.ndarray]:
        """Where a batch of ``shape`` ``(n, T, H, W, 3)`` is built, laid out as the model runs
        (``(n, T, H, W, 3)`` channels-last, else ``(n, 3, T, H, W)``): the worker's next slot and its
        number, or fresh memory and -1 (no slots, or the batch does not fit one)."""
        memory_shape = shape if self.channels_last else (shape[0], shape[4], *shape[1:4])
        taken = slots.slot_array(worker_id, memory_shape) if slots is not None else None
        if taken is None:
            return -1, np.empty(memory_shape, dtype=np.uint8)
        return taken


def _gather_transposed(frames: np.ndarray, clip_frame_ids: np.ndarray, out: np.ndarray) -> None:
    """``out[i, :, t] = frames[clip_frame_ids[i, t]]`` with channels first: the contiguous layout's
    clips, ``frames (K, H, W, 3)`` and ``clip_frame_ids (n, T)`` into ``out (n, 3, T, H, W)``.

    One transposing copy a frame, straight into ``out``: gathering the clips first and transposing
    them after would pass over the batch twice. (numpy's copy: one thread, where torch's could start
    a thread team in every decoder.)
    """
    for clip_out, frame_ids in zip(out, clip_frame_ids.tolist()):
        for t, frame_id in enumerate(frame_ids):
            np.copyto(clip_out[:, t], frames[frame_id].transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)
