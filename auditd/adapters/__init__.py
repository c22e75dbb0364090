"""Adapters: the parts that touch files, sockets and databases."""
