"""The Hugging Face hub, as every backbone family reaches it: files from the local cache or a download, the commit
they came from (the weights' identity), and one clear line for a gated model, a missing network or an empty cache."""

from __future__ import annotations

import os
from pathlib import Path

from medtransfer.errors import UserError

# What huggingface_hub reads as "offline" (its constants.py): other values leave downloads on.
_TRUE = ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads, read as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def cached_file(repo_id: str, filenames: tuple[str, ...], revision: str | None = None) -> Path | None:
    """The first of `filenames` that the local cache holds for this repo and revision, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        hit = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(hit, str):
            return Path(hit)
    return None


def commit_of(path: Path) -> str | None:
    """The commit a cached hub file belongs to: its `snapshots/<commit>/` folder, or None outside the cache."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i - 1] == "snapshots" and parts[i - 2].startswith("models--"):
            return parts[i]
    return None


def identity(repo_id: str, path: Path | None, revision: str | None) -> str:
    """`hub:ORG/NAME@COMMIT`, the commit taken from the cached file; the asked-for revision when nothing is cached."""
    commit = commit_of(path) if path is not None else None
    return f"hub:{repo_id}@{commit or revision or 'main'}"


LOCAL_COPY = "pass a local copy of its files"


def fix(repo_id: str, gated: bool = False, local: str = LOCAL_COPY) -> str:
    """How a user supplies a hub model's files here: a login for a gated one, then a cache copy or a local copy."""
    login = (f"accept its terms at https://huggingface.co/{repo_id}, then set HF_TOKEN or run `hf auth login`; "
             if gated else "")
    return (f"{login}where there is network, download it once (hf download {repo_id}) and copy the Hugging Face cache "
            f"here (HF_HOME, with HF_HUB_OFFLINE=1), or {local}")


def download(repo_id: str, filename: str, revision: str | None, what: str, gated: bool = False,
             local: str = LOCAL_COPY) -> Path:
    """One file of a hub repo, from the cache or the network; every failure is one line naming the model and the fix."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hub_errors

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except hub_errors.GatedRepoError:
        raise UserError(what, f"is gated on the Hugging Face hub ({repo_id}) and this machine has no access",
                        fix(repo_id, True, local)) from None
    except hub_errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline() else "the hub cannot be reached"
        raise UserError(what, f"{filename} of {repo_id} is not in the local Hugging Face cache and {why}",
                        fix(repo_id, gated, local)) from None
    except hub_errors.RevisionNotFoundError:
        raise UserError(what, f"{repo_id} has no revision {revision!r}", "name a branch, tag or commit it has") from None
    except hub_errors.RepositoryNotFoundError:
        raise UserError(what, f"no hub repository {repo_id} (or it is private)",
                        "check the name; for a private one set HF_TOKEN or run `hf auth login`") from None
    except hub_errors.EntryNotFoundError:
        raise UserError(what, f"{repo_id} has no file {filename}", "check that it is a model of this family") from None
    except (hub_errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise UserError(what, f"cannot fetch {filename} of {repo_id} ({type(exc).__name__})", fix(repo_id, gated, local)) from None


def first_download(repo_id: str, filenames: tuple[str, ...], revision: str | None, what: str,
                   gated: bool = False, local: str = LOCAL_COPY) -> Path:
    """The first of `filenames` the repo has: the cache is asked first, so an offline machine never tries the rest."""
    hit = cached_file(repo_id, filenames, revision)
    if hit is not None:
        return hit
    if offline() and len(filenames) > 1:  # say which files would do, not only the first one tried
        raise UserError(what, f"none of {', '.join(filenames)} of {repo_id} is in the local Hugging Face cache and "
                        "HF_HUB_OFFLINE is set", fix(repo_id, gated, local))
    for filename in filenames:
        try:
            return download(repo_id, filename, revision, what, gated, local)
        except UserError as exc:
            if exc.problem != f"{repo_id} has no file {filename}":
                raise
    raise UserError(what, f"{repo_id} has none of {', '.join(filenames)}",
                    "check that it is a model of this family") from None
