"""Device choice and the CUDA-only speed settings (AMP, channels-last)."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from medtransfer.errors import UserError


def pick_device(name: str) -> torch.device:
    """auto: CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda", "no CUDA device is visible", "use --device cpu or auto")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it (fp16 otherwise); nothing on CPU, where it only slows down."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run is reproducible on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
