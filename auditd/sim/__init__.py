"""Simulation and evaluation: a fleet whose faults are known, and how well the audit finds
them. The simulator (``simulate``, pure) writes recordings or publishes live (``live``),
``evaluate`` scores findings against the truth, and ``demo`` runs all of it through the
real daemon. Nothing in the audit path imports this package."""
