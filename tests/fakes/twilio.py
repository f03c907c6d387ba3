"""A loopback Twilio Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`).

It checks basic auth (401, code 20003), the form fields Twilio requires (To 21604,
From/MessagingServiceSid 21603, Body 21602), that To is E.164 (21211) and the
1600-character limit (21617); `refuse()` makes a number answer a given error code
(unsubscribed, landline, ...). Accepted messages answer 201 with Twilio's shape and are
recorded in `sent`.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import re
import threading
import time
import uuid
from dataclasses import dataclass

from tests.fakes.base import FakeServer, Recorded, Reply

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
MAX_BODY = 1600

#: Twilio's messages for the codes the fake answers by itself or through `refuse()`.
MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
           "'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone number "
           "for this destination/account.",
    21608: "The number {to} is unverified. Trial accounts cannot send messages to unverified "
           "numbers.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number is not currently reachable via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21635: "'To' number cannot be a landline.",
}


@dataclass
class TwilioDelivery:
    """A message the fake accepted."""

    sid: str
    to: str
    sender: str | None
    messaging_service_sid: str | None
    body: str
    at: float


def segments(body: str) -> int:
    """How many SMS parts `body` takes (GSM-7 when ASCII, else UCS-2)."""
    single, part = (160, 153) if body.isascii() else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // part)


class TwilioFake(FakeServer):
    """Twilio's Messages resource for one account; records `sent`."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        super().__init__()
        self.account_sid = account_sid or f"AC{uuid.uuid4().hex}"
        self.auth_token = auth_token or uuid.uuid4().hex
        self.sent: list[TwilioDelivery] = []
        self.refused: dict[str, int] = {}  # To number -> error code
        self._state = threading.Lock()

    @property
    def messages_path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def refuse(self, number: str, code: int) -> None:
        """Make sends to `number` fail with Twilio's error `code` (e.g. 21610 unsubscribed)."""
        self.refused[number] = code

    @staticmethod
    def error(status: int, code: int, message: str | None = None) -> Reply:
        """Twilio's error answer: `{code, message, more_info, status}`."""
        return Reply(status, json={
            "code": code, "message": message or MESSAGES.get(code, "Error"),
            "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status,
        })

    def echo_into(self, reply: Reply, text: str) -> Reply:
        """Twilio's `message`, repeating the parameters it was sent."""
        body = copy.deepcopy(reply.json)
        if isinstance(body, dict) and "message" in body:
            body["message"] = f"{body['message']} Parameters: {text}"
        return dataclasses.replace(reply, json=body)

    def handle(self, request: Recorded) -> Reply:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return self.error(401, 20003)
        if request.method != "POST" or request.path != self.messages_path:
            return self.error(404, 20404, f"The requested resource {request.path} was not found")
        form = request.form()
        problem = self._invalid(form)
        return problem if problem is not None else self._deliver(form)

    def _invalid(self, form: dict[str, str]) -> Reply | None:
        to = form.get("To", "")
        code = None
        if not to:
            code = 21604
        elif not form.get("From") and not form.get("MessagingServiceSid"):
            code = 21603
        elif not form.get("Body"):
            code = 21602
        elif not E164.match(to):
            code = 21211
        elif len(form["Body"]) > MAX_BODY:
            code = 21617
        elif to in self.refused:
            code = self.refused[to]
        if code is None:
            return None
        return self.error(400, code, MESSAGES.get(code, "Error").format(to=to))

    def _deliver(self, form: dict[str, str]) -> Reply:
        sid = f"SM{uuid.uuid4().hex}"
        body, sender, service = form["Body"], form.get("From"), form.get("MessagingServiceSid")
        with self._state:
            self.sent.append(TwilioDelivery(sid, form["To"], sender, service, body, time.time()))
        return Reply(201, json={
            "sid": sid, "account_sid": self.account_sid, "status": "queued",
            "to": form["To"], "from": sender, "messaging_service_sid": service, "body": body,
            "num_segments": str(segments(body)), "direction": "outbound-api",
            "api_version": "2010-04-01", "error_code": None, "error_message": None,
            "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "uri": f"{self.messages_path.removesuffix('.json')}/{sid}.json",
        })
