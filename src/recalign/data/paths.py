"""Where datasets live on disk.

The data folder is, in order: the ``--data-dir`` argument, ``$RECALIGN_DATA``, then a per-user
cache folder (``$XDG_CACHE_HOME/recalign``, or ``~/.cache/recalign``).
"""

from __future__ import annotations

import os
from pathlib import Path

from recalign.errors import InputError

ENV_DATA_DIR = "RECALIGN_DATA"


def default_data_dir() -> Path:
    """The data folder used when none is given: ``$RECALIGN_DATA``, else the per-user cache."""
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "recalign"
    return Path.home() / ".cache" / "recalign"


def resolve_data_dir(arg: str | Path | None) -> Path:
    """The data folder for an optional user argument (``None`` or ``""`` = the default).

    The folder need not exist yet; an existing path that is not a folder is an `InputError`.
    """
    if arg is None or (isinstance(arg, str) and not arg.strip()):
        path = default_data_dir()
    else:
        path = Path(arg).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise InputError("the data folder exists but is not a folder", path=path)
    return path
