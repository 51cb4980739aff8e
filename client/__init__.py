"""The Python client of jobcache's HTTP API (httpx): `Client` and `AsyncClient`."""
