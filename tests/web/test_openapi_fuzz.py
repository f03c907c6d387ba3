"""Property test: every answer to a request the OpenAPI document allows (and to many it
does not) is one the document describes. Schemathesis runs with all its checks: no
server error, every status, content type, header and body documented, valid data
accepted, invalid data refused. Bounded, so it runs in seconds."""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

import actors.channels
from store.migrate import upgrade
from tests.web.conftest import BEARER

#: Examples per operation, valid and invalid each.
EXAMPLES = 20


def all_checks() -> list:
    """Every check schemathesis has (`--checks all`), not only its defaults."""
    load_all_checks()
    found = list(CHECKS.get_all())
    assert len(found) >= 10, [getattr(c, "__name__", c) for c in found]
    return found


@pytest.fixture
def web(make_web, tmp_path):
    """Every route, `/api/channels` too: its family declared, on a migrated database."""
    url = f"sqlite:///{tmp_path}/fuzz.db"
    upgrade(url)
    return make_web(families=[actors.channels], database_url=url)


def test_every_answer_is_one_the_document_describes(web):
    # given the app's own OpenAPI document (fetched with credentials), and every check
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", web.app, headers=BEARER)
    # The event stream answers for as long as the client listens: tests/web/test_events.py.
    operations = [operation for operation in (
        result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
        if operation.label != "GET /api/events"]
    assert len(operations) >= 10
    assert "POST /api/channels" in {operation.label for operation in operations}
    checks = all_checks()

    # when generated requests, valid and not, hit each operation
    for operation in operations:
        conforms(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), checks)
        # An operation without parameters or body has nothing to get wrong.
        with contextlib.suppress(Unsatisfiable):
            conforms(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), checks)


def conforms(strategy, checks: list) -> None:
    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        # then every check passes on its answer
        case.call_and_validate(headers=BEARER, checks=checks)

    check()
