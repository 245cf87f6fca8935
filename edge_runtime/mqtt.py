"""Publish a device's labels to an MQTT broker (``--mqtt`` on ``run``, ``serve`` and ``listen``).

Topics, all below ``ser-edge/<device_id>/`` (docs/fleet.md has the full reference):

* ``emotion``: every record the command produces, byte for byte the JSON line it prints (QoS 1);
* ``state``: retained, the current label and its confidence (QoS 1; republished on every
  reconnect, updated when the label changes, the confidence moves by 0.05, or every 10 s);
* ``status``: retained ``online`` / ``offline``; ``offline`` is also the connection's last will,
  so a device that loses power or network shows offline within 1.5 keep-alive intervals.

Home Assistant discovery configs (``homeassistant/sensor/<device_id>/{emotion,confidence}/config``,
retained) make every device appear as two sensors with no configuration.

Delivery: records are QoS 1. While the broker is unreachable the client reconnects with a doubling
back-off (randomised start, so a fleet does not reconnect in lockstep) and records wait in a
bounded queue (``queue_max``, default 10 000: ~2.8 h at 1 record/s); past the bound the oldest
record is dropped and counted. Records already handed to the network layer but not acknowledged
are resent by paho-mqtt after the reconnect. So a broker restart loses no record as long as the
outage fits the queue; :meth:`MqttPublisher.stats` counts what was queued, dropped and acknowledged.

paho-mqtt is imported only when a publisher is created (``pip install "ser-edge[mqtt]"``), so
``edge_runtime`` still imports with numpy alone.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["MqttTarget", "MqttPublisher", "TOPIC_ROOT", "HA_PREFIX", "add_mqtt_args", "publisher_from_args",
           "check_device_id", "default_device_id", "device_topic", "record_confidence"]

TOPIC_ROOT = "ser-edge"
HA_PREFIX = "homeassistant"
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
log = logging.getLogger("ser_edge.mqtt")


class MqttConfigError(ValueError):
    """A malformed ``--mqtt`` URL or device id (a usage error: exit code 2)."""


@dataclass(frozen=True)
class MqttTarget:
    """Where to publish: ``mqtt[s]://[user[:password]@]host[:port][?ca=FILE]``.

    ``mqtts`` is TLS (default port 8883) verified against ``ca`` (a PEM file) or, without it, the
    system's trust store. A user without a password in the URL takes ``$SER_EDGE_MQTT_PASSWORD``
    (so the password does not show in ``ps``).
    """

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str) -> "MqttTarget":
        """Parse an ``mqtt://`` / ``mqtts://`` URL; :class:`MqttConfigError` names what is wrong."""
        u = urlsplit(url)
        if u.scheme not in ("mqtt", "mqtts"):
            raise MqttConfigError(f"--mqtt wants mqtt://host[:port] or mqtts://host[:port], got {url!r}")
        if not u.hostname:
            raise MqttConfigError(f"--mqtt URL has no host: {url!r}")
        try:
            port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        except ValueError:
            raise MqttConfigError(f"--mqtt URL has a bad port: {url!r}") from None
        q = parse_qs(u.query)
        unknown = set(q) - {"ca"}
        if unknown:
            raise MqttConfigError(f"--mqtt URL: unknown option(s) {sorted(unknown)} (known: ca)")
        ca = q.get("ca", [None])[0]
        if ca is not None:
            if u.scheme != "mqtts":
                raise MqttConfigError("--mqtt: ?ca= needs an mqtts:// URL")
            if not os.path.isfile(ca):
                raise MqttConfigError(f"--mqtt: CA file {ca!r} not found")
        user = unquote(u.username) if u.username else None
        pw = unquote(u.password) if u.password is not None else None
        if user and pw is None:
            pw = os.environ.get("SER_EDGE_MQTT_PASSWORD")
        return cls(u.hostname, port, u.scheme == "mqtts", user, pw, ca)

    def __str__(self) -> str:  # never print the password
        who = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{who}{self.host}:{self.port}"


def check_device_id(device_id: str) -> str:
    """A device id is one topic level an ACL can match: 1-64 of ``A-Z a-z 0-9 _ -``."""
    if not _ID_RE.match(device_id or ""):
        raise MqttConfigError(f"device id {device_id!r}: use 1-64 letters, digits, '_' or '-' "
                              "(it is a topic level and a Home Assistant node id)")
    return device_id


def default_device_id(suffix: str = "") -> str:
    """The host name (invalid characters replaced by ``-``), plus ``-suffix`` if given."""
    base = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:48] or "device"
    if suffix:
        base += "-" + re.sub(r"[^A-Za-z0-9_-]", "-", suffix)
    return base[:64]


def device_topic(device_id: str, leaf: str) -> str:
    """``ser-edge/<device_id>/<leaf>``."""
    return f"{TOPIC_ROOT}/{device_id}/{leaf}"


def record_confidence(rec: dict) -> float | None:
    """The record's confidence: its ``confidence`` field, else the top of ``probs``, else None."""
    c = rec.get("confidence")
    if isinstance(c, (int, float)):
        return float(c)
    p = rec.get("probs")
    vals = list(p.values()) if isinstance(p, dict) else p if isinstance(p, list) else None
    return float(max(vals)) if vals else None


class MqttPublisher:
    """One device's connection: records to ``emotion``, current label to ``state``, ``status`` with a
    last will, Home Assistant discovery. Thread-safe; use as a context manager or call
    :meth:`start` / :meth:`close`.
    """

    def __init__(self, target: MqttTarget, device_id: str, *, queue_max: int = 10_000,
                 keepalive: int = 30, discovery: bool = True, labels: list[str] | tuple = (),
                 model: str = "", client_id: str | None = None, max_backoff_s: float = 30.0,
                 state_interval_s: float = 10.0):
        import paho.mqtt.client as mqtt  # the optional 'mqtt' extra; the CLI names it when missing
        self._mqtt = mqtt
        self.target = target
        self.device_id = check_device_id(device_id)
        self.queue_max = int(queue_max)
        self.discovery = discovery
        self.labels = list(labels)
        self.model = model
        self.state_interval_s = state_interval_s
        # _lock orders records against (re)connection and is held while handing a message to paho;
        # _ack_lock guards acknowledgements only, because paho calls on_publish holding its own
        # message lock (one lock for both would deadlock against a concurrent publish).
        self._lock = threading.Lock()
        self._ack_lock = threading.Lock()
        self._early_acks: set[int] = set()
        self._queue: collections.deque[bytes] = collections.deque()
        self._connected = False
        self._pending: set[int] = set()  # mids handed to paho, not yet acknowledged
        self._last_state: dict | None = None
        self._state_sent: tuple[str, float | None, float] | None = None
        self._refusal_logged = None
        self.counters = {"records": 0, "sent": 0, "acked": 0, "queued": 0, "dropped": 0,
                         "connects": 0, "disconnects": 0}
        self.connected_event = threading.Event()

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"ser-edge-{device_id}",
                        protocol=mqtt.MQTTv311, clean_session=True)
        if target.username:
            c.username_pw_set(target.username, target.password)
        if target.tls:
            import ssl

            c.tls_set(ca_certs=target.ca_file, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.will_set(device_topic(device_id, "status"), "offline", qos=1, retain=True)
        # randomised first delay: after a broker restart a fleet spreads its reconnects out
        c.reconnect_delay_set(min_delay=random.uniform(0.25, 0.75), max_delay=max_backoff_s)  # type: ignore[arg-type]
        c.max_inflight_messages_set(100)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c
        self._keepalive = keepalive
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait_s: float | None = None) -> "MqttPublisher":
        """Connect in the background (retrying forever); optionally wait up to ``wait_s`` seconds
        for the first connection (returns either way: records queue until it comes)."""
        self._client.connect_async(self.target.host, self.target.port, keepalive=self._keepalive)
        self._client.loop_start()
        self._started = True
        if wait_s:
            self.connected_event.wait(wait_s)
        return self

    def close(self, timeout_s: float = 5.0) -> dict:
        """Publish ``offline``, wait up to ``timeout_s`` for queued records to be acknowledged,
        disconnect. Returns :meth:`stats` (``unsent`` > 0 if the broker never took them)."""
        if not self._started:
            return self.stats()
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            with self._lock, self._ack_lock:
                busy = self._queue or self._pending
            if not busy:
                break
            time.sleep(0.02)
        with self._lock:
            if self._connected:
                self._send(device_topic(self.device_id, "status"), b"offline", retain=True)
        while time.monotonic() < t_end:
            with self._ack_lock:
                if not self._pending:
                    break
            time.sleep(0.02)
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False
        return self.stats()

    def __enter__(self) -> "MqttPublisher":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stats(self) -> dict:
        """Counters: records, sent, acked, queued (total ever), dropped (queue overflow), connects,
        disconnects; plus ``waiting`` (in the queue now), ``unacked`` and ``connected``."""
        with self._lock, self._ack_lock:
            d = dict(self.counters)
            d.update(waiting=len(self._queue), unacked=len(self._pending), connected=self._connected)
        return d

    # ------------------------------------------------------------------ publishing
    def publish_record(self, rec: dict, payload: str | bytes | None = None) -> None:
        """Publish one record on ``emotion`` (``payload`` = its JSON line if already encoded) and
        update ``state``. Never blocks on the network: offline, the record waits in the queue."""
        data = payload if payload is not None else json.dumps(rec)
        data = data.encode() if isinstance(data, str) else data
        state = {"label": rec.get("label"), "confidence": record_confidence(rec), "time": round(time.time(), 3)}
        with self._lock:
            self.counters["records"] += 1
            self._last_state = state
            if self._connected:
                self._send(device_topic(self.device_id, "emotion"), data)
                self._maybe_send_state()
            else:
                if len(self._queue) >= self.queue_max:
                    self._queue.popleft()  # keep the newest: an old label matters least
                    self.counters["dropped"] += 1
                self._queue.append(data)
                self.counters["queued"] += 1

    def _send(self, topic: str, data: bytes, retain: bool = False) -> None:
        # called with self._lock held
        info = self._client.publish(topic, data, qos=1, retain=retain)
        with self._ack_lock:
            if info.mid in self._early_acks:  # acknowledged before publish() returned
                self._early_acks.discard(info.mid)
                self.counters["acked"] += 1
            else:
                self._pending.add(info.mid)
        if topic.endswith("/emotion"):
            self.counters["sent"] += 1

    def _maybe_send_state(self, force: bool = False) -> None:
        s = self._last_state
        if s is None:
            return
        prev = self._state_sent
        now = time.monotonic()
        conf = s["confidence"]
        if not force and prev is not None and prev[0] == s["label"] and now - prev[2] < self.state_interval_s \
                and (conf is None or prev[1] is None or abs(conf - prev[1]) < 0.05):
            return
        self._state_sent = (s["label"], conf, now)
        self._send(device_topic(self.device_id, "state"), json.dumps(s).encode(), retain=True)

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if self._refusal_logged != str(reason_code):
                log.warning("mqtt: %s refused the connection: %s (retrying)", self.target, reason_code)
                self._refusal_logged = str(reason_code)
            return
        self._refusal_logged = None
        with self._lock:
            self.counters["connects"] += 1
            self._send(device_topic(self.device_id, "status"), b"online", retain=True)
            if self.discovery:
                for topic, cfg in home_assistant_configs(self.device_id, self.model).items():
                    self._send(topic, json.dumps(cfg).encode(), retain=True)
            while self._queue:  # oldest first, before anything newer
                self._send(device_topic(self.device_id, "emotion"), self._queue.popleft())
            self._maybe_send_state(force=True)
            self._connected = True
        self.connected_event.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            if self._connected:
                self.counters["disconnects"] += 1
            self._connected = False
        self.connected_event.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._ack_lock:
            if mid in self._pending:
                self._pending.discard(mid)
                self.counters["acked"] += 1
            else:
                self._early_acks.add(mid)


def home_assistant_configs(device_id: str, model: str = "", prefix: str = HA_PREFIX) -> dict[str, dict]:
    """Home Assistant MQTT discovery configs: topic -> payload, for the label and confidence sensors."""
    from . import __version__

    dev = {"identifiers": [f"ser_edge_{device_id}"], "name": f"ser-edge {device_id}",
           "manufacturer": "ser-edge", "model": model or "ser-edge", "sw_version": __version__}
    common = {"state_topic": device_topic(device_id, "state"),
              "availability_topic": device_topic(device_id, "status"),
              "payload_available": "online", "payload_not_available": "offline", "device": dev}
    return {
        f"{prefix}/sensor/{device_id}/emotion/config": {
            **common, "name": "Emotion", "unique_id": f"ser_edge_{device_id}_emotion",
            "icon": "mdi:emoticon-outline",
            "value_template": "{{ value_json.label }}",
            "json_attributes_topic": device_topic(device_id, "state")},
        f"{prefix}/sensor/{device_id}/confidence/config": {
            **common, "name": "Emotion confidence", "unique_id": f"ser_edge_{device_id}_confidence",
            "icon": "mdi:gauge",
            "unit_of_measurement": "%", "state_class": "measurement",
            "value_template": "{{ (value_json.confidence * 100) | round(0) if value_json.confidence is not none else none }}"},
    }


# ---------------------------------------------------------------------------------- CLI glue
def add_mqtt_args(p, device_id_help: str = "topic level of this device (default: the host name)") -> None:
    """Add ``--mqtt``, ``--device-id`` and ``--mqtt-queue`` to a subcommand's parser."""
    g = p.add_argument_group("MQTT (docs/fleet.md)")
    g.add_argument("--mqtt", metavar="URL", default=None,
                   help="also publish every record: mqtt[s]://[user[:pass]@]host[:port][?ca=FILE] "
                        "(password also from $SER_EDGE_MQTT_PASSWORD)")
    g.add_argument("--device-id", default=None, help=device_id_help)
    from .cli_types import positive_int

    g.add_argument("--mqtt-queue", type=positive_int, default=10_000, metavar="N",
                   help="records kept while the broker is unreachable (default 10000; oldest dropped past it)")


def publisher_from_args(args, *, labels=(), model: str = "", default_id: Callable[[], str] = default_device_id,
                        wait_s: float = 3.0) -> MqttPublisher | None:
    """The started publisher ``--mqtt`` asks for, or None; :class:`MqttConfigError` on bad options."""
    url = getattr(args, "mqtt", None)
    if not url:
        return None
    target = MqttTarget.parse(url)
    dev_id = check_device_id(args.device_id or default_id())
    pub = MqttPublisher(target, dev_id, queue_max=args.mqtt_queue, labels=labels, model=model)
    pub.start(wait_s=wait_s)
    if not pub.connected_event.is_set():
        log.warning("mqtt: %s not reachable yet; records are queued (up to %d) until it is",
                    target, args.mqtt_queue)
    return pub


class PublishingEngine:
    """Wrap a classifier engine (``StreamingClassifier``) so every record it produces is also
    published: what ``serve --mqtt`` uses, so a device in push mode (robot) reports to the broker
    even with no host on its serial port. Records are ``run``'s: windows, and the utterance and
    summary records the engine queues (``take_utterances``, ``finish`` on STOP)."""

    def __init__(self, engine, publisher: MqttPublisher):
        self.engine = engine
        self.publisher = publisher
        self.labels = list(engine.info()["labels"])

    def __getattr__(self, name):  # anything else (info, reset, window geometry) is the engine's
        return getattr(self.engine, name)

    def _publish(self, results: list) -> list:
        for r in results:  # the same dict `run` prints for a record
            self.publisher.publish_record({"record": r.record, "time": round(r.t_end_s, 4), **r.to_json_dict(self.labels)})
        return results

    def push_audio(self, pcm):
        return self._publish(self.engine.push_audio(pcm))

    def push_features(self, frames_int8):
        return self._publish(self.engine.push_features(frames_int8))

    def finish(self):
        return self._publish(self.engine.finish())

    def take_utterances(self):
        return self._publish(self.engine.take_utterances())
