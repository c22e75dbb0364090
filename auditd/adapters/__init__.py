"""Adapters: everything that touches the world outside the process, each behind a small
typed surface. ``config`` reads the files a user writes, ``store`` is the SQLite database
(repositories of typed rows), ``sources`` bring messages and readings in (MQTT,
recordings, historian CSV, instrument exports), ``sinks`` send what the audit decided out
(the outbox publisher, the ticket dispatcher and its sinks, the Prometheus endpoint,
sd_notify), and ``runstate`` is the daemon's state file beside the store."""
