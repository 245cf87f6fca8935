"""``ser-edge dashboard``: a live web page of every device on the broker.

One process: a paho-mqtt subscriber on ``ser-edge/+/{emotion,state,status}`` keeps each device's
status, current label/confidence and its recent records; a small threaded HTTP server serves one
page (``dashboard.html``, no external scripts) and relays every update to the browsers as
Server-Sent Events (``/events``), so the page needs neither an MQTT client nor broker credentials.

Nothing published while the dashboard is away is missed: it subscribes at QoS 1 in a *persistent*
session (``clean_session`` false) under a stable client id (``--client-id``, default
``ser-edge-dashboard-<host name>-<HTTP port>``), so while it is disconnected, or after a broker
restart (Mosquitto keeps sessions with ``persistence true``), the broker queues every record for it
and delivers them in order when it comes back; the retained ``state``/``status`` topics then bring
devices it has never seen. (With a random id and a clean session, the earlier design, a reconnect
was a new subscriber: records sent in between were gone and only the retained state came back.)

Routes: ``/`` the page, ``/events`` the event stream (a ``snapshot`` event, then one ``update``
per MQTT message), ``/api/devices`` the current snapshot as JSON.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import queue
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from edge_runtime.mqtt import TOPIC_ROOT, MqttTarget, record_confidence

log = logging.getLogger("ser_edge.dashboard")
__all__ = ["FleetState", "Dashboard", "add_cli"]


class FleetState:
    """What the page shows, per device: status, label, confidence, last update, recent records."""

    def __init__(self, history: int = 300):
        self.history = history
        self._lock = threading.Lock()
        self.devices: dict[str, dict] = {}
        self._timelines: dict[str, collections.deque] = {}
        self._listeners: list[queue.Queue] = []

    def _dev(self, dev_id: str) -> dict:
        d = self.devices.get(dev_id)
        if d is None:
            d = self.devices[dev_id] = {"id": dev_id, "status": "unknown", "label": None, "confidence": None,
                                        "updated": None, "records": 0}
            self._timelines[dev_id] = collections.deque(maxlen=self.history)
        return d

    def on_message(self, topic: str, payload: bytes) -> None:
        """Apply one MQTT message (``ser-edge/<id>/<leaf>``) and tell every listener."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != TOPIC_ROOT:
            return
        dev_id, leaf = parts[1], parts[2]
        now = time.time()
        with self._lock:
            d = self._dev(dev_id)
            if leaf == "status":
                d["status"] = payload.decode(errors="replace")[:16]
                event = {"device": dev_id, "status": d["status"]}
            elif leaf in ("emotion", "state"):
                try:
                    rec = json.loads(payload)
                except ValueError:
                    return
                if not isinstance(rec, dict):
                    return
                label, conf = rec.get("label"), record_confidence(rec)
                d.update(label=label, confidence=conf, updated=now)
                if d["status"] == "unknown":
                    d["status"] = "online"
                event = {"device": dev_id, "label": label, "confidence": conf, "ts": now,
                         "status": d["status"]}
                if leaf == "emotion":
                    d["records"] += 1
                    point = {"ts": now, "label": label, "confidence": conf}
                    self._timelines[dev_id].append(point)
                    event["point"] = point
                    event["records"] = d["records"]
            else:
                return
            listeners = list(self._listeners)
        for q in listeners:
            try:
                q.put_nowait(("update", event))
            except queue.Full:  # a stalled browser: drop it rather than grow without bound
                self.unlisten(q)

    def snapshot(self) -> dict:
        with self._lock:
            return {"now": time.time(),
                    "devices": [dict(d, timeline=list(self._timelines[k])) for k, d in sorted(self.devices.items())]}

    def listen(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=10_000)
        with self._lock:
            self._listeners.append(q)
        return q

    def unlisten(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self._listeners:
                self._listeners.remove(q)


def _page() -> bytes:
    return resources.files("firmware_bridge").joinpath("dashboard.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = "ser-edge-dashboard"
    state: FleetState
    stop: threading.Event

    def log_message(self, fmt, *args):  # quiet: one line per request would drown the console
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", _page())
        elif path == "/api/devices":
            self._send(200, "application/json", json.dumps(self.state.snapshot()).encode())
        elif path == "/events":
            self._events()
        else:
            self._send(404, "text/plain", b"not found\n")

    def _events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        q = self.state.listen()
        try:
            self._emit("snapshot", self.state.snapshot())
            while not self.stop.is_set():
                try:
                    kind, data = q.get(timeout=15)
                except queue.Empty:
                    self.wfile.write(b": keep-alive\n\n")  # also detects a closed browser
                    self.wfile.flush()
                    continue
                self._emit(kind, data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.state.unlisten(q)

    def _emit(self, kind: str, data) -> None:
        self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


class Dashboard:
    """Subscriber + HTTP server. ``start()`` returns at once; ``url`` is the page; ``close()`` stops."""

    def __init__(self, target: MqttTarget, host: str = "127.0.0.1", port: int = 8080, history: int = 300,
                 client_id: str | None = None):
        import paho.mqtt.client as mqtt

        self.target = target
        self.state = FleetState(history)
        self.stop_event = threading.Event()
        handler = type("Handler", (_Handler,), {"state": self.state, "stop": self.stop_event})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        # A stable id + a persistent session: the broker queues QoS 1 records for this dashboard while
        # it is away (disconnected, restarting, or the broker restarting) instead of dropping them.
        self.client_id = client_id or default_client_id(self.httpd.server_address[1])
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        if target.username:
            c.username_pw_set(target.username, target.password)
        if target.tls:
            import ssl

            c.tls_set(ca_certs=target.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        c.reconnect_delay_set(0.5, 10)
        c.on_connect = self._on_connect
        c.on_message = lambda cl, ud, m: self.state.on_message(m.topic, m.payload)
        self.client = c
        self.subscribed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        h, p = self.httpd.server_address[:2]
        return f"http://{h}:{p}/"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("dashboard: %s refused the connection: %s", self.target, reason_code)
            return
        # Subscribed again even when the broker kept the session (flags.session_present): harmless,
        # and it covers a broker that lost its sessions (no persistence, or a crash before saving).
        client.subscribe([(f"{TOPIC_ROOT}/+/emotion", 1), (f"{TOPIC_ROOT}/+/state", 1),
                          (f"{TOPIC_ROOT}/+/status", 1)])
        self.subscribed.set()

    def start(self) -> "Dashboard":
        self.client.connect_async(self.target.host, self.target.port, keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Dashboard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def default_client_id(http_port: int) -> str:
    """``ser-edge-dashboard-<host name>-<HTTP port>``: the same on every restart of this dashboard
    (so its broker session, and the records queued in it, are found again) and different for two
    dashboards on one machine (they cannot share an HTTP port). MQTT 3.1.1 brokers accept 23 bytes
    for sure; Mosquitto and every common broker accept longer ids."""
    host = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in socket.gethostname())[:40] or "host"
    return f"ser-edge-dashboard-{host}-{http_port}"


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from edge_runtime.cli_errors import Failure, require

    require("ser-edge dashboard", "paho")
    target = MqttTarget.parse(args.mqtt)  # a bad URL: MqttConfigError, reported as bad input
    try:
        dash = Dashboard(target, args.host, args.port, client_id=args.client_id)
    except OSError as exc:
        raise Failure(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="ser-edge: %(message)s")
    dash.start()
    print(f"ser-edge dashboard: {dash.url} (devices from {target})", file=sys.stderr, flush=True)
    try:
        if args.seconds is not None:
            time.sleep(args.seconds)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        dash.close()
    return 0


def add_cli(sub) -> None:
    """Register ``ser-edge dashboard``."""
    from edge_runtime.cli_errors import needs
    from edge_runtime.cli_types import positive_float, positive_int

    p = sub.add_parser("dashboard", help=needs("live web page of every device's label (from an MQTT broker)", "paho"),
                       description="Subscribe to ser-edge/+/... on the broker and serve a page showing each "
                                   "device's current label, confidence and a timeline (Server-Sent Events).")
    p.add_argument("--mqtt", required=True, metavar="URL",
                   help="broker: mqtt[s]://[user[:pass]@]host[:port][?ca=FILE] (a user allowed to read ser-edge/#)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--seconds", type=positive_float, default=None, help="stop after this long")
    p.add_argument("--client-id", default=None, metavar="ID",
                   help="MQTT client id of its persistent session (default ser-edge-dashboard-<host>-<port>); "
                        "keep it stable so records sent while the dashboard is away are queued for it")
    p.set_defaults(func=_cmd_dashboard)
