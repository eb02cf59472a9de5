"""The scoring engine behind `gamma-iqa score` and `Gamma.score`.

Images are decoded and cropped in DataLoader workers; crops go through the model in forwards of a fixed number of
images (padded at the very end), so a score is bit-identical whatever the batch size, worker count, position or run;
under torchrun the entries are split across ranks and the rows come back merged, in input order.

On an accelerator the crops travel as uint8 pixels (a quarter of the float32 bytes), pinned by the DataLoader, copied
on a side stream while the previous forward computes, and turned into [0, 1] floats on the device through a table of
the 256 floats the CPU path computes (so the scores are those of the float path, bit for bit). Up to `Scorer.in_flight`
forwards are queued before the host waits for the oldest one's scores: the host syncs when rows come out, not per
forward.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import stat
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from ..data.inputs import Entry, expand_paths
from ..data.transforms import (
    ColourWarning,
    Crops,
    TruncatedImageError,
    array_to_image,
    image_to_tensor,
    load_image,
    make_crops,
    parse_crops,
    resize_short_side,
    to_rgb,
)
from ..models.base import QualityModel, require_model, set_scorer, values_unchecked
from ..models.scenes import LEVEL_NAMES
from .calibration import Calibration, score_columns
from .onnxrt import BACKENDS, OnnxForward
from .progress import Progress
from .runtime import (
    CUDA_GRAPH_MODES,
    DTYPES,
    autocast,
    compile_mode,
    holding_warnings,
    replay_warnings,
    scoring_dtype,
)

__all__ = [
    "DETAIL_FIELDS",
    "LEVEL_NAMES",
    "ScoreRow",
    "Scorer",
    "WorkerDied",
    "decode_input",
    "describe_error",
    "score_inputs",
]

# Images per forward, fixed per device (a CPU forward holds at least the model's `cpu_crops_per_forward` crops), the
# last forward padded with zero images: results never depend on --batch-size, the workers or an image's position.
IMAGES_PER_FORWARD = {"cpu": 1, "cuda": 32, "mps": 8}
ORIENTATION = 0x0112  # the EXIF tag of the camera's orientation
# The columns `details` adds after ScoreRow.FIELDS: the crops' spread, then each level's probability.
DETAIL_FIELDS = ("spread", *(f"p_{name}" for name in LEVEL_NAMES))


@dataclass
class ScoreRow:
    """The result of one entry: its score or why it has none.

    Attributes:
        index: the entry's position in the input (rows come out in this order).
        path: the entry's name (the path as given, or `<input N>`).
        score: the mean score of the crops, in the model's `score_range` (higher is better); None on error.
        scene: the scene scored with (the model's default when the entry names none).
        crops: the crop mode, e.g. `10`, `center`, `none`, with ` (upscaled)` when the image was smaller than a crop.
        error: why the entry has no score (one line); None when it was scored.
        spread: with details, the population standard deviation of the crop scores (`torch.std(correction=0)`, 0 for
            one crop or equal crop scores), in score units; None otherwise.
        levels: with details, the head's level probabilities averaged over the crops, worst first (one per
            LEVEL_NAMES, summing to 1; their expectation under the model's level values is `score`); None otherwise.
        extra: the columns a Scorer's `columns` add (`mos`, `calibrated`), by name; empty without them or on error.
        note: why the image was scored with a caveat (its embedded colour profile could not be applied), else None;
            not an output column: `Scorer.run` warns it as a `ColourWarning`.
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("path", "score", "scene", "crops", "error")  # the output's columns

    index: int
    path: str
    score: float | None = None
    scene: str | None = None
    crops: str | None = None
    error: str | None = None
    spread: float | None = None
    levels: tuple[float, ...] | None = None
    extra: dict[str, float] = field(default_factory=dict)
    note: str | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, object]:
        """The output columns of this row: FIELDS, DETAIL_FIELDS (None when the row has no details), then `extra`."""
        values: dict[str, object] = {k: getattr(self, k) for k in self.FIELDS}
        values["spread"] = self.spread
        levels = self.levels if self.levels is not None else (None,) * len(LEVEL_NAMES)
        values.update(zip(DETAIL_FIELDS[1:], levels, strict=True))
        values.update(self.extra)
        return values


def _spread(scores: torch.Tensor) -> float:
    """The population standard deviation of one image's crop scores; exactly 0 when they are all equal.

    (float32's mean of equal values can be off in its last bit, and the std with it.)
    """
    return 0.0 if bool((scores == scores[0]).all()) else float(scores.std(correction=0))


def describe_error(e: BaseException) -> str:
    """A one-line reason for a failed image."""
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a folder, not an image"
    if isinstance(e, PermissionError):
        return "cannot read (permission denied)"
    if isinstance(e, UnidentifiedImageError):
        return "not an image, or an unsupported format"
    if isinstance(e, Image.DecompressionBombError):  # a decoder repeating PIL's check (our budget is a ValueError)
        return f"image too large for PIL's Image.MAX_IMAGE_PIXELS ({str(e).splitlines()[0]})"
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, (ValueError, TypeError, TruncatedImageError)):  # our own checks on the input say what is wrong
        return text
    if "truncated" in text or isinstance(e, (OSError, SyntaxError)):
        return f"truncated or corrupt image ({text})"
    return f"{type(e).__name__}: {text}"


def decode_input(source: Any) -> Image.Image | torch.Tensor:
    """A file path or its bytes, PIL image, numpy array or (3, H, W) tensor -> PIL RGB image or float tensor in [0, 1].

    A PIL image gets what `load_image` does to a file (EXIF orientation, then sRGB through its colour profile), so one
    file gives one score whichever way it comes; arrays and tensors are checked and scaled by `array_to_image`.

    Raises:
        Exception: what reading it raised (OSError, ValueError, PIL's errors...); `describe_error` words it.
    """
    if isinstance(source, (str, Path)):
        info = os.stat(source)
        if stat.S_ISREG(info.st_mode) and info.st_size == 0:  # a pipe's size says nothing
            raise ValueError("empty file (0 bytes)")
        return load_image(source)
    if isinstance(source, bytes):  # a stream read whole (standard input, a pipe)
        return load_image(source)
    if isinstance(source, Image.Image):
        if source.getexif().get(ORIENTATION, 1) != 1:  # exif_transpose copies even an upright image: skip those
            source = ImageOps.exif_transpose(source)
        return to_rgb(source)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return array_to_image(source)
    raise TypeError(f"cannot score a {type(source).__name__}: give paths, PIL images, numpy arrays or tensors")


def _decode_noting(source: Any) -> tuple[Image.Image | torch.Tensor, str | None, list[Warning]]:
    """`decode_input(source)`, the reason of a `ColourWarning` it gave (None without one) and its other warnings, held.

    The other warnings (PIL's on a damaged file, say) are held for the main process to show (`holding_warnings`).
    """
    image, held = holding_warnings(lambda: decode_input(source))
    notes = [w.reason for w in held if isinstance(w, ColourWarning)]
    return image, "; ".join(notes) or None, [w for w in held if not isinstance(w, ColourWarning)]


def _to_pil(image: torch.Tensor) -> Image.Image:
    """A (3, H, W) float tensor in [0, 1] as an 8-bit PIL RGB image."""
    return Image.fromarray((image * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


class _Images(Dataset):
    """Decodes and crops one entry per item; a failure becomes an item with an error, never an exception."""

    def __init__(self, entries: Sequence[tuple[int, Entry]], crops: Crops, size: int, seed: int, uint8: bool = False):
        """`entries` as (input index, entry); crops of `size` pixels seeded by `seed`, uint8 where they can be."""
        self.entries, self.crops, self.size, self.seed, self.uint8 = entries, crops, size, seed, uint8

    def __len__(self) -> int:
        """The number of entries."""
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Item `i`: its input index and either its crops, (n, 3, size, size) float32 or uint8, or its error."""
        index, entry = self.entries[i]
        item: dict[str, Any] = {"index": index, "warned": []}
        try:
            image, item["note"], item["warned"] = _decode_noting(entry.source)
            if entry.resize is not None:
                image = resize_short_side(image if isinstance(image, Image.Image) else _to_pil(image), entry.resize)
            prepared = make_crops(image, self.crops, self.size, self.seed, uint8=self.uint8)
            item.update(crops=prepared.crops, upscaled=prepared.upscaled)
        except Exception as e:  # any decoder failure is the input's fault: report it on its row
            item["error"] = describe_error(e)
        return item


class WorkerDied(RuntimeError):
    """A decoding worker process died (killed for memory, say): the run cannot go on; the rows before it stand."""


def _stop_loader(batches: Iterator[Any]) -> list[Any]:
    """Stop a DataLoader iterator's worker processes now; returns those that died rather than stopped (none: []).

    SIGCHLD is blocked meanwhile: torch's handler raises for a dead worker until the iterator has forgotten its
    workers (the end of its shutdown), and a raise in the middle of the shutdown would leave them registered, to
    raise again later (in an except block, at exit).
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # a multi-process iterator (workers > 0) only
    if shutdown is None:
        return []
    can_block = hasattr(signal, "pthread_sigmask") and hasattr(signal, "SIGCHLD")
    if can_block:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        shutdown()
    finally:
        if can_block:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    return [w for w in getattr(batches, "_workers", []) if w.exitcode not in (0, None)]


def _death(workers: list[Any]) -> WorkerDied:
    """The error for decoding workers that died: their pids and how (a signal's name, or the exit code)."""
    pids = ", ".join(str(w.pid) for w in workers)
    code = workers[0].exitcode
    try:
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    except ValueError:  # a signal number without a name here
        how = f"killed by signal {-code}"
    return WorkerDied(f"a decoding worker (pid {pids}) died unexpectedly ({how}: out of memory?)")


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as its list of items (their crop counts differ)."""
    return items


# uint8 pixel -> float32 in [0, 1]: the 256 values of the CPU path's own division (`image_to_tensor`), looked up on the
# device. Dividing there would not do: CUDA divides a tensor by a scalar as a product with its reciprocal, which is
# 1 ulp off the quotient for 126 of the 256 values.
_UNIT = image_to_tensor(Image.frombytes("RGB", (256, 1), bytes(v for v in range(256) for _ in range(3))))[0, 0]


def _to_unit(crops: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Crops (n, 3, H, W) on the device, uint8 or float32 -> float32 in [0, 1] (uint8 through `table`, (256,))."""
    return table[crops.int()] if crops.dtype == torch.uint8 else crops


class _Launched(NamedTuple):
    """A forward on its way: its crops' scores (and level probabilities) landing on the host, and when they have."""

    per: list[int]  # crops per item, in order
    scores: torch.Tensor  # (sum(per),) float32 on the host, filled by the time `done` has passed
    probs: torch.Tensor | None  # (sum(per), K) float32 on the host with details, else None
    done: Any  # a torch.cuda.Event recorded after the copies to the host, or None when they are already there

    def ready(self) -> bool:
        """Whether the scores are on the host (without waiting)."""
        return self.done is None or self.done.query()

    def wait(self) -> None:
        """Block until the scores are on the host."""
        if self.done is not None:
            self.done.synchronize()


def _images_per_forward(model: QualityModel, crops: Crops, device: torch.device) -> int:
    """Images in each of a Scorer's forwards (`Scorer.per_forward`); see IMAGES_PER_FORWARD."""
    if crops == "none":
        return 1
    images = IMAGES_PER_FORWARD.get(device.type, 1)
    if device.type == "cpu":
        each = 1 if crops == "center" else int(crops)
        images = max(images, -(-getattr(model, "cpu_crops_per_forward", 1) // each))  # ceil
    return images


class Scorer:
    """Scores entries with a model: DataLoader workers decode, fixed-size forwards score, rows come out in order.

    Attributes:
        uint8_crops: crops travel from the workers as uint8 pixels and become floats on the device: True, False, or
            None (default) for accelerators only. The scores are the same either way, bit for bit.
        in_flight: forwards queued on an accelerator before the host waits for the oldest one's scores (at least 1).
        per_forward: images in each forward, fixed for the model, crops and device: IMAGES_PER_FORWARD of the device,
            on the CPU at least enough images for the model's `cpu_crops_per_forward`; 1 for `crops` "none" (whole
            images differ in size).
        onnx: the onnxruntime forward (`engine.onnxrt.OnnxForward`) with `backend` onnxruntime, else None; another
            Scorer of the same model takes it as its `backend` to share it.
    """

    uint8_crops: ClassVar[bool | None] = None
    in_flight: ClassVar[int] = 2

    def __init__(
        self,
        model: QualityModel,
        *,
        crops: Crops = 10,
        seed: int = 0,
        batch_size: int = 8,
        workers: int = 0,
        dtype: str = "fp32",
        progress: bool = False,
        distributed: bool = False,
        details: bool = False,
        columns: Mapping[str, Callable[[float], float]] | None = None,
        backend: str | OnnxForward = "torch",
        compile: str | bool | None = None,
    ) -> None:
        """Check the options; the model stays on its device.

        Args:
            model: the model scoring, in eval mode, on the device the crops are sent to.
            crops: N random crops per image, "center" or "none" (the whole image).
            seed: seed of the random crops, mixed with each image's pixels.
            batch_size: images decoded per DataLoader batch (scores do not depend on it).
            workers: DataLoader processes decoding (0: in this process).
            dtype: autocast precision, a DTYPES name. bf16 on a CPU where it is slower than fp32 (for this model family,
                or without native bf16) scores in fp32 instead, with a warning (`runtime.scoring_dtype`); `self.dtype`
                is the precision used.
            progress: show the rows done on stderr (`engine.progress.Progress`): a bar on a terminal, else a line
                with the count, rate and time left at most once a minute, and a summary line after a long run.
            distributed: inside a torchrun group, split the entries across its ranks (rank 0 gets every row).
            details: fill each row's `spread` and `levels` (the model's forward must take `levels=True`, as
                QualityModel says); the scores are the same either way.
            columns: extra columns of a scored row, {name: map of its score} (`calibration.score_columns`), set in
                each row's `extra`.
            backend: what runs the forward on the crops: "torch" (the model itself) or "onnxruntime" (its exported
                image path, `engine.onnxrt.OnnxForward`: CPU, fp32, fixed-size crops; the optional extra
                `gamma-iqa[onnx]`). `self.backend` is what provenance records (name, and onnxruntime's version).
                An `OnnxForward` already built for `model` (another Scorer's `onnx`) is used as it is: Scorers made
                one after another (a service's, one per request) then neither hash the weights nor open a session.
            compile: compile the model's image tower with `torch.compile` in this mode (COMPILE_MODES: "default",
                "reduce-overhead" for CUDA graphs of the fixed-size forwards, "max-autotune",
                "max-autotune-no-cudagraphs"; True: "default"); None or False (default) runs it eagerly. Models
                with `compile_towers` only (Gamma); the torch backend only. The first forward compiles (about a minute
                for ViT-B/16; with `progress` a line on stderr says so); the scores equal the eager ones to float
                rounding (1e-6 in fp32), not bit for bit. The model stays compiled.

        Raises:
            TypeError: `model` is not a model (a name, say).
            ValueError: `batch_size` below 1, `workers` below 0, bad `crops`, an unknown `dtype`, fp16 on the CPU, an
                unknown `backend`, or onnxruntime with a GPU, bf16/fp16, `crops` "none" or without the extra; an
                unknown `compile` mode, or `compile` with onnxruntime or a model without `compile_towers` (names the
                parameters).

        Warns:
            UserWarning: bf16 asked for on a CPU where it is slower than fp32: one line saying fp32 is used.
        """
        require_model(model)
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        if workers < 0:
            raise ValueError(f"`workers` must be >= 0, got {workers}")
        if dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.model, self.crops, self.seed = model, parse_crops(crops), seed
        self.batch_size, self.workers = batch_size, workers
        self.progress = progress
        self.distributed = distributed  # True: split the entries across the torchrun ranks (the CLI opts in)
        self.details = details
        self.columns = dict(columns or {})
        self.device = next(model.parameters()).device
        self.per_forward = _images_per_forward(model, self.crops, self.device)
        if dtype == "fp16" and self.device.type == "cpu":
            raise ValueError("`dtype` fp16 needs a GPU; use bf16 or fp32 on the CPU")
        name = getattr(model.config, "name", type(model).__name__)
        self.dtype, note = scoring_dtype(dtype, self.device, cpu_bf16=getattr(model, "cpu_bf16", True), name=name)
        if note is not None:
            warnings.warn(note, stacklevel=2)
        accelerated = self.device.type != "cpu"
        self.uint8 = accelerated if self.uint8_crops is None else self.uint8_crops
        self._table = _UNIT.to(self.device)  # (256,) float32: uint8 pixel -> [0, 1]
        # Copies to the device on their own stream overlap the forward before them (CUDA only).
        self._copies = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.onnx = self._onnx_forward(backend)  # None, or the forward a later Scorer may take as its `backend`
        self.backend: dict[str, Any] = {"name": "torch"} if self.onnx is None else self.onnx.info
        self._announce = False  # set by `_compile`: the next forward compiles, and a line says so (`progress`)
        self.compile = self._compile(compile)
        if self.compile is not None:
            self.backend["compile"] = self.compile  # provenance: the scores are the eager ones to rounding only

    def _compile(self, mode: str | bool | None) -> str | None:
        """Compile the model's image tower in `mode` (unless it already is) and return the mode the forwards run in.

        None or False: the model as it is (eager, or the mode it was compiled in before).

        Raises:
            ValueError: an unknown mode, onnxruntime, or a model without `compile_towers`.
        """
        mode = compile_mode(mode)  # True: "default", as training's `compile: true`
        if mode is None:  # eager, unless the model was compiled before (it stays so): that mode
            current = getattr(self.model, "compiled", False)
            return current if isinstance(current, str) and self.onnx is None else None
        if self.onnx is not None:
            raise ValueError("`compile` is for the torch backend; onnxruntime builds its own graph (drop `compile`)")
        compile_towers = getattr(self.model, "compile_towers", None)
        if compile_towers is None:
            name = getattr(self.model.config, "name", type(self.model).__name__)
            raise ValueError(
                f"`compile` is for Gamma models (gamma-vit-b16 and its checkpoints); model {name} has no compiled "
                "path (on the CPU its fast path is `backend` onnxruntime)"
            )
        if getattr(self.model, "compiled", False) != mode:
            compile_towers(text=False, **({} if mode == "default" else {"mode": mode}))
            # The first forward is silent for a minute or so: it says why (once: rank 0 of a torchrun group).
            self._announce = self.progress and self.shard[0] == 0
        return mode

    def _onnx_forward(self, backend: str | OnnxForward) -> OnnxForward | None:
        """None for the torch backend, else the onnxruntime forward: `backend` itself when one is given, else new.

        Raises:
            ValueError: an unknown `backend`, or onnxruntime with options it cannot honour.
        """
        given = backend if isinstance(backend, OnnxForward) else None
        if given is not None:
            backend = "onnxruntime"
        if backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "torch":
            return None
        if self.device.type != "cpu":
            raise ValueError(f"`backend` onnxruntime scores on the CPU; the model is on {self.device} (`device` cpu)")
        if self.dtype != "fp32":
            raise ValueError("`backend` onnxruntime scores in fp32; drop `dtype` " + self.dtype)
        if self.crops == "none":
            raise ValueError("`backend` onnxruntime takes fixed-size crops: `crops` N or center, not none")
        return given if given is not None else OnnxForward(self.model)

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world size) of the split: the torchrun group's when `distributed` inside one, else (0, 1)."""
        if self.distributed and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    # ---- model side --------------------------------------------------------------------------------------------
    def score_items(self, group: list[tuple[dict[str, Any], str | None]]) -> list[tuple[float, float | None, Any]]:
        """(mean score, spread, mean level probabilities) of each (item, scene)'s crops (no details: None, None).

        One forward, as `run` makes them: at most `per_forward` items, each a dict whose `crops` are (n, 3, S, S)
        float32 in [0, 1] or uint8 (zero images pad a short group to `per_forward`, so a score never depends on the
        group; "none" crops go one item at a time). Waits for the result (`_launch` does not).
        """
        return self._results(self._launch(group))

    def _on_device(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """Items' crops, each (n, 3, H, W) uint8 or float32 on the host -> one float32 batch in [0, 1] on the device.

        On CUDA the copies (from pinned memory, asynchronous) go on the side stream, which the forward's stream then
        waits for: the host does not, and the copies overlap the forward already queued.
        """
        if self._copies is None:
            moved = [c.to(self.device, non_blocking=True) for c in crops]
        else:
            with torch.cuda.stream(self._copies):
                moved = [c.to(self.device, non_blocking=True) for c in crops]
            compute = torch.cuda.current_stream(self.device)
            compute.wait_stream(self._copies)
            for m in moved:
                m.record_stream(compute)  # their memory is not reused before the forward has read it
        return torch.cat([_to_unit(m, self._table) for m in moved])

    @torch.inference_mode()
    def _launch(self, group: list[tuple[dict[str, Any], str | None]]) -> _Launched:
        """Queue the forward of `group` (see `score_items`) and the copy of its scores to the host; no wait on a GPU."""
        crops = self._on_device([item["crops"] for item, _ in group])
        scenes = [scene for item, scene in group for _ in range(len(item["crops"]))]
        per = [len(item["crops"]) for item, _ in group]
        want = len(crops) if self.crops == "none" else per[0] * self.per_forward
        if len(crops) < want:
            pad = want - len(crops)
            crops = torch.cat([crops, crops.new_zeros(pad, *crops.shape[1:])])
            scenes += [None] * pad
        probs = None
        # The crops are in [0, 1] by construction (8-bit pixels, or arrays checked and clamped by `array_to_image`):
        # on an accelerator the model's value check, a reduction and a host sync per forward, is skipped.
        unchecked = values_unchecked() if self.device.type != "cpu" else contextlib.nullcontext()
        forward = self.model if self.onnx is None else self.onnx  # same call, same outputs
        if self._announce:
            self._announce = False
            print(
                f"compiling the image tower (torch.compile, mode {self.compile}): this first forward takes a minute "
                "or so",
                file=sys.stderr,
            )
        if self.compile in CUDA_GRAPH_MODES and self.device.type == "cuda":
            # Each forward is a new step of the CUDA graphs: the previous one's outputs were consumed (the head ran
            # on them, its scores are being copied in stream order), so their memory may be replayed over.
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.dtype), unchecked:
            if self.details:
                scores, probs = forward(crops, scenes, levels=True)
            else:
                scores = forward(crops, scenes)
        n = sum(per)
        if self.device.type != "cuda":  # the CPU (and MPS) path as it always was: the values are there
            return _Launched(per, scores.float().cpu()[:n], None if probs is None else probs.float().cpu()[:n], None)
        scores = scores.float()[:n].to("cpu", non_blocking=True)  # into pinned memory, asynchronously
        probs = None if probs is None else probs.float()[:n].to("cpu", non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        return _Launched(per, scores, probs, done)

    def _results(self, launched: _Launched) -> list[tuple[float, float | None, Any]]:
        """`score_items`' tuples of a launched forward, once its scores are on the host (the means taken there)."""
        launched.wait()
        scores = launched.scores.split(launched.per)  # per item: (n crops,)
        if launched.probs is None:
            return [(float(s.mean()), None, None) for s in scores]
        probs = launched.probs.split(launched.per)  # per item: (n crops, K)
        return [
            (float(s.mean()), _spread(s), tuple(p.mean(dim=0).tolist())) for s, p in zip(scores, probs, strict=True)
        ]

    def _accept(self, items: list[dict[str, Any]], entries: dict[int, Entry], queue: list) -> list[ScoreRow]:
        """Rows of failed items (finished now); good items join `queue` as (item, scene, row) to be scored."""
        failed = []
        for item in items:
            replay_warnings(item["warned"])  # raised where it was decoded, maybe a worker: shown here
            entry = entries[item["index"]]
            row = ScoreRow(item["index"], entry.name, scene=entry.scene or self.model.config.default_scene)
            try:
                if "error" in item:
                    raise ValueError(item["error"])
                self.model.prompt_key(entry.scene)  # a manifest row with an unknown scene fails alone
            except ValueError as e:
                row.error = str(e)
                failed.append(row)
                continue
            row.crops = f"{self.crops}{' (upscaled)' if item['upscaled'] else ''}"
            row.note = item.get("note")
            queue.append((item, entry.scene, row))
        return failed

    def _drain(self, queue: list, flight: deque, final: bool) -> list[ScoreRow]:
        """Launch full forwards from the front of `queue` (and the padded remainder when `final`) into `flight`.

        Returns the rows of the forwards in `flight` that are done: every one when `final`, else those whose scores
        are on the host already, and the oldest ones beyond `in_flight` (waiting for them).
        """
        while len(queue) >= self.per_forward or (final and queue):
            group, queue[:] = queue[: self.per_forward], queue[self.per_forward :]
            flight.append(([row for _, _, row in group], self._launch([(it, sc) for it, sc, _ in group])))
        scored = []
        while flight and (final or len(flight) > max(1, self.in_flight) or flight[0][1].ready()):
            rows, launched = flight.popleft()
            for row, result in zip(rows, self._results(launched), strict=True):
                row.score, row.spread, row.levels = result
                row.extra = {name: float(f(row.score)) for name, f in self.columns.items()}
                if row.note is not None:
                    warnings.warn(ColourWarning(row.path, row.note), stacklevel=2)
                scored.append(row)
        return scored

    # ---- one group at a time (the device worker of `gamma-iqa serve`, serve/worker.py) ---------------------------
    def prepare(self, index: int, entry: Entry) -> dict[str, Any]:
        """Decode and crop `entry` as `run`'s loader does; any thread may call it (the model is not used).

        Returns:
            Its item for `score_prepared`: input index `index` and either its crops or its one-line error.
        """
        return _Images([(index, entry)], self.crops, self.model.image_size, self.seed, uint8=self.uint8)[0]

    def score_prepared(self, items: Sequence[dict[str, Any]], entries: Mapping[int, Entry]) -> list[ScoreRow]:
        """The rows of items from `prepare` (of Scorers with this one's crops), in the fixed-size forwards of `run`.

        The last forward is padded as `run` pads its last one, so every score is the one `run` gives (seeds may differ
        between the items: they only placed the crops). Failed items come first, then the scored ones.

        Args:
            items: prepared items with distinct indices.
            entries: the entry of each item's index.
        """
        queue: list = []
        failed = self._accept(list(items), dict(entries), queue)
        return failed + self._drain(queue, deque(), final=True)

    # ---- the run -----------------------------------------------------------------------------------------------
    def run(self, entries: Sequence[Entry], *, done: int = 0) -> Iterator[ScoreRow]:
        """Rows for `entries`, in their order.

        `done` counts rows written before (the rows a resumed output keeps): the progress shows `done` + the rows
        so far of `done` + len(`entries`).

        A row scored with a caveat (its `note`: an embedded colour profile that could not be applied) is also warned
        as a `ColourWarning` naming its path, by the process that scored it.

        With `distributed=True` inside a torchrun group, every rank must call this with the same entries; each scores
        its share and rank 0 gets all the rows (the others get none). Otherwise this process scores everything.

        Raises:
            WorkerDied: a decoding worker process died (killed for memory, say; names its pid and how); the rows
                yielded before it stand.
        """
        rank, world = self.shard
        numbered = list(enumerate(entries))
        lookup = dict(numbered)
        pending: dict[int, ScoreRow] = {}
        for i, e in numbered:
            if e.error is not None and rank == 0:
                pending[i] = ScoreRow(i, e.name, scene=e.scene or self.model.config.default_scene, error=e.error)
        mine = [(i, e) for i, e in numbered if e.error is None][rank::world]
        loader = DataLoader(
            _Images(mine, self.crops, self.model.image_size, self.seed, uint8=self.uint8),
            batch_size=self.batch_size,
            num_workers=self.workers if len(mine) > self.batch_size else 0,  # one batch: a worker only adds start-up
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )
        progress = Progress(
            done + len(entries), desc="score", unit="image", done=done, enabled=self.progress and rank == 0
        )
        batches = iter(loader)
        failure: Exception | None = None
        try:
            for row in self._gather(batches, lookup, pending):
                progress.update()
                yield row
            progress.finish()
        except Exception as e:  # a dead worker shows as torch's RuntimeError or a broken queue (EOF, reset)
            failure = e
            raise
        finally:  # also when the caller stops early (an interrupt): the bar and the workers go
            dead = _stop_loader(batches)
            progress.close()
            if dead and failure is not None:
                raise _death(dead) from failure

    def _gather(self, batches: Iterator[Any], lookup: dict[int, Entry], pending: dict[int, ScoreRow]) -> Iterator:
        """The rows of `run`, in order, as their batches finish (on rank 0; the other ranks yield none).

        `pending` holds the rows that came out of order (at first: the entries that failed before decoding).
        """
        rank, world = self.shard
        queue: list = []
        flight: deque = deque()  # (rows, _Launched) of the forwards launched and not yet turned into rows
        next_index = 0
        done = False
        while True:
            batch = None if done else next(batches, None)
            done = batch is None
            local = self._accept(batch, lookup, queue) if batch else []
            local += self._drain(queue, flight, final=done)
            if world > 1:
                gathered: list[Any] = [None] * world
                dist.all_gather_object(gathered, (local, done))
                rows = [r for rs, _ in gathered for r in rs]
                finished = all(d for _, d in gathered)
            else:
                rows, finished = local, done
            if rank == 0:
                pending.update((r.index, r) for r in rows)
                while next_index in pending:
                    yield pending.pop(next_index)
                    next_index += 1
            if finished:
                break


def score_inputs(
    model: QualityModel,
    inputs: Any,
    *,
    scene: str | Sequence[str] | None = None,
    crops: Crops = 10,
    seed: int = 0,
    batch_size: int = 8,
    dtype: str = "fp32",
    details: bool = False,
    mos_scale: str | None = None,
    calibration: str | os.PathLike[str] | Calibration | None = None,
    backend: str = "torch",
    compile: str | bool | None = None,
) -> list[float] | list[dict[str, Any]]:
    """`QualityModel.score`: scores of paths, PIL images, numpy arrays or a (B, 3, H, W) tensor in [0, 1], in order.

    Always single-process (also under torchrun); the scores are those `gamma-iqa score` prints.

    A folder or glob pattern given alone counts as its images, in the order `gamma-iqa score` lists them (sorted
    paths). In a sequence every item is one image and gets one score, so a folder or pattern there is refused: the
    scores could not be told apart.

    Args:
        model: the model scoring.
        inputs: one input (a path, folder or glob pattern, PIL image, numpy array, (3, H, W) or (B, 3, H, W)
            tensor) or a sequence of single images.
        scene: one scene for all inputs, one per input, or None (the model's default).
        crops: N random crops per image, "center" or "none".
        seed: seed of the random crops, mixed with each image's pixels.
        batch_size: images decoded per batch (scores do not depend on it).
        dtype: autocast precision, a DTYPES name.
        details: return one dict per image instead: the output columns of `gamma-iqa score --details` (FIELDS but
            `error`, then DETAIL_FIELDS; see ScoreRow).
        mos_scale: a registered dataset: return dicts with a key `mos` too, the score on its MOS scale (see
            engine/calibration.py; for a lower-is-better dataset a higher score gives a lower DMOS).
        calibration: a calibration file of `gamma-iqa calibrate` for this model (or a loaded `Calibration`): return
            dicts with a key `calibrated` too, the score through it.
        backend: "torch", or "onnxruntime" to run the forward through the model's ONNX export (see `Scorer`).
        compile: a torch.compile mode for the image tower, or None (see `Scorer`).

    Returns:
        One score per image, in the model's `score_range`; with `details`, `mos_scale` or `calibration`, one dict per
        image: FIELDS but `error`, DETAIL_FIELDS with `details`, then `mos` and `calibrated` as asked for.

    Raises:
        ValueError: a bad input (naming it: its path, or `<input N>` for the N-th in-memory image), a folder or
            pattern in a sequence, as many scenes as inputs were not given, an unknown `mos_scale`, or a malformed
            `calibration` or one for another model (`calibration.CalibrationError`).
        FileNotFoundError: `calibration` is not a file.
    """
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        items: list[Any] = list(inputs)
    elif isinstance(inputs, (str, Path, Image.Image, np.ndarray, torch.Tensor)):
        items = [inputs]
    else:
        items = list(inputs)
        for item in items:
            _check_one_image(item)
    scenes = [scene] * len(items) if scene is None or isinstance(scene, str) else list(scene)
    if len(scenes) != len(items):
        raise ValueError(f"got {len(scenes)} scenes for {len(items)} inputs")
    entries: list[Entry] = []
    for i, (item, s) in enumerate(zip(items, scenes, strict=True)):
        if isinstance(item, (str, Path)):
            entries.extend(expand_paths([str(item)], s))
        else:
            entries.append(Entry(f"<input {i}>", item, s))
    columns = score_columns(model, mos_scale=mos_scale, calibration=calibration, scene=scene, crops=crops)
    options = {"crops": crops, "seed": seed, "batch_size": batch_size, "dtype": dtype, "backend": backend}
    options["compile"] = compile
    scorer = Scorer(model, details=details, columns=columns, **options)
    keys = [k for k in ScoreRow.FIELDS if k != "error"] + list(DETAIL_FIELDS if details else ()) + list(columns)
    out: list[Any] = []
    for row in scorer.run(entries):
        if row.error is not None:
            raise ValueError(f"{row.path}: {row.error}")
        if details or columns:
            values = row.as_dict()
            out.append({k: values[k] for k in keys})
        else:
            out.append(row.score)
    return out


def _check_one_image(item: Any) -> None:
    """Refuse a folder or glob pattern as an item of a sequence of inputs, where each item gets one score.

    Raises:
        ValueError: naming the item and the two ways to score it.
    """
    if not isinstance(item, (str, Path)):
        return
    path = Path(item)
    if path.is_dir() or (glob.has_magic(str(item)) and not path.exists()):
        raise ValueError(
            f"{item}: a folder or glob pattern in a list of inputs would give several scores for one item; pass it "
            "alone (its images are scored in sorted path order, as `gamma-iqa score` lists them) or list its files"
        )


set_scorer(score_inputs)  # behind QualityModel.score (the models layer cannot import this one)
