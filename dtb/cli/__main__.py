import sys

from dtb.cli import main

sys.exit(main())
