"""The fleet's commands: the adapters joined to the analysis (``fleet run``'s replica:
``live``)."""
