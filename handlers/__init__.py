"""Example handler modules. Name them in ``handlers = [...]`` or ``RECEIVER_HANDLERS``."""
