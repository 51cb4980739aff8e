"""A startup failure the api has explained in one line (a setting it cannot run with, a Redis
that refuses it) is not followed by its traceback: Starlette hands the server the whole
traceback of any lifespan error, which uvicorn prints under the one line that says what to fix.
At LOG_LEVEL=DEBUG the traceback stays."""

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

EXPLAINED_STATE_KEY = "startup_failure_explained"
"""Set on the app's state by the lifespan once it has logged why it cannot start."""


def quiet_explained_startup_failure(app: FastAPI) -> None:
    """Drop the traceback from an explained `lifespan.startup.failed`. The router's lifespan
    handler is wrapped, not the app: a middleware would be one more layer on every request."""
    serve_lifespan = app.router.lifespan

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        async def quiet(message: Message) -> None:
            explained = getattr(app.state, EXPLAINED_STATE_KEY, False)
            if message["type"] == "lifespan.startup.failed" and explained:
                message = {**message, "message": ""}
            await send(message)

        await serve_lifespan(scope, receive, quiet)

    app.router.lifespan = lifespan  # type: ignore[method-assign]
