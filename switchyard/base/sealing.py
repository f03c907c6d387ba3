"""Job arguments and results sealed at rest: AES-256-GCM under keys with ids.

Every message body a Switchyard process writes (queues, delay queues, the brokers' `.XQ`)
keeps its envelope readable (`message_id`, `queue_name`, `actor_name`, `options`,
`message_timestamp`) and carries its arguments in one `sealed` field instead of `args`
and `kwargs`. The options that copy a payload (`SEALED_OPTIONS`: a pipeline's next
message, the preview of a body that could not be decoded or routed) go inside the seal.
Results (Dramatiq's result backend, the job history) and the messages kept with dead
letters are sealed the same way.

A sealed value is `sy1.<key id>.<base64url(nonce + ciphertext)>`: AES-256-GCM with a
random 96-bit nonce; a message's seal is bound to its message id and actor name (the
associated data), so it cannot be moved onto another message.

Keys come from PAYLOAD_KEYS, newest first (`<id>:<base64 of 32 bytes>`): new seals use
the first, and every listed key still opens what it sealed, so a rotation needs no
downtime (`switchyard keys rotate` then re-seals what is stored under the newest key).
Production refuses to start without a key unless PAYLOAD_ENCRYPTION=false; development
and tests use a key generated under VAR_DIR (`payload-keys`) on first use.

`SealingEncoder` is Dramatiq's encoder for the process, so `actor.send()` seals with no
change to the caller. On the way in, a body it cannot open (an unknown key id, a body
or envelope changed after sealing, a verified seal whose content is not a message's
arguments) and a body that is not sealed at all (a plain Dramatiq producer without the
keys) become stand-ins for `UNDECODABLE`: dead letters with that reason, never a
crashed consumer (`switchyard.base.decoding`). The stand-in of a body that is only
not sealed keeps the producer's message whole and its id, so a replay seals and runs
it. A producer in another service seals by installing the same encoder with the same
keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dramatiq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from dramatiq.encoder import Encoder, JSONEncoder, MessageData

from switchyard.base.decoding import REFUSED_OPTION, SafeEncoder, stand_in
from switchyard.base.files import made_once
from switchyard.base.settings import KEY_ID, SettingsError, parse_payload_key

if TYPE_CHECKING:
    from switchyard.base.settings import Settings

#: The version tag that starts every sealed value.
VERSION = "sy1"
#: Nonce length (bytes) of AES-GCM.
NONCE_BYTES = 12
#: Options that copy a payload, so they travel inside the seal.
SEALED_OPTIONS = frozenset({"pipe_target", "undecodable_body", "ingress_body", REFUSED_OPTION})
#: Why a body that is not sealed is refused while sealing is on.
NOT_SEALED = ("the body is not sealed: send it with Switchyard's encoder and PAYLOAD_KEYS "
              "(docs/encryption.md), or replay its dead letter to seal and run it")
#: The file under VAR_DIR holding the development key (made on first use, mode 0600).
DEV_KEYS_FILE = "payload-keys"
#: Associated data of sealed results (the result backend and the job history).
RESULT_PURPOSE = b"switchyard:result"


class Unsealable(ValueError):
    """A sealed value that cannot be opened; the message says why (no key, no value)."""


class Keyring:
    """AES-256-GCM keys by id, newest first; seals with the newest, opens with any."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        raw = dict(keys)
        self._keys = {key_id: AESGCM(secret) for key_id, secret in raw.items()}
        if not self._keys:
            raise ValueError("a keyring needs at least one key")
        self.newest = next(iter(self._keys))
        self._newest_secret = raw[self.newest]

    def derive(self, label: bytes) -> bytes:
        """A secret for another use (`label`), derived from the newest key."""
        return hmac.new(self._newest_secret, b"switchyard:" + label, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self._keys)!r})"

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> Keyring:
        """From `<id>:<base64 key>` entries, newest first (PAYLOAD_KEYS' format)."""
        return cls(parse_payload_key(entry) for entry in entries)

    def seal(self, plaintext: bytes, purpose: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.newest].encrypt(nonce, plaintext, purpose)
        return f"{VERSION}.{self.newest}.{_b64(nonce + sealed)}"

    def open(self, token: str, purpose: bytes) -> bytes:
        key_id, blob = split(token)
        key = self._keys.get(key_id)
        if key is None:
            raise Unsealable(f"it was sealed with key id {key_id!r}, not in PAYLOAD_KEYS")
        try:
            return key.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], purpose)
        except InvalidTag:
            raise Unsealable(f"its seal (key id {key_id!r}) does not verify: "
                             "it was changed after sealing") from None


def split(token: str) -> tuple[str, bytes]:
    """A sealed value's key id and bytes (nonce + ciphertext)."""
    version, _, rest = token.partition(".")
    key_id, _, data = rest.partition(".")
    if version != VERSION or not data or not KEY_ID.fullmatch(key_id):
        raise Unsealable(f"its seal is not a {VERSION} sealed value")
    try:
        blob = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise Unsealable("its seal is not base64") from None
    if len(blob) <= NONCE_BYTES:
        raise Unsealable("its seal is too short")
    return key_id, blob


def key_id_of(token: Any) -> str | None:
    """The key id a sealed value names, or None if it is not one."""
    if not isinstance(token, str) or not token.startswith(VERSION + "."):
        return None
    return token.split(".", 2)[1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def message_purpose(fields: dict[str, Any]) -> bytes:
    return f"switchyard:message:{fields.get('message_id')}:{fields.get('actor_name')}".encode()


class Sealer:
    """Seals messages and values with a keyring (or passes them through when off).

    With `seal=False` (PAYLOAD_ENCRYPTION=false) nothing new is sealed, but what was
    sealed under a listed key still opens, so switching off is itself without downtime.
    """

    def __init__(self, keyring: Keyring | None, *, seal: bool = True) -> None:
        self.keyring = keyring
        self.sealing = seal and keyring is not None

    def __repr__(self) -> str:
        return f"Sealer({self.keyring!r}, sealing={self.sealing})"

    def _ring(self) -> Keyring:
        if self.keyring is None:
            raise Unsealable("it is sealed and PAYLOAD_KEYS is not set")
        return self.keyring

    def seal_message(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A message's fields as stored: its arguments and payload options sealed."""
        if not self.sealing or "sealed" in fields:
            return fields
        options, secret = _split(fields)
        envelope = {k: v for k, v in fields.items() if k not in ("args", "kwargs", "options")}
        token = self._ring().seal(_dumps(secret), message_purpose(fields))
        return {**envelope, "options": options, "sealed": token}

    def open_message(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A stored message's fields with its arguments back (`Unsealable` if it cannot)."""
        if "sealed" not in fields:
            return fields
        envelope = {k: v for k, v in fields.items() if k != "sealed"}
        token = fields["sealed"]
        if not isinstance(token, str):
            raise Unsealable("its seal is not text")
        secret = _arguments(_loads(self._ring().open(token, message_purpose(envelope))))
        options = {**(envelope.get("options") or {}), **secret.get("options", {})}
        return {**envelope, "args": secret.get("args", []), "kwargs": secret.get("kwargs", {}),
                "options": options}

    def reseal_message(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The message sealed under the newest key (a plain one too), or None if it is."""
        if not self.sealing or key_id_of(fields.get("sealed")) == self._ring().newest:
            return None
        return self.seal_message(self.open_message(fields))

    def seal_value(self, value: Any, purpose: bytes = RESULT_PURPOSE) -> Any:
        """A JSON value as stored: a sealed string when sealing."""
        if not self.sealing:
            return value
        return self._ring().seal(_dumps(value), purpose)

    def open_value(self, stored: Any, purpose: bytes = RESULT_PURPOSE) -> Any:
        """What `seal_value` was given (values that are not sealed pass through)."""
        if key_id_of(stored) is None:
            return stored
        return _loads(self._ring().open(stored, purpose))

    def reseal_value(self, stored: Any, purpose: bytes = RESULT_PURPOSE) -> Any:
        """The value sealed under the newest key (a plain one too), or None if it is."""
        if not self.sealing or key_id_of(stored) == self._ring().newest:
            return None
        return self.seal_value(self.open_value(stored, purpose), purpose)


def _split(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A message's options left in the envelope, and what its seal carries: its
    arguments and the options that copy a payload."""
    options = dict(fields.get("options") or {})
    secret: dict[str, Any] = {"args": list(fields.get("args") or ()),
                              "kwargs": fields.get("kwargs") or {}}
    hidden = {name: options.pop(name) for name in SEALED_OPTIONS if name in options}
    if hidden:
        secret["options"] = hidden
    return options, secret


def payload_bytes(fields: dict[str, Any]) -> int:
    """The size of a message's payload: what its seal carries (its arguments and the
    options that copy a payload) as compact JSON. MAX_PAYLOAD_BYTES limits it."""
    return len(_dumps(_split(fields)[1]))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode("utf-8")


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise Unsealable("its sealed content is nested too deeply") from None
    except ValueError:  # UnicodeDecodeError too
        raise Unsealable("its sealed content is not JSON") from None


#: What a message's seal holds, by type (every one may be missing).
_SEALED_FIELDS = {"args": list, "kwargs": dict, "options": dict}


def _arguments(secret: Any) -> dict[str, Any]:
    """`secret` if it is what `seal_message` seals (a seal can verify and still hold
    something else: a producer with the keys and its own idea of a message)."""
    if not isinstance(secret, dict) or any(not isinstance(secret.get(name, kind()), kind)
                                           for name, kind in _SEALED_FIELDS.items()):
        raise Unsealable("its sealed content is not a message's arguments")
    return secret


#: What a process without keys uses: seals nothing, opens nothing.
PLAIN = Sealer(None, seal=False)


class SealingEncoder(SafeEncoder):
    """Dramatiq's encoder, sealing each message's arguments (see the module docstring).

    Decoding never fails: an unopenable or unsealed body becomes a stand-in for the
    `UNDECODABLE` actor, so it is dead-lettered with its reason.
    """

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    def encode(self, data: MessageData) -> bytes:
        return super().encode(self.sealer.seal_message(dict(data)))  # type: ignore[arg-type]

    def accept(self, data: bytes, fields: dict[str, Any]) -> dict[str, Any]:
        if "sealed" in fields:
            try:
                return self.sealer.open_message(fields)
            except Unsealable as error:
                return stand_in(data, f"the body cannot be opened: {error}")
        if self.sealer.sealing:  # a well-formed message: kept whole, so a replay runs it
            return stand_in(data, NOT_SEALED, refused=fields)
        return fields


class ResultEncoder(Encoder):
    """The result backend's encoder: results sealed like job arguments."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self.json = JSONEncoder()

    def encode(self, data: MessageData) -> bytes:
        return self.json.encode(self.sealer.seal_value(data))  # type: ignore[arg-type]

    def decode(self, data: bytes) -> MessageData:
        return self.sealer.open_value(self.json.decode(data))  # type: ignore[no-any-return]


def generate_entry(key_id: str | None = None) -> str:
    """A new PAYLOAD_KEYS entry: `<id>:<base64 of 32 random bytes>`."""
    key_id = key_id or time.strftime("k%Y%m%d%H%M%S", time.gmtime())
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode('ascii')}"


def dev_keys(var_dir: Path) -> list[str]:
    """The development key entries under `var_dir`, generated on first use (by one
    process of several starting at once: `made_once`)."""
    path = made_once(var_dir / DEV_KEYS_FILE, lambda: generate_entry("dev") + "\n")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def keyring_for(settings: Settings) -> Keyring | None:
    """The process's keyring: PAYLOAD_KEYS, else (outside production) the development
    key under VAR_DIR; production without keys and not switched off exits in one line."""
    if settings.payload_keys:
        return Keyring.from_entries(s.get_secret_value() for s in settings.payload_keys)
    if not settings.payload_encryption:
        return None
    if settings.switchyard_env == "production":
        print("switchyard: PAYLOAD_KEYS is required when SWITCHYARD_ENV=production "
              "(make one with `switchyard keys generate`, or set PAYLOAD_ENCRYPTION=false)",
              file=sys.stderr)
        raise SettingsError(2)
    return Keyring.from_entries(dev_keys(settings.var_dir))


def sealer_for(settings: Settings) -> Sealer:
    return Sealer(keyring_for(settings), seal=settings.payload_encryption)


def install_encoder(sealer: Sealer) -> None:
    """Make a `SealingEncoder` with `sealer` Dramatiq's encoder for this process."""
    dramatiq.set_encoder(SealingEncoder(sealer))
