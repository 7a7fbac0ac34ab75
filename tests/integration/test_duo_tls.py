"""The Duo client refuses a TLS server whose certificate no public CA vouches for, and the key
check tells the admin so in its fixed words."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import free_port
from twofa.duo import (
    DuoAuthClient,
    DuoCredentials,
    DuoEndpoint,
    DuoTransportError,
    make_http_client,
)
from twofa.services.settings.duo import TLS_REFUSED, prove_duo_keys

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [str(shutil.which("openssl")), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = b'{"stat":"OK","response":{"time":1}}'
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass  # the client hung up during the handshake, as it should
    finally:
        writer.close()


async def test_self_signed_duo_host_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    server = await asyncio.start_server(answer_ok, "127.0.0.1", port, ssl=context)
    endpoint = DuoEndpoint.parse(f"https://localhost:{port}", allow_custom_host=True)
    try:
        async with make_http_client(endpoint) as http:
            client = DuoAuthClient(http, credentials=DuoCredentials("I", "S"), endpoint=endpoint)
            with pytest.raises(DuoTransportError, match=r"(?i)certificate"):
                await client.ping()
    finally:
        server.close()
        await server.wait_closed()


async def test_the_key_check_names_a_refused_certificate_in_fixed_words(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    server = await asyncio.start_server(answer_ok, "127.0.0.1", port, ssl=context)
    host = f"https://localhost:{port}"
    try:
        async with make_http_client(DuoEndpoint.parse(host, allow_custom_host=True)) as http:
            problems = await prove_duo_keys(
                http, "DI" + "X" * 18, "s" * 40, host, 1.0, allow_custom_host=True
            )
    finally:
        server.close()
        await server.wait_closed()
    assert problems == {"api_hostname": TLS_REFUSED.format(host=f"localhost:{port}")}
