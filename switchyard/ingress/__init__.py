"""The ingress layer: messages other services publish, turned into jobs.

The RabbitMQ bridge (`bridge`) and its routing table (`routes`), seed 001's SQS consumer
(`sqs`), and seed 003's `<family>.dead` copies of the dead letters of jobs that came in
through `sup_exchange` (`dead_copies`). Each enqueues through `switchyard.runtime.enqueue`.
"""
