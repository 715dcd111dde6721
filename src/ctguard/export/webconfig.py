"""`--web-config FILE`: TLS and basic auth in the Prometheus exporter-toolkit's web config format.

node_exporter and the other exporters built on prometheus/exporter-toolkit read one YAML file (docs:
exporter-toolkit docs/web-configuration.md; rules: web/tls_config.go and web/handler.go):

    tls_server_config: {cert_file, key_file | cert, key, client_auth_type, client_ca_file | client_ca,
                        client_allowed_sans, min_version, max_version, cipher_suites,
                        prefer_server_cipher_suites, curve_preferences}
    http_server_config: {http2, headers}
    basic_auth_users: {user: bcrypt hash}
    rate_limit: {interval, burst}

ctguard reads the same file with the same strictness: unknown keys, unknown enum values, a client CA without a
client auth policy, SANs without a required client certificate and hashes that are not bcrypt are all refused
at start with one line. Relative file names are relative to the config file's directory, as in the toolkit.
Differences, each refused with a line that says so instead of being silently ignored: Python's ssl cannot
request a client certificate without verifying it, so `RequestClientCert` and `RequireAnyClientCert` are not
available; it sets one ECDH curve, so `curve_preferences` takes one entry. `http2: true` (the default) is
accepted and the server speaks HTTP/1.1, which Prometheus negotiates through ALPN.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ctguard.errors import BadInput

# Go's crypto/tls names (tls.CipherSuites(): the secure list the toolkit accepts) -> OpenSSL's names.
# TLS 1.3 suites are accepted and, as in Go, not configurable.
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"": ssl.CERT_NONE, "NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Toolkit values Python's ssl cannot honour (they accept a certificate without verifying it).
CLIENT_AUTH_UNSUPPORTED = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# web/handler.go extraHTTPHeaders: the only headers that may be set, some with fixed values.
EXTRA_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (), "Content-Security-Policy": (),
}
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
_TLS_KEYS = {"cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
             "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
             "curve_preferences"}
_BCRYPT = re.compile(r"^\$2[aby]?\$(\d\d)\$[./A-Za-z0-9]{53}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


@dataclass(frozen=True)
class TLSSettings:
    cert_file: str | None = None
    key_file: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    client_ca_file: str | None = None
    client_ca_pem: str | None = None
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    client_allowed_sans: tuple[str, ...] = ()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: tuple[str, ...] = ()
    prefer_server_ciphers: bool = True
    curve: str | None = None

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclass(frozen=True)
class WebConfig:
    path: str
    tls: TLSSettings | None = None
    users: Mapping[str, str] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)
    rate_interval: float = 0.0  # seconds between requests (token bucket); 0 = no limit
    rate_burst: int = 0


def _bad(path: str, why: str) -> BadInput:
    return BadInput(f"bad --web-config {path}: {why}")


def _mapping(path: str, v: object, where: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise _bad(path, f"{where} must be a mapping")
    return v


def _strict(path: str, d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise _bad(path, f"unknown field {unknown[0]!r} in {where}")


def _str(path: str, d: Mapping[str, Any], key: str) -> str:
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _bad(path, f"{key} must be a string")
    return v


def _str_list(path: str, d: Mapping[str, Any], key: str) -> tuple[str, ...]:
    v = d.get(key)
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(path, f"{key} must be a list of strings")
    return tuple(v)


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for the units a rate limit uses: '1s', '500ms', '1m30s', '0'."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"bad duration {text!r} (e.g. 1s, 500ms)")
    return total


def _tls(path: str, raw: Mapping[str, Any]) -> TLSSettings | None:
    _strict(path, raw, _TLS_KEYS, "tls_server_config")
    base = os.path.dirname(os.path.abspath(path))

    def file(key: str) -> str | None:
        v = _str(path, raw, key)
        return os.path.join(base, v) if v else None

    cert_file, key_file, ca_file = file("cert_file"), file("key_file"), file("client_ca_file")
    cert, key, ca = _str(path, raw, "cert"), _str(path, raw, "key"), _str(path, raw, "client_ca")
    auth_name = _str(path, raw, "client_auth_type")
    if not (cert_file or key_file or ca_file or cert or key or ca or auth_name):
        return None  # the toolkit's errNoTLSConfig: plain HTTP (e.g. a file with only basic_auth_users)
    if not (cert_file or cert):
        raise _bad(path, "tls_server_config: missing one of cert or cert_file")
    if not (key_file or key):
        raise _bad(path, "tls_server_config: missing one of key or key_file")
    if (cert and cert_file) or (key and key_file) or (ca and ca_file):
        raise _bad(path, "tls_server_config: give a certificate, key or client CA inline or as a file, not both")
    if auth_name in CLIENT_AUTH_UNSUPPORTED:
        raise _bad(path, f"client_auth_type {auth_name} accepts a client certificate without verifying it, which "
                         "ctguard does not support: use RequireAndVerifyClientCert (or VerifyClientCertIfGiven)")
    if auth_name not in CLIENT_AUTH:
        raise _bad(path, f"invalid client_auth_type {auth_name!r} (NoClientCert, VerifyClientCertIfGiven, "
                         "RequireAndVerifyClientCert)")
    client_auth = CLIENT_AUTH[auth_name]
    if (ca or ca_file) and client_auth == ssl.CERT_NONE:
        raise _bad(path, "client CA's have been configured without a Client Auth Policy (client_auth_type)")
    if client_auth != ssl.CERT_NONE and not (ca or ca_file):
        raise _bad(path, f"client_auth_type {auth_name} needs client_ca_file (or client_ca) to verify against")
    sans = _str_list(path, raw, "client_allowed_sans")
    if "client_allowed_sans" in raw and client_auth != ssl.CERT_REQUIRED:
        raise _bad(path, "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert")

    def version(key: str, default: str) -> ssl.TLSVersion:
        name = _str(path, raw, key) or default
        if name not in TLS_VERSIONS:
            raise _bad(path, f"unknown TLS version: {name} ({key}: one of {', '.join(TLS_VERSIONS)})")
        return TLS_VERSIONS[name]

    lo, hi = version("min_version", "TLS12"), version("max_version", "TLS13")
    if lo > hi:
        raise _bad(path, "min_version is above max_version")
    ciphers: list[str] = []
    for name in _str_list(path, raw, "cipher_suites"):
        if name not in CIPHER_SUITES:
            raise _bad(path, f"unknown cipher: {name}")
        ossl = CIPHER_SUITES[name]
        if ossl:
            ciphers.append(ossl)
    curves = _str_list(path, raw, "curve_preferences")
    for c in curves:
        if c not in CURVES:
            raise _bad(path, f"unknown curve: {c}")
    if len(curves) > 1:
        raise _bad(path, "curve_preferences: ctguard (Python's ssl) sets one curve; give one")
    prefer = raw.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise _bad(path, "prefer_server_cipher_suites must be true or false")
    return TLSSettings(cert_file=cert_file, key_file=key_file, cert_pem=cert or None, key_pem=key or None,
                       client_ca_file=ca_file, client_ca_pem=ca or None, client_auth=client_auth,
                       client_allowed_sans=sans, min_version=lo, max_version=hi, ciphers=tuple(ciphers),
                       prefer_server_ciphers=prefer, curve=CURVES[curves[0]] if curves else None)


def load(path: str) -> WebConfig:
    """Read and check the whole file, including the certificates (an SSL context is built once here), so a
    bad config fails at start with one line, never at the first scrape."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise _bad(path, e.strerror or str(e)) from e
    except yaml.YAMLError as e:
        raise _bad(path, f"not YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    top = _mapping(path, doc, "the file")
    _strict(path, top, _TOP_KEYS, "the file")
    tls = _tls(path, _mapping(path, top.get("tls_server_config"), "tls_server_config"))
    http = _mapping(path, top.get("http_server_config"), "http_server_config")
    _strict(path, http, {"http2", "headers"}, "http_server_config")
    if not isinstance(http.get("http2", True), bool):
        raise _bad(path, "http2 must be true or false")
    headers = _mapping(path, http.get("headers"), "headers")
    for k, v in headers.items():
        if k not in EXTRA_HEADERS:
            raise _bad(path, f"HTTP header {k!r} can not be configured")
        if not isinstance(v, str) or "\r" in v or "\n" in v:
            raise _bad(path, f"header {k} must be a one-line string")
        if EXTRA_HEADERS[k] and v not in EXTRA_HEADERS[k]:
            raise _bad(path, f"invalid value for {k}: expected one of {list(EXTRA_HEADERS[k])}, got {v!r}")
    users = _mapping(path, top.get("basic_auth_users"), "basic_auth_users")
    for user, h in users.items():
        m = _BCRYPT.match(h) if isinstance(h, str) else None
        if m is None or not 4 <= int(m.group(1)) <= 31:
            raise _bad(path, f"the password of basic_auth_users {user!r} is not a bcrypt hash "
                             "(make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)")
        if ":" in user:
            raise _bad(path, f"basic_auth_users {user!r}: a user name cannot contain ':'")
    if users:
        _bcrypt()  # the dependency, checked at start
    rate = _mapping(path, top.get("rate_limit"), "rate_limit")
    _strict(path, rate, {"interval", "burst"}, "rate_limit")
    try:
        interval = parse_duration(str(rate.get("interval", "0")))
    except ValueError as e:
        raise _bad(path, f"rate_limit: {e}") from e
    burst = rate.get("burst", 0)
    if not isinstance(burst, int) or burst < 0 or (interval > 0 and burst < 1):
        raise _bad(path, "rate_limit: burst must be an integer >= 1")
    cfg = WebConfig(path=path, tls=tls, users=dict(users), headers=dict(headers), rate_interval=interval,
                    rate_burst=burst)
    if tls is not None:
        ssl_context(tls, path)
    return cfg


# -- TLS ----------------------------------------------------------------------------------------------------------

def _pem_path(pem: str) -> tuple[int, str]:
    """An inline PEM as a path ssl can load, without writing it to disk (memfd)."""
    fd = os.memfd_create("ctguard-pem", os.MFD_CLOEXEC)
    os.write(fd, pem.encode())
    return fd, f"/proc/self/fd/{fd}"


def ssl_context(t: TLSSettings, path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fds: list[int] = []
    try:
        try:
            ctx.minimum_version, ctx.maximum_version = t.min_version, t.max_version
        except ValueError as e:  # the local OpenSSL was built without that version
            raise _bad(path, f"TLS version not available here: {e}") from e
        cert, key = t.cert_file, t.key_file
        if t.cert_pem:
            fd, cert = _pem_path(t.cert_pem)
            fds.append(fd)
        if t.key_pem:
            fd, key = _pem_path(t.key_pem)
            fds.append(fd)
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as e:
            raise _bad(path, f"cannot load the certificate and key ({t.cert_file or 'cert'}, "
                             f"{t.key_file or 'key'}): {getattr(e, 'strerror', None) or e}") from e
        if t.client_auth != ssl.CERT_NONE:
            try:
                if t.client_ca_file:
                    ctx.load_verify_locations(cafile=t.client_ca_file)
                else:
                    ctx.load_verify_locations(cadata=t.client_ca_pem)
            except (OSError, ssl.SSLError, ValueError) as e:
                raise _bad(path, f"cannot load the client CA {t.client_ca_file or '(inline)'}: "
                                 f"{getattr(e, 'strerror', None) or e}") from e
            ctx.verify_mode = t.client_auth
        if t.ciphers:
            try:
                ctx.set_ciphers(":".join(t.ciphers))
            except ssl.SSLError as e:
                raise _bad(path, f"cipher_suites not available here: {e}") from e
        if t.prefer_server_ciphers:
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if t.curve:
            ctx.set_ecdh_curve(t.curve)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx
    finally:
        for fd in fds:
            os.close(fd)


def peer_sans(cert: Mapping[str, Any] | None) -> list[str]:
    """SAN values of a verified peer certificate (DNS, IP, e-mail, URI), as the toolkit matches them."""
    out: list[str] = []
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind in ("DNS", "IP Address", "email", "URI"):
            out.append(str(value).rstrip("\n"))
    return out


class TLSContexts:
    """The SSL context, rebuilt when a certificate, key or CA file changes (the toolkit re-reads them on every
    connection, so certificate rotation needs no restart). A rotation that fails keeps the previous context."""

    def __init__(self, t: TLSSettings, path: str, on_error: Callable[[str], None] | None = None) -> None:
        self.settings, self.path, self._on_error = t, path, on_error
        self._sig = self._signature()
        self._ctx = ssl_context(t, path)
        self._lock = threading.Lock()
        self._failed_sig: tuple[tuple[float, int], ...] | None = None

    def _signature(self) -> tuple[tuple[float, int], ...]:
        out = []
        for f in self.settings.files():
            try:
                st = os.stat(f)
                out.append((st.st_mtime, st.st_size))
            except OSError:
                out.append((-1.0, -1))
        return tuple(out)

    def get(self) -> ssl.SSLContext:
        sig = self._signature()
        if sig == self._sig or sig == self._failed_sig:
            return self._ctx
        with self._lock:
            if sig != self._sig:
                try:
                    self._ctx = ssl_context(self.settings, self.path)
                    self._sig = sig
                except BadInput as e:
                    self._failed_sig = sig
                    if self._on_error is not None:
                        self._on_error(f"{e.message}; still serving the previous certificate")
        return self._ctx


# -- basic auth ---------------------------------------------------------------------------------------------------

def _bcrypt() -> Any:
    try:
        import bcrypt
    except ImportError as e:
        raise BadInput("basic_auth_users needs the Python package bcrypt (pip install bcrypt, or Debian's "
                       "python3-bcrypt)") from e
    return bcrypt


# A bcrypt hash (cost 10) to check unknown users against, so a wrong user name costs as much as a wrong
# password and user names cannot be told apart by timing (as the toolkit does).
_DECOY = "$2b$10$BSqzvTpqMyfSkjdRlMC8F.W0mSsrpjbn3FgOWyOsnamN5wJceRvOC"


class BasicAuth:
    """Check `Authorization: Basic ...` against bcrypt hashes. Results are cached by a SHA-256 of
    (user, hash, password), so a scraper pays bcrypt's cost (~60 ms at cost 10) once, not every scrape;
    bcrypt runs one at a time so wrong guesses cannot take more than one core."""

    def __init__(self, users: Mapping[str, str], cache_size: int = 256,
                 check: Callable[[bytes, bytes], bool] | None = None) -> None:
        self.users = dict(users)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()
        self.bcrypt_runs = 0
        if check is None:
            mod = _bcrypt()

            def check(pw: bytes, h: bytes) -> bool:
                try:
                    return bool(mod.checkpw(pw, h))
                except ValueError:  # bcrypt >= 5 refuses passwords over 72 bytes: not a match
                    return False
        self._check = check

    def verify(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, b64 = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user_b, sep, pw = base64.b64decode(b64.strip(), validate=True).partition(b":")
            user = user_b.decode()
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        known = user in self.users
        h = (self.users[user] if known else _DECOY).encode()
        key = hashlib.sha256(b"\0".join((user_b, h, pw))).digest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit and known
        with self._bcrypt_lock:
            self.bcrypt_runs += 1
            ok = self._check(pw, h) and known
        with self._lock:
            self._cache[key] = ok
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return ok


class RateLimit:
    """The toolkit's rate_limit: a token bucket of `burst` requests refilled one per `interval`."""

    def __init__(self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.burst, self._clock = interval, burst, clock
        self._tokens = float(burst)
        self._t = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._t) / self.interval)
            self._t = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False
