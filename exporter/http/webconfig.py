"""``--web.config.file``: TLS and basic auth in the Prometheus exporter-toolkit format.

    tls_server_config:
      cert_file: /etc/cryptoarb/tls.crt
      key_file: /etc/cryptoarb/tls.key
      # optional: client_auth_type (NoClientCert | RequireAndVerifyClientCert |
      #           VerifyClientCertIfGiven), client_ca_file, min_version (TLS12 | TLS13)
    basic_auth_users:
      prometheus: $2y$10$...   # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

Basic auth covers every path except ``/healthz``, ``/readyz`` (probes) and non-GET requests
(the alert webhook authenticates with its bearer token). Server side: :func:`load` ->
:meth:`WebConfigFile.server_ssl_context` and :meth:`WebConfigFile.middleware`. Client side
(``arb-exporter status`` and tests): :func:`client_settings` gives the scheme, an SSL context
trusting the configured certificate and the Authorization header to send.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter.config import ConfigError, Problem, read_yaml

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_TLS_KEYS = {
    "cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
    "max_version", "cipher_suites", "prefer_server_cipher_suites", "curve_preferences",
}  # fmt: skip
_CLIENT_AUTH = {"NoClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
                "RequireAndVerifyClientCert"}  # fmt: skip
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


@dataclass(frozen=True)
class TLSConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"


@dataclass
class WebConfigFile:
    source: str
    tls: TLSConfig | None = None
    users: dict[str, str] = field(default_factory=dict)  # user -> bcrypt hash
    # (user, sha256(password)) -> verified; bcrypt costs ~0.1 s, scrapes come every few s
    _verified: dict[tuple[str, bytes], bool] = field(default_factory=dict, repr=False)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def server_ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[self.tls.min_version]
        ctx.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
        if self.tls.client_auth_type != "NoClientCert":
            if self.tls.client_ca_file is not None:
                ctx.load_verify_locations(str(self.tls.client_ca_file))
            ctx.verify_mode = (
                ssl.CERT_REQUIRED
                if self.tls.client_auth_type.startswith("Require")
                else ssl.CERT_OPTIONAL
            )
        return ctx

    def requires_auth(self, request: web.Request) -> bool:
        if not self.users or request.path in EXEMPT_PATHS:
            return False
        return request.method in ("GET", "HEAD")

    async def check(self, header: str | None) -> bool:
        creds = decode_basic(header)
        if creds is None:
            return False
        login, password = creds
        hashed = self.users.get(login)
        if hashed is None:
            return False
        key = (login, hashlib.sha256(password.encode()).digest())
        cached = self._verified.get(key)
        if cached is None:
            cached = await asyncio.to_thread(_bcrypt_ok, password, hashed)
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified[key] = cached
        return cached

    def middleware(self) -> Any:
        @web.middleware
        async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.requires_auth(request) and not await self.check(
                request.headers.get("Authorization")
            ):
                return web.json_response(
                    {"error": "unauthorized", "status": 401, "path": request.path},
                    status=401,
                    headers={"WWW-Authenticate": 'Basic realm="cryptoarb"'},
                )
            return await handler(request)

        return basic_auth


def decode_basic(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` -> (user, password); None when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, sep, password = text.partition(":")
    return (login, password) if sep else None


def encode_basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii")


def _bcrypt_ok(password: str, hashed: str) -> bool:
    import bcrypt

    # Go's $2y$ is bcrypt's $2b$; the python package accepts $2a$/$2b$ (and $2y$ as well).
    candidate = hashed.encode()
    if candidate.startswith(b"$2y$"):
        candidate = b"$2b$" + candidate[4:]
    try:
        return bool(bcrypt.checkpw(password.encode(), candidate))
    except ValueError:
        return False


def _path(base: Path, value: Any, where: str, problems: list[Problem]) -> Path | None:
    if not isinstance(value, str) or not value:
        problems.append(Problem(where, "must be a file path"))
        return None
    p = Path(value)
    if not p.is_absolute():
        p = base / p  # relative to the web config file, like exporter-toolkit
    if not p.is_file():
        problems.append(Problem(where, f"cannot read {p}"))
        return None
    return p


def parse(data: Any, source: str = "<web config>", base: Path | None = None) -> WebConfigFile:
    base = base or Path.cwd()
    problems: list[Problem] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", "the top level must be a mapping")])
    for key in sorted(set(data) - _TOP_KEYS, key=str):
        problems.append(Problem(str(key), "unknown key"))
    result = WebConfigFile(source)

    tls = data.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict):
            problems.append(Problem("tls_server_config", "must be a mapping"))
        else:
            for key in sorted(set(tls) - _TLS_KEYS, key=str):
                problems.append(Problem(f"tls_server_config.{key}", "unknown key"))
            cert = _path(base, tls.get("cert_file"), "tls_server_config.cert_file", problems)
            key_file = _path(base, tls.get("key_file"), "tls_server_config.key_file", problems)
            auth_type = tls.get("client_auth_type", "NoClientCert")
            if auth_type not in _CLIENT_AUTH:
                problems.append(
                    Problem("tls_server_config.client_auth_type", f"one of {sorted(_CLIENT_AUTH)}")
                )
            ca = None
            if tls.get("client_ca_file") is not None:
                ca = _path(
                    base, tls["client_ca_file"], "tls_server_config.client_ca_file", problems
                )
            elif auth_type in ("RequireAndVerifyClientCert", "VerifyClientCertIfGiven"):
                problems.append(
                    Problem("tls_server_config.client_ca_file", f"needed by {auth_type}")
                )
            min_version = tls.get("min_version", "TLS12")
            if min_version not in _VERSIONS:
                problems.append(Problem("tls_server_config.min_version", "TLS12 or TLS13"))
            if cert and key_file and not problems:
                result.tls = TLSConfig(cert, key_file, str(auth_type), ca, str(min_version))

    users = data.get("basic_auth_users")
    if users is not None:
        if not isinstance(users, dict) or not users:
            problems.append(Problem("basic_auth_users", "must map user names to bcrypt hashes"))
        else:
            for user, hashed in users.items():
                if not isinstance(user, str) or not user or ":" in user:
                    problems.append(Problem(f"basic_auth_users.{user}", "bad user name"))
                elif not isinstance(hashed, str) or not hashed.startswith(_BCRYPT_PREFIXES):
                    # Never echo the value: it might be a password pasted by mistake.
                    problems.append(Problem(f"basic_auth_users.{user}", "not a bcrypt hash"))
                else:
                    result.users[user] = hashed

    if problems:
        raise ConfigError(source, problems)
    if result.tls is not None:
        try:
            result.server_ssl_context()
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(source, [Problem("tls_server_config", f"unusable: {err}")]) from err
    return result


def load(path: str | Path) -> WebConfigFile:
    p = Path(path)
    return parse(read_yaml(p), str(p), p.resolve().parent)


@dataclass(frozen=True)
class ClientSettings:
    scheme: str
    ssl: ssl.SSLContext | bool  # True: default verification (plain http ignores it)
    headers: dict[str, str]  # Authorization when basic auth is used

    def url(self, listen_address: str, path: str = "") -> str:
        host, _, port = listen_address.rpartition(":")
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"{self.scheme}://{host}:{port}{path}"


def client_settings(
    web_config: WebConfigFile | None,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | Path | None = None,
) -> ClientSettings:
    """How a client (``arb-exporter status``, tests) talks to an exporter using
    ``web_config``: https when TLS is on, trusting ``ca_file`` or else the server's own
    certificate (self-signed setups); basic auth when ``username`` is given. Use as
    ``session.get(settings.url(listen, "/metrics"), ssl=settings.ssl,
    headers=settings.headers)``."""
    headers = {"Authorization": encode_basic(username, password or "")} if username else {}
    if web_config is None or web_config.tls is None:
        return ClientSettings("http", True, headers)
    ctx = ssl.create_default_context(cafile=str(ca_file or web_config.tls.cert_file))
    return ClientSettings("https", ctx, headers)


def hash_password(password: str, rounds: int = 10) -> str:
    """A bcrypt hash for ``basic_auth_users`` (what ``htpasswd -nBC 10`` prints)."""
    import bcrypt

    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode())
