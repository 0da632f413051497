"""``python -m dtb ...``: the same as the ``dtb`` command."""

from dtb.cli import main

raise SystemExit(main())
