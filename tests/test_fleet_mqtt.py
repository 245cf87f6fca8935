"""Fleets over MQTT against a real Mosquitto (auth, ACL, TLS, persistence) started per module on
free loopback ports: ``run``/``serve``/``listen --mqtt``, Home Assistant discovery, last will,
refused clients, a broker restart, and the dashboard in a real headless Chromium."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import pytest

from tests.conftest import require_module, require_tool
from tests.test_runtime_helpers import speechlike, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
USERS = {"admin": "admin-pw", "viewer": "viewer-pw", "dev-a": "pw-a", "dev-b": "pw-b",
         "dev-serve": "pw-s", "dev-listen": "pw-l", "dev-will": "pw-w"}


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _broker(tmp_path):
    require_tool("mosquitto")
    require_tool("mosquitto_passwd")
    require_module("paho.mqtt.client")
    require_module("cryptography")
    from firmware_bridge.mosquitto import LocalBroker

    return LocalBroker(tmp_path, USERS, admins=["admin"], readers=["viewer"]).start()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = _broker(tmp_path_factory.mktemp("mosquitto"))
    yield b
    b.stop()


class Collector:
    """A subscriber that records every message (topic, payload, retain)."""

    def __init__(self, broker, user="admin", topics=("ser-edge/#", "homeassistant/#"), client_id=None,
                 clean=True):
        import paho.mqtt.client as mqtt

        self.msgs: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"collector-{time.time_ns()}",
                             clean_session=clean)
        self.c.username_pw_set(user, broker.users[user])
        self.ready = threading.Event()

        def on_connect(c, u, f, rc, p):
            if not rc.is_failure:
                c.subscribe([(t, 1) for t in topics])

        self.c.on_connect = on_connect
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()
        assert self.ready.wait(5), "collector did not subscribe"

    def _on_message(self, c, u, m):
        with self.cond:
            self.msgs.append((m.topic, bytes(m.payload), bool(m.retain)))
            self.cond.notify_all()

    def on(self, topic):
        with self.cond:
            return [p for t, p, _ in self.msgs if t == topic]

    def wait(self, pred, timeout=10.0):
        t_end = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = t_end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _connack(broker, user=None, password=None, port=None):
    """Reason code of a plain connection attempt."""
    import paho.mqtt.client as mqtt

    got = {}
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}")
    if user:
        c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, f, rc, p: (got.setdefault("rc", rc), done.set())
    c.connect("127.0.0.1", port or broker.port)
    c.loop_start()
    done.wait(5)
    c.disconnect()
    c.loop_stop()
    return got.get("rc")


def _write_wav(path: Path, pcm) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())


# ------------------------------------------------------------------------- options
def test_mqtt_url_and_device_id(monkeypatch, tmp_path):
    from edge_runtime.mqtt import MqttConfigError, MqttTarget, check_device_id, record_confidence

    t = MqttTarget.parse("mqtt://broker.lan")
    assert (t.host, t.port, t.tls, t.username) == ("broker.lan", 1883, False, None)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    t = MqttTarget.parse(f"mqtts://robot%2D1:p%40ss@10.0.0.2?ca={ca}")
    assert (t.port, t.tls, t.username, t.password, t.ca_file) == (8883, True, "robot-1", "p@ss", str(ca))
    assert "p@ss" not in str(t)
    monkeypatch.setenv("SER_EDGE_MQTT_PASSWORD", "from-env")
    assert MqttTarget.parse("mqtt://u@h:1884").password == "from-env"
    for bad, why in [("http://h", "mqtt://"), ("mqtt://", "no host"), ("mqtt://h:99999", "bad port"),
                     ("mqtt://h?ca=/x", "needs an mqtts"), ("mqtts://h?ca=/nonexistent.pem", "not found"),
                     ("mqtt://h?qos=2", "unknown option")]:
        with pytest.raises(MqttConfigError, match=why):
            MqttTarget.parse(bad)
    for bad in ("", "a/b", "a+b", "#", "x" * 65):
        with pytest.raises(MqttConfigError, match="device id"):
            check_device_id(bad)
    assert record_confidence({"probs": {"a": 0.2, "b": 0.7}}) == 0.7
    assert record_confidence({"confidence": 0.4, "probs": {"a": 0.9}}) == 0.4
    assert record_confidence({"label": "x"}) is None


def test_bad_mqtt_option_is_one_line_exit_2(tmp_path):
    wav = tmp_path / "a.wav"
    _write_wav(wav, speechlike(1.2))
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(wav), "--model", write_tiny_model(tmp_path),
                        "--mqtt", "mqtt://h", "--device-id", "a/b"], capture_output=True, text=True,
                       env=_env(), cwd=ROOT, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("ser-edge run: error: device id 'a/b'")
    assert "Traceback" not in p.stderr


# ------------------------------------------------------------------------- security
def test_unauthenticated_and_wrong_password_refused(broker):
    assert _connack(broker).is_failure
    assert str(_connack(broker)) == "Not authorized"
    assert _connack(broker, "dev-a", "wrong").is_failure
    assert not _connack(broker, "dev-a", USERS["dev-a"]).is_failure


def test_tls_needs_the_right_ca(broker):
    import ssl

    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.username_pw_set("dev-a", USERS["dev-a"])
    c.tls_set(cert_reqs=ssl.CERT_REQUIRED)  # the system trust store does not know our throw-away CA
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("127.0.0.1", broker.tls_port)
    c2 = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c2.username_pw_set("dev-a", USERS["dev-a"])
    c2.tls_set(ca_certs=str(broker.ca_file), cert_reqs=ssl.CERT_REQUIRED)
    assert c2.connect("127.0.0.1", broker.tls_port) == 0
    c2.disconnect()


def test_device_cannot_write_another_devices_topics(broker):
    import paho.mqtt.client as mqtt

    col = Collector(broker)
    try:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="acl-dev-a")
        c.username_pw_set("dev-a", USERS["dev-a"])
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        # all QoS 1 on one connection: the broker handles them in order, so once the last (allowed)
        # message has arrived the forbidden ones would have arrived before it
        for topic in ("ser-edge/dev-b/emotion", "ser-edge/dev-b/status", "homeassistant/sensor/dev-b/emotion/config",
                      "ser-edge/dev-a/emotion"):
            c.publish(topic, b'{"label": "angry"}', qos=1).wait_for_publish(5)
        assert col.wait(lambda: col.on("ser-edge/dev-a/emotion"))
        time.sleep(0.2)
        assert [t for t, _, _ in col.msgs if "dev-b" in t] == []
        c.disconnect()
        c.loop_stop()
    finally:
        col.close()


# ------------------------------------------------------------------------- commands
def test_run_publishes_every_record_over_tls(broker, tmp_path):
    """`run --mqtt mqtts://...`: `emotion` carries exactly the JSON lines; state, status, discovery."""
    wav = tmp_path / "clip.wav"
    _write_wav(wav, speechlike(4.0, seed=3))
    col = Collector(broker)
    try:
        p = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(wav), "--model", write_tiny_model(tmp_path),
                            "--mqtt", broker.url("dev-a", tls=True), "--device-id", "dev-a"],
                           capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert len(lines) >= 5
        assert col.wait(lambda: len(col.on("ser-edge/dev-a/emotion")) >= len(lines)
                        and col.on("ser-edge/dev-a/status")[-1:] == [b"offline"])
        assert [x.decode() for x in col.on("ser-edge/dev-a/emotion")] == lines  # same bytes, same order
        assert "0 dropped" in p.stderr and "not delivered" not in p.stderr
        assert col.on("ser-edge/dev-a/status")[0] == b"online"
        last = json.loads(lines[-1])
        state = json.loads(col.on("ser-edge/dev-a/state")[-1])
        assert state["label"] == last["label"]
        # the last line is the summary record: its confidence is the chosen label's mean probability
        # (state is re-sent only when the label changes or the confidence moves by >= 0.05)
        assert last["record"] == "summary" and abs(state["confidence"] - last["confidence"]) < 0.05
        ha = json.loads(col.on("homeassistant/sensor/dev-a/emotion/config")[-1])
        assert ha["state_topic"] == "ser-edge/dev-a/state" and ha["availability_topic"] == "ser-edge/dev-a/status"
        assert ha["value_template"] == "{{ value_json.label }}" and ha["unique_id"] == "ser_edge_dev-a_emotion"
        conf = json.loads(col.on("homeassistant/sensor/dev-a/confidence/config")[-1])
        assert conf["unit_of_measurement"] == "%" and conf["device"]["identifiers"] == ha["device"]["identifiers"]
    finally:
        col.close()
    # retained: a client that connects later still sees the last state, offline status, discovery
    late = Collector(broker, user="viewer", topics=("ser-edge/dev-a/#",))
    try:
        assert late.wait(lambda: late.on("ser-edge/dev-a/state") and late.on("ser-edge/dev-a/status"))
        assert late.on("ser-edge/dev-a/status") == [b"offline"] and not late.on("ser-edge/dev-a/emotion")
    finally:
        late.close()


def test_last_will_marks_a_killed_device_offline(broker):
    col = Collector(broker, topics=("ser-edge/dev-will/status",))
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "from edge_runtime.mqtt import MqttPublisher, MqttTarget\n"
            "p = MqttPublisher(MqttTarget.parse(%r), 'dev-will').start(wait_s=5)\n"
            "print('up', flush=True); time.sleep(60)\n") % (str(ROOT), broker.url("dev-will"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        assert col.wait(lambda: col.on("ser-edge/dev-will/status")[-1:] == [b"online"])
        proc.send_signal(signal.SIGKILL)  # no DISCONNECT: only the will can say it is gone
        assert col.wait(lambda: col.on("ser-edge/dev-will/status")[-1:] == [b"offline"], timeout=10)
    finally:
        proc.kill()
        proc.wait()
        col.close()


def test_serve_push_and_listen_publish(broker, tmp_path):
    """`serve --push-wav --mqtt` (a robot with no host) and `listen --mqtt` on the other end of the
    serial cable both publish the same windows, each below its own device id."""
    require_module("serial")
    from firmware_bridge.ptylink import PtyLink

    wav = tmp_path / "loop.wav"
    _write_wav(wav, speechlike(2.0, seed=5))
    model = write_tiny_model(tmp_path)
    col = Collector(broker)
    procs = []
    try:
        with PtyLink(baud=921600) as link:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "edge_runtime", "serve", "--port", link.port_b, "--model", model,
                 "--push-wav", str(wav), "--mqtt", broker.url("dev-serve"), "--device-id", "dev-serve"],
                env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "edge_runtime", "listen", "--port", link.port_a, "--quiet",
                 "--mqtt", broker.url("dev-listen"), "--device-id", "dev-listen", "--seconds", "30"],
                env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            ok = col.wait(lambda: len(col.on("ser-edge/dev-listen/emotion")) >= 4, timeout=40)
            assert ok, [p.stderr.read() if p.poll() is not None else "running" for p in procs]
            served = [json.loads(x) for x in col.on("ser-edge/dev-serve/emotion")]
            heard = [d for d in map(json.loads, col.on("ser-edge/dev-listen/emotion")) if d["record"] == "window"]
            assert heard
            by_window = {d["window"]: d for d in served if d["record"] == "window"}
            for h in heard:  # the serial link carried exactly what the device classified
                s = by_window[h["window"]]
                assert (h["label"], h["scores_int8"]) == (s["label"], s["scores_int8"])
                assert "push" in h.get("flags", [])
                # probabilities from the RESULT scores by run's rule (INFO carries the scale as float32)
                assert h["confidence"] == pytest.approx(s["confidence"], abs=2e-4)
                assert list(h["probs"]) == list(s["probs"])  # named by the device's labels
                assert list(h["probs"].values()) == pytest.approx(list(s["probs"].values()), abs=2e-4)
            # so the retained state (the Home Assistant confidence sensor) carries a real value
            # (an utterance/summary without an emotion has confidence 0, as in run's records)
            states = [json.loads(x) for x in col.on("ser-edge/dev-listen/state")]
            assert states and all(isinstance(st["confidence"], (int, float)) and 0 <= st["confidence"] <= 1
                                  for st in states), states
            assert any(st["confidence"] > 0 for st in states), states
            assert col.on("ser-edge/dev-serve/status")[0] == b"online"
            assert col.on("ser-edge/dev-listen/status")[0] == b"online"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        col.close()
    assert col.on("ser-edge/dev-listen/status")[-1] == b"offline"


# ------------------------------------------------------------------------- delivery
def test_broker_restart_loses_no_record_within_the_queue_bound(tmp_path):
    from edge_runtime.mqtt import MqttPublisher, MqttTarget

    b = _broker(tmp_path)
    col = None
    try:
        # a persistent session: the broker keeps queuing for the collector across its restart
        col = Collector(b, topics=("ser-edge/+/emotion",), client_id="restart-collector", clean=False)
        pub = MqttPublisher(MqttTarget.parse(b.url("dev-a")), "dev-a").start(wait_s=5)
        small = MqttPublisher(MqttTarget.parse(b.url("dev-b")), "dev-b", queue_max=5).start(wait_s=5)
        for i in range(10):
            pub.publish_record({"window": i, "label": "happy"})
        assert col.wait(lambda: len(col.on("ser-edge/dev-a/emotion")) == 10)
        b.stop()
        assert _wait(lambda: not pub.stats()["connected"])
        for i in range(10, 30):  # the broker is down: these wait in the queue
            pub.publish_record({"window": i, "label": "sad"})
        for i in range(8):
            small.publish_record({"window": i, "label": "sad"})
        st = pub.stats()
        assert st["waiting"] == 20 and st["dropped"] == 0
        assert small.stats()["dropped"] == 3  # bound 5: the 3 oldest gave way
        b.start()
        assert col.wait(lambda: len({json.loads(x)["window"] for x in col.on("ser-edge/dev-a/emotion")}) == 30
                        and len(col.on("ser-edge/dev-b/emotion")) >= 5, timeout=20)
        assert sorted({json.loads(x)["window"] for x in col.on("ser-edge/dev-b/emotion")}) == [3, 4, 5, 6, 7]
        st = pub.close()
        assert st["connects"] == 2 and st["waiting"] == 0 and st["unacked"] == 0
        small.close()
    finally:
        if col:
            col.close()
        b.stop()


def _wait(pred, timeout=10.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(0.02)
    return False


# ------------------------------------------------------------------------- dashboard
def test_dashboard_gets_records_sent_while_it_and_the_broker_were_down(tmp_path):
    """The dashboard's persistent QoS 1 session: records published while the dashboard was away and
    the broker restarting are delivered when it comes back (not only the retained state), and a
    device first seen during the outage gets its card."""
    import urllib.request

    from edge_runtime.mqtt import MqttPublisher, MqttTarget
    from firmware_bridge.dashboard import Dashboard
    from firmware_bridge.mosquitto import free_port

    b = _broker(tmp_path)
    pubs, dash = [], None
    try:
        http_port = free_port()
        viewer = MqttTarget.parse(b.url("viewer"))
        dash = Dashboard(viewer, port=http_port).start()
        assert dash.subscribed.wait(5)
        pubs.append(MqttPublisher(MqttTarget.parse(b.url("dev-a")), "dev-a", discovery=False).start(wait_s=5))
        pubs[0].publish_record({"window": 0, "label": "happy", "confidence": 0.7})
        assert _wait(lambda: dash.state.devices.get("dev-a", {}).get("records") == 1)
        dash.close()  # the dashboard goes away ...
        b.stop()  # ... and the broker restarts (SIGTERM: Mosquitto saves sessions and queues)
        assert _wait(lambda: not pubs[0].stats()["connected"])
        for i, label in enumerate(("sad", "angry", "sad", "neutral"), 1):
            pubs[0].publish_record({"window": i, "label": label, "confidence": 0.5 + i / 10})
        pubs.append(MqttPublisher(MqttTarget.parse(b.url("dev-b")), "dev-b", discovery=False).start())
        pubs[1].publish_record({"window": 0, "label": "calm", "confidence": 0.55})
        b.start()
        # every record reaches the broker while no dashboard is connected
        assert _wait(lambda: all(p.stats()["connected"] and not p.stats()["waiting"] and not p.stats()["unacked"]
                                 for p in pubs), timeout=20)
        dash = Dashboard(viewer, port=http_port).start()  # same host and port: the same session
        assert _wait(lambda: dash.state.devices.get("dev-a", {}).get("records") == 4
                     and dash.state.devices.get("dev-b", {}).get("records") == 1, timeout=10), dash.state.snapshot()
        with urllib.request.urlopen(dash.url + "api/devices", timeout=5) as r:
            devices = {d["id"]: d for d in json.load(r)["devices"]}
        assert devices["dev-a"]["label"] == "neutral" and devices["dev-a"]["confidence"] == pytest.approx(0.9)
        assert [p["label"] for p in devices["dev-a"]["timeline"]] == ["sad", "angry", "sad", "neutral"]
        assert devices["dev-b"]["label"] == "calm" and devices["dev-b"]["status"] == "online"
    finally:
        for p in pubs:
            p.close(timeout_s=1)
        if dash is not None:
            dash.close()
        b.stop()


def test_dashboard_in_headless_chromium(broker, tmp_path):
    """Labels published to the broker appear on `ser-edge dashboard`'s page in a real browser."""
    webdriver = require_module("selenium.webdriver")
    require_tool("chromedriver")
    chromium = require_tool("chromium")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from edge_runtime.mqtt import MqttPublisher, MqttTarget
    from firmware_bridge.dashboard import Dashboard
    from firmware_bridge.mosquitto import free_port

    dash = Dashboard(MqttTarget.parse(broker.url("viewer")), port=free_port()).start()
    pubs = [MqttPublisher(MqttTarget.parse(broker.url(d)), d, discovery=False).start(wait_s=5)
            for d in ("dev-a", "dev-b")]
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,600"):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=Service(require_tool("chromedriver")))
    try:
        assert dash.subscribed.wait(5)
        drv.get(dash.url)
        card = lambda d: drv.find_element(By.CSS_SELECTOR, f'.card[data-device="{d}"]')  # noqa: E731
        text = lambda d, cls: card(d).find_element(By.CSS_SELECTOR, cls).text  # noqa: E731

        def shows(dev, label, conf):
            try:
                return text(dev, ".label").lower() == label and text(dev, ".conf") == conf
            except Exception:  # not rendered yet
                return False

        pubs[0].publish_record({"window": 0, "label": "happy", "probs": {"happy": 0.81, "sad": 0.19}})
        pubs[1].publish_record({"window": 0, "label": "angry", "confidence": 0.66})
        assert _wait(lambda: shows("dev-a", "happy", "81 %") and shows("dev-b", "angry", "66 %")), drv.page_source[-2000:]
        pubs[0].publish_record({"window": 1, "label": "sad", "probs": {"happy": 0.1, "sad": 0.9}})
        assert _wait(lambda: shows("dev-a", "sad", "90 %"))
        pubs[1].close()
        assert _wait(lambda: "offline" in card("dev-b").get_attribute("class"))
        assert "online" in card("dev-a").get_attribute("class")
        drv.save_screenshot(str(tmp_path / "dashboard.png"))
    finally:
        drv.quit()
        pubs[0].close()
        dash.close()


def test_dashboard_cli_rejects_a_bad_url():
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "dashboard", "--mqtt", "http://x"],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["ser-edge dashboard: error: --mqtt wants mqtt://host[:port] or "
                                             "mqtts://host[:port], got 'http://x'"]


def test_device_side_imports_without_paho():
    """paho-mqtt is an extra: edge_runtime (and every device command's parser) imports without it,
    and a missing paho is reported as the extra to install."""
    code = r"""
import sys, importlib.abc
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "paho":
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Blocker())
import edge_runtime.mqtt, edge_runtime.run_cli, edge_runtime.serial_device
from edge_runtime.cli import build_parser
from edge_runtime.cli_errors import describe
build_parser().parse_args(["run", "--mqtt", "mqtt://h", "--stdin"])
try:
    edge_runtime.mqtt.MqttPublisher(edge_runtime.mqtt.MqttTarget.parse("mqtt://h"), "d")
except ImportError as e:
    print(describe(ModuleNotFoundError("no paho", name="paho")))
print(sorted(m for m in sys.modules if m.startswith("paho")))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == "[]"
    assert "pip install 'ser-edge[mqtt]'" in lines[0] and lines[0].startswith("(1,")


def test_publishing_engine_sends_windows_utterances_and_summary(broker, tmp_path):
    """What `serve --mqtt` wraps the engine in: every record the serial link carries is published,
    including the tail window, utterance and summary records a STOP flushes."""
    from edge_runtime.classifier import StreamingClassifier
    from edge_runtime.mqtt import MqttPublisher, MqttTarget, PublishingEngine

    clf = StreamingClassifier.from_model(write_tiny_model(tmp_path))
    col = Collector(broker, topics=("ser-edge/dev-b/emotion",))
    pub = MqttPublisher(MqttTarget.parse(broker.url("dev-b")), "dev-b", discovery=False).start(wait_s=5)
    try:
        eng = PublishingEngine(clf, pub)
        assert eng.info() == clf.info() and eng.window_frames == clf.window_frames  # delegated
        pcm = speechlike(3.0, seed=7)
        got = []
        for k in range(0, pcm.size, 4000):
            got += eng.push_audio(pcm[k:k + 4000])
            got += eng.take_utterances()
        got += eng.finish()
        got += eng.take_utterances()
        kinds = [r.record for r in got]
        assert "window" in kinds and kinds[-1] == "summary"
        assert col.wait(lambda: len(col.on("ser-edge/dev-b/emotion")) == len(got))
        recs = [json.loads(x) for x in col.on("ser-edge/dev-b/emotion")]
        assert [r["record"] for r in recs] == kinds
        # the records `run` prints for the same results (JSON round trip: lists, not arrays)
        want = [json.loads(json.dumps({"record": r.record, "time": round(r.t_end_s, 4), **r.to_json_dict(clf.labels)}))
                for r in got]
        assert recs == want
    finally:
        pub.close()
        col.close()
