"""What leaves the process: the outbox publisher (findings, reports and ticket messages to
the broker, deleted on PUBACK) and the ticket dispatcher (webhook, command and file sinks,
with back-off and dead letters). Both drain what an audit's transaction committed."""
