"""The private redis-server of the tests, the same helper `receiver.testing` offers."""

from receiver.testing import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
