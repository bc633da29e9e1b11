"""Weight sources: `imagenet` (timm via the Hugging Face cache), `none`, or a local checkpoint file.

Local files may be in timm, torchvision or official DINOv2 key layout; timm's own per-family converters
translate them, then every key and shape must match: a checkpoint never loads partially in silence.
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from torch import nn

from medtransfer.errors import UserError
from medtransfer.hashing import file_sha256

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Containers that training frameworks wrap state dicts in, and prefixes that DDP or wrappers add.
CONTAINER_KEYS = ("state_dict", "model", "teacher", "module")
STRIP_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


def weights_identity(weights: str, timm_name: str, seed: int) -> str:
    """What makes two weight sources give the same features: part of the feature-cache key."""
    if weights == "imagenet":
        return f"imagenet:{timm_name}"
    if weights == "none":
        return f"none:seed={seed}"
    return f"file:{file_sha256(Path(weights))}"


def check_weights_arg(weights: str) -> None:
    """`imagenet`, `none`, or an existing checkpoint file with a known suffix."""
    if weights in ("imagenet", "none"):
        return
    path = Path(weights)
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserError(f"--weights {weights}", "is neither imagenet, none nor a checkpoint file",
                        f"pass imagenet, none, or a {'/'.join(CHECKPOINT_SUFFIXES)} file")
    if not path.is_file():
        raise UserError(f"--weights {weights}", "file does not exist", "check the path")


def hub_cached(timm_name: str) -> bool:
    """Whether timm's pretrained weights for this model are already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None or not cfg.hf_hub_id:
        return False
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(hit, str):
            return True
    return False


def offline_message(timm_name: str) -> str:
    """The fix for missing pretrained weights: a local file, or a pre-populated HF cache."""
    return (f"download them where there is network (python -c \"import timm; timm.create_model('{timm_name}', "
            f"pretrained=True)\") and copy the Hugging Face cache here (set HF_HOME to it, and HF_HUB_OFFLINE=1), "
            f"or pass --weights PATH to a local .safetensors/.pth file")


def create_imagenet(timm_name: str, **kwargs) -> nn.Module:
    """timm's pretrained weights through huggingface_hub; a clear user error when they cannot be had."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")  # as huggingface_hub
    if offline and not hub_cached(timm_name):
        raise UserError(f"{timm_name} imagenet weights", "not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
                        offline_message(timm_name))
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, RuntimeError) and "size mismatch" in str(exc):
            raise
        raise UserError(f"{timm_name} imagenet weights", f"cannot be loaded offline or downloaded "
                        f"({type(exc).__name__})", offline_message(timm_name)) from None


def read_tensors(path: Path) -> object:
    """What a .safetensors or a .pth/.pt/.bin file holds; a pickle is read with weights_only=True, so code inside
    it is never run, and one carrying more than tensors and containers is refused."""
    import pickle

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(str(path), "holds pickled Python objects besides tensors; it was not unpickled, since "
                        "unpickling can run code", "re-save it as a state dict of tensors "
                        "(torch.save(model.state_dict(), PATH)) or as .safetensors, from a source you trust") from None
    except Exception as exc:  # any decoding failure is the user's file, not our bug
        raise UserError(str(path), f"cannot read checkpoint ({type(exc).__name__}: {str(exc)[:120]})",
                        "pass a .safetensors or a torch state dict saved with torch.save(model.state_dict())") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint (never unpickling code) and unwrap training containers and wrapper prefixes."""
    state = read_tensors(path)
    for key in CONTAINER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(str(path), "holds no flat state dict of tensors", "save model.state_dict()")
    if not state:
        raise UserError(str(path), "holds no tensors", "save model.state_dict()")
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor] | None, source: str) -> None:
    """Weights the model keeps in floating point must be floating point (int32 or bool would be cast in silence)
    and finite (NaN weights give NaN features, found only when scoring fails)."""
    if expected is not None:
        wrong = [k for k, v in expected.items() if k in state and v.is_floating_point()
                 and not state[k].is_floating_point()]
        if wrong:
            dtypes = sorted({str(state[k].dtype).removeprefix("torch.") for k in wrong})
            raise UserError(source, f"holds {'/'.join(dtypes)} tensors where the model's weights are floating point "
                            f"({len(wrong)} tensor(s), first: {wrong[0]})", "pass the float weights "
                            "(torch.save(model.float().state_dict())); a quantised or converted file cannot be loaded")
    keys = [k for k in (expected if expected is not None else state) if k in state]
    bad = [k for k in keys if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if bad:
        count = sum(int((~torch.isfinite(state[k])).sum()) for k in bad)
        raise UserError(source, f"holds {count} NaN or infinite value(s) in {len(bad)} tensor(s) (first: {bad[0]})",
                        "pass weights saved before training diverged, or retrain with a lower learning rate")


def load_run_weights(module: nn.Module, path: Path) -> None:
    """Load weights a finished run saved: readable, every key and shape as the module's, float and finite."""
    if not path.is_file():
        raise UserError(str(path), "is missing from the run directory", "rerun the training (the run is incomplete)")
    state = read_tensors(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(str(path), "holds no flat state dict of tensors", "rerun the training")
    expected = module.state_dict()
    problems = _fit_problems(state, expected, lambda k: False, lambda k: False)
    if problems:
        raise UserError(str(path), f"does not fit the run's model: {'; '.join(problems)}",
                        "the run directory's files were changed or mixed up: rerun the training")
    check_tensors(state, expected, str(path))
    module.load_state_dict(state, strict=True)


def _fit_problems(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], spare, optional) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches, a few of each named; spare/optional excuse keys."""
    unexpected = [k for k in state if k not in expected and not spare(k)]
    missing = [k for k in expected if k not in state and not optional(k)]
    shapes = [f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    if state and expected and not any(k in expected for k in state):
        problems.append(f"none of its {len(state)} keys match (its first: {next(iter(state))}; the model's first: "
                        f"{next(iter(expected))})")
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
        if keys:
            problems.append(f"{label} ({len(keys)}): {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}")
    return problems


def convert_layout(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Translate torchvision / official DINOv2 layouts to timm's with timm's own per-family filters."""
    module = type(model).__module__
    if module.endswith("vision_transformer"):
        from timm.models.vision_transformer import checkpoint_filter_fn

        return checkpoint_filter_fn(dict(state), model)  # also resamples pos_embed to the model's grid
    if module.endswith(".vgg"):
        from timm.models.vgg import _filter_fn

        return _filter_fn(state)
    if module.endswith(".densenet"):
        from timm.models.densenet import _filter_torchvision_pretrained

        return _filter_torchvision_pretrained(dict(state))
    return state


def load_checkpoint(model: nn.Module, path: Path, classifier: str | tuple[str, ...] | None) -> None:
    """Load a local checkpoint strictly; only the ImageNet classifier's keys may be left over."""
    state = convert_layout(read_state_dict(path), model)
    expected = model.state_dict()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    heads += ("head", "fc", "classifier", "head.fc")
    # torchvision's published files predate BatchNorm's num_batches_tracked; it does not affect the features.
    problems = _fit_problems(state, expected, lambda k: any(k.startswith(h + ".") for h in heads),
                             lambda k: k.endswith(".num_batches_tracked"))
    if problems:
        raise UserError(str(path), f"does not fit {model.__class__.__name__}: {'; '.join(problems)}",
                        "pass a checkpoint of the same architecture (timm, torchvision or DINOv2 layout)")
    check_tensors(state, expected, str(path))
    model.load_state_dict({k: state.get(k, v) for k, v in expected.items()}, strict=True)
