"""``python -m xinfer_digits prepare --out DIR``: see ``xinfer_digits``."""

import sys

from xinfer_digits import main

sys.exit(main())
