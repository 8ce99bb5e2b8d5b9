"""The charge-station catalog: locations, charge stations, EVSEs, connectors, templates.

Models and rules only, no I/O: ``model`` (pydantic bodies), ``rules`` (checks between objects),
``catalog`` (the in-memory catalog and the changes made to it).
"""
