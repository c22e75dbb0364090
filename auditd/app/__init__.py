"""The application: the only place that joins adapters. The ingest seam (validate a batch,
commit it), the batch writer, the auditor (store -> core -> findings, alerts and outbox in
one transaction), the daemon and replay that run them on a clock, and the one-shot
commands (import, colocate) that wire exports, the store and the domain together."""
