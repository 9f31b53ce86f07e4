"""Pseudonymous patient ids: a keyed hash (HMAC-SHA256) of the source's patient key.

The key lives outside every dataset (a file readable only by its owner), so a dataset alone
cannot be linked back to source patient ids, while re-ingesting with the same key gives the
same pseudonyms (lineage, audits across versions).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_ENV = "RADSYNTH_PSEUDONYM_KEY_FILE"
KEY_BYTES = 32
ID_HEX_CHARS = 16  # 64 bits: collisions are negligible for any plausible number of patients


def default_key_file() -> Path:
    """`$RADSYNTH_PSEUDONYM_KEY_FILE`, else ~/.config/radsynth/pseudonym.key."""
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "radsynth" / "pseudonym.key"


def load_or_create_key(path: str | Path | None = None) -> bytes:
    """Read the pseudonym key; create it (32 random bytes, mode 0600) when it does not exist."""
    path = Path(path).expanduser() if path else default_key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by a concurrent run: use that one
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(KEY_BYTES))
    key = path.read_bytes()
    if len(key) < 16:
        raise ValueError(f"{path}: pseudonym key file holds {len(key)} bytes; need at least 16")
    return key


def check_key_outside(key_file: Path, out: Path) -> None:
    """The key must never travel with a dataset."""
    key_file, out = key_file.expanduser().resolve(), out.resolve()
    if key_file == out or out in key_file.parents:
        raise ValueError(
            f"{key_file}: the pseudonym key file must not lie inside the dataset {out}"
        )


def pseudonymise(key: bytes, patient_key: str) -> str:
    """Truncated HMAC-SHA256 hex of the (split-scoped) source patient key."""
    return hmac.new(key, patient_key.encode("utf-8"), hashlib.sha256).hexdigest()[:ID_HEX_CHARS]
