"""gunicorn settings for the web process: `gunicorn -c python:web.gunicorn_conf --bind ...`.

The credentials are checked in the master before any worker starts, so a production
process without them stops with one line naming the missing variable.
"""

from switchyard.settings import get
from web.auth import require_credentials

worker_class = "uvicorn.workers.UvicornWorker"
wsgi_app = "web.app:create_app()"
accesslog = "-"


def on_starting(server: object) -> None:
    require_credentials(get())
