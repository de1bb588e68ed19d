"""Security: web-config file (TLS + basic auth, exporter-toolkit format), `arb-exporter status`
through it, Redis password and TLS in the URL, no secret in logs or /metrics, and an HTTP
surface that nothing crashes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import yaml

from exporter.app import Exporter
from exporter.cli.status import PASSWORD_ENV
from exporter.config import ConfigError
from exporter.devstack.procs import free_port
from exporter.http.webconfig import WebConfigFile, client_settings, hash_password
from exporter.http.webconfig import load as load_web_config
from exporter.http.webconfig import parse as parse_web_config
from tests.support.exporter import (
    ROOT,
    all_live,
    running_exporter,
    sim_config,
    sim_config_data,
    wait_for,
)
from tests.support.redis_server import RedisServer, ServerTLS
from tests.support.simulator import SimulatorHarness
from tests.support.tls import make_ca, self_signed

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Pa55word!"


@pytest.fixture(scope="module")
def web_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("webcfg")
    self_signed(d)
    path = d / "web.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"},
                "basic_auth_users": {"prometheus": hash_password(PASSWORD, rounds=4)},
            }
        )
    )
    return path


def dead_exchange_config(**kw: Any) -> Any:
    """Exchanges on a dead port: feeds retry forever, the HTTP server is what is tested."""
    return sim_config(f"http://127.0.0.1:{free_port()}", **kw)


@pytest.fixture
async def secured(web_config_file: Path) -> AsyncIterator[tuple[Exporter, WebConfigFile]]:
    web = load_web_config(web_config_file)
    async with running_exporter(dead_exchange_config(), web) as exp:
        yield exp, web


async def get(url: str, **kw: Any) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_tls_and_basic_auth_cover_metrics_and_api(
    secured: tuple[Exporter, WebConfigFile],
) -> None:
    exp, web = secured
    listen = f"127.0.0.1:{exp.server.bound_port}"
    good = client_settings(web, "prometheus", PASSWORD)
    status, _, body = await get(good.url(listen, "/metrics"), ssl=good.ssl, headers=good.headers)
    assert status == 200 and "cryptoarb_feed_up" in body
    assert good.url(listen).startswith("https://")

    anon = client_settings(web)
    status, headers, _ = await get(anon.url(listen, "/metrics"), ssl=anon.ssl)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    bad = client_settings(web, "prometheus", "wrong")
    assert (await get(bad.url(listen, "/metrics"), ssl=bad.ssl, headers=bad.headers))[0] == 401
    nobody = client_settings(web, "nobody", PASSWORD)
    assert (await get(nobody.url(listen, "/metrics"), ssl=nobody.ssl, headers=nobody.headers))[
        0
    ] == 401
    # GET /api/* is covered too (401 before any routing)...
    assert (await get(anon.url(listen, "/api/opportunities"), ssl=anon.ssl))[0] == 401
    # ...probes and the (bearer-token) webhook are exempt from basic auth.
    assert (await get(anon.url(listen, "/healthz"), ssl=anon.ssl))[0] == 200
    assert (await get(anon.url(listen, "/readyz"), ssl=anon.ssl))[0] == 503
    async with (
        aiohttp.ClientSession() as session,
        session.post(anon.url(listen, "/api/alerts"), ssl=anon.ssl, json={}) as resp,
    ):
        assert resp.status != 401

    # Plain http to the TLS port does not get an answer; untrusted certificates are refused.
    with pytest.raises(aiohttp.ClientError):
        await get(f"http://{listen}/healthz", timeout=aiohttp.ClientTimeout(total=3))
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(f"https://{listen}/healthz", ssl=ssl.create_default_context())


async def test_password_never_in_metrics_or_logs(
    secured: tuple[Exporter, WebConfigFile], caplog: pytest.LogCaptureFixture
) -> None:
    exp, web = secured
    caplog.set_level(logging.DEBUG)
    listen = f"127.0.0.1:{exp.server.bound_port}"
    s = client_settings(web, "prometheus", PASSWORD)
    body = (await get(s.url(listen, "/metrics"), ssl=s.ssl, headers=s.headers))[2]
    bad = client_settings(web, "prometheus", PASSWORD + "x")
    await get(bad.url(listen, "/metrics"), ssl=bad.ssl, headers=bad.headers)
    assert PASSWORD not in body and PASSWORD not in caplog.text
    assert "$2b$" not in body and "$2b$" not in caplog.text


async def run_status(*args: str, **env: str) -> tuple[int, str, str]:
    """``arb-exporter status ARGS`` as a subprocess: (exit code, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter.cli.main", "status", *args,
        cwd=ROOT, env={**environ, "COLUMNS": "200", "TERM": "dumb", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_over_tls_and_basic_auth(
    secured: tuple[Exporter, WebConfigFile], web_config_file: Path, tmp_path: Path
) -> None:
    exp, _web = secured
    config = tmp_path / "config.yaml"
    data = sim_config_data("http://127.0.0.1:1")
    data["web"]["listen_address"] = f"127.0.0.1:{exp.server.bound_port}"
    config.write_text(yaml.safe_dump(data))
    password_file, wrong_file = tmp_path / "password", tmp_path / "wrong"
    password_file.write_text(PASSWORD + "\n")
    wrong_file.write_text("wrong\n")
    web = ["--config.file", str(config), "--web.config.file", str(web_config_file)]

    # https (scheme and trust from the web config, or --url and --web.ca-file), password from
    # a file or the environment
    https_url = f"https://127.0.0.1:{exp.server.bound_port}"
    user = ["--web.user", "prometheus"]
    good: list[tuple[list[str], dict[str, str]]] = [
        ([*web, *user, "--web.password-file", str(password_file)], {}),
        ([*web, *user], {PASSWORD_ENV: PASSWORD}),
        (["--url", https_url, "--web.ca-file", str(web_config_file.parent / "tls.crt"), *user],
         {PASSWORD_ENV: PASSWORD}),
    ]  # fmt: skip
    results = await asyncio.gather(*(run_status(*args, **env) for args, env in good))
    for code, out, err in results:
        assert code == 0, err
        assert f"Feeds — https://127.0.0.1:{exp.server.bound_port}" in out
        for title in ("Best opportunities", "Latency audit", "Latest windows"):
            assert title in out
        assert "binance" in out and "BTC/USDT" in out

    # Failures: exit 1 and one readable line on stderr, never the password.
    other_ca = make_ca(tmp_path, "other-ca")
    failures = [
        ([*web, "--web.user", "prometheus", "--web.password-file", str(wrong_file)], "HTTP 401"),
        ([*web], "HTTP 401"),  # no credentials
        (["--url", https_url, "--web.user", "prometheus", "--web.password-file",
          str(password_file)], "CERTIFICATE_VERIFY_FAILED"),  # system trust store only
        (["--url", https_url, "--web.ca-file", str(other_ca.cert_file), "--web.user",
          "prometheus", "--web.password-file", str(password_file)], "CERTIFICATE_VERIFY_FAILED"),
        (["--config.file", str(config)], "not reachable"),  # plain http to the TLS port
    ]  # fmt: skip
    results = await asyncio.gather(*(run_status(*args) for args, _ in failures))
    for (args, expected), (code, out, err) in zip(failures, results, strict=True):
        assert code == 1 and out == "", (args, out, err)
        assert err.count("\n") == 1 and err.startswith("status: ") and expected in err, err
        assert "Traceback" not in err and PASSWORD not in err
    assert "--web.user" in results[1][2]  # the 401 line says what to check

    # Usage errors (exit 2): a user without a password source, a password file without a user
    # or that cannot be read.
    usage = await asyncio.gather(
        run_status(*web, *user),
        run_status(*web, "--web.password-file", str(password_file)),
        run_status(*web, *user, "--web.password-file", str(tmp_path / "missing")),
    )
    assert [code for code, _, _ in usage] == [2, 2, 2], usage
    assert "cannot read file" in usage[2][2]


def test_web_config_validation_reports_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_web_config(
            {
                "tls_server_config": {
                    "cert_file": "missing.crt",
                    "bogus": 1,
                    "client_auth_type": "Sometimes",
                },
                "basic_auth_users": {"alice": "plaintext-password"},
                "extra": True,
            },
            "web.yml",
            tmp_path,
        )
    text = str(err.value)
    for path in ("extra", "tls_server_config.bogus", "tls_server_config.cert_file",
                 "tls_server_config.key_file", "tls_server_config.client_auth_type",
                 "basic_auth_users.alice"):  # fmt: skip
        assert f"{path}:" in text, (path, text)
    assert "plaintext-password" not in text, "a pasted password must not be echoed"
    # An empty file is valid and changes nothing.
    empty = parse_web_config(None, "web.yml", tmp_path)
    assert empty.tls is None and not empty.users and empty.server_ssl_context() is None


def test_cli_run_exits_2_on_a_bad_web_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(sim_config_data("http://127.0.0.1:1")))
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {alice: nope}\n")
    res = subprocess.run(
        [sys.executable, "-m", "exporter.cli.main", "run", "--config.file", str(cfg),
         "--web.config.file", str(web)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "basic_auth_users.alice: not a bcrypt hash" in res.stderr


# -- Redis password ---------------------------------------------------------------------------


async def test_redis_password_in_the_url_and_never_logged(
    redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = redis_server_factory(extra_args=["--requirepass", PASSWORD])
    assert server.command("PING").startswith(b"-NOAUTH")
    caplog.set_level(logging.DEBUG)
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    async with running_exporter(dead_exchange_config(redis_url=url)) as exp:
        await wait_for(lambda: exp.writer.up, timeout=10, what="authenticated redis up")
        metrics = (await get(f"http://127.0.0.1:{exp.server.bound_port}/metrics"))[2]
        assert "cryptoarb_redis_up 1.0" in metrics
    wrong = f"redis://:{PASSWORD}-wrong@127.0.0.1:{server.port}/0"
    async with running_exporter(dead_exchange_config(redis_url=wrong)) as exp:
        await asyncio.sleep(1.5)
        assert not exp.writer.up
        metrics = (await get(f"http://127.0.0.1:{exp.server.bound_port}/metrics"))[2]
        assert "cryptoarb_redis_up 0.0" in metrics
        readyz = (await get(f"http://127.0.0.1:{exp.server.bound_port}/readyz"))[2]
    for text in (metrics, readyz, caplog.text):
        assert PASSWORD not in text


async def test_redis_over_tls_with_password_and_ca_in_the_url(
    redis_server_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca(tmp_path)
    cert, key = ca.issue(tmp_path, "redis")
    server: RedisServer = redis_server_factory(
        tls=ServerTLS(cert, key, ca.cert_file), extra_args=["--requirepass", PASSWORD]
    )
    assert server.command("PING").startswith(b"-NOAUTH")  # over TLS, password required
    caplog.set_level(logging.DEBUG)

    def url(password: str, ca_file: Path) -> str:
        return (f"rediss://:{password}@127.0.0.1:{server.port}/0"
                f"?ssl_cert_reqs=required&ssl_ca_certs={ca_file}")  # fmt: skip

    good = url(PASSWORD, ca.cert_file)
    r = redis.Redis.from_url(good, decode_responses=True)
    with SimulatorHarness(seed=5, rate=10) as sim:
        async with running_exporter(sim_config(sim.base_url, good)) as exp:
            await wait_for(lambda: all_live(exp), timeout=15, what="books live")
            # Books go live one by one and tickers are flushed on a timer: wait for each key.
            keys = ["ticker:binance:BTC/USD", "ticker:kraken:ETH/USD"]
            await wait_for(lambda: r.exists(*keys) == len(keys), timeout=5, what="tickers")
            await wait_for(lambda: r.smembers("symbols") == {"BTC/USD", "ETH/USD"}, timeout=5)
            base = f"http://127.0.0.1:{exp.server.bound_port}"
            assert "cryptoarb_redis_up 1.0" in (await get(base + "/metrics"))[2]
    r.close()

    # A wrong password, or a CA that did not sign the server certificate: down, not dead.
    other_ca = make_ca(tmp_path, "other-ca")
    cases = [
        (url(PASSWORD + "-wrong", ca.cert_file), "invalid username-password pair"),
        (url(PASSWORD, other_ca.cert_file), "certificate verify failed"),
    ]
    texts = []
    for bad, why in cases:
        caplog.clear()
        async with running_exporter(dead_exchange_config(redis_url=bad)) as exp:
            base = f"http://127.0.0.1:{exp.server.bound_port}"
            await wait_for(lambda: "redis" in caplog.text and "unavailable" in caplog.text)
            metrics = (await get(base + "/metrics"))[2]
            assert not exp.writer.up and "cryptoarb_redis_up 0.0" in metrics
            assert (await get(base + "/healthz"))[0] == 200
            texts += [metrics, (await get(base + "/readyz"))[2], caplog.text]
        assert why in caplog.text.lower(), caplog.text
    for text in texts:
        assert PASSWORD not in text


# -- HTTP surface -----------------------------------------------------------------------------


async def test_http_errors_are_json_and_nothing_crashes_the_server() -> None:
    async with running_exporter(dead_exchange_config()) as exp:
        base = f"http://127.0.0.1:{exp.server.bound_port}"
        status, headers, body = await get(base + "/nope/../../etc/passwd")
        assert status == 404 and headers["Content-Type"].startswith("application/json")
        assert '"status": 404' in body
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/metrics", data=b"x" * 10) as resp:
                assert resp.status == 405
            async with session.get(base + "/metrics", headers={"X-Big": "a" * 20000}) as resp:
                assert resp.status in (400, 431)
        for raw in (b"GARBAGE\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n", b"\x00\xff" * 100,
                    b"GET /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):  # fmt: skip
            reply = await asyncio.to_thread(_raw, exp.server.bound_port, raw)
            assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n")[0], reply
        # Still serving.
        assert (await get(base + "/healthz"))[0] == 200


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        return s.recv(4096)
