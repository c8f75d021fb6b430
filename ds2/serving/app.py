"""The HTTP API: OpenAI's transcription endpoint and its neighbours, as a FastAPI application.

    POST /v1/audio/transcriptions   multipart: file, model, [response_format, language, prompt, temperature,
                                    timestamp_granularities[], decoder]; json, text, verbose_json, srt or vtt
    GET  /v1/models, /v1/models/ID  the served model, in OpenAI's list shape
    GET  /health                    200 once the model is loaded and its graph compiled; 503 before, and
                                    while the server drains on SIGTERM
    GET  /                          a page that uploads a file or records the microphone and shows the text

Every error is a 4xx (or 503 when busy) with OpenAI's error body,
{"error": {"message", "type", "param", "code"}}, never a traceback. RequestLog, the outermost layer, gives
every request an id, stops reading uploads at the size limit and writes one log line per request.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ds2.config import FeatureConfig, ServeConfig
from ds2.serving.batcher import Batcher, QueueFull
from ds2.serving.formats import RESPONSE_FORMATS, Transcription, render, timed
from ds2.serving.intake import IntakeError, upload_features
from ds2.serving.recognizer import Utterance

TRANSCRIPTIONS = "/v1/audio/transcriptions"
# Model names accepted besides the served model's own id: tools that speak OpenAI's API often send
# OpenAI's transcription model name whatever the server.
MODEL_ALIASES = ("whisper-1",)
LANGUAGES = ("en", "english")
# A request arriving while the model loads is told to come back after this many seconds.
LOADING_RETRY_SECONDS = 5
# An upload declaring more bytes than the limit is read (and thrown away) up to this multiple of the limit
# before the 413 answer, so the client, still sending, reads the answer instead of a reset connection.
DRAIN_FACTOR = 4
PAGE = Path(__file__).with_name("page.html")
# The status logged for a request whose client went away before its answer (nginx's convention).
CLIENT_GONE = 499

log = logging.getLogger("ds2.serve")


class Service:
    """What the HTTP layer serves: the model's description, the limits, and the batcher that runs the model."""

    def __init__(self, model_id: str, labels: str, frame_seconds: float, feature_cfg: FeatureConfig,
                 settings: ServeConfig, decoders: Dict[str, str], default_decoder: str, batcher: Batcher):
        """decoders: name -> one-line description of each decoder a request may ask for."""
        self.model_id = model_id
        self.labels = labels
        self.frame_seconds = frame_seconds
        self.feature_cfg = feature_cfg
        self.settings = settings
        self.decoders = decoders
        self.default_decoder = default_decoder
        self.batcher = batcher
        self.created = int(time.time())
        self.ready = False      # set once the model is loaded and its graph compiled
        self.draining = False   # set on SIGTERM

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 1024 * 1024)


class ApiError(StarletteHTTPException):
    """An error answered in OpenAI's shape. A Starlette HTTPException, so FastAPI passes it through form
    parsing unchanged (it turns other exceptions raised there into a 400)."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 retry_after: Optional[int] = None):
        super().__init__(status, message)
        self.message, self.param, self.code, self.retry_after = message, param, code, retry_after


def error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> Dict:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return JSONResponse(error_body(error.status_code, error.message, error.param, error.code),
                        status_code=error.status_code, headers=headers)


class ClientGone(Exception):
    """The client disconnected while its request waited."""


async def result_or_disconnect(request: Request, future) -> Any:
    """The batcher's result for this request; ClientGone (and the request dropped from the queue) if the
    client disconnects first. Once the body is read, the next ASGI message is the disconnect."""
    result = asyncio.wrap_future(future)
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({result, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if result in done:
        return result.result()
    future.cancel()     # dropped unless its batch already started
    raise ClientGone


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="ds2", description="DeepSpeech2 on MindSpore: OpenAI-compatible speech to text",
                  docs_url="/docs", redoc_url=None)
    page = PAGE.read_text(encoding="utf-8")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, ApiError):
            return error_response(exc)
        if exc.status_code == 404:
            message = f"unknown request URL: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_fields(request: Request, exc: RequestValidationError):
        problems, param = [], None
        for error in exc.errors():
            field = str(error.get("loc", ["", "?"])[-1])
            param = param or field
            problems.append(f"missing required field '{field}'" if error.get("type") == "missing"
                            else f"field '{field}': {error.get('msg', 'invalid')}")
        return JSONResponse(error_body(422, "; ".join(problems) or "invalid request", param), status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):   # a bug: never a traceback to the client (uvicorn logs it)
        request_id = request.scope.get("state", {}).get("request_id", "")
        return JSONResponse(error_body(500, f"internal error ({request_id}); the server log has the details"),
                            status_code=500)

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        if service.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not service.ready:
            return JSONResponse({"status": "loading"}, status_code=503,
                                headers={"Retry-After": str(LOADING_RETRY_SECONDS)})
        return {"status": "ready", "model": service.model_id}

    def model_card() -> Dict[str, Any]:
        return {"id": service.model_id, "object": "model", "created": service.created, "owned_by": "ds2",
                "decoders": service.decoders, "default_decoder": service.default_decoder}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id not in (service.model_id,) + MODEL_ALIASES:
            raise ApiError(404, f"the model '{model_id}' does not exist; this server has '{service.model_id}'",
                           "model", "model_not_found")
        return model_card()

    @app.post(TRANSCRIPTIONS)
    async def transcriptions(
            request: Request,
            file: UploadFile = File(..., description="audio: WAV, FLAC, OGG or MP3"),
            model: str = Form(...),
            response_format: str = Form("json"),
            language: Optional[str] = Form(None, description="en (the model transcribes English)"),
            prompt: Optional[str] = Form(None, description="accepted; a CTC model takes no prompt"),
            temperature: Optional[float] = Form(None, description="accepted; decoding is deterministic"),
            timestamp_granularities: Optional[List[str]] = Form(None, alias="timestamp_granularities[]"),
            decoder: Optional[str] = Form(None, description="ds2: a decoder of GET /v1/models, else the default")):
        state = request.scope.setdefault("state", {})
        if model not in (service.model_id,) + MODEL_ALIASES:
            raise ApiError(404, f"the model '{model}' does not exist; this server has '{service.model_id}'",
                           "model", "model_not_found")
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format '{response_format}' is not one of {', '.join(RESPONSE_FORMATS)}",
                           "response_format", "invalid_value")
        if language and language.lower() not in LANGUAGES:
            raise ApiError(400, f"language '{language}': this model transcribes English only (en)", "language",
                           "unsupported_language")
        for granularity in timestamp_granularities or []:
            if granularity not in ("word", "segment"):
                raise ApiError(400, f"timestamp_granularities[] '{granularity}' is not word or segment",
                               "timestamp_granularities[]", "invalid_value")
        decoder = decoder or service.default_decoder
        if decoder not in service.decoders:
            raise ApiError(400, f"decoder '{decoder}' is not one of {', '.join(service.decoders)}", "decoder",
                           "invalid_value")
        state["decoder"] = decoder
        if not service.ready:
            raise ApiError(503, "the model is still loading (its graph compiles); retry shortly", None,
                           "model_loading", LOADING_RETRY_SECONDS)
        data = await file.read()
        try:
            intake = await run_in_threadpool(upload_features, data, service.feature_cfg,
                                             service.settings.max_audio_seconds)
        except IntakeError as exc:
            raise ApiError(exc.status, exc.message, "file", exc.code) from None
        state["audio_seconds"] = intake.seconds
        try:
            future = service.batcher.submit(intake.features.shape[1], Utterance(intake.features, decoder))
        except QueueFull as exc:
            raise ApiError(503, f"the server is busy: {service.settings.max_queue} requests are waiting; "
                                f"retry in {exc.retry_after} s", None, "queue_full", exc.retry_after) from None
        try:
            recognized = await result_or_disconnect(request, future)
            state["batch"] = recognized.batch_size
            if response_format in ("json", "text"):
                transcription = Transcription(recognized.text, intake.seconds, [], [])    # no alignment needed
            else:
                transcription = await run_in_threadpool(timed, recognized.text, recognized.log_probs,
                                                        service.labels, service.frame_seconds, intake.seconds)
        except ClientGone:
            state["client_gone"] = True
            return Response(status_code=CLIENT_GONE)
        except Exception:   # a bug, or the model failing: the log has the traceback, the client one line
            log.exception("%s: transcription failed", state["request_id"])
            raise ApiError(500, f"transcription failed ({state['request_id']}); the server log has the details",
                           None, "model_error") from None
        body, media_type = render(transcription, response_format)
        return Response(body, media_type=media_type)

    return RequestLog(app, service)


class RequestLog:
    """ASGI middleware around the application: a request id (also the x-request-id header), the upload size
    limit, and one log line per request (health checks aside):

        req_12 POST /v1/audio/transcriptions 200 1.84 s audio 0.213 s latency decoder greedy batch 6

    An upload declaring more than the limit is answered 413 without being parsed; one that grows past it
    while being read (no or a false Content-Length) is cut off there (ApiError from receive)."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service
        self.counter = itertools.count(1)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = f"req_{next(self.counter)}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": None}
        limit = self.service.max_upload_bytes
        received = {"bytes": 0, "disconnected": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.disconnect":
                received["disconnected"] = True
            elif message["type"] == "http.request":
                received["bytes"] += len(message.get("body", b""))
                if received["bytes"] > limit:
                    raise ApiError(413, too_large(self.service), "file", "file_too_large")
            return message

        async def tagged_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            declared = int(dict(scope["headers"]).get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        try:
            if declared > limit:
                await drain(receive, min(declared, DRAIN_FACTOR * limit))
                await error_response(ApiError(413, too_large(self.service), "file", "file_too_large"))(
                    scope, receive, tagged_send)
            else:
                await self.app(scope, counted_receive, tagged_send)
        finally:
            if scope["path"] != "/health":
                # A client that disconnected got no answer, whatever the application returned.
                code = CLIENT_GONE if state.get("client_gone") or received["disconnected"] else status["code"]
                details = ""
                if "audio_seconds" in state:
                    details += f" {state['audio_seconds']:.2f} s audio"
                details += f" {time.perf_counter() - started:.3f} s latency"
                if "decoder" in state:
                    details += f" decoder {state['decoder']}"
                if "batch" in state:
                    details += f" batch {state['batch']}"
                log.info("%s %s %s %s%s", request_id, scope["method"], scope["path"], code, details)


def too_large(service: Service) -> str:
    return f"the upload is larger than the {service.settings.max_upload_mb:g} MB this server accepts"


async def drain(receive, limit: int) -> None:
    """Read and discard up to `limit` bytes of the request body (less if it ends or the client leaves)."""
    read = 0
    while read < limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
