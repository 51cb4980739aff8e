"""What the settings make of callbacks: whether they are on (WEBHOOK_SECRET and
WEBHOOK_ALLOWED_HOSTS both set), where they may go, how long one may take and how long a
failing one is retried."""

from dataclasses import dataclass

from shared.errors import CallbackRefusedError
from shared.settings import Settings
from shared.webhooks.addresses import AllowedHosts, RefusedError, check_callback_url


@dataclass(frozen=True)
class CallbackPolicy:
    secret: str | None
    hosts: AllowedHosts
    timeout: float
    """Seconds one attempt may take (WEBHOOK_TIMEOUT)."""
    retry_for: float
    """Seconds after the first attempt that a failing callback is still retried."""
    first_retry: float
    """Seconds before the first retry (before jitter), doubled for each later one."""

    @classmethod
    def of(cls, settings: Settings) -> "CallbackPolicy":
        secret = settings.webhook_secret
        return cls(
            secret=secret.get_secret_value() if secret is not None else None,
            hosts=AllowedHosts.parse(settings.webhook_allowed_hosts),
            timeout=settings.webhook_timeout,
            retry_for=settings.webhook_retry_for,
            first_retry=settings.webhook_retry_first,
        )

    @property
    def off_because(self) -> str | None:
        """Why callbacks are off, naming the settings to set; None when they are on."""
        missing = [
            name
            for name, unset in (
                ("WEBHOOK_SECRET", self.secret is None),
                ("WEBHOOK_ALLOWED_HOSTS", self.hosts.empty),
            )
            if unset
        ]
        if not missing:
            return None
        return f"callbacks are off: set {' and '.join(missing)} to call a callback_url back"

    def accept(self, url: str) -> str:
        """The callback URL a submission names, if callbacks may go there; otherwise
        CallbackRefusedError saying why. Its host's addresses are checked at each attempt."""
        off = self.off_because
        if off is not None:
            raise CallbackRefusedError(off)
        try:
            check_callback_url(url, self.hosts)
        except RefusedError as error:
            raise CallbackRefusedError(f"callback_url refused: {error}") from None
        return url
