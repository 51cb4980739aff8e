"""Refuses a request body over MAX_REQUEST_BYTES with 413 before reading all of it.

Starlette's body limit does the counting; this middleware only sizes it from the settings,
which are read when the app starts, after the middleware stack was built.
"""

from starlette.middleware.body_limit import RequestBodyLimitResponder
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class SettingsBodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        if scope["type"] != "http" or services is None:
            await self.app(scope, receive, send)
            return
        limit: int = services.settings.max_request_bytes
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared.isdigit() and not chunked:
            if int(declared) > limit:
                # Refused on the declared length alone: the body is never read.
                response = JSONResponse(
                    {
                        "detail": f"the request body is larger than {limit} bytes "
                        "(MAX_REQUEST_BYTES)"
                    },
                    status_code=413,
                )
                await response(scope, receive, send)
                return
            # The server reads no more than the declared length: nothing left to count.
            await self.app(scope, receive, send)
            return
        if not chunked and declared is None:
            # Neither a length nor chunks: the request has no body.
            await self.app(scope, receive, send)
            return
        # A body without a length (chunked) is counted as it arrives and cut off at the limit.
        await RequestBodyLimitResponder(self.app, limit)(scope, receive, send)
