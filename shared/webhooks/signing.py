"""Signing callbacks as the Standard Webhooks specification says, with its reference library:
`webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,<base64 of HMAC-SHA256 over
"<id>.<timestamp>.<body>">`), keyed with WEBHOOK_SECRET (`whsec_` and the key in base64)."""

import base64
import binascii
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
MINIMUM_SECRET_BYTES = 24
"""The specification's advice: a key of 24 to 64 random bytes."""
NEW_SECRET_COMMAND = (
    "python3 -c \"import base64, os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())\""
)


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign callbacks (never quoting it); None when it can."""
    if not secret.startswith(SECRET_PREFIX):
        return f"must start with {SECRET_PREFIX!r} followed by the key in base64"
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        return f"the part after {SECRET_PREFIX!r} is not base64"
    if len(key) < MINIMUM_SECRET_BYTES:
        return (
            f"the key is {len(key)} bytes; give at least {MINIMUM_SECRET_BYTES} random bytes "
            f"(make one with: {NEW_SECRET_COMMAND})"
        )
    return None


def message_id(job_id: str) -> str:
    """The `webhook-id` of a job's callback: the same on every attempt, so that a receiver can
    drop a delivery it has already taken."""
    return f"msg_{job_id}"


class CallbackSigner:
    """Makes the signature headers of one attempt (the timestamp is the attempt's own: receivers
    refuse one more than five minutes off)."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, job_id: str, body: str, sent_at: datetime) -> dict[str, str]:
        identifier = message_id(job_id)
        return {
            "webhook-id": identifier,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._webhook.sign(identifier, sent_at, body),
        }
