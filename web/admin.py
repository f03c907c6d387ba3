"""Queue administration over HTTP: dead letters (list, show, replay, purge), pause, resume.

Dead letters are summarised without the job's arguments: payloads can hold phone
numbers, emails and tokens (`switchyard dlq show` prints the whole record).

Every route names a queue, and a name no queue has (not declared, no actor, no dead
letters: `Queues.is_known`) is a 404: pausing or replaying a typo would otherwise make
a phantom queue that shows up in `/metrics/queues` and waits forever.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from state.dead_letters import summary
from switchyard.base.errors import UnknownQueue
from switchyard.runtime.app import App
from web.validation import CROSS_SITE, CheckedRoute, Detail

#: Queue names as Dramatiq allows them (letters, digits, `.`, `_`, `-`).
QUEUE = r"^[A-Za-z0-9_.-]{1,200}$"
QueueName = Annotated[str, Path(pattern=QUEUE)]
UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown queue (or dead letter)", "model": Detail}}
#: What a route that changes something can answer.
CHANGES: dict[int | str, dict[str, Any]] = {**UNKNOWN, **CROSS_SITE}


def unknown_queue(queue: str) -> str:
    """Why `queue` is refused, as `switchyard dlq` says it (the name is safe to show: it
    matched `QUEUE`)."""
    return UnknownQueue(queue).message


def known_queue(sy: App) -> Callable[[str], str]:
    """A dependency giving the path's queue, or answering 404 when there is no such queue."""
    def queue_of(queue: QueueName) -> str:
        if not sy.queues.is_known(queue):
            raise HTTPException(404, unknown_queue(queue))
        return queue
    return queue_of


class DeadLetter(BaseModel):
    message_id: str
    queue: str
    actor: str
    failed_at: int
    error: str | None = None
    message: str | None = None
    code: str | None = None
    attempts: int | None = None


class DeadLetterDetail(DeadLetter):
    traceback: str | None = None
    note: str | None = None


class Replay(BaseModel):
    ids: list[str] | None = Field(None, description="Message ids; omit (or all=true) for all.",
                                  max_length=1000)
    all: bool = False


class Replayed(BaseModel):
    replayed: list[str]
    missing: list[str] = Field(description="Ids not in the queue's dead letters.")
    refused: dict[str, str] = Field(
        default_factory=dict, description="Dead letters that cannot run again, and why "
        "(kept without their payload, or sealed with a key no longer listed).")


def replay(sy: App, queue: str, ids: list[str] | None) -> dict[str, Any]:
    """Replay `ids` (all of the queue's when None); say which were not, and why."""
    store = sy.state.dead_letters
    wanted = store.matching(queue, {}) if ids is None else ids
    replayed = store.replay(sy.broker, queue, wanted)
    sy.state.buffer.flush()
    left = sorted(set(wanted) - set(replayed))
    refused = {i: why for i in left if (why := store.refusal(queue, i)) is not None}
    return {"replayed": replayed, "missing": [i for i in left if i not in refused],
            "refused": refused}


def router(sy: App) -> APIRouter:
    routes = APIRouter(prefix="/api", tags=["queues"], route_class=CheckedRoute)
    _dead_letter_routes(routes, sy)
    _pause_routes(routes, sy)
    return routes


def _dead_letter_routes(routes: APIRouter, sy: App) -> None:
    Known = Annotated[str, Depends(known_queue(sy))]

    @routes.get("/dead-letters")
    def dead_letter_queues() -> dict[str, list[dict[str, Any]]]:
        """Queues with dead letters, and how many each holds."""
        return {"queues": [{"name": q, "depth": sy.state.dead_letters.depth(q)}
                           for q in sy.state.dead_letters.queues()]}

    @routes.get("/dead-letters/{queue}", response_model=list[DeadLetter], responses=UNKNOWN)
    def list_dead_letters(queue: Known, offset: int = Query(0, ge=0, le=1_000_000),
                          limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        """A queue's dead letters, newest first."""
        return [summary(r) for r in sy.state.dead_letters.list(queue, offset=offset, limit=limit)]

    @routes.get("/dead-letters/{queue}/{message_id}", response_model=DeadLetterDetail,
                responses=UNKNOWN)
    def show_dead_letter(queue: Known, message_id: str) -> dict[str, Any]:
        """One dead letter with its reason and traceback."""
        record = sy.state.dead_letters.show(message_id)
        if record is None or record["queue"] != queue:
            raise HTTPException(404, "no such dead letter")
        return summary(record, detail=True)

    @routes.post("/dead-letters/{queue}/replay", response_model=Replayed, responses=CHANGES)
    def replay_dead_letters(queue: Known, body: Replay) -> dict[str, Any]:
        """Enqueue dead letters again: the ids given, or all of the queue's."""
        if not body.all and not body.ids:
            raise RequestValidationError([{"type": "missing", "loc": ("body", "ids"),
                                           "msg": "name the ids to replay, or set all=true"}])
        return replay(sy, queue, None if body.all else body.ids)

    @routes.delete("/dead-letters/{queue}", responses=CHANGES)
    def purge_dead_letters(queue: Known) -> dict[str, int]:
        """Drop all of a queue's dead letters."""
        return {"purged": sy.state.dead_letters.purge(queue)}


def _pause_routes(routes: APIRouter, sy: App) -> None:
    Known = Annotated[str, Depends(known_queue(sy))]

    @routes.post("/queues/{queue}/pause", responses=CHANGES)
    def pause(queue: Known) -> dict[str, Any]:
        """Hold the queue's jobs on it, in order, until it is resumed. Answers once every
        live worker consuming the queue takes nothing more from it; `unconfirmed` names
        the workers that did not say so in time."""
        missing = sy.queues.pause(queue)
        return {"name": queue, "paused": True, "unconfirmed": missing}

    @routes.post("/queues/{queue}/resume", responses=CHANGES)
    def resume(queue: QueueName) -> dict[str, Any]:
        """Let workers take the queue's jobs again. A queue still paused can be resumed
        even if nothing else knows it any more."""
        if queue not in sy.state.paused.paused() and not sy.queues.is_known(queue):
            raise HTTPException(404, unknown_queue(queue))
        sy.queues.resume(queue)
        return {"name": queue, "paused": False}
