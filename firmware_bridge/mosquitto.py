"""A local Mosquitto broker with the fleet's security set-up, for tests, benchmarks and trying it out.

:class:`LocalBroker` writes a config into a work directory and runs Debian's ``mosquitto``:

* a plain listener and a TLS listener on free loopback ports, both requiring a user name and
  password (``allow_anonymous false``; passwords hashed by ``mosquitto_passwd``);
* a throw-away CA and a server certificate for ``127.0.0.1``/``localhost`` (made with
  ``cryptography``), so clients verify the broker against ``ca.pem``;
* the ACL of docs/fleet.md (:func:`acl_text`): a device (user name = device id) may write only
  ``ser-edge/<its id>/#`` and its own Home Assistant discovery topics; readers read ``ser-edge/#``;
* persistence, so sessions and queued QoS 1 messages survive :meth:`LocalBroker.restart`.

Used as a context manager; :meth:`url` gives ``mqtt[s]://user:pass@127.0.0.1:port`` URLs.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["LocalBroker", "acl_text", "free_port", "make_ca"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def acl_text(admins: list[str] = (), readers: list[str] = ()) -> str:
    """The broker ACL: admins everything; readers read the fleet; every other authenticated user is
    a device whose user name is its device id and may write only below that id."""
    lines = ["# ser-edge fleet ACL (mosquitto acl_file). %u = the authenticated user name.", ""]
    for a in admins:
        lines += [f"user {a}", "topic readwrite #", ""]
    for r in readers:
        lines += [f"user {r}", "topic read ser-edge/#", "topic read $SYS/#", ""]
    lines += [
        "# every user: a device publishes only below its own id (emotion, state, status/will) and",
        "# its own Home Assistant discovery configs; it reads nothing but its own subtree.",
        "pattern readwrite ser-edge/%u/#",
        "pattern write homeassistant/sensor/%u/#",
        "",
    ]
    return "\n".join(lines)


def make_ca(out: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict[str, Path]:
    """A throw-away CA (``ca.pem``) and a server key/certificate it signed (``server.pem``,
    ``server.key``) valid for ``hosts`` for two days. Returns the three paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ser-edge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": out / "ca.pem", "cert": out / "server.pem", "key": out / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)
    return paths


class LocalBroker:
    """Mosquitto on 127.0.0.1 with auth, ACL, TLS and persistence, in ``workdir``.

    ``users``: name -> password; ``admins``/``readers``: which of them get the wider ACL entries
    (every other user is a device).
    """

    def __init__(self, workdir: str | os.PathLike, users: dict[str, str], *, admins: list[str] = (),
                 readers: list[str] = (), tls: bool = True, max_queued: int = 100_000):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users)
        self.admins, self.readers = list(admins), list(readers)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen | None = None
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self._write_config(tls, max_queued)

    def _write_config(self, tls: bool, max_queued: int) -> None:
        d = self.dir
        pw = d / "passwd"
        pw.write_text("")
        # mosquitto_passwd -U hashes a whole "user:password" file in one call
        pw.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
        subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-U", str(pw)],
                       check=True, capture_output=True)
        (d / "acl").write_text(acl_text(self.admins, self.readers))
        (d / "data").mkdir(exist_ok=True)
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "")
        conf = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {pw}",
            f"acl_file {d / 'acl'}",
            "persistence true",
            f"persistence_location {d / 'data'}/",
            "autosave_interval 0",  # written on shutdown: a clean restart keeps every session
            f"max_queued_messages {max_queued}",
            "max_inflight_messages 100",
            f"log_dest file {d / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice",
            f"listener {self.port} 127.0.0.1",
        ]
        if user:
            conf.insert(0, f"user {user}")  # as root mosquitto would switch to user 'mosquitto'
        if tls:
            self.certs = make_ca(d / "tls")
            conf += [f"listener {self.tls_port} 127.0.0.1", f"cafile {self.certs['ca']}",
                     f"certfile {self.certs['cert']}", f"keyfile {self.certs['key']}", "tls_version tlsv1.2"]
        else:
            self.certs = {}
        self.conf = d / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    @property
    def ca_file(self) -> Path | None:
        return self.certs.get("ca")

    def url(self, user: str | None = None, tls: bool = False) -> str:
        """``mqtt://user:pass@127.0.0.1:port`` (``tls``: the mqtts listener with ``?ca=``)."""
        who = f"{user}:{self.users[user]}@" if user else ""
        if tls:
            return f"mqtts://{who}127.0.0.1:{self.tls_port}?ca={self.ca_file}"
        return f"mqtt://{who}127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> "LocalBroker":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = (self.dir / "mosquitto.log")
                tail = log.read_text()[-800:] if log.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err or tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stderr:
            p.stderr.close()

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same ports."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
