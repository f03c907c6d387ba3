"""What the ingresses cannot read is refused with the reason, whatever `json` would raise:
the bridge dead-letters it (`NotJson`), the SQS consumer leaves it for redrive. A body
nested deeper than any payload is refused there too, before pydantic or a dead letter
has to write it out again (which fails past a few hundred levels)."""

from __future__ import annotations

import pytest

from switchyard.base.decoding import MAX_JSON_DEPTH
from switchyard.ingress import bridge, sqs

#: Bodies no ingress takes, and the reason each is refused with.
UNREADABLE = {
    "not utf-8": (b'{"userId": "caf\xe9"}', "the body is not UTF-8 text"),
    "past the stack": (b'{"data": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                       "the body is nested too deeply"),
    "past the limit": (b'{"data": ' + b"[" * 300 + b"]" * 300 + b"}",
                       f"the body is nested too deeply (more than {MAX_JSON_DEPTH} levels)"),
    "not json": (b"{not json", "the body is not valid JSON"),
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_the_bridge_dead_letters_an_unreadable_body_with_the_reason(kind):
    body, reason = UNREADABLE[kind]
    data, rejected = bridge.decode(body)
    assert data is None and rejected is not None
    assert (rejected.error, rejected.code) == ("NotJson", "not_json")
    assert rejected.message.startswith(reason)


@pytest.mark.parametrize("kind", sorted(set(UNREADABLE) - {"not utf-8"}))
def test_the_sqs_consumer_refuses_an_unreadable_body_with_the_reason(kind):
    body, reason = UNREADABLE[kind]
    with pytest.raises(sqs.Malformed) as refused:
        sqs.job_of(body.decode())
    assert str(refused.value).startswith(reason)


def test_a_body_within_the_depth_is_read():
    nested = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    data, rejected = bridge.decode(b'{"data": ' + nested + b"}")
    assert rejected is None and isinstance(data["data"], list)
