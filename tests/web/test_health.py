"""`/health`: the monitoring API's shape, open to all; `?ready=1` checks the services."""

from __future__ import annotations

from tests.support.services import free_port


def test_health_answers_the_seed_shape_without_credentials(web):
    response = web.anonymous.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["timestamp"].endswith("Z")
    assert isinstance(body["uptime"], float)


def test_ready_checks_the_broker_and_the_state_store(web):
    response = web.anonymous.get("/health?ready=1")

    assert response.status_code == 200
    assert response.json()["checks"] == {"broker": {"ok": True}, "state_store": {"ok": True}}


def test_ready_answers_503_naming_what_is_down(make_web):
    # given a web process whose Redis does not answer
    web = make_web(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    # when asked whether it is ready
    response = web.anonymous.get("/health?ready=1")

    # then it is not, and says which services are down
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert set(body["down"]) == {"broker", "state_store"}


def test_an_unreachable_state_store_is_503_not_500(make_web):
    web = make_web(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    response = web.client.get("/api/jobs/some-id")

    assert response.status_code == 503
    assert response.json() == {"detail": "the state store is unavailable"}


def test_ready_says_which_backend_each_provider_runs_on(web):
    # given the development stand-ins (SWITCHYARD_ENV=test)
    response = web.anonymous.get("/health?ready=1")

    assert response.json()["providers"] == {
        "email": "outbox", "sms": "outbox", "push": "outbox", "storage": "local",
        "telegram": "outbox", "discord": "outbox"}


def test_ready_in_production_names_explicit_stand_ins_and_unconfigured_providers(make_web):
    # given a production web process told to use the email outbox, and no other backend
    web = make_web(switchyard_env="production", database_url="postgresql://127.0.0.1/test",
                   web_password="Correct-horse-battery-7",
                   api_token="kJ3mQ9vX2pL7sT4wY8zB1nC6dF5gH0aR", email_backend="outbox",
                   sms_backend="twilio")

    # when asked whether it is ready
    response = web.anonymous.get("/health?ready=1")

    # then it is (it delivers nothing itself), and says what each provider runs on
    assert response.status_code == 200
    assert response.json()["providers"] == {
        "email": "outbox (explicit)", "sms": "twilio", "push": "unconfigured",
        "storage": "unconfigured", "telegram": "unconfigured", "discord": "unconfigured"}
