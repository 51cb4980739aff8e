"""Callbacks over HTTP: signing them as Standard Webhooks says (signing.py), the hosts and
addresses they may go to (addresses.py), one POST to a checked, pinned address (sender.py),
and what the settings make of all three (policy.py)."""
