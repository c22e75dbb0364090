"""The fleet service: what no single gateway can see (docs/fleet.md).

Gateways keep auditing alone; the fleet service gathers what they publish upstream (or
what their stores hold) into PostgreSQL and looks across them: cohorts failing the same
way at several sites, references drifting, drift rates per model, the due list.

Layout, enforced by the import contracts in ``pyproject.toml``:

* ``records`` and ``upstream``: the typed values the fleet exchanges, and the parser of
  one upstream MQTT message into one of them (pure);
* ``analysis``: cohorts across sites, reference health, drift rates, intervals, due list
  (pure: rows in, frozen values out; no I/O, no clock);
* ``adapters``: the PostgreSQL store (psycopg 3, its schema and migrations) and the import
  of gateway SQLite stores;
* ``views``: the report's JSON and HTML, the status text;
* ``app``: the offline commands, joining the adapters to the analysis;
* ``live``: ``fleet run``, one replica of the live consumer (MQTT 5 shared subscription ->
  ``upstream`` -> the store, one transaction per batch, then the acknowledgements).

No gateway module imports anything here, and psycopg is an optional extra (``fleet``).
"""
