"""--web-config: the exporter-toolkit file format (good and bad files), TLS and basic auth on the test's own
loopback, the bcrypt cache, the admission policy, and the CLI's one-line refusal of a bad file."""

from __future__ import annotations

import base64
import http.client
import pathlib
import shutil
import ssl
import time
from collections.abc import Iterator

import bcrypt
import pytest
from click.testing import CliRunner

from ctguard.errors import BadInput
from ctguard.export import webconfig
from ctguard.export.collector import ConntrackCollector, build_registry
from ctguard.export.connections import Admission, Conn, admit, victim
from ctguard.export.readings import Reading
from ctguard.export.server import MetricsServer
from ctguard.kernel.netns import Netns
from ctguard.lab import tlscerts

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()  # cost 4: fast tests


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tlscerts.Certs:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (Debian package `openssl`): run `make setup`")
    return tlscerts.make(str(tmp_path_factory.mktemp("certs")))


def _write(tmp_path: pathlib.Path, text: str) -> str:
    p = tmp_path / "web.yml"
    p.write_text(text)
    return str(p)


def _serve(web: webconfig.WebConfig) -> MetricsServer:
    col = ConntrackCollector(Netns(), read=lambda: Reading(time.monotonic(), 5, 10, {"drop": 1}, "procfs"))
    srv = MetricsServer(build_registry(col), "127.0.0.1:0", None, web=web)
    srv.start()
    return srv


@pytest.fixture
def tls_auth_server(tmp_path: pathlib.Path, certs: tlscerts.Certs) -> Iterator[MetricsServer]:
    path = _write(tmp_path, f"""
tls_server_config:
  cert_file: {certs.server_cert}
  key_file: {certs.server_key}
http_server_config:
  headers:
    X-Frame-Options: deny
basic_auth_users:
  prometheus: {HASH}
""")
    srv = _serve(webconfig.load(path))
    try:
        yield srv
    finally:
        srv.stop()


def _basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_tls_and_basic_auth_right_and_wrong(tls_auth_server: MetricsServer, certs: tlscerts.Certs) -> None:
    srv = tls_auth_server
    assert srv.url.startswith("https://127.0.0.1:")
    ctx = ssl.create_default_context(cafile=certs.ca)
    c = http.client.HTTPSConnection(*srv.address, context=ctx, timeout=5)
    for _ in range(3):  # keep-alive through TLS; the right password
        c.request("GET", "/metrics", headers={"Authorization": _basic("prometheus", "s3cret")})
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and b"ctguard_conntrack_entries 5.0" in body
        assert r.headers["X-Frame-Options"] == "deny"
    for hdr in (_basic("prometheus", "wrong"), _basic("nobody", "s3cret"), "Bearer x", "Basic !!!"):
        c.request("GET", "/metrics", headers={"Authorization": hdr})
        r = c.getresponse()
        assert r.status == 401 and r.read() == b"unauthorized\n"
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    c.request("GET", "/metrics")  # no credentials
    r = c.getresponse()
    assert r.status == 401
    r.read()
    c.close()
    st = srv.stats
    assert st["connections"] == 1 and st["unauthorized"] == 5
    # bcrypt ran once per distinct (user, password): the right one once for three scrapes.
    assert srv._httpd.auth is not None and srv._httpd.auth.bcrypt_runs == 3
    # Plain HTTP to the TLS port gets no metrics.
    plain = http.client.HTTPConnection(*srv.address, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/metrics")
        plain.getresponse().read()
    plain.close()


def test_a_client_that_does_not_trust_the_certificate_is_refused_quietly(
        tls_auth_server: MetricsServer, capfd: pytest.CaptureFixture[str]) -> None:
    c = http.client.HTTPSConnection(*tls_auth_server.address, context=ssl.create_default_context(), timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        c.request("GET", "/metrics")
    c.close()
    deadline = time.monotonic() + 5
    while tls_auth_server.stats["tls_failed"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tls_auth_server.stats["tls_failed"] == 1
    assert "Traceback" not in "".join(capfd.readouterr())


def test_client_certificates_and_allowed_sans(tmp_path: pathlib.Path, certs: tlscerts.Certs) -> None:
    def server(sans: str) -> MetricsServer:
        return _serve(webconfig.load(_write(tmp_path, f"""
tls_server_config:
  cert_file: {certs.server_cert}
  key_file: {certs.server_key}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {certs.ca}
  client_allowed_sans: [{sans}]
""")))

    def get(srv: MetricsServer, with_cert: bool) -> int:
        ctx = ssl.create_default_context(cafile=certs.ca)
        if with_cert:
            ctx.load_cert_chain(certs.client_cert, certs.client_key)
        c = http.client.HTTPSConnection(*srv.address, context=ctx, timeout=5)
        try:
            c.request("GET", "/metrics")
            return c.getresponse().status
        except (OSError, http.client.HTTPException):
            return 0
        finally:
            c.close()

    srv = server("prometheus.test")
    try:
        assert get(srv, True) == 200
        assert get(srv, False) == 0  # no certificate: no answer
    finally:
        srv.stop()
    srv = server("someone.else")
    try:
        assert get(srv, True) == 0
    finally:
        srv.stop()


def test_relative_paths_inline_pem_and_an_auth_only_file(tmp_path: pathlib.Path, certs: tlscerts.Certs) -> None:
    shutil.copy(certs.server_cert, tmp_path / "s.crt")
    key = pathlib.Path(certs.server_key).read_text()
    cfg = webconfig.load(_write(tmp_path, "tls_server_config:\n  cert_file: s.crt\n  key: |\n"
                                + "".join(f"    {line}\n" for line in key.splitlines())))
    assert cfg.tls is not None and cfg.tls.cert_file == str(tmp_path / "s.crt") and cfg.tls.key_pem
    auth_only = webconfig.load(_write(tmp_path, f"basic_auth_users:\n  a: {HASH}\n"))
    assert auth_only.tls is None and dict(auth_only.users) == {"a": HASH}
    srv = _serve(auth_only)
    try:
        assert srv.url.startswith("http://")
        c = http.client.HTTPConnection(*srv.address, timeout=5)
        c.request("GET", "/metrics", headers={"Authorization": _basic("a", "s3cret")})
        assert c.getresponse().status == 200
        c.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("text,why", [
    ("tls_server_config:\n  cert_file: x\n  nope: 1\n", "unknown field 'nope'"),
    ("bogus: 1\n", "unknown field 'bogus'"),
    ("tls_server_config:\n  key_file: k\n", "missing one of cert or cert_file"),
    ("tls_server_config:\n  cert_file: c\n", "missing one of key or key_file"),
    ("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n", "cannot load"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Maybe\n", "invalid client_auth_type"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAnyClientCert\n",
     "without verifying"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n", "without a Client Auth Policy"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: VerifyClientCertIfGiven\n"
     "  client_ca_file: ca\n  client_allowed_sans: [x]\n", "client_allowed_sans requires"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS14\n", "unknown TLS version"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_NOPE]\n", "unknown cipher"),
    ("tls_server_config:\n  cert_file: c\n  key_file: k\n  curve_preferences: [CurveP999]\n", "unknown curve"),
    ("basic_auth_users:\n  alice: plaintext\n", "not a bcrypt hash"),
    ("http_server_config:\n  headers:\n    X-Powered-By: me\n", "can not be configured"),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "invalid value for X-Frame-Options"),
    ("rate_limit:\n  interval: 1x\n  burst: 2\n", "bad duration"),
    ("rate_limit:\n  interval: 1s\n", "burst must be"),
    ("tls_server_config: [\n", "not YAML"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_bad_files_are_refused_with_one_line(tmp_path: pathlib.Path, text: str, why: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(BadInput) as e:
        webconfig.load(path)
    assert why in e.value.message and e.value.message.startswith(f"bad --web-config {path}: ")
    assert "\n" not in e.value.message


def test_good_tls_options(tmp_path: pathlib.Path, certs: tlscerts.Certs) -> None:
    cfg = webconfig.load(_write(tmp_path, f"""
tls_server_config:
  cert_file: {certs.server_cert}
  key_file: {certs.server_key}
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519]
http_server_config:
  http2: true
rate_limit:
  interval: 500ms
  burst: 3
"""))
    assert cfg.tls is not None and cfg.tls.min_version == ssl.TLSVersion.TLSv1_3
    assert cfg.tls.ciphers == ("ECDHE-ECDSA-AES128-GCM-SHA256",) and cfg.tls.curve == "X25519"
    assert cfg.rate_interval == 0.5 and cfg.rate_burst == 3


def test_parse_duration() -> None:
    assert webconfig.parse_duration("1m30s") == 90 and webconfig.parse_duration("0") == 0
    for bad in ("", "1", "s", "1d", "1s x"):
        with pytest.raises(ValueError):
            webconfig.parse_duration(bad)


def test_basic_auth_cache_and_decoy() -> None:
    calls: list[bytes] = []

    def check(pw: bytes, h: bytes) -> bool:
        calls.append(h)
        return pw == b"right"

    a = webconfig.BasicAuth({"u": HASH}, cache_size=2, check=check)
    assert a.verify(_basic("u", "right")) and a.verify(_basic("u", "right"))
    assert calls == [HASH.encode()]  # cached: bcrypt once
    assert not a.verify(_basic("ghost", "right"))  # unknown user: checked against the decoy, still refused
    assert calls[-1] == webconfig._DECOY.encode()
    assert not a.verify(_basic("u", "wrong")) and not a.verify(_basic("u", "wrong"))
    assert len(calls) == 3  # a wrong password is cached too
    assert not a.verify(None) and not a.verify("Basic " + base64.b64encode(b"nocolon").decode())
    # The real bcrypt: a real hash, right and wrong, and a password over bcrypt's 72 bytes is just wrong.
    real = webconfig.BasicAuth({"u": HASH})
    assert real.verify(_basic("u", "s3cret")) and not real.verify(_basic("u", "s3creT"))
    assert not real.verify(_basic("u", "x" * 100))


def test_rate_limit_token_bucket() -> None:
    now = [0.0]
    rl = webconfig.RateLimit(1.0, 2, clock=lambda: now[0])
    assert rl.allow() and rl.allow() and not rl.allow()
    now[0] = 1.0
    assert rl.allow() and not rl.allow()


def _c(source: str, last: float, busy: bool = False, proven: bool = False) -> Conn:
    return Conn(source, 0.0, last, busy=busy, proven=proven)


def test_admission_policy() -> None:
    a, b, c = _c("x", 1.0, proven=True), _c("y", 5.0), _c("y", 3.0, busy=True)
    assert victim([a, b, c]) is b  # never-proven before proven, busy never
    assert victim([a, c]) is a
    assert victim([c]) is None
    assert admit([a, b], "z", 3, 2) == Admission(True, None, "")
    assert admit([a, b, c], "z", 3, 2) == Admission(True, b, "cap")
    assert admit([b, c], "y", 10, 2) == Admission(True, b, "source_cap")  # its own, not a
    assert admit([c, _c("y", 0, busy=True)], "y", 10, 2) == Admission(False, None, "source_cap")


def test_cli_refuses_a_bad_web_config_with_one_line(tmp_path: pathlib.Path) -> None:
    from ctguard.cli import cli

    path = _write(tmp_path, "basic_auth_users:\n  alice: plaintext\n")
    r = CliRunner().invoke(cli, ["exporter", "--web-config", path, "--listen", "127.0.0.1:0"])
    assert r.exit_code == 3
    err = r.stderr if hasattr(r, "stderr") else r.output
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "not a bcrypt hash" in lines[0] and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["exporter", "--web-config", str(tmp_path / "missing.yml")])
    assert r.exit_code == 3


def test_the_default_listen_address_is_loopback() -> None:
    from ctguard.cli import cli

    r = CliRunner().invoke(cli, ["exporter", "--help"])
    text = " ".join(r.output.split())
    assert "HOST:PORT to listen on. [default: 127.0.0.1:9477]" in text and "--web-config FILE" in text


def test_certificate_rotation_reloads_and_a_broken_one_keeps_the_old(tmp_path: pathlib.Path,
                                                                     certs: tlscerts.Certs) -> None:
    crt, key = tmp_path / "s.crt", tmp_path / "s.key"
    shutil.copy(certs.server_cert, crt)
    shutil.copy(certs.server_key, key)
    cfg = webconfig.load(_write(tmp_path, "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n"))
    assert cfg.tls is not None
    errors: list[str] = []
    holder = webconfig.TLSContexts(cfg.tls, cfg.path, on_error=errors.append)
    first = holder.get()
    assert holder.get() is first  # unchanged files: the same context, no reload
    crt.write_text("not a certificate\n")
    assert holder.get() is first and len(errors) == 1 and "still serving the previous certificate" in errors[0]
    assert holder.get() is first and len(errors) == 1  # the same broken file is reported once
    other = tlscerts.make(str(tmp_path / "new"))
    shutil.copy(other.server_cert, crt)
    shutil.copy(other.server_key, key)
    assert holder.get() is not first and len(errors) == 1
