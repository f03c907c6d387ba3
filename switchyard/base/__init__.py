"""The base layer: what every other layer uses, importing nothing of Switchyard's above it.

Settings, the error taxonomy, idempotency keys, a delivery's outcome, payload sealing and
the decoding that never fails, redaction, logging filters, Redis clients, durable writes,
per-process values, and `compat`: the one module that touches Dramatiq's and pika's
private names.
"""
