"""SSH keys for the SFTP transport."""

from __future__ import annotations

from pathlib import Path

import paramiko


def load_private_key(path_or_text: str | Path, passphrase: str | None = None) -> paramiko.PKey:
    """Load an OpenSSH/PEM private key (Ed25519, ECDSA or RSA) from a path or from its text."""
    import io

    text = str(path_or_text)
    if "PRIVATE KEY" not in text:
        text = Path(text).read_text()
    last: Exception | None = None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except (paramiko.SSHException, ValueError) as err:
            last = err
    raise ValueError(f"not a supported SSH private key: {last}")
