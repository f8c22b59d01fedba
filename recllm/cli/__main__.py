"""``python -m recllm.cli``: the ``recllm`` console script."""

import sys

from recllm.cli import main

sys.exit(main())
