"""Device and precision selection shared by every trainer and by inference."""

from __future__ import annotations

import contextlib
import enum
from typing import TYPE_CHECKING

from hybridcap.errors import HybridcapError

if TYPE_CHECKING:
    import torch


class DeviceChoice(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, enum.Enum):
    fp32 = "fp32"
    bf16 = "bf16"


def resolve_device(choice: DeviceChoice | str = DeviceChoice.auto) -> torch.device:
    """Return the torch device for ``choice``: ``auto`` picks CUDA, then MPS, then the CPU.

    Raises HybridcapError when an explicitly requested accelerator is not available.
    """
    import torch

    choice = DeviceChoice(choice)
    cuda_available = torch.cuda.is_available()
    mps_available = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if choice is DeviceChoice.auto:
        if cuda_available:
            return torch.device("cuda")
        if mps_available:
            return torch.device("mps")
        return torch.device("cpu")
    if choice is DeviceChoice.cuda and not cuda_available:
        raise HybridcapError("--device cuda was requested but no CUDA device is available; use --device auto or cpu")
    if choice is DeviceChoice.mps and not mps_available:
        raise HybridcapError("--device mps was requested but MPS is not available; use --device auto or cpu")
    return torch.device(choice.value)


def autocast(device: torch.device, precision: Precision | str) -> contextlib.AbstractContextManager[None]:
    """Return an autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    import torch

    if Precision(precision) is Precision.fp32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
