"""gunicorn settings for the web process: `gunicorn -c python:web.gunicorn_conf --bind ...`.

The credentials are checked in the master before any worker starts, so a production
process without them stops with one line naming the missing variable. With
LOG_FORMAT=json, gunicorn's error and access lines (and uvicorn's, which its workers
send through gunicorn's handlers) are JSON like every other line.
"""

from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

from switchyard.base import logs
from switchyard.base.settings import get
from web.auth import require_credentials


class Logger(GunicornLogger):
    """gunicorn's logger, its lines in LOG_FORMAT (set again on each reload)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        logs.setup(log_format=get().log_format)


worker_class = "uvicorn.workers.UvicornWorker"
wsgi_app = "web.app:create_app()"
accesslog = "-"
logger_class = Logger


def on_starting(server: object) -> None:
    require_credentials(get())
