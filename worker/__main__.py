"""`python -m worker` starts one worker process."""

from worker.main import main

main()
