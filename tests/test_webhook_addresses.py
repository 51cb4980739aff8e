"""Where callbacks may go, and the settings that say so: WEBHOOK_ALLOWED_HOSTS' names,
wildcards and addresses, the addresses that are never public, and WEBHOOK_SECRET's form."""

import base64
import ipaddress
import re

import pytest

from shared.errors import ConfigurationError
from shared.settings import load_settings
from shared.webhooks.addresses import AllowedHosts, RefusedError, non_public_kind, refuse_address


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 around 169.254.169.254
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_addresses_that_are_not_public_are_named_by_their_kind(
    address: str, kind: str | None
) -> None:
    assert non_public_kind(ipaddress.ip_address(address)) == kind


def test_a_wildcard_allows_names_but_only_an_exact_entry_a_private_address() -> None:
    hosts = AllowedHosts.parse(" hooks.example.com , *.corp.example, 10.0.0.7, [fd00::7] ")
    assert hosts.allows("hooks.example.com") and hosts.allows("a.b.corp.example")
    assert not hosts.allows("corp.example") and not hosts.allows("example.com")
    assert not hosts.allows("10.0.0.8") and hosts.allows("10.0.0.7")
    loopback = ipaddress.ip_address("127.0.0.1")
    refuse_address("hooks.example.com", loopback, hosts)  # listed by its exact name
    refused = re.escape("a.corp.example resolves to 127.0.0.1, a loopback")
    with pytest.raises(RefusedError, match=refused):
        refuse_address("a.corp.example", loopback, hosts)
    refuse_address("a.corp.example", ipaddress.ip_address("fd00::7"), hosts)  # listed address
    everything = AllowedHosts.parse("*")
    assert everything.allows("anything.example.org") and everything.allows("8.8.8.8")
    with pytest.raises(RefusedError, match="a private address"):
        refuse_address("anything.example.org", ipaddress.ip_address("10.0.0.7"), everything)
    assert AllowedHosts.parse("").empty and AllowedHosts.parse(" , ").empty


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("WEBHOOK_SECRET", "not-a-whsec", "must start with 'whsec_'"),
        ("WEBHOOK_SECRET", "whsec_!!!!", "not base64"),
        ("WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"short").decode(), "at least 24"),
        ("WEBHOOK_ALLOWED_HOSTS", "https://hooks.example.com", "not a host name"),
        ("WEBHOOK_ALLOWED_HOSTS", "hooks.example.com:8443", "not a host name"),
        ("WEBHOOK_RETRY_FOR", "172800", "less than or equal to 86400"),
    ],
)
def test_a_bad_webhook_setting_stops_the_process_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv("JOBCACHE_ENV_FILE", "")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    message = str(raised.value)
    assert variable in message and says in message
    if variable == "WEBHOOK_SECRET":
        assert value not in message, "a secret is never shown"


def test_an_empty_secret_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCACHE_ENV_FILE", "")
    monkeypatch.setenv("WEBHOOK_SECRET", "")
    assert load_settings().webhook_secret is None
