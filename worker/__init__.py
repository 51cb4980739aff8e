"""The worker: arq's WorkerSettings, the runner that turns a job into records, and job code."""
