"""`python -m steer.batch WORKFLOW --set …`: the same as `steer queue WORKFLOW --set …`."""
import sys

from .queue import main

sys.exit(main())
