"""Devices, precisions, torchrun process groups and workers' warnings, shared by scoring, evaluation and training."""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import torch
import torch.distributed as dist

__all__ = [
    "DTYPES",
    "ProcessGroup",
    "autocast",
    "compile_mode",
    "cpu_has_bf16",
    "default_workers",
    "holding_warnings",
    "process_group",
    "replay_warnings",
    "resolve_device",
    "scoring_dtype",
    "setup",
]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# torch.compile's modes (`Scorer`'s `compile`, training's `compile`); those that capture CUDA graphs on a GPU.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_mode(value: bool | str | None) -> str | None:
    """A `compile` setting as a torch.compile mode: None or False -> None (eager), True -> "default", a mode as is.

    Raises:
        ValueError: a string that is not one of COMPILE_MODES (naming `compile`).
    """
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        raise ValueError(f"`compile` must be one of {', '.join(COMPILE_MODES)}, got {value!r}")
    return value


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` (a DTYPES name) on `device`; fp32 is no autocast at all."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX512-BF16, AMX or the like), not by emulation."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:  # a torch built without oneDNN
        return False


def scoring_dtype(dtype: str, device: torch.device, *, cpu_bf16: bool, name: str) -> tuple[str, str | None]:
    """The precision to score in when `dtype` is asked for on `device`, and why it differs (None when it does not).

    On the CPU, bf16 is ignored (fp32 is used) where it would be slower than fp32: for a model family whose bf16 was
    measured slower (`cpu_bf16` False, e.g. gamma-lite: see benchmarks/README.md) or on a CPU without native bf16
    (`cpu_has_bf16`), where it is emulated. Elsewhere `dtype` is kept.

    Args:
        dtype: the asked precision, a DTYPES name.
        device: the device scoring.
        cpu_bf16: whether bf16 is faster than fp32 for this model family on a CPU with native bf16.
        name: the model's name, for the message.

    Returns:
        (precision used, a one-line message naming `dtype` when it is not the one asked for, else None).
    """
    if dtype != "bf16" or device.type != "cpu":
        return dtype, None
    if not cpu_bf16:
        return "fp32", f"`dtype` bf16 is slower than fp32 on this CPU for {name}; scoring in fp32"
    if not cpu_has_bf16():
        return "fp32", "`dtype` bf16 is slower than fp32 on this CPU (no native bf16); scoring in fp32"
    return dtype, None


def default_workers() -> int:
    """Decoding processes (DataLoader workers) by default: one per CPU this process may use beyond its own, at most 4.

    `score`, `eval` and `train` share it: 2 on 3 cores, 4 from 5 cores on. Up to 2 cores, only the cores the
    forward's threads leave idle (`torch.get_num_threads()`, e.g. `OMP_NUM_THREADS=1`): 0 with torch's usual 2 threads
    on 2 cores, where a worker only contends with them and gamma-lite scores faster decoding in the main process
    (benchmarks/README.md, "CPU forwards of several crops"), and 1 with one thread, for a light model's decoding to
    overlap its forward. The forward's thread count is never changed here: it moves scores in their last bits.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    usable = usable or 1
    return min(4, usable - 1) if usable > 2 else max(0, usable - torch.get_num_threads())


def holding_warnings(fn: Callable[[], object]) -> tuple[object, list[Warning]]:
    """`fn()` and the warnings it raised, held back (not shown) for the main process to show (`replay_warnings`).

    A DataLoader worker is another process: warnings it showed itself would skip the main process's filters and
    its one-line display (`gamma-iqa`), and repeat in every worker and epoch. Each is kept as an object that survives
    the trip back to the main process (pickling): one that would not becomes a UserWarning of its class and text.

    Returns:
        (what `fn` returned, the warnings in the order raised).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [_portable(w.message) for w in caught]


def _portable(message: Warning | str) -> Warning:
    """`message` as a Warning that pickles and unpickles back (to leave a DataLoader worker)."""
    if isinstance(message, str):
        return UserWarning(message)
    try:
        return pickle.loads(pickle.dumps(message))
    except Exception:  # a warning class whose arguments do not rebuild it: keep its class name and text
        return UserWarning(f"{type(message).__name__}: {message}")


def replay_warnings(held: Iterable[Warning]) -> None:
    """Warn `held` (from `holding_warnings`) in this process, through its filters and `warnings.showwarning`."""
    for message in held:
        warnings.warn(message, stacklevel=2)


def resolve_device(name: str) -> torch.device:
    """The device named `auto` (CUDA, else MPS, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`.

    Raises:
        ValueError: Not a device name, a device type gamma-iqa does not run on, or a CUDA or MPS device that is not
            available (a one-line message naming `device`).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists every device type it knows; ours names the ones we run on
        raise ValueError(f"`device` {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` {name}: no CUDA device is available (use cpu or auto)")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError(f"`device` {name}: no MPS device is available (use cpu or auto)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"`device` {name}: gamma-iqa runs on cpu, cuda or mps")
    return device


def setup(device_name: str) -> tuple[int, int, torch.device]:
    """This process's (rank, world size, device), joining the torchrun process group when there is one.

    Under torchrun (WORLD_SIZE > 1) it joins the process group, NCCL when this process drives a GPU (its
    LOCAL_RANK's) and gloo on CPUs; otherwise it returns (0, 1, the resolved device).

    Raises:
        ValueError: `device_name` asks for CUDA and none is available (see `resolve_device`).
    """
    device = resolve_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


class ProcessGroup(NamedTuple):
    """This process's place in a torchrun job: (rank, world size, device); (0, 1, device) without torchrun."""

    rank: int
    world: int
    device: torch.device


@contextlib.contextmanager
def process_group(device_name: str = "auto") -> Iterator[ProcessGroup]:
    """Join the torchrun process group for the block (see `setup`), and leave it at the end if this call joined it.

    Re-entrant: inside a group that is already initialised it yields that group and leaves it alone. Without
    torchrun (WORLD_SIZE unset or 1) it only resolves the device.
    """
    owned = not (dist.is_available() and dist.is_initialized())
    group = ProcessGroup(*setup(device_name))
    try:
        yield group
    finally:
        if owned and group.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
