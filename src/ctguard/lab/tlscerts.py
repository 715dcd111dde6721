"""Throwaway TLS material for tests and the lab: a CA, a server certificate and a client certificate, made
with the `openssl` command (Debian package `openssl`), valid for two days, EC P-256 keys."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ctguard.errors import CommandFailed
from ctguard.runner import run

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certs:
    dir: str
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def _openssl(args: Sequence[str]) -> None:
    done = run(["openssl", *args], timeout=30, check=False)
    if done.returncode != 0:
        raise CommandFailed(f"openssl {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")


def _leaf(d: str, name: str, cn: str, ext: str) -> None:
    p = os.path.join(d, name)
    _openssl(["req", *_EC, "-keyout", f"{p}.key", "-out", f"{p}.csr", "-subj", f"/CN={cn}"])
    with open(f"{p}.ext", "w") as f:
        f.write(ext)
    ca = os.path.join(d, "ca")
    _openssl(["x509", "-req", "-in", f"{p}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
              "-out", f"{p}.crt", "-days", "2", "-extfile", f"{p}.ext"])


def make(d: str, server_sans: Sequence[str] = ("IP:127.0.0.1", "DNS:localhost"),
         client_sans: Sequence[str] = ("DNS:prometheus.test",)) -> Certs:
    os.makedirs(d, exist_ok=True)
    ca = os.path.join(d, "ca")
    _openssl(["req", "-x509", *_EC, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
              "-subj", "/CN=ctguard test CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _leaf(d, "server", "ctguard-exporter", f"subjectAltName={','.join(server_sans)}\n"
          "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    _leaf(d, "client", "prometheus", f"subjectAltName={','.join(client_sans)}\n"
          "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    p = [os.path.join(d, n) for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")]
    return Certs(d, *p)
