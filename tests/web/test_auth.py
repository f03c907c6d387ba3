"""Credentials: everything but /health needs them; secrets never leak; production
refuses to start without them."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from switchyard.base.settings import SettingsError
from tests.web.conftest import ECHO, PASSWORD, TOKEN, USERNAME, basic
from web.app import create_app
from web.auth import require_credentials

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
    ("GET", "/dashboard"), ("GET", "/dashboard/"), ("GET", "/dashboard/overview.json"),
    ("GET", "/dashboard/jobs"), ("GET", "/dashboard/workers"), ("GET", "/dashboard/schedules"),
    ("GET", "/dashboard/static/ui.css"), ("GET", "/dashboard/static/ui.js"),
    ("GET", "/dashboard/raw/"), ("GET", f"/dashboard/raw/queues/{Q}"),
    ("GET", f"/dashboard/raw/queues/{Q}/standard/some-id"),
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


#: The routes whose example names nothing there is: with credentials, they answer 404.
NOT_FOUND = {
    ("POST", "/api/jobs/no_such_actor"), ("GET", "/api/jobs/some-id"),
    ("GET", f"/api/dead-letters/{Q}"), ("GET", f"/api/dead-letters/{Q}/some-id"),
    ("POST", f"/api/dead-letters/{Q}/replay"), ("DELETE", f"/api/dead-letters/{Q}"),
    ("POST", f"/api/queues/{Q}/pause"), ("POST", f"/api/queues/{Q}/resume"),
    ("GET", f"/dashboard/raw/queues/{Q}"), ("GET", f"/dashboard/raw/queues/{Q}/standard/some-id"),
    ("POST", f"/dashboard/dead-letters/{Q}/purge"), ("GET", "/nowhere"),
}


def route_answer(method: str, path: str) -> int:
    """The status a route answers with credentials: its own, never the login challenge."""
    if (method, path) in NOT_FOUND:
        return 404
    return 202 if method == "POST" else 200  # the only POST left enqueues a job


@pytest.mark.parametrize("method,path", ROUTES)
def test_protected_routes_answer_people_and_services_without_leaking_secrets(web, method, path):
    for headers in (basic(USERNAME, PASSWORD), {"Authorization": f"Bearer {TOKEN}"}):
        response = request(web.anonymous, method, path, headers)

        assert response.status_code == route_answer(method, path), response.text
        assert response.content and "www-authenticate" not in response.headers
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


@pytest.mark.parametrize("missing", ["api_token", "web_username", "web_password"])
def test_production_refuses_to_start_without_credentials(make_settings, capsys, missing):
    credentials = {"web_username": "ops", "web_password": "Correct-horse-battery-7",
                   "api_token": "kJ3mQ9vX2pL7sT4wY8zB1nC6dF5gH0aR"}
    credentials.pop(missing)
    settings = make_settings(switchyard_env="production",
                             database_url="postgresql://127.0.0.1/test", **credentials)

    with pytest.raises(SettingsError):
        create_app(settings=settings)

    assert capsys.readouterr().err.strip() == (
        f"switchyard: {missing.upper()} is required for the web process when "
        "SWITCHYARD_ENV=production")


STRONG_PASSWORD = "Correct-horse-battery-7"
STRONG_TOKEN = "kJ3mQ9vX2pL7sT4wY8zB1nC6dF5gH0aR"


def production(make_settings, **credentials):
    fields = {"web_username": "ops", "web_password": STRONG_PASSWORD,
              "api_token": STRONG_TOKEN, **credentials}
    return make_settings(switchyard_env="production",
                         database_url="postgresql://127.0.0.1/test", **fields)


@pytest.mark.parametrize("setting,value,rule", [
    ("api_token", "aaaaaaaaaaaaaaaa", "shorter than 32 characters"),
    ("api_token", "a" * 40, "fewer than 6 different characters"),
    ("api_token", "abcdefgh" * 5, "fewer than 3 kinds of character"),
    ("api_token", "fedcba9876543210" * 2, "fewer than 3 kinds of character"),
    ("web_password", "Tr0ub4dor&Admin", "a common password"),
    ("web_password", "password", "shorter than 12 characters"),
    ("web_password", "zzzzzzzzzzzzzzzz", "fewer than 6 different characters"),
    ("web_password", "correcthorsebattery", "fewer than 3 kinds of character"),
    ("web_password", "MyPassword2024", "a common password"),
])
def test_production_refuses_weak_credentials(make_settings, capsys, setting, value, rule):
    settings = production(make_settings, **{setting: value})

    with pytest.raises(SettingsError):
        create_app(settings=settings)

    err = capsys.readouterr().err.strip()
    assert err.startswith(f"switchyard: {setting.upper()} is too weak for "
                          "SWITCHYARD_ENV=production: ") and "\n" not in err
    assert rule in err and value not in err


def test_production_names_every_weak_credential(make_settings, capsys):
    settings = production(make_settings, web_password="password", api_token="a" * 16)

    with pytest.raises(SettingsError):
        require_credentials(settings)

    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["WEB_PASSWORD", "API_TOKEN"]


@pytest.mark.parametrize("token", [
    STRONG_TOKEN,
    # two kinds of character, but 64 of them at random (`openssl rand -hex 32`)
    "feffb4af5819a6e299dcd61acd3e8692ed7247c6f19b57956c4441da4ba314f1",
])
def test_production_accepts_strong_credentials(make_settings, capsys, token):
    require_credentials(production(make_settings, api_token=token))

    assert capsys.readouterr().err == ""


def test_development_accepts_any_credentials(make_web):
    # given a development web process with a weak password and a weak token
    weak_token = "a" * 16
    web = make_web(switchyard_env="development", web_password="password", api_token=weak_token)

    # then it started (nothing refused them), and they let a person and a service in
    for headers in (basic(USERNAME, "password"), {"Authorization": f"Bearer {weak_token}"}):
        response = web.anonymous.get("/metrics/queues", headers=headers)
        assert response.status_code == 200, response.text
        assert web.queue in {queue["name"] for queue in response.json()["queues"]}
