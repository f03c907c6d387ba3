"""Media URLs: what a client is given for a message's media, and local objects served.

Message records hold storage keys, never URLs (seed 003: "use signed URLs"). A client
asks `GET /api/media/<messageId>` (with credentials) and gets URLs valid for
STORAGE_URL_TTL_MS: presigned S3 GET URLs, or, for local storage, this process's
`/media/<key>?expires=...&signature=...`, which it serves without credentials only
while the HMAC signature is valid and unexpired (403 otherwise).
"""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel

from integrations.storage import MEDIA_PATH, InvalidKey, ObjectNotFound
from store.models import Message
from switchyard.runtime.app import App
from web.validation import CheckedRoute


class MediaUrls(BaseModel):
    message_id: str
    url: str | None = None
    thumbnail_url: str | None = None
    expires_in_ms: int


def router(sy: App) -> APIRouter:
    routes = APIRouter(tags=["media"], route_class=CheckedRoute)

    @routes.get("/api/media/{message_id}", response_model=MediaUrls,
                responses={404: {"description": "No processed media for this message"}})
    def media_urls(message_id: str) -> MediaUrls:
        """Signed URLs of a message's processed media and thumbnail, valid for a while."""
        with sy.database.session() as session:
            message = session.get(Message, message_id)
            keys = (message.media_url, message.thumbnail_url) if message else (None, None)
        if keys[0] is None:
            raise HTTPException(404, "no processed media for this message")
        storage = sy.providers.storage()
        ttl = sy.settings.storage_url_ttl_ms
        url, thumbnail = (_url(storage, key, ttl) for key in keys)
        return MediaUrls(message_id=message_id, url=url, thumbnail_url=thumbnail,
                         expires_in_ms=ttl)

    @routes.get(MEDIA_PATH + "{key:path}", include_in_schema=False)
    def signed_object(key: str, expires: str = Query(""),
                      signature: str = Query("")) -> FileResponse:
        storage: Any = sy.providers.storage()
        if not hasattr(storage, "open_signed"):
            raise HTTPException(404, "objects are served by S3 (presigned URLs)")
        try:
            path = storage.open_signed(key, expires, signature)
        except InvalidKey:
            raise HTTPException(403, "the URL's signature is invalid or has expired") from None
        except ObjectNotFound:
            raise HTTPException(404, "no such object") from None
        kind = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "private"})

    return routes


def _url(storage: Any, key: str | None, ttl: int) -> str | None:
    if key is None:
        return None
    try:
        return str(storage.url(key, expires_in_ms=ttl))
    except ObjectNotFound:
        return None
