"""The HTTP API: the read-only status API (``/api/v1``) and the management API (``/api/v2``).

OCPI style: every answer is an envelope ``{data, status_code, status_message, timestamp}``,
clients authenticate with ``Authorization: Token <token>``. Routes live in one table
(``routes``), handlers are thin, the work is done by plain functions and the catalog.
"""
