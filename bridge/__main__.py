"""``python -m bridge``: the same as the ``oicp-bridge`` command."""

from bridge.cli import main

raise SystemExit(main())
