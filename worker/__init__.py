"""The worker: arq's worker with its claim and wake-ups, the runner that turns a job into
records, and job code."""
