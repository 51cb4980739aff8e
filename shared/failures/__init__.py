"""The kept failures: jobs that ended failed, cancelled or expired, kept with what they ran with
for FAILED_JOB_TTL so that they can be run again (shared/failures/base.py says how)."""

from shared.failures.base import KeptFailures

__all__ = ["KeptFailures"]
