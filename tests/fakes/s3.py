"""moto's S3 in server mode on loopback: a real HTTP S3 that boto3 talks to.

moto's messages are fixed, so `S3Refusing` stands in for an S3-compatible server that
refuses every request with S3's XML error shape and, with `echo = True`, repeats the
request (bucket, key, body) in its `<Message>`, as some do.
"""

from __future__ import annotations

import uuid
from xml.sax.saxutils import escape

import boto3
from moto.server import ThreadedMotoServer

from tests.fakes.base import FakeServer, Recorded, Reply
from tests.support.services import free_port

#: moto checks no credentials, but boto3 wants some.
ACCESS_KEY, SECRET_KEY = "test-access-key", "test-secret-key"


class MotoS3:
    def __init__(self) -> None:
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def new_bucket(self) -> str:
        name = f"switchyard-test-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        listed = self.client.list_objects_v2(Bucket=name).get("Contents", [])
        for item in listed:
            self.client.delete_object(Bucket=name, Key=item["Key"])
        self.client.delete_bucket(Bucket=name)

    def stop(self) -> None:
        self.server.stop()


def s3_error(status: int, code: str, message: str, resource: str = "") -> Reply:
    """S3's error answer: `<Error><Code/><Message/><Resource/><RequestId/></Error>`."""
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
           f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
           f"<Resource>{escape(resource)}</Resource>"
           f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>")
    return Reply(status, body=xml.encode(), headers={"Content-Type": "application/xml"})


class S3Refusing(FakeServer):
    """An S3-compatible server that answers every request with one S3 error."""

    def __init__(self, status: int = 400, code: str = "InvalidArgument",
                 message: str = "Invalid Argument") -> None:
        super().__init__()
        self.status, self.code, self.message = status, code, message

    def handle(self, request: Recorded) -> Reply:
        return s3_error(self.status, self.code, self.message, request.path)

    def echo_into(self, reply: Reply, text: str) -> Reply:
        """The same error, its `<Message>` repeating the request."""
        return s3_error(reply.status, self.code, f"{self.message}: {text}")
