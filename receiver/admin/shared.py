"""What the dashboard's views share, apart from the package that mounts the views."""

from __future__ import annotations

from dataclasses import dataclass

from receiver.admin.auth import Gate


@dataclass
class Admin:
    """What the views share, kept in ``app.extensions["receiver.admin"]``."""

    gate: Gate
