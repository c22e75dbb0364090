"""The audit's domain: what a run, a device's history and an alert mean, pure or nearly."""
