"""The ASGI application of `gamma-iqa serve` (`Service`): its routes on FastAPI, and the checks around them.

Routes:
    POST /v1/score: images as multipart/form-data file parts (one or more), or one image as the raw body; options
        scene, crops, seed and details as query parameters or form fields. Answers {"model": NAME, "rows": [...]},
        the rows `gamma-iqa score --format json` writes for the same images and options (bit for bit), each `path`
        the part's filename (`body` for a raw body). Images come only from the request: no server path is read.
    GET /v1/models: the model served (name, scenes, score range and direction, backend, provenance).
    GET /healthz: liveness, without the token.
    GET /metrics: Prometheus text (requests and errors by route and status, latency, images per device batch, queue).

How an image is scored: a decoding thread decodes and crops it (`Scorer.prepare`, what `gamma-iqa score`'s loader
runs), then one device worker thread, the only one using the model, takes the prepared images of all requests from
its queue and scores them in the model's fixed-size forwards (`Scorer.score_prepared`), the last one padded as the CLI
pads its last: a score does not depend on which requests share a forward. One decoding thread: decoding holds Python's
process-wide warnings state (`warnings.catch_warnings`), which threads must not enter at the same time.

Status codes (every error body is {"error": "one line"}): 200 with the rows, where an image that failed has a row with
its `error` as in the CLI; 422 for bad options and when no image of the request could be scored (the body then also
holds the rows; the message is the first failure as the CLI prints it, `NAME: reason`), and for more crops per image
than `--max-crops`; 415 for a urlencoded form (no images; a body labelled so that is an image by its signature, as
`curl --data-binary` sends one, is scored as the raw body); 413 for a body over the limit, more crops than the queue
holds, or more than the measured rate scores within the timeout; 503 with Retry-After (the queue's expected wait) when
the queue is full, its expected wait passes the timeout, or the server is stopping; 504 when the rows are not ready in
time; 401 without the bearer token; 500 when the model itself failed. An image over `--max-pixels` is refused from
its header (its row's error), in the server's terms rather than the library's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import math
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..data import transforms
from ..data.inputs import Entry
from ..data.transforms import Crops
from ..engine.onnxrt import OnnxForward
from ..engine.scoring import DETAIL_FIELDS, Scorer, ScoreRow
from ..models.base import QualityModel
from ..outputs.provenance import collect
from ..outputs.writers import json_row
from .limits import DEFAULT_CROPS, Limits, ServiceError, TooLarge
from .metrics import Metrics
from .options import OPTIONS, Options, parse_options
from .worker import DeviceWorker, Job

__all__ = ["Service"]

FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})  # form bodies without files
OPEN_ROUTES = frozenset({"/healthz"})  # answered without the bearer token
RATE_WEIGHT = 0.3  # the weight of the latest round in the moving average of the device worker's seconds per crop
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error response {"error": `message`}."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _discard(receive: Receive, most: int, more: bool = True) -> None:
    """Read and drop the rest of a request body, `most` bytes at most."""
    while more and most >= 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        most -= len(message.get("body", b""))
        more = message.get("more_body", False)


def _count(n: int, noun: str) -> str:
    """`n` and `noun`, plural unless `n` is 1 ("1 image", "4 crops")."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _is_image(data: bytes) -> bool:
    """Whether `data` begins with the signature (magic bytes) of an image format PIL reads; nothing is decoded.

    Only formats with a signature check count: text such as a urlencoded form (`key=value`) carries none.
    """
    Image.init()
    prefix = data[:16]
    if transforms.is_heif(prefix, ""):
        return True
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if accept is None:
            continue
        try:
            verdict = accept(prefix)
        except (struct.error, IndexError, ValueError):  # a check that needs more bytes than a short body has
            continue
        if verdict and not isinstance(verdict, str):  # a string is PIL's reason for rejecting the file
            return True
    return False


def _without_paths(model: dict[str, Any]) -> dict[str, Any]:
    """A provenance's model record with file names in place of the server's paths (the argument, the files)."""
    files = [{**f, "file": Path(f["file"]).name} for f in model.get("files", [])]
    return {**model, "argument": Path(str(model.get("argument", ""))).name, "files": files}


class Service:
    """The ASGI application of `gamma-iqa serve`: checks (drain, token, body size) around the FastAPI routes.

    Attributes:
        model: the model served, in eval mode; only the device worker thread uses it.
        token: the bearer token every request but /healthz must carry; None: none needed.
        limits: the limits and batching settings.
        dtype: the precision scored in (bf16 asked for where it is slower than fp32 is fp32, as in the CLI).
        backend: what runs the forward, as provenance records it (`Scorer.backend`: torch, or onnxruntime and its
            version).
        info: what /v1/models answers for the model.
        draining: set when the server stops: new requests get 503 while the admitted ones finish.
        aborted: set when it stops at once (`abort`): the requests in flight get 503 too.
        idle: set while no request is being answered (the drain waits for it).
    """

    def __init__(
        self,
        model: QualityModel,
        *,
        model_argument: str | None = None,
        token: str | None = None,
        limits: Limits | None = None,
        dtype: str = "fp32",
        backend: str = "torch",
    ) -> None:
        """A service for `model` (on its device); nothing runs until a server starts it (its lifespan).

        Args:
            model: the model served, on the device it scores on.
            model_argument: what the model was made from (a name or checkpoint), for the provenance.
            token: the bearer token; None or empty: none needed (only on a loopback host: `check_host`).
            limits: the limits; default `Limits()`.
            dtype: autocast precision, a DTYPES name.
            backend: "torch" or "onnxruntime" (CPU, fp32; requests with `crops` none are refused, 422), as `Scorer`.
                The onnxruntime forward is built here, once (export found or made, session opened), and shared by
                every request's Scorer.

        Raises:
            ValueError: a bad `dtype` or `backend`, or onnxruntime where it cannot score (as `Scorer`).
        """
        self.model = model.eval()
        self.token = token or None
        self.limits = limits or Limits()
        # Once, not per request: a bf16 fallback warns now; onnxruntime hashes the weights and opens its session now.
        probe = Scorer(model, dtype=dtype, backend=backend)
        self.dtype, self.backend = probe.dtype, probe.backend
        self._forward: str | OnnxForward = "torch" if probe.onnx is None else probe.onnx  # each request's `backend`
        self.metrics = Metrics()
        self.draining = False
        self.aborted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.idle = threading.Event()
        self.idle.set()
        self.info = self._model_info(model_argument)
        self._in_flight = 0  # requests being answered (changed on the event loop only)
        self._queued = 0  # images admitted and not yet answered (idem)
        self._queued_crops = 0  # their crops, as `_costs` counts them (idem)
        self._seconds_per_crop: float | None = None  # the device worker's measured rate (set on its thread)
        self._rounds = 0  # rounds the device worker has scored
        self._tasks: set[asyncio.Task] = set()  # the tasks of the requests being answered (on the event loop only)
        self._seq = itertools.count()
        self._pool: ThreadPoolExecutor | None = None
        self._worker: DeviceWorker | None = None
        self.app = self._build_app()

    def _model_info(self, argument: str | None) -> dict[str, Any]:
        """The model's description for /v1/models, with the provenance a score run records."""
        model = self.model
        record = collect(model, model_argument=argument, dtype=self.dtype)
        low, high = model.score_range
        return {
            "model": model.config.name,
            "kind": model.kind,
            "scenes": list(model.scenes),
            "default_scene": model.config.default_scene,
            "score_range": [low, high],
            "lower_better": model.lower_better,
            "image_size": model.image_size,
            "device": record["device"],
            "dtype": self.dtype,
            "backend": self.backend,
            "provenance": {
                "gamma_iqa": record["gamma_iqa"],
                "model": _without_paths(record["model"]),
                "versions": record["versions"],
                "backend": self.backend,
            },
        }

    # ---- the ASGI layer: refusals, in-flight count, metrics --------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI connection event: HTTP requests pass the checks, the lifespan goes to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, sending)
            else:
                await self._admitted(scope, receive, sending)
        except asyncio.CancelledError:  # the server stopped at once (a second signal): a JSON 503, no traceback
            if not self.aborted:
                raise
            if not status[0]:
                await self._stopped()(scope, receive, sending)
        finally:
            self._tasks.discard(task)
            self.metrics.request(scope["path"], status[0] or 500, time.perf_counter() - started)

    def _refusal(self, scope: Scope) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        """The answer to a request refused before it runs (shutting down, no token, a declared body too large).

        A body declared over the limit is dropped unread when the client waits for `100 Continue` or it is over twice
        the limit (the client may then see the connection reset before the answer), else read and dropped first.
        """
        if self.aborted:
            return self._stopped()
        if self.draining:
            retry = {"Retry-After": str(self.limits.retry_after), "Connection": "close"}
            return _error(503, "the server is shutting down; retry on another instance or later", retry)
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] not in OPEN_ROUTES:
            scheme, _, given = headers.get(b"authorization", b"").strip().partition(b" ")
            # The scheme's name is case-insensitive (RFC 7235); the token is compared in constant time.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token.encode()):
                return _error(
                    401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", {"WWW-Authenticate": "Bearer"}
                )
        length = headers.get(b"content-length", b"")
        if transforms.ascii_digits(length) and int(length) > self.limits.max_body:
            if headers.get(b"expect", b"").lower() == b"100-continue" or int(length) > 2 * self.limits.max_body:
                return _error(413, self._too_large(), {"Connection": "close"})  # the body is not read
            return self._reject_body
        return None

    async def _reject_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """413 once the body is read and dropped: a client that sends it whole before reading can read the answer."""
        await _discard(receive, self.limits.max_body)
        await _error(413, self._too_large(), {"Connection": "close"})(scope, receive, send)

    def _too_large(self) -> str:
        """The message of a body over the limit."""
        return f"request body over {self.limits.max_body_mb:g} MiB (--max-body-mb)"

    def _stopped(self) -> JSONResponse:
        """The answer to a request in flight when the server stopped at once."""
        return _error(
            503,
            "the server stopped before this request was answered; retry on another instance or later",
            {"Retry-After": str(self.limits.retry_after), "Connection": "close"},
        )

    def abort(self) -> None:
        """Stop at once (any thread may call it): every request in flight is answered 503, new ones too."""
        self.aborted = True
        loop = self._loop

        def cancel() -> None:  # each request's task answers 503 on its cancellation (`__call__`)
            for task in list(self._tasks):
                task.cancel()

        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing is in flight
                loop.call_soon_threadsafe(cancel)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run an admitted request, counted in flight, its body read within the limit."""
        left = [self.limits.max_body]

        async def receiving() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                left[0] -= len(message.get("body", b""))
                if left[0] < 0:  # drop the rest, up to the limit again, so that the client reads the 413
                    await _discard(receive, self.limits.max_body, message.get("more_body", False))
                    raise TooLarge
            return message

        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)
        self.idle.clear()
        try:
            await self.app(scope, receiving, send)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.set(self._in_flight)
            if self._in_flight == 0:
                self.idle.set()

    # ---- the FastAPI routes --------------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        """The routes and their error handlers."""
        app = FastAPI(title="gamma-iqa", lifespan=self._lifespan, docs_url=None, redoc_url=None, openapi_url=None)

        @app.exception_handler(ServiceError)
        async def service_error(request: Request, e: ServiceError) -> JSONResponse:
            return _error(e.status, e.message, e.headers)

        @app.exception_handler(TooLarge)
        async def too_large(request: Request, e: TooLarge) -> JSONResponse:
            return _error(413, self._too_large(), {"Connection": "close"})

        @app.exception_handler(HTTPException)
        async def http_error(request: Request, e: HTTPException) -> JSONResponse:  # 404, 405, a malformed form
            return _error(e.status_code, str(e.detail), e.headers)

        app.add_api_route("/healthz", self._health, methods=["GET", "HEAD"])
        app.add_api_route("/v1/models", self._models, methods=["GET"])
        app.add_api_route("/metrics", self._metrics_text, methods=["GET"])
        app.add_api_route("/v1/score", self._score, methods=["POST"])
        return app

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start the decoding thread and the device worker with the server; stop them when it stops."""
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gamma-iqa-decode")
        self._worker = DeviceWorker(
            self.limits.batch_size, self.limits.max_wait_ms / 1000, self.metrics.batch.observe, self._timed
        )
        self._worker.start()
        try:
            yield
        finally:  # stopped at once: neither the decode in progress nor the device worker's round is waited for
            self._pool.shutdown(wait=not self.aborted, cancel_futures=True)
            self._worker.stop(wait=not self.aborted)

    async def _health(self) -> dict[str, str]:
        """GET /healthz."""
        return {"status": "ok"}

    async def _models(self) -> dict[str, Any]:
        """GET /v1/models."""
        return {"models": [self.info]}

    async def _metrics_text(self) -> Response:
        """GET /metrics."""
        return Response(self.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    async def _score(self, request: Request) -> JSONResponse:
        """POST /v1/score (see the module text)."""
        uploads, fields, empty = await self._read(request)
        options = parse_options([*request.query_params.multi_items(), *fields], self.limits.max_crops)
        if options.crops == "none" and self.backend["name"] == "onnxruntime":
            raise ServiceError(
                422,
                "`crops` none: this server scores with onnxruntime (--backend), which takes fixed-size crops: "
                "`crops` N or center",
            )
        try:
            self.model.prompt_key(options.scene)  # an unknown scene: the CLI's message
        except ValueError as e:
            raise ServiceError(422, str(e)) from None
        if not uploads:
            raise ServiceError(
                422, "no image in the request: send files as multipart/form-data parts, or one image as the body"
            )
        entries = [Entry(name, data, options.scene, None if data else empty) for name, data in uploads]
        rows = await self._rows(entries, options)
        return self._answer(rows, options.details)

    async def _read(self, request: Request) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]], str]:
        """The images of a request as (name, bytes), its form fields, and the error of an empty image."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            body = await request.body()
            # curl --data-binary labels a raw body a urlencoded form unless told otherwise: an image is taken as one.
            if kind in FORM_TYPES and not _is_image(body):
                raise ServiceError(
                    415,
                    f"an {kind} body holds no images: send files as multipart/form-data parts, or one image as the raw "
                    "body with its own type (curl: -H 'Content-Type: application/octet-stream' --data-binary @FILE); "
                    "options go in the query string",
                )
            return [("body", body)], [], "empty input (0 bytes)"  # as `gamma-iqa score -`
        try:
            form = await request.form(max_files=1 << 20, max_fields=len(OPTIONS) * 2)
        except HTTPException as e:  # starlette's "Invalid multipart data.": say what was wrong where it is known
            cause = e.__context__.__cause__ if e.__context__ is not None else None
            if cause is not None and "header size" in str(cause):
                raise ServiceError(
                    422, "a multipart part's headers are too long (a file name of thousands of characters?): shorten it"
                ) from None
            raise
        uploads, fields = [], []
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    uploads.append((value.filename or f"<file {len(uploads)}>", await value.read()))
                else:
                    fields.append((key, value))
        finally:
            await form.close()
        return uploads, fields, "empty file (0 bytes)"  # as an empty file given to `gamma-iqa score`

    def _timed(self, crops: int, seconds: float) -> None:
        """Fold a round of `crops` scored in `seconds` into the rate (the first round, a warm-up, is left out)."""
        self._rounds += 1
        if self._rounds == 1 or crops < 1:
            return
        rate, old = seconds / crops, self._seconds_per_crop
        self._seconds_per_crop = rate if old is None else (1 - RATE_WEIGHT) * old + RATE_WEIGHT * rate

    def _costs(self, entries: list[Entry], crops: Crops) -> list[int]:
        """The crops each image of crop mode `crops` counts in the queue: N, 1 ("center"), or its whole view's size."""
        if isinstance(crops, int):
            return [crops] * len(entries)
        if crops == "center":
            return [1] * len(entries)
        return [self._whole_cost(entry.source) for entry in entries]

    def _whole_cost(self, data: bytes) -> int:
        """The crops an image scored whole ("none") counts: its view's pixels / the crop side squared, at least 1.

        The view is the image, or the image enlarged to the crop side when a side is under it; only the header is
        read. An image that will not be scored (no image, over `max_pixels`) counts 1; none counts more than the
        largest view the package scores (`MAX_VIEW_PIXELS`).
        """
        header = self._header(data)
        if header is None or header[0] * header[1] > self.limits.max_pixels:  # not scored: its row's error, no forward
            return 1
        width, height, enlarged = header
        view_height, view_width = enlarged or (height, width)
        pixels = min(view_height * view_width, transforms.MAX_VIEW_PIXELS)
        return max(1, math.ceil(pixels / self.model.image_size**2))

    def _header(self, data: bytes) -> tuple[int, int, tuple[int, int] | None] | None:
        """(width, height, the (height, width) it is enlarged to or None) of an image's header; None: no image.

        Only the header is read, nothing decoded (`transforms.image_size`, `transforms.enlarged_size`).
        """
        try:
            width, height = transforms.image_size(data)
        except Exception:  # not an image: `Scorer.prepare` says why, as the CLI does
            return None
        return width, height, transforms.enlarged_size(height, width, self.model.image_size)

    def _describe(self, n: int, cost: int, crops: Crops) -> str:
        """A request's size in its own terms: "1 image of 40 crops", "8 whole images (crops none), the size of ..."."""
        in_all = " in all" if n > 1 else ""
        if crops == "none":
            side = self.model.image_size
            whole = _count(n, "whole image")
            return f"{whole} (crops none), the size of {_count(cost, 'crop')} of {side} x {side} pixels{in_all}"
        return f"{_count(n, 'image')} of {_count(cost, 'crop')}{in_all}"

    def _admit(self, n: int, cost: int, crops: Crops) -> None:
        """Admit `n` images of crop mode `crops`, `cost` crops in all, or refuse them.

        Raises:
            ServiceError: 413 more images or crops than the queue holds, or more than the measured rate scores within
                the timeout; 503 (with Retry-After) the queue is full or its expected wait passes the timeout.
        """
        limits, rate = self.limits, self._seconds_per_crop
        budget = limits.max_queue * DEFAULT_CROPS
        fewer = "fewer or smaller images" if crops == "none" else "fewer images or crops"
        if n > limits.max_queue:
            raise ServiceError(
                413,
                f"{_count(n, 'image')} in one request, over the server's limit of {limits.max_queue} images per "
                f"request (--max-queue): send at most {limits.max_queue} images per request",
            )
        if cost > budget:
            raise ServiceError(
                413,
                f"{self._describe(n, cost, crops)} in one request, over the server's limit of {budget} crops per "
                f"request (--max-queue {limits.max_queue} images of {DEFAULT_CROPS} crops): send {fewer} per request",
            )
        if rate is not None and cost * rate > limits.timeout:
            raise ServiceError(
                413,
                f"{self._describe(n, cost, crops)} would take about {math.ceil(cost * rate)} s at the server's rate "
                f"({rate * 1000:.3g} ms per crop), over its limit of {limits.timeout:g} s (--timeout): send {fewer} "
                "per request",
            )
        wait = None if rate is None else self._queued_crops * rate
        retry = {"Retry-After": str(max(limits.retry_after, math.ceil(wait or 0)))}
        if self._queued_crops + cost > budget:
            raise ServiceError(
                503,
                f"the queue is full ({self._queued_crops} of {budget} crops waiting, --max-queue {limits.max_queue} "
                f"images of {DEFAULT_CROPS}); retry after {retry['Retry-After']} s",
                retry,
            )
        if wait is not None and wait + cost * rate > limits.timeout:
            raise ServiceError(
                503,
                f"the queue's expected wait, {math.ceil(wait)} s, would leave this request no time within "
                f"{limits.timeout:g} s (--timeout); retry after {retry['Retry-After']} s",
                retry,
            )

    async def _rows(self, entries: list[Entry], options: Options) -> list[ScoreRow]:
        """The rows of `entries`, in order, once admitted to the queue.

        Raises:
            ServiceError: as `_admit`; 504 timed out, 500 the model failed.
        """
        n, costs = len(entries), self._costs(entries, options.crops)
        cost = sum(costs)
        self._admit(n, cost, options.crops)
        scorer = Scorer(
            self.model,
            crops=options.crops,
            seed=options.seed,
            dtype=self.dtype,
            details=options.details,
            backend=self._forward,
        )
        loop = asyncio.get_running_loop()
        futures = [self._submit(loop, i, entry, scorer, costs[i]) for i, entry in enumerate(entries)]
        self._queue(n, cost)
        gathered = asyncio.gather(*futures)
        # Cancelled (a second signal, or the timeout), the gathering future ends with a CancelledError nobody awaits:
        # retrieved here, else asyncio logs "exception was never retrieved" as the server stops.
        gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return list(await asyncio.wait_for(gathered, self.limits.timeout))
        except asyncio.TimeoutError:
            raise ServiceError(504, f"no result within {self.limits.timeout:g} s (--timeout); retry later") from None
        except Exception as e:  # the model failed (the device worker's error)
            first = (str(e).strip().splitlines() or [""])[0]
            raise ServiceError(500, f"scoring failed: {type(e).__name__}: {first}") from None
        finally:
            for future in futures:
                future.cancel()  # a request that gave up: the worker skips its images (done futures ignore this)
            self._queue(-n, -cost)

    def _queue(self, images: int, crops: int) -> None:
        """Count `images` of `crops` in all into the queue (negative: out of it)."""
        self._queued += images
        self._queued_crops += crops
        self.metrics.queue.set(self._queued)

    def _submit(
        self,
        loop: asyncio.AbstractEventLoop,
        index: int,
        entry: Entry,
        scorer: Scorer,
        cost: int,
    ) -> asyncio.Future:
        """The future row of one entry: settled now for an entry with an error, else by the device worker."""
        future = loop.create_future()
        if entry.error is not None:
            future.set_result(self._failed(index, entry, entry.error))
            return future
        job = Job(next(self._seq), entry, scorer, cost, future)
        assert self._pool is not None, "the service runs inside its server (the lifespan starts the pool)"
        self._pool.submit(self._prepare, job)
        return future

    def _failed(self, index: int, entry: Entry, error: str) -> ScoreRow:
        """The row of an image that is not scored, with its one-line `error` (as the CLI's row of a failed image)."""
        return ScoreRow(index, entry.name, scene=entry.scene or self.model.config.default_scene, error=error)

    def _prepare(self, job: Job) -> None:
        """Decode and crop one image (on the decoding thread) and queue it for the device worker."""
        if job.future.done():  # the request gave up, or the server stopped at once
            return
        problem = self._over_budget(job.entry.source, job.scorer.crops)
        if problem is not None:
            job.settle(self._failed(job.seq, job.entry, problem))
            return
        try:
            job.item = job.scorer.prepare(job.seq, job.entry)
        except Exception as e:  # prepare turns input errors into the item's error: this is a bug, answered as 500
            job.settle(error=e)
            return
        assert self._worker is not None
        self._worker.put(job)

    def _over_budget(self, data: bytes, crops: Crops) -> str | None:
        """Why an image is too large for the server (its header read, nothing decoded), in an HTTP client's terms.

        The limits are the server's `max_pixels` per image and the package's `MAX_VIEW_PIXELS` per view (the whole
        image with crops "none", or a thin image enlarged to the crop side); None when it fits or when the header
        cannot be read (the scorer then gives the CLI's reason).
        """
        header = self._header(data)
        if header is None:  # not an image: `Scorer.prepare` says why, as the CLI does
            return None
        width, height, enlarged = header
        pixels, limit, view_limit = width * height, self.limits.max_pixels, transforms.MAX_VIEW_PIXELS
        if pixels > limit:
            return (
                f"image of {width} x {height} = {pixels:,} pixels is over the server's limit of {limit:,} pixels "
                "(--max-pixels)"
            )
        if enlarged is not None and enlarged[0] * enlarged[1] > view_limit:
            eh, ew = enlarged
            return (
                f"image too thin: {width} x {height} pixels would be enlarged to {ew} x {eh} = {ew * eh:,} pixels to "
                f"reach the {self.model.image_size}-pixel crop side, over the server's limit of {view_limit:,} pixels "
                "per view: pad or crop it to a less extreme aspect ratio"
            )
        if enlarged is None and crops == "none" and pixels > view_limit:
            return (
                f"image too large to score whole (crops 'none'): {width} x {height} = {pixels:,} pixels, over the "
                f"server's limit of {view_limit:,} pixels per view: use random or 'center' crops, or a smaller image"
            )
        return None

    def _answer(self, rows: list[ScoreRow], details: bool) -> JSONResponse:
        """The rows as `gamma-iqa score --format json` writes them; 422 when none could be scored."""
        fields = ScoreRow.FIELDS + (DETAIL_FIELDS if details else ())
        records = [json_row(row.as_dict(), fields) for row in rows]
        failed = [row for row in rows if row.error is not None]
        self.metrics.images.labels("failed").inc(len(failed))
        self.metrics.images.labels("scored").inc(len(rows) - len(failed))
        if failed and len(failed) == len(rows):
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            return JSONResponse(
                {"error": f"{failed[0].path}: {failed[0].error}{more}", "rows": records}, status_code=422
            )
        return JSONResponse({"model": self.info["model"], "rows": records})
