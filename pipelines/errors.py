"""Checks every command runs on its inputs before it writes anything, and how the command line reports errors.

A user's mistake (a bad path, an out-of-range setting, a model that is not available offline) is a
``FilmweaverError``: ``filmweaver`` prints one line and exits 2; ``-v`` adds the traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

import os
import sys
import traceback

from curation.errors import ConfigError, ModelUnavailable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
RESUME_HINT = (
    "rerun the same command to resume (videos committed before the interrupt are kept and skipped; the local "
    "engine commits every shards.commit_videos videos or shards.commit_s seconds)"
)


def check_output_dir(path: str, option: str = "--out") -> None:
    """Raise ``ConfigError`` unless ``path`` is a folder, or can be made one (object-store URIs pass).
    Errors: an existing file, a file among its parents, a parent folder that is not writable."""
    if "://" in path:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{option} {path} is a file, not a folder: choose another {option}")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{option} {path}: {parent} is a file, so the folder cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {parent} is not writable")


def check_hub_model(name: str, what: str, subfolders: tuple[str, ...] = ()) -> None:
    """Raise ``ModelUnavailable`` at once when ``name`` is neither a local folder nor a Hugging Face model in
    the local cache and the Hub cannot be reached (offline, ``HF_HUB_OFFLINE=1``), instead of letting the
    loaders retry for half a minute. ``subfolders``: folders a local checkpoint must have (e.g. ``vae``)."""
    if os.path.isdir(name):
        missing = [s for s in subfolders if not os.path.isdir(os.path.join(name, s))]
        if missing:
            raise ModelUnavailable(f"{what} {name} has no {', '.join(s + '/' for s in missing)}")
        return
    if os.path.exists(name) or name.startswith((".", "/")) or name.count("/") != 1:
        raise ModelUnavailable(f"{what} {name} is not a folder (nor a Hugging Face model id like org/name)")
    from huggingface_hub import HfApi, constants, snapshot_download

    try:
        snapshot_download(name, local_files_only=True)
        return  # cached
    except Exception:  # noqa: BLE001 - not in the cache (LocalEntryNotFoundError and relatives)
        pass
    hint = f"download it first (huggingface-cli download {name}) or set {what} to a local folder"
    if constants.HF_HUB_OFFLINE:
        raise ModelUnavailable(f"{what} {name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: {hint}")
    try:
        HfApi().model_info(name, timeout=10)
    except Exception as exc:  # noqa: BLE001 - network, DNS, 404, auth: all mean it cannot be loaded now
        raise ModelUnavailable(
            f"{what} {name} is not in the Hugging Face cache and the Hub did not answer ({type(exc).__name__}): {hint}"
        ) from None


def check_hub_push(repo_id: str) -> None:
    """Raise ``ConfigError`` at once when an upload to the Hugging Face dataset repo ``repo_id`` cannot work:
    a malformed id, no token (``HF_TOKEN`` or ``huggingface-cli login``), offline, or a Hub that does not answer."""
    from huggingface_hub import HfApi, constants, get_token

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"--push-to-hub expects a repo id like user/dataset-name, got {repo_id!r}")
    if constants.HF_HUB_OFFLINE:
        raise ConfigError("--push-to-hub cannot upload while HF_HUB_OFFLINE is set")
    if get_token() is None:
        raise ConfigError("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `huggingface-cli login`")
    try:
        HfApi().whoami()
    except Exception as exc:  # noqa: BLE001 - network, DNS, a refused token: the upload would fail the same way
        raise ConfigError(
            f"--push-to-hub: the Hugging Face Hub at {constants.ENDPOINT} did not accept the token or did not "
            f"answer ({type(exc).__name__}: {exc})"
        ) from None


def report_error(exc: BaseException, verbose: bool, hint: str | None = None) -> int:
    """Print ``exc`` as one line on stderr (the traceback first when ``verbose``); the exit code."""
    if verbose:
        traceback.print_exception(exc)
    if isinstance(exc, KeyboardInterrupt):
        print(f"filmweaver: interrupted{': ' + hint if hint else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    line = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
    print(f"filmweaver: error: {line}", file=sys.stderr)
    return EXIT_USER_ERROR
