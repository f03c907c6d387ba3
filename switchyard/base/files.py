"""Files a development run makes once and keeps (its payload keys, its credentials)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def made_once(path: Path, text: Callable[[], str]) -> Path:
    """`path`, written with `text()` (readable by its owner only) if it does not exist.

    Written to a temporary file, then linked into place: two processes starting at once
    both end up with the one that was linked first.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path
