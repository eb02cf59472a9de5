"""`gamma-iqa serve`: a real server on 127.0.0.1 (uvicorn in a thread, and once the command in a subprocess).

The rows equal `gamma-iqa score --format json`'s for the same images (bit for bit), every error case answers its
status and message and the next request succeeds, the token is enforced, and a shutdown drains: the request in flight
gets its rows while new ones get 503. The client is the standard library's (http.client), so the tests need only the
serve extra.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'gamma-iqa[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'gamma-iqa[serve]')")
pytest.importorskip("prometheus_client", reason="the serve extra is not installed (pip install 'gamma-iqa[serve]')")
pytest.importorskip("multipart", reason="the serve extra is not installed (pip install 'gamma-iqa[serve]')")

import gamma_iqa
import gamma_iqa.cli
from gamma_iqa import serve as service
from gamma_iqa.data import transforms
from gamma_iqa.engine import onnxrt, scoring
from gamma_iqa.models.export import onnx_missing

from .conftest import free_port, run_cli

TOKEN = "s3cret"
AUTH = f"Authorization: Bearer {TOKEN}"
LIMITS = service.Limits(max_body_mb=0.5, max_queue=4, timeout=3.0)


# ---- a small client (standard library only) ----------------------------------------------------------------------
def call(port, method, path, body=None, headers=None, token=TOKEN):
    """(status, headers, parsed JSON or text) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    is_json = r.getheader("content-type", "").startswith("application/json")
    return r.status, dict(r.getheaders()), json.loads(data) if is_json and data else data.decode()


def multipart(files, fields=()):
    """A multipart/form-data body of (filename, bytes) file parts and (name, value) fields, and its content type."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        out.write(f"{head}Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def score(port, files, query="", fields=(), token=TOKEN):
    body, headers = multipart(files, fields)
    return call(port, "POST", f"/v1/score{query}", body, headers, token=token)


def png(h, w, seed):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.2, 1, h)[:, None, None]
    pixels = (0.7 * ramp + 0.3 * rng.uniform(0, 255, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG" if seed % 2 else "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three images of different sizes and formats, written to a folder: {name: bytes}."""
    folder = tmp_path_factory.mktemp("photos")
    out = {f"p{i}.{'png' if i % 2 else 'jpg'}": png(70 + 9 * i, 96 - 7 * i, i) for i in range(3)}
    for name, data in out.items():
        (folder / name).write_bytes(data)
    return folder, out


def cli_rows(capsys, monkeypatch, folder, *argv):
    monkeypatch.chdir(folder)
    code, out, err = run_cli(capsys, "score", "--model", "gamma-test", "--workers", "0", "--format", "json", *argv)
    return code, json.loads(out), err


# ---- the server in a thread ----------------------------------------------------------------------------------------
class Running:
    """A service's uvicorn server on a free port of 127.0.0.1, in a thread until `stop`."""

    def __init__(self, svc):
        self.svc = svc
        self.port = free_port()
        self.server = service.make_server(svc, "127.0.0.1", self.port)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def gated():
    """gamma-test whose forwards wait while the gate is closed (cleared): requests stay in flight on demand."""
    model = gamma_iqa.create_model("gamma-test")
    gate = threading.Event()
    gate.set()
    gate.entered = threading.Event()  # set by each forward on entry: the device worker is busy from then on
    forward = model.forward

    def waiting(*args, **kwargs):
        gate.entered.set()
        assert gate.wait(timeout=30)
        return forward(*args, **kwargs)

    model.forward = waiting
    return model, gate


@pytest.fixture(scope="module")
def running(gated):
    model, gate = gated
    run = Running(service.Service(model, model_argument="gamma-test", token=TOKEN, limits=LIMITS))
    yield run
    gate.set()
    run.stop()


def metric(port, name):
    _, _, text = call(port, "GET", "/metrics")
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def assert_serves(port, photos):
    """The next request succeeds."""
    status, _, body = score(port, [("p0.jpg", photos[1]["p0.jpg"])])
    assert status == 200 and body["rows"][0]["score"] is not None


# ---- rows ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "fields", "flags"),
    [
        ("", (), ()),
        ("?crops=center&scene=aigc", (), ("--crops", "center", "--scene", "aigc")),
        ("?details=true", (("seed", "7"), ("crops", "3")), ("--details", "--seed", "7", "--crops", "3")),
        ("?seed=%2B7&crops=3", (), ("--seed", "+7", "--crops", "3")),  # a sign, as the CLI's int() takes it
    ],
)
def test_rows_equal_the_cli_rows_bit_for_bit(running, photos, capsys, monkeypatch, query, fields, flags):
    folder, images = photos
    code, expected, _ = cli_rows(capsys, monkeypatch, folder, *images, *flags)
    assert code == 0
    status, _, body = score(running.port, list(images.items()), query, fields)
    assert status == 200
    assert body["model"] == "gamma-test"
    assert body["rows"] == expected  # JSON floats round-trip exactly: == is bit for bit
    assert len({row["score"] for row in expected}) == len(images)  # distinct images, distinct scores


def test_a_raw_body_is_one_image_named_body(running, photos, capsys, monkeypatch):
    folder, images = photos
    _, expected, _ = cli_rows(capsys, monkeypatch, folder, "p1.png")
    status, _, body = call(running.port, "POST", "/v1/score", images["p1.png"])
    assert status == 200 and body["rows"] == [{**expected[0], "path": "body"}]


def test_concurrent_requests_are_merged_and_keep_their_scores(running, gated, photos, monkeypatch):
    # Forwards of 4 images on the CPU too (as on a GPU, where they are 32): requests share a padded forward.
    monkeypatch.setattr(scoring, "IMAGES_PER_FORWARD", {**scoring.IMAGES_PER_FORWARD, "cpu": 4})
    _, gate = gated
    _, images = photos
    names = sorted(images)
    alone = {name: score(running.port, [(name, images[name])])[2]["rows"][0] for name in names}
    rounds, merged = (
        metric(running.port, "gamma_iqa_batch_images_count"),
        metric(running.port, "gamma_iqa_batch_images_sum"),
    )
    results = {}

    def client(i):
        results[i] = score(running.port, [(names[i % 3], images[names[i % 3]])])

    gate.clear()  # the first request holds the device worker; the other three queue up meanwhile
    gate.entered.clear()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        threads[0].start()
        assert gate.entered.wait(timeout=5)  # the device worker is inside the first request's forward
        for t in threads[1:]:
            t.start()
        deadline = time.monotonic() + 10
        while running.svc._worker.queue.qsize() < 3:  # decoded, cropped and waiting for the device worker
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        gate.set()
    for t in threads:
        t.join()
    for i, (status, _, body) in results.items():
        assert status == 200 and body["rows"] == [alone[names[i % 3]]]
    # one round of the first image, one of the other three: merged into one forward (padded with one zero image)
    assert metric(running.port, "gamma_iqa_batch_images_count") - rounds == 2
    assert metric(running.port, "gamma_iqa_batch_images_sum") - merged == 4


def test_failed_images_get_the_cli_error_rows(running, photos, capsys, monkeypatch):
    folder, images = photos
    (folder / "junk.png").write_bytes(b"not an image at all")
    (folder / "empty.jpg").write_bytes(b"")
    code, expected, _ = cli_rows(capsys, monkeypatch, folder, "p0.jpg", "junk.png", "empty.jpg")
    assert code == 1 and [r["error"] is None for r in expected] == [True, False, False]
    files = [("p0.jpg", images["p0.jpg"]), ("junk.png", b"not an image at all"), ("empty.jpg", b"")]
    status, _, body = score(running.port, files)
    assert status == 200 and body["rows"] == expected  # some scored: 200, the failed ones as the CLI's rows
    status, _, body = score(running.port, files[1:])  # none scored: 422, the CLI's line for the first
    assert status == 422 and body["rows"] == expected[1:]
    assert body["error"] == f"junk.png: {expected[1]['error']} (and 1 more)"
    assert_serves(running.port, photos)


# ---- errors ----------------------------------------------------------------------------------------------------------
def test_an_unknown_scene_gets_the_cli_message(running, photos, capsys, monkeypatch):
    folder, _ = photos
    code, _, err = run_cli(capsys, "score", "--model", "gamma-test", "--scene", "moon", str(folder / "p0.jpg"))
    assert code == 2
    status, _, body = score(running.port, [("p0.jpg", photos[1]["p0.jpg"])], "?scene=moon")
    assert status == 422 and err.strip() == f"gamma-iqa score: error: {body['error']}"
    assert_serves(running.port, photos)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?crops=0", "`crops` must be a positive number, 'center' or 'none', got '0'"),
        ("?crops=%C2%B2", "`crops` must be a positive number, 'center' or 'none', got '²'"),
        ("?seed=x", "`seed` must be a whole number, got 'x'"),
        ("?seed=--5", "`seed` must be a whole number, got '--5'"),
        ("?seed=1.5", "`seed` must be a whole number, got '1.5'"),
        ("?seed=%C2%B2", "`seed` must be a whole number, got '²'"),  # a digit to str.isdigit, not to int()
        ("?seed=7_0", "`seed` must be a whole number, got '7_0'"),  # int() takes both of these
        ("?seed=%EF%BC%97", "`seed` must be a whole number, got '７'"),
        ("?path=/etc/passwd", "unknown parameter 'path'"),  # no server paths: images only from the body
        ("?crops=3&crops=4", "`crops` is given more than once"),
    ],
)
def test_bad_options_get_422(running, photos, query, message):
    status, _, body = score(running.port, [("p0.jpg", photos[1]["p0.jpg"])], query)
    assert status == 422 and body["error"].startswith(message)
    assert_serves(running.port, photos)


def test_no_image_gets_422(running, photos):
    status, _, body = score(running.port, [], fields=[("scene", "natural")])
    assert status == 422 and body["error"].startswith("no image in the request")
    status, _, body = call(running.port, "POST", "/v1/score", b"")
    assert status == 422 and body["error"] == "body: empty input (0 bytes)"  # as `gamma-iqa score -` of nothing
    assert_serves(running.port, photos)


def test_a_body_over_the_limit_gets_413(running, photos):
    big = os.urandom(600_000)  # over 0.5 MiB: read and dropped, then 413 (the client sends it all first)
    status, _, body = call(running.port, "POST", "/v1/score", big)
    assert status == 413 and body == {"error": "request body over 0.5 MiB (--max-body-mb)"}
    # A client waiting for `100 Continue` (curl, for large bodies) gets the 413 at once and never sends the body.
    with socket.create_connection(("127.0.0.1", running.port)) as s:
        s.sendall(f"POST /v1/score HTTP/1.1\r\nHost: x\r\n{AUTH}\r\nExpect: 100-continue\r\n".encode())
        s.sendall(b"Content-Length: 600000\r\n\r\n")
        head, _, body = s.makefile("rb").read().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and json.loads(body)["error"].startswith("request body over 0.5 MiB")
    status, _, body = call(running.port, "POST", "/v1/score", iter([big[:300_000], big[300_000:]]))  # chunked
    assert status == 413 and body["error"].startswith("request body over 0.5 MiB")
    assert_serves(running.port, photos)


def test_a_request_over_the_queue_gets_413_naming_the_limit_it_passes(running, photos):
    # 5 images at crops center are 5 crops, within the 40 the queue holds: the image count is what is over.
    status, _, body = score(running.port, [(f"{i}.png", b"x") for i in range(5)], "?crops=center")
    assert status == 413 and body["error"] == (
        "5 images in one request, over the server's limit of 4 images per request (--max-queue): send at most 4 "
        "images per request"
    )
    status, _, body = score(running.port, [("p0.jpg", photos[1]["p0.jpg"])], "?crops=41")  # crops count, not images
    assert status == 413 and body["error"] == (
        "1 image of 41 crops in one request, over the server's limit of 40 crops per request (--max-queue 4 images "
        "of 10 crops): send fewer images or crops per request"
    )
    status, _, body = score(running.port, [(f"{i}.jpg", photos[1]["p0.jpg"]) for i in range(3)], "?crops=14")
    assert status == 413 and body["error"].startswith("3 images of 42 crops in all in one request")
    assert_serves(running.port, photos)


def test_whole_images_count_their_own_size(running, photos, monkeypatch):
    """`crops` none counts an image as its view's pixels / the crop side squared (at least 1), not the largest view."""
    side = running.svc.model.image_size
    small = png(side // 2, 3 * side // 4, 3)  # enlarged to side x 1.5 side: 1.5 crops, counted 2
    large = png(3 * side + 1, 4 * side, 4)  # just over 12 crops: counted 13
    assert [running.svc._whole_cost(data) for data in (small, large, b"x")] == [2, 13, 1]
    status, _, body = score(running.port, [(f"{i}.png", small) for i in range(4)], "?crops=none")
    assert status == 200 and all(row["score"] is not None for row in body["rows"])  # 8 crops of the 40
    status, _, body = score(running.port, [(f"{i}.png", large) for i in range(4)], "?crops=none")
    assert status == 413 and body["error"] == (
        f"4 whole images (crops none), the size of 52 crops of {side} x {side} pixels in all in one request, over the "
        "server's limit of 40 crops per request (--max-queue 4 images of 10 crops): send fewer or smaller images per "
        "request"
    )
    monkeypatch.setattr(running.svc, "_seconds_per_crop", 1.0)
    status, _, body = score(running.port, [("0.png", small)], "?crops=none")
    assert status == 200  # 2 s at 1 s per crop: within the 3 s timeout
    monkeypatch.setattr(running.svc, "_seconds_per_crop", 1.0)  # again: the round just scored measured the rate
    status, _, body = score(running.port, [("0.png", large)], "?crops=none")
    assert status == 413 and body["error"].startswith(
        f"1 whole image (crops none), the size of 13 crops of {side} x {side} pixels would take about 13 s"
    )
    monkeypatch.undo()
    assert_serves(running.port, photos)


def test_a_full_queue_gets_503_with_retry_after_and_a_slow_request_504(running, gated, photos):
    _, gate = gated
    _, images = photos
    four = [(f"q{i}.jpg", images["p0.jpg"]) for i in range(4)]
    gate.clear()
    try:
        background = {}
        t = threading.Thread(target=lambda: background.setdefault("r", score(running.port, four)))
        t.start()
        deadline = time.monotonic() + 2
        while metric(running.port, "gamma_iqa_queue_images") < 4:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, headers, body = score(running.port, [("p0.jpg", images["p0.jpg"])])
        assert status == 503 and headers["retry-after"] == "1"
        assert body == {
            "error": "the queue is full (40 of 40 crops waiting, --max-queue 4 images of 10); retry after 1 s"
        }
        t.join()  # the gate stays closed: the request waits past the timeout
        status, _, body = background["r"]
        assert status == 504 and body == {"error": "no result within 3 s (--timeout); retry later"}
    finally:
        gate.set()
    assert metric(running.port, "gamma_iqa_queue_images") == 0
    assert_serves(running.port, photos)


def test_the_token_is_required_except_for_healthz(running, photos):
    assert call(running.port, "GET", "/healthz", token=None)[:3:2] == (200, {"status": "ok"})
    for token in (None, "wrong"):
        status, headers, body = score(running.port, [("p0.jpg", photos[1]["p0.jpg"])], token=token)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert body == {"error": "missing or wrong bearer token (Authorization: Bearer TOKEN)"}
        assert call(running.port, "GET", "/metrics", token=token)[0] == 401
    assert_serves(running.port, photos)


def test_models_and_metrics(running):
    status, _, body = call(running.port, "GET", "/v1/models")
    (info,) = body["models"]
    assert status == 200 and info["model"] == "gamma-test" and info["default_scene"] == "natural"
    assert "aigc" in info["scenes"] and info["score_range"] == [0.0, 1.0] and info["lower_better"] is False
    assert info["provenance"]["model"]["argument"] == "gamma-test"
    assert info["backend"] == info["provenance"]["backend"] == {"name": "torch"}
    assert len(info["provenance"]["model"]["parameters_sha256"]) == 64
    status, headers, text = call(running.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in (
        'gamma_iqa_requests_total{route="/v1/models",status="200"}',
        'gamma_iqa_errors_total{route="/v1/score",status="401"}',
        "gamma_iqa_request_seconds_bucket",
        "gamma_iqa_batch_images_count",
        "gamma_iqa_queue_images",
    ):
        assert name in text, name


def test_draining_finishes_the_request_in_flight_and_refuses_new_ones(gated, photos):
    model, gate = gated
    _, images = photos
    run = Running(service.Service(model, limits=LIMITS))
    gate.clear()
    try:
        background = {}
        t = threading.Thread(target=lambda: background.setdefault("r", score(run.port, [("p0.jpg", images["p0.jpg"])])))
        t.start()
        while metric(run.port, "gamma_iqa_queue_images") < 1:
            time.sleep(0.02)
        run.server.handle_exit(signal.SIGTERM, None)  # what uvicorn calls on the signal
        status, headers, body = score(run.port, [("p0.jpg", images["p0.jpg"])])
        assert (
            status == 503 and headers["retry-after"] == "1" and body["error"].startswith("the server is shutting down")
        )
        assert run.thread.is_alive()
    finally:
        gate.set()
    t.join(timeout=20)
    assert background["r"][0] == 200 and background["r"][2]["rows"][0]["score"] is not None
    run.thread.join(timeout=20)  # it stops once nothing is in flight
    assert not run.thread.is_alive()


# ---- the command ---------------------------------------------------------------------------------------------------
def test_sigterm_drains_a_slow_upload_and_exits_0(photos, tmp_path):
    _, images = photos
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gamma_iqa", "serve", "--model", "gamma-test", "--port", str(port)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(port, "GET", "/healthz", token=None)[0] == 200:
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        data = images["p1.png"]
        slow = socket.create_connection(("127.0.0.1", port))  # a request in flight: its body half sent
        slow.sendall(f"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[:100])
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (status := call(port, "GET", "/healthz", token=None)[0]) != 503:
            assert status == 200 and time.monotonic() < deadline
            time.sleep(0.05)
        slow.sendall(data[100:])
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        slow.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["rows"][0]["path"] == "body"
        assert proc.wait(timeout=20) == 0
        assert proc.stderr.read().strip().splitlines()[-1] == "gamma-iqa serve: stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_another_host_needs_a_token(capsys, monkeypatch):
    monkeypatch.delenv("GAMMA_IQA_TOKEN", raising=False)
    code, out, err = run_cli(capsys, "serve", "--model", "gamma-test", "--host", "0.0.0.0")
    assert code == 2 and out == ""
    assert err == (
        "gamma-iqa serve: error: --host 0.0.0.0 is reachable from other machines: give a --token (or set "
        "GAMMA_IQA_TOKEN) that clients send as 'Authorization: Bearer TOKEN'\n"
    )
    assert service.is_loopback("127.0.0.2") and service.is_loopback("::1") and not service.is_loopback("example.org")


def test_without_the_extra_one_line_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi fails as it does where it is not installed
    for name in [name for name in sys.modules if name == "gamma_iqa.serve" or name.startswith("gamma_iqa.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(gamma_iqa, "serve")
    monkeypatch.delenv("GAMMA_IQA_TOKEN", raising=False)
    # --host 0.0.0.0 without a token: were the import to pass, the command would stop there, not serve
    code, _, err = run_cli(capsys, "serve", "--model", "gamma-test", "--host", "0.0.0.0")
    assert code == 2
    assert err == "gamma-iqa serve: error: needs the serve extra (fastapi is missing): pip install 'gamma-iqa[serve]'\n"


def test_the_core_does_not_import_the_service():
    names = "{'fastapi', 'uvicorn', 'prometheus_client', 'gamma_iqa.serve'}"
    code = f"import sys, gamma_iqa, gamma_iqa.cli, gamma_iqa.outputs; print(sorted(set(sys.modules) & {names}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_limits_are_checked():
    with pytest.raises(ValueError, match="`max_queue` must be >= 1, got 0"):
        service.Limits(max_queue=0)
    assert Path(service.__file__).parent.name == "serve"


# ---- limits that bound the work, and messages in an HTTP client's terms ----------------------------------------------
def test_crops_are_limited_per_image(running, photos):
    status, _, body = score(running.port, [("p0.jpg", photos[1]["p0.jpg"])], "?crops=1000000")
    assert status == 422
    assert body["error"] == "`crops` 1000000 is over the server's limit of 64 crops per image (--max-crops)"
    for query, message in (("?crops=", "`crops` must be a positive number"), ("?scene=", "`scene` is empty")):
        status, _, body = score(running.port, [("p0.jpg", photos[1]["p0.jpg"])], query)
        assert status == 422 and body["error"].startswith(message)
    assert_serves(running.port, photos)


def test_large_and_thin_images_are_refused_in_the_servers_terms(running, photos, monkeypatch):
    monkeypatch.setattr(running.svc, "limits", dataclasses.replace(LIMITS, max_pixels=7000))
    big = png(90, 80, 2)  # 7200 pixels; p0.jpg has 6720
    status, _, body = score(running.port, [("big.jpg", big), ("p0.jpg", photos[1]["p0.jpg"])])
    assert status == 200 and body["rows"][1]["score"] is not None
    assert body["rows"][0]["error"] == (
        "image of 80 x 90 = 7,200 pixels is over the server's limit of 7,000 pixels (--max-pixels)"
    )
    monkeypatch.setattr(transforms, "MAX_VIEW_PIXELS", 50_000)
    side = running.svc.model.image_size
    status, _, body = score(running.port, [("thin.png", png(2, 2000, 1))])
    assert status == 422
    error = body["rows"][0]["error"]
    assert error.startswith(f"image too thin: 2000 x 2 pixels would be enlarged to {1000 * side} x {side}")
    assert error.endswith(
        "over the server's limit of 50,000 pixels per view: pad or crop it to a less extreme aspect ratio"
    )
    status, _, body = score(running.port, [("p0.jpg", photos[1]["p0.jpg"])], "?crops=none")
    assert status == 200  # 70 x 96 fits a view of 50,000 pixels
    monkeypatch.setattr(transforms, "MAX_VIEW_PIXELS", 1000)
    status, _, body = score(running.port, [("p0.jpg", photos[1]["p0.jpg"])], "?crops=none")
    assert (
        status == 422
        and "over the server's limit of 1,000 pixels per view: use random or 'center' crops" in (body["error"])
    )
    assert "gamma_iqa" not in body["error"]
    monkeypatch.undo()
    assert_serves(running.port, photos)


def test_admission_follows_the_measured_rate(running, photos, monkeypatch):
    one = [("p0.jpg", photos[1]["p0.jpg"])]
    monkeypatch.setattr(running.svc, "_seconds_per_crop", 1.0)  # 10 s for an image of 10 crops: over the 3 s timeout
    status, _, body = score(running.port, one)
    assert status == 413 and body["error"] == (
        "1 image of 10 crops would take about 10 s at the server's rate (1e+03 ms per crop), over its limit "
        "of 3 s (--timeout): send fewer images or crops per request"
    )
    assert score(running.port, one, "?crops=center")[0] == 200  # 1 s: admitted
    monkeypatch.setattr(running.svc, "_seconds_per_crop", 0.1)
    monkeypatch.setattr(running.svc, "_queued_crops", 25)  # 2.5 s queued + 1 s of its own: over 3 s
    status, headers, body = score(running.port, one)
    assert status == 503 and headers["retry-after"] == "3"
    assert body["error"].startswith("the queue's expected wait, 3 s, would leave this request no time within 3 s")
    monkeypatch.undo()
    assert_serves(running.port, photos)


def test_the_rate_is_a_moving_average_without_the_first_round(gated):
    svc = service.Service(gated[0])
    svc._timed(10, 100.0)  # the warm-up round
    assert svc._seconds_per_crop is None
    svc._timed(10, 1.0)
    assert svc._seconds_per_crop == pytest.approx(0.1)
    svc._timed(10, 2.0)
    assert svc._seconds_per_crop == pytest.approx(0.7 * 0.1 + 0.3 * 0.2)


# ---- the token, the models, request forms ----------------------------------------------------------------------------
def test_the_bearer_scheme_is_case_insensitive_and_blank_tokens_are_refused(running, photos, capsys):
    for scheme in ("bearer", "BEARER"):
        body, headers = multipart([("p0.jpg", photos[1]["p0.jpg"])])
        status, _, _ = call(
            running.port, "POST", "/v1/score", body, {**headers, "Authorization": f"{scheme} {TOKEN}"}, None
        )
        assert status == 200
    code, _, err = run_cli(capsys, "serve", "--model", "gamma-test", "--host", "0.0.0.0", "--token", " ")
    assert code == 2 and err.startswith("gamma-iqa serve: error: --token is blank")


def test_models_names_no_server_path(gated):
    svc = service.Service(gated[0], model_argument="/srv/secret/runs/best.pt")
    record = {"argument": "/srv/secret/runs/best.pt", "files": [{"file": "/srv/secret/runs/best.pt", "sha256": "ab"}]}
    assert service.app._without_paths(record) == {"argument": "best.pt", "files": [{"file": "best.pt", "sha256": "ab"}]}
    assert "/srv" not in json.dumps(svc.info)


def test_request_forms_get_their_own_messages(running, photos):
    status, _, body = score(running.port, [("a" * 5000 + ".jpg", photos[1]["p0.jpg"])])
    assert status == 422 and body["error"].startswith("a multipart part's headers are too long")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = call(running.port, "POST", "/v1/score", b"scene=natural", form)
    assert status == 415 and body["error"].startswith("an application/x-www-form-urlencoded body holds no images")
    assert "-H 'Content-Type: application/octet-stream' --data-binary @FILE" in body["error"]
    # `curl --data-binary @photo.jpg` labels the image a urlencoded form: its signature says it is an image.
    raw = call(running.port, "POST", "/v1/score", photos[1]["p1.png"])
    for name in ("p0.jpg", "p1.png"):
        status, _, body = call(running.port, "POST", "/v1/score", photos[1][name], form)
        assert status == 200 and body["rows"][0]["path"] == "body" and body["rows"][0]["score"] is not None
    assert body == raw[2]
    status, _, _ = call(running.port, "HEAD", "/healthz", token=None)
    assert status == 200
    assert_serves(running.port, photos)


# ---- the command line: the port, a second signal ---------------------------------------------------------------------
def test_bad_or_busy_ports_are_refused_before_the_model_loads(capsys):
    with pytest.raises(SystemExit) as e:
        gamma_iqa.cli.main(["serve", "--model", "gamma-test", "--port", "99999"])
    assert e.value.code == 2 and "must be a port number from 0 to 65535, got '99999'" in capsys.readouterr().err
    for odd in ("３", "²"):  # digits to str.isdigit: "３" would bind port 3, "²" fail inside int()
        with pytest.raises(SystemExit) as e:
            gamma_iqa.cli.main(["serve", "--model", "gamma-test", "--port", odd])
        assert e.value.code == 2 and f"must be a port number from 0 to 65535, got '{odd}'" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", "--model", "no-such-model", "--port", str(port))
    assert code == 2 and err == f"gamma-iqa serve: error: port {port} on 127.0.0.1 is in use\n"
    server = service.make_server(service.Service(gamma_iqa.create_model("gamma-test")), "::1", 8719)
    assert server.bound() == "http://[::1]:8719"


# `gamma-iqa serve` whose model's forward runs torch work for up to a minute (a forward in flight on demand); it says
# "forward" on stderr when one begins.
SLOW_SERVE = """
import sys, time, torch
import gamma_iqa.cli as cli
real = cli.create_model
def create_model(name):
    model = real(name)
    forward = model.forward
    def slow(*args, **kwargs):
        print("forward", file=sys.stderr, flush=True)
        x, until = torch.randn(128, 128), time.monotonic() + 60
        while time.monotonic() < until:
            x = torch.tanh(x @ x)
        return forward(*args, **kwargs)
    model.forward = slow
    return model
cli.create_model = create_model
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_second_signal_stops_at_once_with_503_and_exit_130(photos):
    _, images = photos
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", SLOW_SERVE, "serve", "--model", "gamma-test", "--port", "0"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        while "at http://" not in (line := proc.stderr.readline()):
            assert line, f"the server did not start: {lines}"
            lines.append(line)
        port = int(line.split("at http://127.0.0.1:")[1].split()[0])  # the port bound, not 0
        assert port > 0 and call(port, "GET", "/healthz", token=None)[0] == 200
        data = images["p1.png"]
        slow = socket.create_connection(("127.0.0.1", port))  # a request in flight: its body half sent
        slow.sendall(f"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data[:100])
        scored = {}  # and one in the model's forward, a torch op running on the device thread
        t = threading.Thread(target=lambda: scored.setdefault("r", score(port, [("p1.png", data)], token=None)))
        t.start()
        assert proc.stderr.readline() == "forward\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
        slow.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["error"].startswith("the server stopped")
        t.join(timeout=20)
        status, _, body = scored["r"]
        assert status == 503 and body["error"].startswith("the server stopped")
        assert proc.wait(timeout=20) == 130 and time.monotonic() - started < 10
        err = proc.stderr.read()
        assert err == (
            "gamma-iqa serve: stopping: finishing the requests in flight, refusing new ones (again to stop at once)\n"
            "gamma-iqa serve: stopped at once (a second signal): the requests in flight got 503\n"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- --backend onnxruntime: one forward built at start-up, the CLI's rows --------------------------------------------
def counted(calls, name, real):
    """`real`, counting its calls in `calls[name]`."""

    def counting(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)

    return counting


@pytest.fixture(scope="module")
def onnx_running(tmp_path_factory):
    """A gamma-test server scoring through onnxruntime, its export cached in a fresh $GAMMA_IQA_HOME, and the calls
    of the export cache and the weights hash ({name: count}) since before the service was made."""
    reason = onnx_missing()
    if reason is not None:
        pytest.skip(reason)
    calls = {"cached_export": 0, "state_sha256": 0}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAMMA_IQA_HOME", str(tmp_path_factory.mktemp("home")))
        for name in calls:
            mp.setattr(onnxrt, name, counted(calls, name, getattr(onnxrt, name)))
        model = gamma_iqa.create_model("gamma-test")
        svc = service.Service(model, model_argument="gamma-test", token=TOKEN, limits=LIMITS, backend="onnxruntime")
        run = Running(svc)
        yield run, calls
        run.stop()


def test_onnxruntime_is_built_once_not_per_request(onnx_running, photos):
    run, calls = onnx_running
    assert calls == {"cached_export": 1, "state_sha256": 1}  # at start-up
    _, images = photos
    for query in ("", "?crops=center&scene=aigc", "?details=true&crops=3&seed=7"):
        status, _, body = score(run.port, list(images.items()), query)
        assert status == 200 and all(row["score"] is not None for row in body["rows"])
    assert calls == {"cached_export": 1, "state_sha256": 1}  # three requests later: no export, no hash


@pytest.mark.parametrize(
    ("query", "flags"),
    [
        ("", ()),
        ("?crops=center&scene=aigc", ("--crops", "center", "--scene", "aigc")),
        ("?details=true&seed=7&crops=3", ("--details", "--seed", "7", "--crops", "3")),
    ],
)
def test_onnxruntime_rows_equal_the_cli_rows_bit_for_bit(onnx_running, photos, capsys, monkeypatch, query, flags):
    run, _ = onnx_running
    folder, images = photos
    code, expected, _ = cli_rows(capsys, monkeypatch, folder, *images, "--backend", "onnxruntime", *flags)
    assert code == 0
    status, _, body = score(run.port, list(images.items()), query)
    assert status == 200
    assert body["rows"] == expected  # JSON floats round-trip exactly: == is bit for bit
    assert len({row["score"] for row in expected}) == len(images)


def test_onnxruntime_models_record_the_backend(onnx_running):
    import onnxruntime

    run, _ = onnx_running
    _, _, body = call(run.port, "GET", "/v1/models")
    (info,) = body["models"]
    assert info["backend"] == info["provenance"]["backend"]
    assert info["backend"]["name"] == "onnxruntime" and info["backend"]["onnxruntime"] == onnxruntime.__version__
    assert info["dtype"] == "fp32" and info["device"] == "cpu"


def test_onnxruntime_refuses_whole_images_with_422(onnx_running, photos):
    run, _ = onnx_running
    _, images = photos
    status, _, body = score(run.port, [("p0.jpg", images["p0.jpg"])], "?crops=none")
    assert status == 422
    assert body == {
        "error": "`crops` none: this server scores with onnxruntime (--backend), which takes fixed-size crops: "
        "`crops` N or center"
    }
    assert_serves(run.port, photos)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--dtype", "bf16"), "--backend onnxruntime scores in fp32 only; drop --dtype bf16"),
        (("--device", "cuda"), "--backend onnxruntime scores on the CPU only; drop --device cuda (or use cpu)"),
    ],
)
def test_serve_refuses_what_onnxruntime_cannot_do_at_start_up(capsys, flags, message):
    # no-such-model: the refusal comes before the model (or the port) is touched
    code, out, err = run_cli(capsys, "serve", "--model", "no-such-model", "--backend", "onnxruntime", *flags)
    assert (code, out, err) == (2, "", f"gamma-iqa serve: error: {message}\n")
