"""Property test: no request the OpenAPI document allows (and many it does not) makes
the app answer 500. Bounded, so it runs in seconds."""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

import actors.channels
from store.migrate import upgrade
from tests.web.conftest import BEARER

#: Examples per operation, valid and invalid each.
EXAMPLES = 20


@pytest.fixture
def web(make_web, tmp_path):
    """Every route, `/api/channels` too: its family declared, on a migrated database."""
    url = f"sqlite:///{tmp_path}/fuzz.db"
    upgrade(url)
    return make_web(families=[actors.channels], database_url=url)


def test_no_request_makes_the_app_fail(web):
    # given the app's own OpenAPI document (fetched with credentials)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", web.app, headers=BEARER)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    assert "POST /api/channels" in {operation.label for operation in operations}

    # when generated requests, valid and not, hit each operation
    for operation in operations:
        never_500(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        # An operation without parameters or body has nothing to get wrong.
        with contextlib.suppress(Unsatisfiable):
            never_500(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))


def never_500(strategy) -> None:
    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call(headers=BEARER)

        # then none is a server error
        assert response.status_code < 500, (case.operation.label, response.text)

    check()
