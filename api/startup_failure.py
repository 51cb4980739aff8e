"""A startup failure the api has explained in one line (a setting it cannot run with, a Redis
that refuses it) is not followed by its traceback: Starlette hands the server the whole
traceback of any lifespan error, which uvicorn prints under the one line that says what to fix.
At LOG_LEVEL=DEBUG the traceback stays."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXPLAINED_STATE_KEY = "startup_failure_explained"
"""Set on the app's state by the lifespan once it has logged why it cannot start."""


class QuietExplainedStartupFailure:
    """ASGI middleware: drops the traceback from an explained `lifespan.startup.failed`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet(message: Message) -> None:
            explained = getattr(scope["app"].state, EXPLAINED_STATE_KEY, False)
            if message["type"] == "lifespan.startup.failed" and explained:
                message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, quiet)
