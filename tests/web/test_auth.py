"""Credentials: everything but /health needs them; secrets never leak; production
refuses to start without them."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from switchyard.settings import SettingsError
from tests.web.conftest import ECHO, PASSWORD, TOKEN, USERNAME, basic
from web.app import create_app

Q = "q-none"
#: One request per protected route (the completeness test keeps this list honest).
ROUTES = [
    ("GET", "/metrics"), ("GET", "/metrics/queues"), ("GET", "/metrics/system"),
    ("POST", f"/api/jobs/{ECHO}"), ("POST", "/api/jobs/no_such_actor"),
    ("GET", "/api/jobs/some-id"),
    ("GET", "/api/dead-letters"), ("GET", f"/api/dead-letters/{Q}"),
    ("GET", f"/api/dead-letters/{Q}/some-id"), ("POST", f"/api/dead-letters/{Q}/replay"),
    ("DELETE", f"/api/dead-letters/{Q}"),
    ("POST", f"/api/queues/{Q}/pause"), ("POST", f"/api/queues/{Q}/resume"),
    ("GET", "/api/openapi.json"), ("GET", "/api/docs"),
    ("GET", "/dashboard/"), ("GET", f"/dashboard/queues/{Q}"),
    ("GET", f"/dashboard/queues/{Q}/standard/some-id"),
    ("GET", "/dashboard/dead-letters"), ("POST", f"/dashboard/dead-letters/{Q}/purge"),
    ("GET", "/nowhere"),
]
#: Example values of the routes' path parameters.
PARAMS = {"actor": "no_such_actor", "queue": Q, "message_id": "some-id", "action": "purge",
          "tab": "standard"}
WRONG = [
    {},
    basic(USERNAME, "wrong-password"),
    basic("someone", PASSWORD),
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {PASSWORD}"},
    {"Authorization": "Basic !!!not-base64"},
]


def request(client, method: str, path: str, headers: dict[str, str]):
    body = {"json": {"text": "x"}} if method == "POST" else {}
    return client.request(method, path, headers=headers, **body)


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text and TOKEN not in text


@pytest.mark.parametrize("method,path", ROUTES)
def test_protected_routes_refuse_missing_and_wrong_credentials(web, method, path):
    for headers in WRONG:
        response = request(web.anonymous, method, path, headers)

        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"].startswith("Basic")
        assert_no_secret(response.text)


@pytest.mark.parametrize("method,path", ROUTES)
def test_protected_routes_answer_people_and_services_without_leaking_secrets(web, method, path):
    for headers in (basic(USERNAME, PASSWORD), {"Authorization": f"Bearer {TOKEN}"}):
        response = request(web.anonymous, method, path, headers)

        assert response.status_code not in (401, 403, 500), response.text
        assert_no_secret(response.text + str(response.headers))


def test_every_route_but_health_is_in_the_protected_list(web):
    templates = {(m, r.path) for r in web.app.routes if isinstance(r, APIRoute)
                 for m in r.methods or ()}
    templates |= {("GET", r.path + "/") for r in web.app.routes if isinstance(r, Mount)}
    covered = {(m, p) for m, p in ROUTES}
    for method, template in templates - {("GET", "/health")}:
        path = template
        for name, example in PARAMS.items():
            path = path.replace(f"{{{name}}}", example)
        assert (method, path) in covered, f"{method} {template} is not tested"


def test_health_is_open(web):
    assert web.anonymous.get("/health").status_code == 200


def test_without_configured_credentials_nothing_gets_in(make_web):
    web = make_web(web_username=None, web_password=None, api_token=None)

    assert web.anonymous.get("/metrics", headers=basic("", "")).status_code == 401
    assert web.anonymous.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_cross_site_form_posts_are_refused(web):
    response = web.anonymous.post(
        f"/dashboard/dead-letters/{Q}/purge", headers={
            **basic(USERNAME, PASSWORD), "Origin": "https://evil.example", "Host": "testserver"})

    assert response.status_code == 403


def test_production_refuses_to_start_without_credentials(make_settings, capsys):
    settings = make_settings(switchyard_env="production", web_username="ops",
                             web_password="long-enough-password",
                             database_url="postgresql://127.0.0.1/test")

    with pytest.raises(SettingsError):
        create_app(settings=settings)

    assert capsys.readouterr().err.strip() == (
        "switchyard: API_TOKEN is required for the web process when SWITCHYARD_ENV=production")
