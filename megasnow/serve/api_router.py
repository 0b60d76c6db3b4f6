"""Thin FastAPI routes of megasnow.serve: parse, authorize, inject faults, call OpenAIServing, shape the response
(JSON, server-sent events, or an OpenAI error with its status code), and cancel work when the client leaves."""
import asyncio
import hashlib
import json
import secrets

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from megasnow.serve.protocol import ChatCompletionRequest, CompletionRequest, ErrorResponse
from megasnow.serve.request_log import request_hash
from megasnow.serve.serving import STATUS_CLIENT_CLOSED, LogContext

_DISCONNECTED = object()


ROUTES = "GET /v1/models, GET /v1/models/{model}, POST /v1/completions, POST /v1/chat/completions, GET /health"


def error_response(err, headers=None):
    if err.status_code in (429, 503):
        headers = {**(headers or {}), "Retry-After": "1"}
    return JSONResponse(err.model_dump(exclude_none=False), status_code=err.status_code, headers=headers)


SENT_CONTENT_TYPE = "megasnow.sent_content_type"  # scope key: a POST's Content-Type when not JSON ("": none)


def is_json_content_type(value):
    """True for application/json and application/*+json (with or without parameters), as FastAPI tests it."""
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JSONBodyMiddleware:
    """Read every POST body as JSON, whatever its Content-Type (none, or curl -d's
    application/x-www-form-urlencoded): the OpenAI API has JSON bodies only, and FastAPI (0.115+: strict content
    type) would otherwise hand the routes raw bytes and answer that a JSON body is not JSON. The type sent is kept
    in the scope, so a body that really is not JSON gets a message naming it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            sent = next((v for k, v in scope["headers"] if k == b"content-type"), None)
            if sent is None or not is_json_content_type(sent.decode("latin-1")):
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": headers + [(b"content-type", b"application/json")],
                         SENT_CONTENT_TYPE: "" if sent is None else sent.decode("latin-1")}
        await self.app(scope, receive, send)


def body_error(first, body, sent_content_type=None):
    """The message of a request body that is not a JSON object (FastAPI's validation error `first` at loc
    ('body', ...) with no field named), or None when the error is about a field. sent_content_type: the
    Content-Type the request came with when it was not JSON (JSONBodyMiddleware), named in the message."""
    kind, loc = first.get("type"), first.get("loc", ())
    if kind == "json_invalid":
        pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        before = body[:pos].decode("utf-8", "replace")
        line, column = before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1
        reason = (first.get("ctx") or {}).get("error", "JSON decode error")
        sent = (f" (it came with Content-Type: {sent_content_type}; this server reads every body as JSON)"
                if sent_content_type else "")
        return f"The request body is not valid JSON: {reason}: line {line} column {column} (char {pos}){sent}"
    if tuple(loc) == ("body",):
        if kind == "missing":
            return "The request body is empty; send the request as a JSON object"
        if kind == "model_attributes_type":
            return f"The request body must be a JSON object, got {type(first.get('input')).__name__}"
    return None


async def _wait_for_disconnect(raw):
    while True:
        message = await raw.receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(raw, coro):
    """The coroutine's result, or _DISCONNECTED after cancelling it when the client closes the connection first
    (vLLM's `with_cancellation`): a non-streaming request stops generating for nobody."""
    work = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(_wait_for_disconnect(raw))
    try:
        done, _ = await asyncio.wait([work, watcher], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        raise
    finally:
        watcher.cancel()
    if work in done:
        return work.result()
    work.cancel()
    try:
        await work
    except asyncio.CancelledError:
        pass
    return _DISCONNECTED


def field_error(errors):
    """(param, message) of FastAPI's validation errors about a field: the first error's field, e.g.
    ('messages.0.role', 'messages.0.role: Field required'). A union-typed field (prompt, stop, content) fails once
    per member, at locs ending in the member's type; param is then the field and the message lists the types."""
    if not errors:
        return None, "invalid request"
    first = errors[0]
    loc = tuple(x for x in first.get("loc", ()) if x != "body")
    group = [tuple(x for x in e.get("loc", ()) if x != "body") for e in errors]
    group = [g for g in group if g[:1] == loc[:1]]
    prefix = loc
    for g in group:
        while g[:len(prefix)] != prefix:
            prefix = prefix[:-1]
    if len(group) > 1 and len(prefix) < len(loc):  # a union's members
        param = ".".join(map(str, prefix)) or None
        members = list(dict.fromkeys(str(g[len(prefix)]) for g in group if len(g) > len(prefix)))
        return param, f"{param}: Input should be one of: {', '.join(members)}"
    param = ".".join(map(str, loc)) or None
    msg = first.get("msg", "invalid request")
    return param, f"{param}: {msg}" if param else msg


def build_app(serving, api_key=None):
    """The FastAPI application over an OpenAIServing. api_key: when set, /v1 routes need `Authorization: Bearer
    <api_key>` (401 otherwise), as vLLM's --api-key."""
    app = FastAPI(title="megasnow.serve", description="OpenAI-compatible server for megasnow models")
    router = APIRouter()

    def unauthorized(raw):
        if api_key is None:
            return None
        given = raw.headers.get("authorization", "")
        if secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            return None
        return error_response(ErrorResponse.make(401, "Incorrect API key provided", "invalid_request_error",
                                                 code="invalid_api_key"))

    async def respond(raw, request, handler, endpoint):
        denied = unauthorized(raw)
        if denied is not None:
            return denied
        serving.requests += 1
        ctx = serving.log_context(endpoint, json.loads(await raw.body()))
        fault = await serving.inject_fault(ctx, raw.is_disconnected)
        if fault is not None:
            ctx.done(fault.status_code, error=fault.error.message)
            if fault.status_code == STATUS_CLIENT_CLOSED:
                return Response(status_code=STATUS_CLIENT_CLOSED)
            return error_response(fault)
        result = await run_until_disconnect(raw, handler(request, ctx))
        if result is _DISCONNECTED:
            ctx.done(STATUS_CLIENT_CLOSED)
            return Response(status_code=STATUS_CLIENT_CLOSED)
        if isinstance(result, ErrorResponse):
            ctx.done(result.status_code, error=result.error.message)
            return error_response(result)
        if hasattr(result, "model_dump"):
            return JSONResponse(result.model_dump())
        return StreamingResponse(result, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/health")
    async def health():
        return {"status": "ok", "unfinished_sequences": serving.scheduler.unfinished}

    @router.get("/v1/models")
    async def models(raw: Request):
        return unauthorized(raw) or JSONResponse(serving.models().model_dump())

    @router.get("/v1/models/{model:path}")
    async def retrieve_model(model: str, raw: Request):
        denied = unauthorized(raw)
        if denied is not None:
            return denied
        if not model:  # GET /v1/models/: not a lookup of the model "" but the list (vLLM redirects it there)
            return JSONResponse(serving.models().model_dump())
        card = serving.model(model)
        return error_response(card) if isinstance(card, ErrorResponse) else JSONResponse(card.model_dump())

    @router.post("/v1/completions")
    async def create_completion(request: CompletionRequest, raw: Request):
        return await respond(raw, request, serving.create_completion, "/v1/completions")

    @router.post("/v1/chat/completions")
    async def create_chat_completion(request: ChatCompletionRequest, raw: Request):
        return await respond(raw, request, serving.create_chat_completion, "/v1/chat/completions")

    app.include_router(router)
    app.add_middleware(JSONBodyMiddleware)

    @app.exception_handler(RequestValidationError)
    async def validation_error(raw, exc):
        """OpenAI answers a malformed request with 400 (FastAPI's default is 422), naming the field."""
        first = exc.errors()[0] if exc.errors() else {}
        body = await raw.body()
        message, param = body_error(first, body, raw.scope.get(SENT_CONTENT_TYPE)), None
        if message is None:
            param, message = field_error(exc.errors())
        try:
            digest = request_hash(json.loads(body))
        except ValueError:
            digest = hashlib.sha256(body).hexdigest()
        serving.requests += 1
        LogContext(raw.url.path, digest, serving.request_log).done(400, error=message)
        return error_response(ErrorResponse.make(400, message, "invalid_request_error", param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(raw, exc):
        """Unknown routes (404), wrong methods (405) and any other HTTP error in OpenAI's error shape, not
        FastAPI's {"detail": ...}; OpenAI words an unknown route "Invalid URL (METHOD /path)"."""
        where = f"{raw.method} {raw.url.path}"
        if exc.status_code == 404:
            message, code = f"Invalid URL ({where}); this server serves {ROUTES}", "not_found"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("allow", (exc.headers or {}).get("Allow", ""))
            message = f"Method not allowed ({where}); use {allowed or 'another method'}"
            code = "method_not_allowed"
        else:
            message, code = f"{exc.detail} ({where})", None
        type_ = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        return error_response(ErrorResponse.make(exc.status_code, message, type_, code=code), headers=exc.headers)

    return app
