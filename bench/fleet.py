"""Fleet benchmark: many devices publishing through a real Mosquitto, a broker restart, security,
the dashboard in a real browser, and parallel corpus feature extraction.

    python bench/fleet.py                       # 100 devices x 1 record/s x 60 s, restart at 25 s
    python bench/fleet.py --devices 200 --seconds 120
    python bench/fleet.py --features-only       # part 1 alone; the other parts' figures are kept

What it does (loopback only, everything real):

1. **features**: fixed-point front-end features of RAVDESS clips (``../shared/data``; generated
   speech-like clips without it), one worker process vs two, interleaved repeats, medians, no cache
   -> ``feature_extraction_speedup_2cores``. Measured first, while nothing else of this benchmark runs.
2. **security**: a client without credentials must be refused; a device publishing to another
   device's topics (emotion, status, Home Assistant config) must not reach a subscriber.
3. **fleet**: Mosquitto with auth + ACL + persistence; ``--devices`` :class:`MqttPublisher`s (the
   class ``run``/``serve``/``listen --mqtt`` use), each its own connection and user, spread over
   worker processes, publish one ``run``-shaped record per second with a send timestamp. A
   persistent-session subscriber (QoS 1) collects everything. The broker is stopped at
   ``--restart-at`` seconds and started again ``--down`` seconds later; devices queue meanwhile.
   ``labels_lost`` = records published - distinct records received; ``fanin_latency_ms_*`` =
   receive - send time of records published while the broker was up (the queued ones are reported
   separately as ``restart_delivery_s_max``).
   ``bench/results/fleet.png`` plots receive rate and per-record delay over the run.
4. **dashboard**: ``ser-edge dashboard`` (a subprocess) watches the whole run; afterwards headless
   Chromium loads the page and every device's card must show that device's last label.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import DATA, RESULTS, ROOT, machine, markdown_table, write_result  # noqa: E402

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


# ---------------------------------------------------------------------------------- 1. features
def load_corpus(n: int) -> tuple[list[np.ndarray], str]:
    files = sorted((DATA / "ravdess").glob("Actor_*/*.flac"))
    if files:
        import soundfile as sf

        step = max(1, len(files) // n)
        clips = [sf.read(str(f), dtype="int16")[0] for f in files[::step][:n]]
        return clips, f"RAVDESS, {len(clips)} clips (every {step}th file)"

    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(int(rng.uniform(2.5, 4.5) * 16000)) * 3000).astype(np.int16) for _ in range(n)]
    return clips, f"generated noise, {n} clips"


def _autogroup_nice(value: int) -> bool:
    """Set the CPU weight of this process's scheduling group (Linux autogroup: every terminal
    session is one group and groups share the CPUs equally, whatever the processes' own nice)."""
    try:
        Path("/proc/self/autogroup").write_text(str(value))
        return True
    except OSError:
        return False


def bench_features(n_clips: int, repeats: int, boost: bool) -> dict:
    from edge_runtime.frontend import DEFAULT_CONFIG
    from model_build.features import fixed_point_features

    clips, what = load_corpus(n_clips)
    boosted = boost
    audio_s = sum(c.size for c in clips) / 16000
    load = os.getloadavg()[0]
    times: dict = {1: [], 2: [], "split": []}
    ref = fixed_point_features(clips[:8], DEFAULT_CONFIG, cache_dir=None, progress=False, workers=1)  # warm-up

    def half(k):  # the machine's own ceiling: two independent processes, half the corpus each,
        from model_build.features import _init_worker  # with one BLAS thread each like the pool's

        _init_worker()
        fixed_point_features(clips[k::2], DEFAULT_CONFIG, cache_dir=None, progress=False, workers=1)

    def spin():  # pure interpreter arithmetic: no memory traffic, the CPUs' own ceiling
        x = 0
        for i in range(4_000_000):
            x += i

    def procs_time(k: int) -> float:
        t0 = time.perf_counter()
        ps = [mp.get_context("fork").Process(target=spin) for _ in range(k)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        return time.perf_counter() - t0

    for _ in range(repeats):
        one = procs_time(1)
        times.setdefault("spin", []).append(2 * one / procs_time(2))
        for w in (1, 2):
            t0 = time.perf_counter()
            out = fixed_point_features(clips, DEFAULT_CONFIG, cache_dir=None, progress=False, workers=w)
            times[w].append(time.perf_counter() - t0)
            assert all(np.array_equal(a, b) for a, b in zip(ref, out[:8]))
        t0 = time.perf_counter()
        ps = [mp.get_context("fork").Process(target=half, args=(k,)) for k in (0, 1)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        times["split"].append(time.perf_counter() - t0)
    med = {w: float(np.median(t)) for w, t in times.items()}
    return {"scheduling_group_nice": -20 if boosted else 0, "corpus": what, "audio_s": round(audio_s, 1), "seconds_1_worker": round(med[1], 3),
            "seconds_2_workers": round(med[2], 3), "repeats": repeats,
            "runs_1_worker": [round(t, 3) for t in times[1]], "runs_2_workers": [round(t, 3) for t in times[2]],
            "speedup": round(med[1] / med[2], 3),
            "seconds_two_independent_halves": round(med["split"], 3),
            "ceiling_speedup_two_independent_halves": round(med[1] / med["split"], 3),
            "cpu_only_throughput_2_processes": round(med["spin"], 3), "loadavg_1min_before": round(load, 2),
            "loadavg_1min_after": round(os.getloadavg()[0], 2)}


# ---------------------------------------------------------------------------------- helpers
class Collector:
    """Persistent-session QoS 1 subscriber: every (device, window) with its receive time."""

    def __init__(self, broker, user: str, topic: str, client_id: str):
        import paho.mqtt.client as mqtt

        self.got: dict[tuple[str, int], tuple[float, float]] = {}  # -> (sent, received)
        self.dups = 0
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.username_pw_set(user, broker.users[user])
        self.c.reconnect_delay_set(0.1, 1)
        self.c.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and c.subscribe(topic, 1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()

    def _on_message(self, c, u, m):
        t = time.time()
        d = json.loads(m.payload)
        key = (m.topic.split("/")[1], d["window"])
        with self.lock:
            if key in self.got:
                self.dups += 1
            else:
                self.got[key] = (d["sent_unix"], t)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _device_worker(url_of: dict, ids: list[str], seconds: float, t_start: float, q, release) -> None:
    """One process: publishers for ``ids``, each publishing one record per second (phase-spread);
    then it reports the last labels, stays online until ``release`` is set, and closes."""
    from edge_runtime.mqtt import MqttPublisher, MqttTarget

    rng = np.random.default_rng(abs(hash(ids[0])) % 2**32)
    pubs = [MqttPublisher(MqttTarget.parse(url_of[d]), d, discovery=True, model="bench") for d in ids]
    for p in pubs:
        p.start()
    phase = {d: (i / len(ids)) for i, d in enumerate(ids)}
    n = {d: 0 for d in ids}
    last = {}
    while time.time() < t_start:
        time.sleep(0.01)
    t_end = t_start + seconds
    # the next due time of each device: t_start + phase + k
    due = sorted((t_start + phase[d], d) for d in ids)
    while due:
        t, d = due.pop(0)
        if t >= t_end:
            continue
        delay = t - time.time()
        if delay > 0:
            time.sleep(delay)
        k = n[d]
        lab = int(rng.integers(len(LABELS)))
        probs = rng.dirichlet(np.ones(len(LABELS)) * 0.5)
        probs[lab] = max(probs[lab], probs.max() + 0.01)
        probs = probs / probs.sum()
        rec = {"time": float(k + 1), "window": k, "t_start": float(k), "t_end": float(k + 1),
               "label": LABELS[lab], "index": lab,
               "scores_int8": [int(round(p * 255 - 128)) for p in probs], "latency_ms": 0.6,
               "probs": {name: round(float(p), 4) for name, p in zip(LABELS, probs)},
               "sent_unix": time.time()}
        pubs[ids.index(d)].publish_record(rec)
        last[d] = LABELS[lab]
        n[d] = k + 1
        due.append((t + 1.0, d))
        due.sort()
    q.put({"last": last})
    release.wait(120)
    stats = {}
    for p in pubs:
        stats[p.device_id] = p.close(timeout_s=20)
    q.put({"published": n, "stats": stats})


def _security(broker) -> dict:
    import paho.mqtt.client as mqtt

    res = {}
    done = threading.Event()
    rc_box = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon-probe")
    c.on_connect = lambda cl, u, f, rc, p: (rc_box.setdefault("rc", rc), done.set())
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    done.wait(5)
    c.disconnect()
    c.loop_stop()
    res["unauthenticated_refused"] = bool(rc_box.get("rc") is not None and rc_box["rc"].is_failure)
    res["unauthenticated_reason"] = str(rc_box.get("rc"))

    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="acl-watch")
    sub.username_pw_set("admin", broker.users["admin"])
    ready = threading.Event()
    sub.on_connect = lambda cl, u, f, rc, p: cl.subscribe([("ser-edge/#", 1), ("homeassistant/#", 1)])
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda cl, u, m: got.append(m.topic)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    ready.wait(5)
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="acl-probe")
    dev.username_pw_set("dev-0000", broker.users["dev-0000"])
    dev.connect("127.0.0.1", broker.port)
    dev.loop_start()
    forbidden = ["ser-edge/dev-0001/emotion", "ser-edge/dev-0001/state", "ser-edge/dev-0001/status",
                 "homeassistant/sensor/dev-0001/emotion/config"]
    for t in forbidden + ["ser-edge/dev-0000/acl-probe"]:
        dev.publish(t, b'{"label": "angry", "window": -1}', qos=1).wait_for_publish(5)
    t_end = time.time() + 5
    while "ser-edge/dev-0000/acl-probe" not in got and time.time() < t_end:
        time.sleep(0.02)
    time.sleep(0.3)
    res["own_topic_delivered"] = "ser-edge/dev-0000/acl-probe" in got
    res["cross_device_messages_delivered"] = sum(t in forbidden for t in got)
    res["cross_device_publish_refused"] = res["own_topic_delivered"] and res["cross_device_messages_delivered"] == 0
    for cl in (dev, sub):
        cl.disconnect()
        cl.loop_stop()
    return res


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))


def _browser_check(drv, last: dict[str, str]) -> dict:
    """Wait until every device's card shows that device's last published label."""
    t0 = time.time()
    ok, shown = False, {}
    while time.time() - t0 < 30:
        shown = drv.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('.card')].map("
            "c => [c.dataset.device, c.querySelector('.label').textContent.toLowerCase()]))")
        if all(shown.get(d) == lab for d, lab in last.items()):
            ok = True
            break
        time.sleep(0.5)
    wrong = sorted(d for d, lab in last.items() if shown.get(d) != lab)
    return {"dashboard_browser_ok": ok, "dashboard_devices_shown": len(shown),
            "dashboard_wrong_labels": wrong[:10], "dashboard_seconds_to_match": round(time.time() - t0, 2)}


# ---------------------------------------------------------------------------------- 3. fleet
def bench_fleet(n_dev: int, seconds: float, restart_at: float, down: float, procs: int, work: Path) -> dict:
    from firmware_bridge.mosquitto import LocalBroker, free_port

    ids = [f"dev-{i:04d}" for i in range(n_dev)]
    users = {"admin": "admin-pw", "viewer": "viewer-pw"} | {d: f"pw-{d}" for d in ids}
    broker = LocalBroker(work, users, admins=["admin"], readers=["viewer"], tls=False).start()
    dash = None
    try:
        out = _security(broker)
        col = Collector(broker, "admin", "ser-edge/+/emotion", "bench-collector")
        dash_port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        dash = subprocess.Popen([sys.executable, "-m", "edge_runtime", "dashboard", "--mqtt", broker.url("viewer"),
                                 "--port", str(dash_port)], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        url_of = {d: broker.url(d) for d in ids}
        q = mp.get_context("fork").Queue()
        release = mp.get_context("fork").Event()
        t_start = time.time() + 2.0 + n_dev * 0.01  # time for every device to connect first
        chunks = [ids[i::procs] for i in range(procs)]
        workers = [mp.get_context("fork").Process(target=_device_worker, args=(url_of, c, seconds, t_start, q, release))
                   for c in chunks]
        for w in workers:
            w.start()
        time.sleep(max(0.0, t_start + restart_at - time.time()))
        t_down = time.time()
        broker.stop()
        time.sleep(down)
        broker.start()
        t_up = time.time()
        print(f"  broker restarted: down {t_up - t_down:.2f} s at t={t_down - t_start:.1f} s", file=sys.stderr)
        # the browser opens after the last record (its start-up is no part of the latency figures),
        # while every device is still online; then the devices close
        lasts = [q.get(timeout=seconds + 120) for _ in workers]
        last = {d: lab for r in lasts for d, lab in r["last"].items()}
        drv = _browser()
        try:
            drv.get(f"http://127.0.0.1:{dash_port}/")
            out.update(_browser_check(drv, last))
            time.sleep(1.0)
            drv.save_screenshot(str(RESULTS / "fleet_dashboard.png"))
        finally:
            drv.quit()
        release.set()
        reports = [q.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(timeout=30)
        published = {d: n for r in reports for d, n in r["published"].items()}
        stats = {d: s for r in reports for d, s in r["stats"].items()}
        total = sum(published.values())
        t_end = time.time() + 30
        while len(col.got) < total and time.time() < t_end:
            time.sleep(0.1)
        with col.lock:
            got = dict(col.got)
        col.close()
        want = {(d, k) for d, n in published.items() for k in range(n)}
        lost = len(want - set(got))
        settle = 5.0  # after the broker is back: reconnects and queue flushes
        steady = [(r - s) * 1000 for (s, r) in got.values() if s < t_down - 0.5 or s > t_up + settle]
        queued = [r - s for (s, r) in got.values() if t_down <= s <= t_up]
        lat = np.asarray(steady)
        _plot(got, t_start, t_down, t_up, n_dev, RESULTS / "fleet.png")
        out.update({
            "devices": n_dev, "seconds": seconds, "records_published": total,
            "records_received_distinct": len(set(got) & want), "duplicates_received": col.dups,
            "labels_lost": lost,
            "records_dropped_by_device_queues": sum(s["dropped"] for s in stats.values()),
            "records_queued_while_broker_down": sum(s["queued"] for s in stats.values()),
            "broker_down_s": round(t_up - t_down, 2), "broker_restart_at_s": round(t_down - t_start, 1),
            "reconnects": sum(s["connects"] - 1 for s in stats.values()),
            "devices_reconnected": sum(s["connects"] >= 2 for s in stats.values()),
            "broker_restart_survived": lost == 0 and all(s["connects"] >= 2 for s in stats.values()),
            "fanin_latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
            "fanin_latency_ms_p99": round(float(np.percentile(lat, 99)), 2),
            "fanin_latency_ms_max": round(float(lat.max()), 2),
            "fanin_latency_samples": int(lat.size),
            "restart_delivery_s_max": round(max(queued), 2) if queued else None,
            "device_processes": procs,
        })
        return out
    finally:
        if dash is not None:
            dash.terminate()
            try:
                dash.wait(timeout=10)
            except subprocess.TimeoutExpired:
                dash.kill()
        broker.stop()


def _plot(got: dict, t0: float, t_down: float, t_up: float, n_dev: int, path: Path) -> None:
    """Records received per second and each record's publish -> subscriber delay over the run,
    with the broker's down time shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sent = np.array([s for s, _ in got.values()]) - t0
    recv = np.array([r for _, r in got.values()]) - t0
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, constrained_layout=True)
    bins = np.arange(0, max(recv.max(), sent.max()) + 1.0, 1.0)
    a1.hist(recv, bins=bins, color="#3b6fd8")
    a1.axhline(n_dev, color="#888", lw=0.8, ls="--")
    a1.set_ylabel("records received / s")
    a1.set_title(f"{n_dev} devices, 1 record/s each, through Mosquitto; broker stopped and restarted")
    a2.scatter(sent, (recv - sent) * 1000, s=2, color="#d64541", alpha=0.5)
    a2.set_yscale("log")
    a2.set_ylabel("publish -> subscriber (ms)")
    a2.set_xlabel("time of publishing (s into the run)")
    for a in (a1, a2):
        a.axvspan(t_down - t0, t_up - t0, color="#f2b705", alpha=0.25, lw=0, label="broker down")
    a2.legend(loc="upper right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--restart-at", type=float, default=25.0, help="seconds into the run")
    ap.add_argument("--down", type=float, default=3.0, help="seconds the broker stays down")
    ap.add_argument("--procs", type=int, default=2, help="device worker processes")
    ap.add_argument("--clips", type=int, default=600, help="clips for the feature-extraction speed-up")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds (medians)")
    ap.add_argument("--skip-features", action="store_true", help="keep the feature figures of the last run")
    ap.add_argument("--features-only", action="store_true",
                    help="measure part 1 (features) alone and update only its figures in fleet.json, keeping the "
                         "other parts' recorded figures; parts_measured_utc says when each part was measured")
    ap.add_argument("--boost", action="store_true",
                    help="raise this session's scheduling-group weight (Linux autogroup, needs root) for the "
                         "benchmark's duration: a shared machine's other jobs then count for less")
    args = ap.parse_args()

    # On a shared machine every other session's scheduling group gets an equal share of the cores,
    # whatever its processes' nice: a second worker of ours would only split our own share, and
    # our latencies would be other people's load. --boost raises this session's group weight for
    # the benchmark's duration (recorded in the result); without it, the figures are what is left.
    boosted = _autogroup_nice(-20) if args.boost else False
    try:
        _run(args, boosted)
    finally:
        if boosted:
            _autogroup_nice(0)


def _run(args, boosted: bool) -> None:
    import tempfile

    old = json.loads((RESULTS / "fleet.json").read_text()) if (RESULTS / "fleet.json").exists() else {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.features_only:
        if not old.get("devices"):
            sys.exit("bench/fleet.py: error: --features-only updates an existing bench/results/fleet.json; "
                     "run the whole benchmark first")
        print("features: 1 worker vs 2 ...", file=sys.stderr)
        feats = bench_features(args.clips, args.repeats, boosted)
        old["features"] = feats
        old["feature_extraction_speedup_2cores"] = feats["speedup"]
        old["parts_measured_utc"] = {**old.get("parts_measured_utc", {}), "features": now}
        path = write_result("fleet", old)
        _print_features(feats)
        print(f"wrote {path} (features only; the other parts are those of {old['parts_measured_utc'].get('fleet')})")
        return
    if args.skip_features and "features" in old:
        feats = old["features"]
    else:
        print("features: 1 worker vs 2 ...", file=sys.stderr)
        feats = bench_features(args.clips, args.repeats, boosted)
    print(f"fleet: {args.devices} devices x {args.seconds:.0f} s ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ser-edge-fleet-") as work:
        res = bench_fleet(args.devices, args.seconds, args.restart_at, args.down, args.procs, Path(work))
    res["feature_extraction_speedup_2cores"] = feats["speedup"]
    res["features"] = feats
    measured = {"fleet": now}  # fleet, security and dashboard: one run
    measured["features"] = old.get("parts_measured_utc", {}).get("features") if args.skip_features else now
    res["parts_measured_utc"] = measured
    res["machine"] = machine()
    res["scheduling_group_nice"] = -20 if boosted else 0
    res["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    res["mosquitto"] = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    path = write_result("fleet", res)
    rows = [(k, res[k]) for k in ("devices", "records_published", "labels_lost", "broker_restart_survived",
                                  "broker_down_s", "records_queued_while_broker_down", "restart_delivery_s_max",
                                  "fanin_latency_ms_p50", "fanin_latency_ms_p99", "unauthenticated_refused",
                                  "cross_device_publish_refused", "dashboard_browser_ok",
                                  "feature_extraction_speedup_2cores")]
    print(markdown_table(rows, ("measure", "value")))
    _print_features(feats)
    print(f"wrote {path}")


def _print_features(feats: dict) -> None:
    print(f"features: {feats['corpus']}, {feats['audio_s']} s audio: {feats['seconds_1_worker']} s on 1 worker, "
          f"{feats['seconds_2_workers']} s on 2 (speed-up {feats['speedup']}; two independent halves "
          f"{feats['seconds_two_independent_halves']} s, {feats['ceiling_speedup_two_independent_halves']}; "
          f"load {feats['loadavg_1min_before']})")


if __name__ == "__main__":
    main()
