"""The HTTP api: app factory, routes by resource, dependencies and error handlers."""
