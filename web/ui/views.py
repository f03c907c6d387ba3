"""What each dashboard page shows, read from the broker and the state store.

Nothing here returns a job's arguments: dead letters go through `summary()`, job
records leave out everything but status, times, counts, the error and (for actors that
store results) the result; workers and schedules carry no payload at all.
"""

from __future__ import annotations

import re
import time
from typing import Any

import schedules
from state.dead_letters import summary
from state.history import FINAL, STATES
from switchyard.base.redaction import secrets_masked
from switchyard.clock import Clock
from switchyard.runtime.app import App
from switchyard.runtime.batches import batch_progress
from switchyard.runtime.queues import Survey
from web.ui.charts import actor_charts, charts

#: Dead letters per page.
PAGE_SIZE = 50
#: The message ids the lookup accepts (Dramatiq's UUIDs and the ids producers give).
MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
#: The steps of a job's timeline: (label, history field).
STEPS = (("queued", "enqueued_at"), ("queued again", "queued_at"), ("running", "started_at"),
         ("finished", "finished_at"))
#: A job queued again this long after it was first queued (a delay, a replay) shows the
#: second time as a step of its own; sooner, it is the same enqueue.
REQUEUED_MS = 1_000


def now_ms() -> int:
    return int(time.time() * 1000)


def queue_rows(sy: App, survey: Survey) -> list[dict[str, Any]]:
    """Every queue: the monitoring numbers (`/metrics/queues`' rows, from the same
    survey), its dead letters and its oldest waiting age."""
    return [{**row, "dead": sy.state.dead_letters.depth(row["name"]),
             "oldest_age_ms": row["oldest_waiting_age_ms"]}
            for row in sy.queues.snapshot(survey)]


def overview(sy: App) -> dict[str, Any]:
    """The overview's numbers and charts (also `/dashboard/overview.json`), and notes on
    what the broker could not tell."""
    series = {resolution: sy.state.timeline.series(resolution)
              for resolution in ("minute", "hour")}
    survey = sy.queues.survey()
    return {"queues": queue_rows(sy, survey), "notes": list(survey.notes), "series": series,
            "charts": charts(series), "generated_at": now_ms()}


def arguments(sy: App, message_id: str) -> dict[str, Any] | None:
    """A dead-lettered job's arguments as a revealing operator sees them (secret fields
    and tokens masked: `secrets_masked`), or None when none are kept."""
    dead = sy.state.dead_letters.show(message_id)
    if dead is None:
        return None
    message = dead.get("message") or {}
    if message.get("unsealable"):
        return {"unsealable": str(message["unsealable"])}
    shown: dict[str, Any] = {"args": message.get("args") or [],
                             "kwargs": message.get("kwargs") or {}}
    if message.get("payload_dropped_bytes"):
        shown["payload_dropped_bytes"] = message["payload_dropped_bytes"]
    return dict(secrets_masked(shown))


def metrics(sy: App, actor: str) -> dict[str, Any]:
    """The Metrics page: every actor's runs, failure rate and run time p50/p95/p99 over
    the last hour and the last day, and one actor's per minute and per hour."""
    series = {resolution: sy.state.timeline.actor_series(resolution)
              for resolution in ("minute", "hour")}
    known = sorted(set(sy.broker.actors) | set(series["hour"]["actors"]))
    rows = [{"actor": name,
             "hour": (series["minute"]["actors"].get(name) or {}).get("total"),
             "day": (series["hour"]["actors"].get(name) or {}).get("total")}
            for name in known]
    chosen = actor if actor in known else (rows[0]["actor"] if rows else "")
    return {"rows": rows, "actor": chosen,
            "charts": actor_charts(chosen, series) if chosen else {}}


def _timeline(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = [{"step": label, "at": job[field]} for label, field in STEPS
             if isinstance(job.get(field), int)]
    first = job.get("enqueued_at")
    # In the order a job moves, not by time: a producer records its enqueue after the
    # broker has the message, so a quick worker can start a moment before that.
    steps = [step for step in steps if step["step"] != "queued again"
             or not isinstance(first, int) or step["at"] - first >= REQUEUED_MS]
    if job.get("status") in FINAL and steps and steps[-1]["step"] == "finished":
        steps[-1]["step"] = job["status"]
    if job.get("status") == "retrying":
        steps.append({"step": f"retrying in {job.get('retry_in_ms', 0)} ms", "at": None})
    return steps


def job(sy: App, message_id: str) -> dict[str, Any] | None:
    """A job as the lookup shows it, from its history record and its dead letter."""
    record = sy.state.history.get(message_id)
    dead = sy.state.dead_letters.show(message_id)
    if record is None and dead is None:
        return None
    record = record or {"id": message_id, "actor": dead and dead["actor"],
                        "queue": dead and dead["queue"], "status": "failed"}
    actor = sy.broker.actors.get(str(record.get("actor")))
    stores = bool(actor is not None and actor.options.get("store_results"))
    error = record.get("error") if isinstance(record.get("error"), dict) else None
    return {
        "id": message_id, "actor": record.get("actor"), "queue": record.get("queue"),
        "status": record.get("status"), "runs": record.get("runs", 0),
        "retries": record.get("retries", 0), "duration_ms": record.get("duration_ms"),
        "timeline": _timeline(record),
        "error": _error(error or (dead or {}).get("reason")),
        "result": record.get("result") if stores and record.get("status") == "done" else None,
        "stores_results": stores,
        "dead_letter": summary(dead) if dead else None,
        "progress": record.get("progress"), "progress_note": record.get("progress_note"),
        "worker": record.get("worker"),
        "cancelled_by": record.get("cancelled_by") or record.get("cancel_requested_by"),
        "cancel_reason": record.get("cancel_reason"),
        "batch": batch_progress(sy, record),
    }


#: Jobs shown on a page of the Queues page.
JOBS_PER_PAGE = 50
#: States whose jobs can be cancelled from the Queues page.
CANCELLABLE = ("waiting", "scheduled", "retrying", "running")
#: States whose jobs can be run now (scheduled) or retried now (retrying).
HURRYABLE = ("scheduled", "retrying")


def queue_jobs(sy: App, queue: str | None, state: str, *, actor: str,
               page: int) -> dict[str, Any]:
    """The Queues page: each queue's counts by state, and one page of one queue's jobs
    in one state (`state.history`), oldest first. Never a payload."""
    names = sy.queues.names()
    queue = queue if queue in names else (names[0] if names else None)
    counts = {state_: sy.state.history.count(queue, state_) for state_ in STATES} if queue \
        else {}
    listed = sy.state.history.page(queue, state, offset=(page - 1) * JOBS_PER_PAGE,
                                   limit=JOBS_PER_PAGE, actor=actor or None) if queue else None
    jobs = [{"id": job.get("id"), "actor": job.get("actor"), "status": job.get("status"),
             "position": job.get("position"), "queued_at": job.get("queued_at"),
             "due_at": job.get("due_at") if job.get("due_at") != job.get("queued_at") else None,
             "started_at": job.get("started_at"),
             "finished_at": job.get("finished_at"), "progress": job.get("progress"),
             "progress_note": job.get("progress_note"), "retry_in_ms": job.get("retry_in_ms"),
             "cancelled_by": job.get("cancelled_by") or job.get("cancel_requested_by")}
            for job in (listed.jobs if listed else [])]
    return {"queues": names, "queue": queue, "state": state, "states": STATES,
            "counts": counts, "actor": actor, "page": page, "jobs": jobs,
            "more": bool(listed and listed.next_offset is not None),
            "cancellable": state in CANCELLABLE, "hurryable": state in HURRYABLE}


def busy(sy: App) -> list[dict[str, Any]]:
    """What runs now, on every queue: where (the queue, the actor and the worker's
    `host:pid`), since when, and its progress, longest running first."""
    now = now_ms()
    rows = []
    for queue in sy.queues.names():
        for job in sy.state.history.page(queue, "running", limit=200).jobs:
            started = job.get("started_at")
            rows.append({"id": job.get("id"), "queue": queue, "actor": job.get("actor"),
                         "worker": job.get("worker"),
                         "started_at": started,
                         "running_ms": now - started if isinstance(started, int) else None,
                         "progress": job.get("progress"),
                         "progress_note": job.get("progress_note"),
                         "stopping": bool(job.get("cancel_requested_by"))})
    return sorted(rows, key=lambda row: row["started_at"] or now)


def _error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return None
    return {name: error.get(name) for name in ("error", "message", "code", "status", "provider")}


def dead_letters(sy: App, queue: str | None, *, actor: str, error: str,
                 page: int) -> dict[str, Any]:
    """The dead-letters page: every queue's count, and one page of the chosen queue."""
    queues = {q: sy.state.dead_letters.depth(q) for q in sy.state.dead_letters.queues()}
    chosen = queue if queue in queues else next(iter(queues), None)
    shown: dict[str, Any] = {"queues": queues, "queue": chosen, "actor": actor, "error": error,
                             "page": page, "items": [], "matching": 0, "pages": 1}
    if chosen is None:
        return shown
    filters = {"actor": actor, "error": error}
    items, matching = sy.state.dead_letters.page(chosen, offset=(page - 1) * PAGE_SIZE,
                                                 limit=PAGE_SIZE, filters=filters)
    shown.update(items=[summary(item) for item in items], matching=matching,
                 pages=max(1, -(-matching // PAGE_SIZE)),
                 actors=sy.state.dead_letters.facet_values(chosen, "actor"),
                 errors=sy.state.dead_letters.facet_values(chosen, "error"))
    return shown


def workers(sy: App) -> list[dict[str, Any]]:
    now = now_ms()
    return [{**w, "age_ms": max(0, now - w["last_beat"])} for w in sy.state.workers.all()]


def schedule_rows(sy: App) -> list[dict[str, Any]]:
    """Each schedule: last slot sent, its job's outcome, and the next slot."""
    clock = Clock(sy, schedules.SCHEDULES)
    rows = []
    for row, schedule in zip(clock.table(), clock.schedules, strict=True):
        message_id = clock.sent_as(schedule, row["last"]) if row["last"] else None
        record = sy.state.history.get(message_id) if message_id else None
        rows.append({**row, "message_id": message_id,
                     "outcome": record["status"] if record else (
                         "not kept" if message_id else None)})
    return rows
