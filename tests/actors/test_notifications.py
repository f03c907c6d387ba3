"""Notifications (seed 003), end to end against the FCM, Resend and Twilio fakes."""

from __future__ import annotations

from sqlalchemy import select

from store.models import Device, NotificationDelivery, User
from tests.actors.conftest import World, unique
from tests.fakes.base import html_error
from tests.fakes.fcm import FcmFake
from tests.fakes.twilio import TwilioFake


def push_payload(token: str, user_id: str = "user-uuid") -> dict[str, object]:
    """The seed's push payload."""
    return {"type": "push", "userId": user_id, "fcmToken": token, "title": "New Message",
            "body": "John: Hey, how are you?",
            "data": {"type": "message", "chatId": "chat-uuid", "senderId": "sender-uuid"}}


def deliveries(world: World, **where: object) -> list[NotificationDelivery]:
    with world.db.session() as session:
        query = select(NotificationDelivery).filter_by(**where)
        return list(session.scalars(query.order_by(NotificationDelivery.created_at)))


def pushed_to(world: World, token: str) -> int:
    return sum(1 for d in world.fcm.sent if d.token == token)


def user_with_devices(world: World, *tokens: str) -> str:
    user_id = unique("u")
    with world.db.session() as session:
        session.add(User(id=user_id))
        session.flush()
        for token in tokens:
            session.add(Device(user_id=user_id, push_token=token, platform="android"))
    return user_id


def test_a_push_is_sent_and_its_delivery_recorded(world):
    token = unique("tok")
    message = world.send("send_push", push_payload(token))
    job = world.finished(message.message_id)
    assert job["status"] == "done", job
    [sent] = [d for d in world.fcm.sent if d.token == token]
    assert sent.message["notification"] == {"title": "New Message",
                                            "body": "John: Hey, how are you?"}
    assert sent.message["data"]["chatId"] == "chat-uuid"
    assert sent.message["android"]["priority"] == "high"
    [row] = deliveries(world, job_id=message.message_id)
    assert (row.status, row.provider, row.provider_id, row.attempts) == (
        "sent", "fcm", sent.name, 1)
    assert job["result"]["id"] == sent.name


def test_a_dead_token_fails_at_once_and_is_never_used_again(world):
    # given a device whose token FCM no longer knows
    token = unique("dead")
    user_with_devices(world, token)
    world.fcm.dead_tokens.add(token)
    # when a push goes to it
    job = world.run("send_push", push_payload(token))
    # then the job is dead-lettered at once and the device marked dead
    assert job["status"] == "failed" and job["runs"] == 1
    assert job["error"]["error"] == "DeadToken" and job["error"]["code"] == "UNREGISTERED"
    with world.db.session() as session:
        device = session.scalars(select(Device).filter_by(push_token=token)).one()
        assert device.dead_at is not None
    # and the next push to that token is skipped without asking FCM
    requests = world.fcm.count(world.fcm.send_path)
    again = world.run("send_push", push_payload(token))
    assert again["status"] == "done" and again["result"]["status"] == "skipped"
    assert world.fcm.count(world.fcm.send_path) == requests


def test_a_push_sent_twice_with_the_same_key_is_delivered_once(world):
    token, key = unique("tok"), unique("push-")
    first = world.send("send_push", push_payload(token), idempotency_key=key)
    second = world.send("send_push", push_payload(token), idempotency_key=key)
    statuses = sorted(world.finished(m.message_id)["status"] for m in (first, second))
    assert statuses == ["done", "skipped"] and pushed_to(world, token) == 1


def test_fcm_quota_waits_its_retry_after_without_spending_an_attempt(world):
    token = unique("tok")
    world.fcm.script(FcmFake.error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED",
                                   headers={"Retry-After": "1"}), path=":send")
    job = world.run("send_push", push_payload(token))
    assert job["status"] == "done" and job["retries"] == 0 and job["deferred_ms"] == 1000
    assert pushed_to(world, token) == 1


def test_an_email_notification_is_sent_with_its_link(world):
    to = f"{unique('ann')}@example.com"
    message = world.send("send_email_notification", {
        "type": "email", "userId": "user-uuid", "email": to, "title": "Password Reset",
        "body": "Click the link below to reset your password",
        "data": {"resetLink": "https://app.example/reset/token123", "expiresIn": "1 hour"}})
    job = world.finished(message.message_id)
    assert job["status"] == "done", job
    [mail] = [d for d in world.resend.sent if d.body["to"] in (to, [to])]
    assert mail.body["subject"] == "Password Reset"
    assert 'href="https://app.example/reset/token123"' in mail.body["html"]
    assert "Expires in: 1 hour" in mail.body["text"]
    [row] = deliveries(world, job_id=message.message_id)
    assert (row.channel, row.status, row.provider_id) == ("email", "sent", mail.id)


def test_an_sms_is_sent_and_recorded(world):
    phone = "+1555" + str(int(unique().encode().hex(), 16) % 10**7).zfill(7)
    message = world.send("send_sms", {"type": "sms", "userId": "user-uuid",
                                      "phoneNumber": phone, "title": "OTP Code",
                                      "body": "Your verification code is: 123456"})
    job = world.finished(message.message_id)
    assert job["status"] == "done", job
    [sms] = [d for d in world.twilio.sent if d.to == phone]
    assert sms.body == "Your verification code is: 123456" and sms.sender == "+15550000000"
    [row] = deliveries(world, job_id=message.message_id)
    assert (row.channel, row.status, row.provider_id) == ("sms", "sent", sms.sid)


def test_an_unsubscribed_number_is_final_at_once(world):
    phone = "+15557770001"
    world.twilio.refuse(phone, 21610)
    message = world.send("send_sms", {"userId": "u", "phoneNumber": phone, "body": "hi"})
    job = world.finished(message.message_id)
    assert job["status"] == "failed" and job["runs"] == 1 and job["error"]["code"] == 21610
    [row] = deliveries(world, job_id=message.message_id)
    assert row.status == "failed" and row.error_code == "21610"


def test_an_sms_provider_error_is_retried_and_counted(world):
    phone = "+15557770002"
    world.twilio.script(TwilioFake.error(503, 20500), path="Messages.json")
    message = world.send("send_sms", {"userId": "u", "phoneNumber": phone, "body": "hi"})
    job = world.finished(message.message_id)
    assert job["status"] == "done" and job["retries"] == 1
    [row] = deliveries(world, job_id=message.message_id)
    assert (row.status, row.attempts) == ("sent", 2)


def test_a_batch_counts_permanent_failures_and_marks_dead_tokens(world):
    # given one user with a live and a dead device, one with a device, one with none
    live, dead, other = unique("live"), unique("dead"), unique("other")
    world.fcm.dead_tokens.add(dead)
    ann, bob = user_with_devices(world, live, dead), user_with_devices(world, other)
    nobody = user_with_devices(world)
    # when a batch goes to all three
    message = world.send("send_batch_notifications", {
        "userIds": [ann, bob, nobody], "title": "Group Message",
        "body": "New message in Tech Team", "data": {"groupId": "group-123"}})
    job = world.finished(message.message_id)
    assert job["status"] == "done", job
    assert (job["result"]["deviceCount"], job["result"]["withoutDevice"]) == (3, 1)
    # then its callback records two sent, two failed (a dead token, no device), once
    callback = world.finished(job["result"]["callbackId"])
    assert callback["status"] == "done", callback
    assert (callback["result"]["successCount"], callback["result"]["failureCount"]) == (2, 2)
    assert callback["result"]["parentId"] == message.message_id
    # and the sending job's progress is its batch's: every member ended
    from switchyard.runtime.batches import batch_progress

    world.sy.state.buffer.flush()
    batch = batch_progress(world.sy, world.sy.state.history.get(message.message_id))
    assert batch is not None and batch["id"] == job["result"]["batchId"]
    assert (batch["total"], batch["done"], batch["failed"], batch["progress"]) == (4, 2, 2, 1.0)
    assert pushed_to(world, live) == 1 and pushed_to(world, other) == 1
    rows = deliveries(world, batch_id=f"send_batch_notifications:{message.message_id}")
    assert sorted(r.status for r in rows) == ["failed", "sent", "sent", "skipped"]
    with world.db.session() as session:
        device = session.scalars(select(Device).filter_by(push_token=dead)).one()
        assert device.dead_at is not None


def test_a_batch_that_hits_a_transient_error_resends_only_what_is_unsent(world):
    # given three devices, and FCM failing once with a 503 partway through
    tokens = [unique("t") for _ in range(3)]
    users = [user_with_devices(world, token) for token in tokens]
    world.fcm.script(html_error(503, "Service Unavailable"), path=":send")
    # when the batch runs
    job = world.run("send_batch_notifications", {"userIds": users, "title": "t", "body": "b"})
    callback = world.finished(job["result"]["callbackId"])
    # then the one device's push retried alone, every device got exactly one push, and
    # the counts are right
    assert job["status"] == "done" and job["retries"] == 0, job
    assert [pushed_to(world, token) for token in tokens] == [1, 1, 1]
    assert (callback["result"]["successCount"], callback["result"]["failureCount"]) == (3, 0)
    members = [world.job(i) for i in world.batch_members(job["result"]["batchId"])]
    assert sorted(m["retries"] for m in members) == [0, 0, 1]
