"""What the api and the worker both need: settings, job declarations, records and the cache."""
