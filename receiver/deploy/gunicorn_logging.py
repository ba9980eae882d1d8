"""gunicorn's own logs, held to the receiver's rules (``logger_class`` in the gunicorn config).

gunicorn writes request-controlled text too: the request line and headers in
the access log, invalid requests at debug level. Its formatters are swapped
for the receiver's (escaped text, or JSON with ``RECEIVER_LOG_FORMAT=json``),
and the access log's query string (the handshake's verify token rides in it)
is masked before formatting.
"""

from __future__ import annotations

from typing import Any

from gunicorn import glogging

from receiver.observe.logsafe import formatter, mask_query_string


class Logger(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False) and handler.formatter is not None:
                    old = handler.formatter
                    handler.setFormatter(formatter(old._fmt or "%(message)s", old.datefmt))

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        query = environ.get("QUERY_STRING") or ""
        masked = mask_query_string(query)
        if masked != query:
            raw_uri = environ.get("RAW_URI", "")
            environ = {
                **environ,
                "QUERY_STRING": masked,
                "RAW_URI": raw_uri.replace(query, masked) if query in raw_uri else raw_uri,
            }
        return super().atoms(resp, req, environ, request_time)
