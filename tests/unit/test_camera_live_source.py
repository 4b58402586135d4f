"""The capture thread on a live HTTP MJPEG source served locally (127.0.0.1, port 0):
frames flow, the live path samples on arrival time, and when the server goes away the
capture reconnects with backoff and resumes when it is back (no Kafka involved)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from ioc.config import load_settings
from vision.capture import CameraCapture, LatestQueue

pytestmark = pytest.mark.timeout(90)


def _jpeg(i: int) -> bytes:
    img = np.full((240, 320, 3), (i * 7) % 255, np.uint8)
    cv2.putText(img, str(i), (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return cv2.imencode(".jpg", img)[1].tobytes()


class MjpegServer:
    """multipart/x-mixed-replace JPEG stream at ``fps`` on 127.0.0.1."""

    def __init__(self, fps: float, port: int = 0) -> None:
        self.fps = fps
        self.stop_evt = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not outer.stop_evt.is_set():
                        data = _jpeg(i)
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(data)}\r\n\r\n".encode()
                                         + data + b"\r\n")
                        i += 1
                        time.sleep(1 / outer.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop_evt.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_http_mjpeg_source_samples_and_reconnects_with_backoff():
    server = MjpegServer(fps=20)
    port = server.port
    s = load_settings(env={}, overrides={"cameras": {
        "cameras": [{"id": "live", "url": f"http://127.0.0.1:{port}/stream.mjpg", "fps": 5}],
        "reconnect": {"initial_s": 0.2, "max_s": 1.0}, "read_timeout_s": 2,
        "open_timeout_s": 2}})
    cap = CameraCapture(s.cameras.effective("live"), LatestQueue(1000),
                        reconnect=s.cameras.reconnect, open_timeout_s=2, read_timeout_s=2)
    cap.start()
    try:
        assert _wait(lambda: cap.stats.read >= 40, 30), cap.stats.as_dict()
        # 20 fps sampled to 5: about a quarter is published, the rest counted.
        kept = len(cap.queue) + cap.queue.dropped
        assert cap.stats.dropped["sampled_out"] >= 2 * kept, cap.stats.as_dict()
        f = cap.queue.get(0)
        assert f.width == 320 and f.height == 240 and abs(f.ts - time.time()) < 10
        # The server goes away: reads fail, the capture backs off and retries...
        server.close()
        assert _wait(lambda: cap.stats.open_failures + cap.stats.read_failures >= 2, 30), \
            cap.stats.as_dict()
        assert cap.is_alive()
        # ...and resumes when the server is back on the same port.
        for _ in range(50):
            try:
                server = MjpegServer(fps=20, port=port)
                break
            except OSError:  # port still in TIME_WAIT
                time.sleep(0.2)
        opens = cap.stats.opens
        read = cap.stats.read
        assert _wait(lambda: cap.stats.opens > opens and cap.stats.read > read + 10, 30), \
            cap.stats.as_dict()
    finally:
        cap.stop()
        cap.join(10)
        server.close()
    assert not cap.is_alive()


def test_unreachable_live_source_backs_off_without_spinning():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    s = load_settings(env={}, overrides={"cameras": {
        "cameras": [{"id": "gone", "url": f"http://127.0.0.1:{port}/x.mjpg"}],
        "reconnect": {"initial_s": 0.2, "max_s": 0.4, "jitter": 0}}})
    cap = CameraCapture(s.cameras.effective("gone"), LatestQueue(4),
                        reconnect=s.cameras.reconnect, open_timeout_s=1, read_timeout_s=1)
    cap.start()
    time.sleep(2.0)
    cap.stop()
    cap.join(5)
    fails = cap.stats.open_failures
    # 0.2, 0.4, 0.4, ... s waits: a handful of attempts in 2 s, not hundreds.
    assert 2 <= fails <= 10, cap.stats.as_dict()
