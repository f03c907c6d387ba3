"""Decoding that never fails: a body that is not a Dramatiq message becomes a stand-in.

Dramatiq moves a message for an unknown actor to its own `.XQ`, and an undecodable body
either goes there too (RabbitMQ) or kills the Redis consumer, stranding the batch it
was fetched with. Instead, `SafeEncoder` answers a body that is not a Dramatiq message
with a stand-in message for the `UNDECODABLE` actor on the queue being consumed,
carrying the reason and a short preview of the body (kept with the dead letter, which
holds payloads anyway; never logged). The brokers answer that actor, and any name no
family declares, with an actor that fails permanently (`switchyard.brokers.undeliverable`),
so both reach the dead letters through the normal pipeline, on both brokers.

Decoding never raises: whatever a decoder can raise on a body (bad UTF-8, JSON nested
past the stack, a shape it did not expect, memory) ends in a stand-in naming it, since
an exception here crashes the consumer and strands the message unacked. A well-formed
message refused only for how it came (not sealed, `switchyard.base.sealing`) keeps its
id, and its fields under `refused_message`, so replaying its dead letter runs it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import dramatiq
from dramatiq.encoder import JSONEncoder

from switchyard.base.errors import PermanentError

#: The stand-in actor of bodies that are not Dramatiq messages.
UNDECODABLE = "__undecodable__"
#: How much of an undecodable body its dead letter keeps (characters).
PREVIEW_CHARS = 1024
#: The option of a stand-in holding the whole message it stands in for (see above).
REFUSED_OPTION = "refused_message"
#: Deepest nesting of lists and objects taken in from outside (HTTP, CLI, bridges): far
#: beyond any payload, and well within what pydantic and `json` can write out again.
MAX_JSON_DEPTH = 64
_FIELDS = {"queue_name": str, "actor_name": str, "args": list, "kwargs": dict, "options": dict,
           "message_id": str, "message_timestamp": int, "sealed": str}
_REQUIRED = {"queue_name", "actor_name", "args", "kwargs", "options"}
#: A sealed body carries its arguments in `sealed` (switchyard.base.sealing).
_REQUIRED_SEALED = {"queue_name", "actor_name", "options", "sealed"}


class Undecodable(PermanentError):
    """The body on the queue is not a Dramatiq message."""


class BadJson(ValueError):
    """Text that is not a JSON value Switchyard takes in; the message says why, to follow
    "the body is" or "payload is" (never quoting the text)."""


def parse_json(data: bytes | str, *, max_depth: int | None = MAX_JSON_DEPTH) -> Any:
    """`data`'s JSON value, or `BadJson`: whatever `json` raises (bad UTF-8, nesting past
    the stack, memory) is one of its reasons, and so is nesting deeper than `max_depth`."""
    try:
        value = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except UnicodeDecodeError:
        raise BadJson("not UTF-8 text") from None
    except RecursionError:
        raise BadJson("nested too deeply") from None
    except json.JSONDecodeError as error:  # its text names the place, never the content
        raise BadJson(f"not valid JSON ({error})") from None
    except ValueError:
        raise BadJson("not valid JSON") from None
    except MemoryError:
        raise BadJson(f"too large to parse ({len(data)} bytes)") from None
    if max_depth is not None and nested_deeper(value, max_depth):
        raise BadJson(f"nested too deeply (more than {max_depth} levels)")
    return value


def nested_deeper(value: Any, levels: int) -> bool:
    """Whether `value` nests lists and objects more than `levels` deep (iterative, so
    any depth is measured)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if level > levels:
            return True
        stack.extend((child, level + 1) for child in
                     (item.values() if isinstance(item, dict) else item))
    return False


class _Consuming(threading.local):
    queue = ""


#: The queue this consumer thread reads (set when the thread boots).
consuming = _Consuming()


class SafeEncoder(JSONEncoder):
    """Dramatiq's JSON encoder, whose `decode` answers a stand-in instead of failing."""

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            return self._decode(data)
        except Exception as error:  # the contract: a stand-in, never a raise
            return stand_in(data, f"the body cannot be decoded ({type(error).__name__})")

    def _decode(self, data: bytes) -> dict[str, Any]:
        try:  # any depth Python can parse: Dramatiq's own producers set no limit
            fields = parse_json(data, max_depth=None)
        except BadJson as error:
            return stand_in(data, f"the body is {error}")
        problem = shape_problem(fields)
        return stand_in(data, problem) if problem else self.accept(data, fields)

    def accept(self, data: bytes, fields: dict[str, Any]) -> dict[str, Any]:
        """A well-formed body's fields; a sealed one needs `switchyard.base.sealing`'s encoder."""
        if "sealed" in fields:
            return stand_in(data, "the body is sealed and this process has no PAYLOAD_KEYS")
        return fields


def shape_problem(fields: Any) -> str | None:
    """Why `fields` cannot be a Dramatiq message, or None."""
    if not isinstance(fields, dict):
        return "the body is JSON but not an object"
    missing = (_REQUIRED_SEALED if "sealed" in fields else _REQUIRED) - fields.keys()
    if missing:
        return f"the body lacks {', '.join(sorted(missing))}"
    extra = fields.keys() - _FIELDS.keys()
    if extra:
        return f"the body has unknown fields {', '.join(sorted(map(str, extra))[:5])}"
    wrong = [name for name, kind in _FIELDS.items()
             if name in fields and not isinstance(fields[name], kind)]
    return f"the body's {', '.join(wrong)} have the wrong type" if wrong else None


def stand_in(data: bytes, reason: str, *,
             refused: dict[str, Any] | None = None) -> dict[str, Any]:
    """A message for `UNDECODABLE` on the consumed queue, carrying `reason` and a preview;
    or, for a well-formed message `refused` as it came, that message and its id."""
    options: dict[str, Any] = {"undecodable_bytes": len(data)}
    if refused is None:
        options["undecodable_body"] = data[:PREVIEW_CHARS * 4].decode(
            "utf-8", "replace")[:PREVIEW_CHARS]
    else:
        options[REFUSED_OPTION] = refused
    message_id = (refused or {}).get("message_id") or str(uuid.uuid4())
    return {"queue_name": consuming.queue, "actor_name": UNDECODABLE, "args": [],
            "kwargs": {"reason": reason}, "options": options,
            "message_id": message_id, "message_timestamp": int(time.time() * 1000)}


def install_safe_encoder() -> None:
    """Make `SafeEncoder` Dramatiq's encoder for this process."""
    if not isinstance(dramatiq.get_encoder(), SafeEncoder):
        dramatiq.set_encoder(SafeEncoder())
