"""`python -m jobcache_client`: the `jobcache` command, for where the script is not on PATH."""

import sys

from jobcache_client.cli import main

sys.exit(main())
