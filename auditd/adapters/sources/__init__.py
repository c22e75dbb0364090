"""What comes in: the MQTT link, recordings and historian CSV for ``replay``, and instrument
and agency exports for ``import`` and ``colocate``. Each turns bytes from outside into the
values the rest of the package reads (``RawMessage``, export channels), and reports what it
could not read as a problem with its line, never as a crash."""
