"""Switchyard's runtime: settings, errors, the app container, the brokers and queue
inspection, the one way in (`enqueue`), jobs and their context, the entry module, the
CLI, health, logging, redaction and the embedded Redis. See docs/architecture.md.
"""
