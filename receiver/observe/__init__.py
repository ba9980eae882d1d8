"""What operators see: log lines, metrics, traces, the capture journal.

- ``logsafe``   log lines a client cannot forge, with no secret in them
- ``capture``   every delivery to a capturing integration, as JSON Lines
- ``trace``     what happened to each delivery, kept in Redis
- ``metrics``   Prometheus metrics, declared once
- ``outcomes``  a background attempt's log line, metrics and trace entry

Layer: above routing, below the core (which captures and logs); what needs the
queue side (the backlog's depths, the spool's size) is handed in by the app.
Internal.
"""
