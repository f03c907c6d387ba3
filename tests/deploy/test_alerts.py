"""The alert rules and the Grafana dashboard that ship in `deploy/`: promtool accepts the
rules, every alert fires in `promtool test rules` on the metrics of a real run (a real
worker, and the web process's `/metrics` over HTTP), and every dashboard query names
metrics that a scrape has.

The run's scrapes become promtool's input series with their real names, label sets and
values; over promtool's half hour, what the run did is repeated each minute (counters and
dead letters grow by what the run added), a waiting job or a late slot gets older by the
minute, and the other gauges stay as scraped.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import urllib.request
from typing import Any

import dramatiq
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import actors
from schedules import SCHEDULES
from switchyard.clock import Clock
from switchyard.runtime.enqueue import enqueue
from tests.support.jobs import finished
from tests.support.processes import ROOT
from tests.support.services import free_port, missing
from tests.support.waiting import wait_for
from tests.web.conftest import CREDENTIALS, ECHO, FLAKY, TOKEN, declare_actors
from tests.web.conftest import served as serve_app
from web.app import create_app

pytestmark = pytest.mark.e2e  # a worker, two web processes, promtool

RULES = ROOT / "deploy" / "prometheus" / "switchyard-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "switchyard.json"
#: promtool's input: one sample a minute for this many minutes; alerts are read at EVAL.
MINUTES, EVAL = 30, "20m"
#: Samples that count up (what the run added is added again each minute).
GROWING = re.compile(r"_(total|bucket|count|sum)$|^switchyard_dead_letters$")
#: Ages (a waiting job, a late slot): one minute older each minute, when there is one.
AGEING = {"switchyard_queue_oldest_waiting_seconds", "switchyard_clock_late_seconds"}
Sample = tuple[str, tuple[tuple[str, str], ...]]


@pytest.fixture
def broker_kind() -> str:
    """The oldest waiting job is told on the Redis broker only."""
    return "redis"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        missing("promtool (Debian's prometheus package; .ci/run installs it)")
    return subprocess.run([str(found), *args], capture_output=True, text=True, timeout=120)


def served(sy: Any) -> Any:
    """The web app of `sy`, served by uvicorn on a free loopback port."""
    return serve_app(create_app(sy), grace_s=10)


def scrape(url: str) -> dict[Sample, float]:
    """GET /metrics as Prometheus does: (name, labels) -> value."""
    request = urllib.request.Request(f"{url}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for family in text_string_to_metric_families(text) for s in family.samples}


def labelled(samples: dict[Sample, float], name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def series(sample: Sample, instance: str, start: float, end: float) -> dict[str, str]:
    """One scraped sample as promtool's input series (Prometheus adds job and instance)."""
    name, labels = sample
    pairs = [*labels, ("instance", instance), ("job", "switchyard")]
    selector = name + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in pairs) + "}"
    if GROWING.search(name):
        values = f"{start:g}+{end - start:g}x{MINUTES}"
    elif name in AGEING and end > 0:
        values = f"{end:g}+60x{MINUTES}"
    else:
        values = f"{end:g}x{MINUTES}"
    return {"series": selector, "values": values}


def run_the_fleet(sy: Any, url: str, queue: str) -> tuple[dict[Sample, float], ...]:
    """A real run, scraped before and after: jobs done and dead-lettered by a worker that
    then stops, the clock's last slot an hour ago, a paused queue with a job waiting."""
    worker = dramatiq.Worker(sy.broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        wait_for(lambda: labelled(scrape(url), "switchyard_queue_workers", "queue")[queue],
                 what="the worker's beat")
        start = scrape(url)
        ids = [enqueue(sy, ECHO, {"text": str(n)}).message_id for n in range(2)]
        ids += [enqueue(sy, FLAKY, {"name": str(n)}).message_id for n in range(3)]
        wait_for(lambda: finished(sy, *ids), what="the jobs")
        sy.state.buffer.flush()
    finally:
        worker.stop()
    # the clock sent the stories' slot of over an hour ago, and none since
    now = datetime.datetime.now(datetime.UTC)
    slot = now.replace(minute=0, second=0, microsecond=0) - datetime.timedelta(hours=1)
    stories = next(s for s in SCHEDULES if s.name == "cleanup_stories")
    assert len(Clock(sy, [stories], now=lambda: slot).tick()) == 1
    # the queue is paused, a job waits on it
    assert sy.queues.pause(queue) == []
    enqueue(sy, ECHO, {"text": "waits"})
    wait_for(lambda: labelled(scrape(url), "switchyard_queue_oldest_waiting_seconds",
                              "queue")[queue] > 0.1, what="the job to wait")
    return start, scrape(url)


def render(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it (the rules use `{{ $labels.<name> }}` only)."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    assert "{{" not in text, template
    return text


def expected(alert: dict[str, Any], label_sets: list[dict[str, str]]) -> dict[str, Any]:
    """promtool's test of one alert: it fires with exactly these label sets at EVAL."""
    return {"eval_time": EVAL, "alertname": alert["alert"], "exp_alerts": [
        {"exp_labels": {**labels, **alert["labels"]},
         "exp_annotations": {k: render(v, labels) for k, v in alert["annotations"].items()}}
        for labels in label_sets]}


def firing(start: dict[Sample, float], end: dict[Sample, float],
           down: dict[Sample, float], down_instance: str) -> dict[str, list[dict[str, str]]]:
    """Which alert should fire for what, from the scrapes."""
    def grown(name: str, label: str) -> dict[str, float]:
        before = labelled(start, name, label)
        return {k: v - before.get(k, 0) for k, v in labelled(end, name, label).items()}

    attempts: dict[str, list[float]] = {}
    for (name, labels), v in end.items():
        info = dict(labels)
        if name == "switchyard_jobs_total" and info["outcome"] in ("done", "retried", "dead"):
            before = start.get((name, labels), 0)
            failed, ran = attempts.setdefault(info["actor"], [0, 0])
            attempts[info["actor"]] = [failed + (v - before) * (info["outcome"] != "done"),
                                       ran + v - before]
    return {
        "SwitchyardDeadLettersGrowing": [
            {"queue": q} for q, n in grown("switchyard_dead_letters", "queue").items() if n > 0],
        "SwitchyardJobWaitingTooLong": [
            {"queue": q} for q, age in
            labelled(end, "switchyard_queue_oldest_waiting_seconds", "queue").items() if age > 0],
        "SwitchyardQueueWithoutWorker": [
            {"queue": q} for q, n in labelled(end, "switchyard_queue_workers", "queue").items()
            if n == 0],
        "SwitchyardClockSlotMissed": [
            {"schedule": s} for s, late in
            labelled(end, "switchyard_clock_late_seconds", "schedule").items() if late > 0],
        "SwitchyardActorFailureRate": [
            {"actor": a} for a, (failed, ran) in attempts.items()
            if ran and failed / ran > 0.2 and ran * 10 >= 10],
        "SwitchyardStateStoreDown": [
            {"instance": down_instance, "job": "switchyard"}
            for (name, _), v in down.items() if name == "switchyard_state_store_up" and v == 0],
    }


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bswitchyard_[a-z_]+\b", expr))


def test_the_rules_pass_promtool_check():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_every_alert_fires_on_a_real_runs_metrics_and_the_dashboard_reads_them(
        build_switchyard, queue, redis_url, tmp_path):
    # given a real run: its web process scraped over HTTP before and after
    sy = build_switchyard(**CREDENTIALS)
    declare_actors(sy, queue)
    sy.declare(actors.families(["cleanup"]))  # the clock's jobs
    with served(sy) as url:
        start, end = run_the_fleet(sy, url, queue)
    # and a web process whose state store does not answer
    lost = build_switchyard(**CREDENTIALS, redis_url=f"redis://127.0.0.1:{free_port()}",
                            broker_url=redis_url, redis_timeout_ms=500)
    with served(lost) as url:
        down = scrape(url)

    # when promtool evaluates the rules over those series
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]]
    fires = firing(start, end, down, "web-2:8000")
    inputs = [series(s, "web-1:8000", start.get(s, 0), v) for s, v in end.items()]
    inputs += [series(s, "web-2:8000", v, v) for s, v in down.items()]
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": inputs,
        "alert_rule_test": [expected(rule, fires[rule["alert"]]) for rule in rules]}]}
    path = tmp_path / "alerts-test.yml"
    path.write_text(json.dumps(tests, indent=1))  # JSON is YAML
    result = promtool("test", "rules", str(path))

    # then every alert fires, for exactly what the run did, and nothing else does
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"queue": queue} in fires["SwitchyardDeadLettersGrowing"]
    assert {"queue": queue} in fires["SwitchyardJobWaitingTooLong"]
    assert {"queue": queue} in fires["SwitchyardQueueWithoutWorker"]
    assert fires["SwitchyardClockSlotMissed"] == [{"schedule": "cleanup_stories"}]
    assert fires["SwitchyardActorFailureRate"] == [{"actor": FLAKY}]
    assert len(fires["SwitchyardStateStoreDown"]) == 1
    assert {rule["alert"] for rule in rules} == set(fires)

    # and every metric the rules and the dashboard's queries name is in a scrape
    scraped = {name for name, _ in [*start, *end, *down]}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"]
              if "definition" in variable]
    assert len(exprs) > 10
    for expr in [*exprs, *(rule["expr"] for rule in rules)]:
        assert metric_names(expr) and metric_names(expr) <= scraped, expr


def test_the_dashboard_is_a_grafana_dashboard_with_a_prometheus_source():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "switchyard" and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert target["refId"]
