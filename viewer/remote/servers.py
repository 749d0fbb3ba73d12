"""Configured PACS servers and their secrets.

Addresses, AE titles and options live in ``servers.json`` beside the app's other settings
(``$XDG_CONFIG_HOME/lightbox``, else ``~/.config/lightbox``). Passwords and tokens never do: they go
to the OS keyring (``keyring``) when it has a usable backend, else they are kept in this process's
memory only, and the caller tells the user so. For scripts, LIGHTBOX_REMOTE_PASSWORD and
LIGHTBOX_REMOTE_TOKEN supply them without a keyring.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from viewer.core.atomic import write_bytes

from .base import Server, parse_address

KEYRING_SERVICE = "lightbox-pacs"
_SESSION: dict[str, str] = {}  # secrets given this run that no keyring could keep


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "lightbox"


class ServerStore:
    """The user's server list, one JSON file written atomically (mode 0600: it names hosts and users)."""

    def __init__(self, path=None):
        self.path = Path(path) if path is not None else config_dir() / "servers.json"

    def load(self) -> list[Server]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: cannot read the server list ({exc})") from exc
        servers = []
        for entry in data.get("servers", []) if isinstance(data, dict) else []:
            try:
                servers.append(Server.from_json(entry))
            except (TypeError, ValueError):
                continue  # one bad entry (hand-edited) does not hide the others
        return servers

    def save(self, servers: list[Server]) -> None:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError("two servers have the same name")
        data = {"servers": [s.to_json() for s in servers]}
        write_bytes(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"), mode=0o600)

    def get(self, name: str) -> Server | None:
        return next((s for s in self.load() if s.name == name), None)

    def put(self, server: Server) -> None:
        """Add ``server``, or replace the one of the same name."""
        servers = [s for s in self.load() if s.name != server.name]
        self.save([*servers, server])

    def remove(self, name: str) -> None:
        self.save([s for s in self.load() if s.name != name])


def resolve(text: str, store: ServerStore | None = None) -> Server:
    """A configured server by name, else a URL (parse_address)."""
    found = (store or ServerStore()).get(text) if text else None
    return found if found is not None else parse_address(text)


# -- secrets -------------------------------------------------------------------------------
def _account(server: Server) -> str:
    return f"{server.name}|{server.username}"


def _keyring():
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
        return None
    try:
        from keyring.backends import null
        if isinstance(backend, null.Keyring):
            return None
    except ImportError:
        pass
    return keyring


def keyring_available() -> bool:
    return _keyring() is not None


def get_secret(server: Server) -> str:
    """The password (basic) or token (bearer) for ``server``: given this run, else from the environment,
    else from the keyring; "" when there is none (the server may not need one)."""
    if server.auth == "none":
        return ""
    account = _account(server)
    if account in _SESSION:
        return _SESSION[account]
    env = os.environ.get("LIGHTBOX_REMOTE_TOKEN" if server.auth == "bearer" else "LIGHTBOX_REMOTE_PASSWORD")
    if env:
        return env
    kr = _keyring()
    if kr is not None:
        try:
            return kr.get_password(KEYRING_SERVICE, account) or ""
        except Exception:  # noqa: BLE001 - a locked or broken keyring is the same as none
            return ""
    return ""


def set_secret(server: Server, secret: str, remember: bool = True) -> bool:
    """Keep ``secret`` for ``server``. True when the OS keyring holds it (it survives a restart);
    False when it is kept for this session only (no keyring here, or ``remember`` False)."""
    account = _account(server)
    kr = _keyring() if remember else None
    if kr is not None:
        try:
            if secret:
                kr.set_password(KEYRING_SERVICE, account, secret)
            else:
                forget_secret(server)
            _SESSION.pop(account, None)
            return True
        except Exception:  # noqa: BLE001 - fall back to this session
            pass
    if secret:
        _SESSION[account] = secret
    else:
        _SESSION.pop(account, None)
    return False


def forget_secret(server: Server) -> None:
    account = _account(server)
    _SESSION.pop(account, None)
    kr = _keyring()
    if kr is not None:
        try:
            kr.delete_password(KEYRING_SERVICE, account)
        except Exception:  # noqa: BLE001 - nothing stored
            pass
