"""Chaos suite (issue #11): regwarden killed at every step, then checked for lost, half-done
and duplicated work."""
