"""moto's S3 in server mode on loopback: a real HTTP S3 that boto3 talks to."""

from __future__ import annotations

import uuid

import boto3
from moto.server import ThreadedMotoServer

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
