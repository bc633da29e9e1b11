"""Local weight files: read without unpickling code, unwrapped from training containers, translated to timm's key
layout where they come from torchvision or official DINOv2, then loaded only if every key and shape fits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medtransfer.config import WEIGHT_KEYWORDS
from medtransfer.errors import UserError
from medtransfer.hashing import file_sha256

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Containers that training frameworks wrap state dicts in, and prefixes that DDP or wrappers add.
CONTAINER_KEYS = ("state_dict", "model", "teacher", "module")
STRIP_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


def check_weights_arg(weights: str) -> None:
    """`pretrained`, `imagenet`, `none`, or an existing checkpoint file with a known suffix."""
    if weights in WEIGHT_KEYWORDS:
        return
    path = Path(weights)
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserError(f"--weights {weights}", "is neither pretrained, imagenet, none nor a checkpoint file",
                        f"pass pretrained, none, or a {'/'.join(CHECKPOINT_SUFFIXES)} file")
    if not path.is_file():
        raise UserError(f"--weights {weights}", "file does not exist", "check the path")


def file_identity(path: Path) -> str:
    """A local checkpoint's identity: its content's sha256."""
    return f"file:{file_sha256(Path(path))}"


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


def read_state_dict(path: Path, notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint (never unpickling code) and unwrap training containers and wrapper prefixes; each unwrapping
    is appended to `notes`, for the run's log."""
    state = read_tensors(path)
    notes = [] if notes is None else notes
    for key in CONTAINER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            notes.append(f"{Path(path).name}: took the state dict under its {key!r} key")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(str(path), "holds no flat state dict of tensors", "save model.state_dict()")
    if not state:
        raise UserError(str(path), "holds no tensors", "save model.state_dict()")
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            notes.append(f"{Path(path).name}: stripped the {prefix!r} prefix from its {len(state)} keys")
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
    load_strict(module, state, str(path), "the run directory's files were changed or mixed up: rerun the training",
                what="the run's model")


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


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, fix: str,
                spare: Callable[[str], bool] = lambda k: False, optional: Callable[[str], bool] = lambda k: False,
                what: str | None = None) -> None:
    """Load `state` into `module` only if every key and shape fits (`spare` keys may be left over, `optional` ones
    missing) and every float weight is float and finite: a checkpoint never loads partially in silence."""
    expected = module.state_dict()
    problems = _fit_problems(state, expected, spare, optional)
    if problems:
        raise UserError(source, f"does not fit {what or module.__class__.__name__}: {'; '.join(problems)}", fix)
    check_tensors(state, expected, source)
    module.load_state_dict({k: state.get(k, v) for k, v in expected.items()}, strict=True)


def _mae_decoder(key: str) -> bool:
    """A masked-autoencoder checkpoint's pretraining-only parts (RETFound, MAE): its decoder and mask token."""
    return key.startswith("decoder") or key == "mask_token"


def load_checkpoint(model: nn.Module, path: Path, classifier: str | tuple[str, ...] | None,
                    notes: list[str] | None = None) -> None:
    """Load a local checkpoint into a timm model strictly; only the ImageNet classifier's keys, and a masked
    autoencoder's decoder, may be left over (each named in `notes`)."""
    notes = [] if notes is None else notes
    raw = read_state_dict(path, notes)
    expected = model.state_dict()
    decoder = [k for k in raw if _mae_decoder(k) and k not in expected]  # before timm's filter drops mask_token
    state = convert_layout(raw, model)
    if decoder:
        notes.append(f"{Path(path).name}: left out {len(decoder)} masked-autoencoder decoder tensors "
                     f"({decoder[0]}, …): pretraining only")
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
    heads += ("head", "fc", "classifier", "head.fc")
    # torchvision's published files predate BatchNorm's num_batches_tracked; it does not affect the features.
    load_strict(model, state, str(path), "pass a checkpoint of the same architecture (timm, torchvision or DINOv2 "
                "layout)", lambda k: any(k.startswith(h + ".") for h in heads) or k in decoder,
                lambda k: k.endswith(".num_batches_tracked"))
