"""What a user writes by hand, read and refused with the file, the key and the problem:
the daemon's configuration, device profiles and references (cross-checked into the
catalog), and co-location targets. Values come out as frozen dataclasses; no other module
reads TOML configuration."""
