"""What the api and the worker both need: settings, job declarations, key names, and the backend
(records, job events, queue, quotas, overview, cached responses) in its memory and Redis forms."""
