"""Runs Debian's Apache httpd with mod_auth_openidc as a real OpenID Connect relying party:
one name-based virtual host per client on one loopback port (HTTPS, SNI, a throwaway
self-signed certificate: twofa registers http redirect URIs only on loopback hosts), each
protecting `/protected/` where a CGI script prints the claims the module passed to it. Apache
runs in the foreground from a generated configuration in a throwaway directory (nothing from
/etc/apache2).

Chromium reaches `*.example.test` through its host-resolver rule; Apache's libcurl has no
such rule, so its calls to the provider (discovery, JWKS, token, userinfo) go through
`LoopbackProxy`, a plain HTTP forward proxy that sends `*.example.test` to 127.0.0.1: the
module still resolves, fetches and validates everything itself, only the DNS is stood in.

The other way round, twofa POSTs back-channel logout tokens to the module. twofa resolves
names for real and checks certificates against the public CAs, so a relying party with a
`backchannel_port` also gets a plain-HTTP virtual host of its own on 127.0.0.1 at that port
(twofa accepts http on loopback, as for redirect URIs): the same client and session cache as
its HTTPS host, where the module takes `OIDCRedirectURI?logout=backchannel` (it matches the
redirect URI by path). Sessions are kept server-side (`OIDCSessionType server-cache`),
which back-channel logout needs: the module finds the session to end by the `sid` it stored
at sign-in. Each party's cache is a directory of its own (`OIDCCacheType file`), shared by
its two hosts: the default shared memory is one segment per virtual host, and one cache for
all parties would be one Apache standing for two, keeping one `sid` entry for both.

`running_mellon_apache` runs the same Apache with mod_auth_mellon as a SAML 2.0 service
provider per virtual host instead: its key, certificate and metadata made here
(`mellon_service_provider`), the IdP's metadata as twofa serves it, `/protected/attributes`
printing the MELLON_* environment. Mellon calls nothing: the browser carries every message."""

from __future__ import annotations

import http.client
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.certificates import certificate, certificate_pem, key_pem
from tests.support.databases import require_or_skip
from tests.support.servers import free_port

APACHE: Final = "/usr/sbin/apache2"
MODULES: Final = Path("/usr/lib/apache2/modules")
OPENIDC: Final = MODULES / "mod_auth_openidc.so"
MELLON: Final = MODULES / "mod_auth_mellon.so"
MELLON_ENDPOINT: Final = "/mellon"
ATTRIBUTES_PATH: Final = "/protected/attributes"
REDIRECT_PATH: Final = "/protected/redirect_uri"  # the module's own; never real content
CLAIMS_PATH: Final = "/protected/claims"
SIGNED_OUT_PATH: Final = "/signed-out"
SCOPES: Final = "openid profile email groups"
# The only names the proxy forwards: the tests' own, all on this machine.
PROXIED_SUFFIX: Final = ".example.test"

_BASE_MODULES: Final = (
    ("mpm_prefork_module", "mod_mpm_prefork.so"),
    ("authn_core_module", "mod_authn_core.so"),  # AuthType
    ("authz_core_module", "mod_authz_core.so"),  # Require
    ("authz_user_module", "mod_authz_user.so"),  # Require valid-user
    ("cgi_module", "mod_cgi.so"),
    ("socache_shmcb_module", "mod_socache_shmcb.so"),
    ("ssl_module", "mod_ssl.so"),
)
_MODULES: Final = (*_BASE_MODULES, ("auth_openidc_module", "mod_auth_openidc.so"))
_MELLON_MODULES: Final = (*_BASE_MODULES, ("auth_mellon_module", "mod_auth_mellon.so"))

# REMOTE_USER is what OIDCRemoteUserClaim made of the ID token; OIDC_CLAIM_* every claim
# (OIDCPassClaimsAs environment; a JSON array is joined with commas).
CLAIMS_SCRIPT: Final = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf 'remote_user=%s\\n' "$REMOTE_USER"
env | sed -n 's/^OIDC_CLAIM_//p' | sort
"""
# REMOTE_USER is what MellonUser named (the uid attribute); MELLON_* what MellonSetEnv mapped
# and mellon's own (NAME_ID, IDP, SESSION).
ATTRIBUTES_SCRIPT: Final = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf 'remote_user=%s\\n' "$REMOTE_USER"
env | sed -n 's/^MELLON_//p' | sort
"""
SIGNED_OUT_SCRIPT: Final = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf 'signed out of %s\\n' "$SERVER_NAME"
"""


@dataclass(frozen=True)
class RelyingParty:
    """One virtual host and the OpenID Connect client it is."""

    host: str
    client_id: str
    client_secret: str
    backchannel_port: int | None = None  # a loopback HTTP port for back-channel logout


@dataclass(frozen=True)
class RunningApache:
    port: int
    error_log: Path

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.port}{path}"

    def log_tail(self, lines: int = 40) -> str:
        if not self.error_log.exists():
            return "(no error log)"
        return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])


def redirect_uri(host: str, port: int) -> str:
    """The OIDCRedirectURI of a virtual host: the exact redirect URI to register."""
    return f"https://{host}:{port}{REDIRECT_PATH}"


def signed_out_uri(host: str, port: int) -> str:
    """Where a virtual host's logout comes back to: the post-logout URI to register."""
    return f"https://{host}:{port}{SIGNED_OUT_PATH}"


def backchannel_logout_uri(backchannel_port: int) -> str:
    """Where twofa tells a virtual host a session ended: its redirect URI's path, with
    `logout=backchannel`, on its loopback HTTP port."""
    return f"http://127.0.0.1:{backchannel_port}{REDIRECT_PATH}?logout=backchannel"


def logout_url(host: str, port: int) -> str:
    """mod_auth_openidc's logout: ends its session, then the provider's (end_session)."""
    target = urllib.parse.quote(signed_out_uri(host, port), safe="")
    return f"{redirect_uri(host, port)}?logout={target}"


class _ForwardToLoopback(BaseHTTPRequestHandler):
    """Answers a proxied request (absolute-form target) by asking 127.0.0.1 on its port."""

    def _forward(self) -> None:
        target = urllib.parse.urlsplit(self.path)
        if target.scheme != "http" or not (target.hostname or "").endswith(PROXIED_SUFFIX):
            self.send_error(502, f"not a test name: {self.path}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        hop_by_hop = {"proxy-connection", "connection", "keep-alive", "proxy-authorization"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
        path = target.path + (f"?{target.query}" if target.query else "")
        upstream = http.client.HTTPConnection("127.0.0.1", target.port or 80, timeout=30)
        try:
            upstream.request(self.command, path or "/", body=body, headers=headers)
            answer = upstream.getresponse()
            content = answer.read()
        except OSError as down:
            self.send_error(502, f"{target.netloc} is not answering: {down}")
            return
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        dropped = {"transfer-encoding", "connection", "content-length", "keep-alive"}
        for name, value in answer.getheaders():
            if name.lower() not in dropped:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(content)

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: Apache's error log tells what the module did


@contextmanager
def loopback_proxy() -> Iterator[str]:
    """A forward proxy for `*.example.test` on a free port; yields its `host:port`."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _ForwardToLoopback)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="loopback-proxy", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _run_as() -> str:
    """Apache will not serve as root: as root, the children run as www-data (the directory
    is made readable for them); as anyone else, they stay that user."""
    if os.geteuid() != 0:
        name = pwd.getpwuid(os.geteuid()).pw_name
        return f"User {name}\n"
    return "User www-data\nGroup www-data\n"


def virtual_host(rp: RelyingParty, port: int, issuer: str, docroot: Path) -> str:
    """The relying party's HTTPS virtual host, and its loopback back-channel one if any."""
    tls = f"""    SSLEngine on
    SSLCertificateFile "{docroot.parent}/cert.pem"
    SSLCertificateKeyFile "{docroot.parent}/key.pem"
"""
    hosts = _openidc_host(rp, f"127.0.0.1:{port}", rp.host, tls, port, issuer, docroot)
    if rp.backchannel_port is not None:
        address = f"127.0.0.1:{rp.backchannel_port}"
        hosts += _openidc_host(rp, address, "127.0.0.1", "", port, issuer, docroot)
    return hosts


def _openidc_host(
    rp: RelyingParty, address: str, name: str, tls: str, port: int, issuer: str, docroot: Path
) -> str:
    return f"""
<VirtualHost {address}>
    ServerName {name}
    DocumentRoot "{docroot}"
{tls}    OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
    OIDCClientID {rp.client_id}
    OIDCClientSecret {rp.client_secret}
    OIDCRedirectURI {redirect_uri(rp.host, port)}
    OIDCScope "{SCOPES}"
    OIDCPKCEMethod S256
    OIDCRemoteUserClaim preferred_username
    OIDCPassClaimsAs environment
    OIDCSessionType server-cache
    OIDCCacheType file
    OIDCCacheDir "{session_cache(docroot.parent, rp)}"
    <Location /protected>
        AuthType openid-connect
        Require valid-user
    </Location>
</VirtualHost>
"""


def apache_conf(
    directory: Path, port: int, issuer: str, proxy: str, parties: Sequence[RelyingParty]
) -> str:
    docroot = directory / "htdocs"
    hosts = "".join(virtual_host(rp, port, issuer, docroot) for rp in parties)
    backchannel_ports = [rp.backchannel_port for rp in parties if rp.backchannel_port]
    listen = "".join(f"Listen 127.0.0.1:{p}\n" for p in backchannel_ports)
    return f"""{_server_conf(directory, port, _MODULES, "auth_openidc:info")}
{listen}OIDCCryptoPassphrase {secrets.token_hex(16)}
OIDCOutgoingProxy {proxy}
{hosts}"""


def _server_conf(
    directory: Path, port: int, modules: Sequence[tuple[str, str]], log_level: str
) -> str:
    """What every generated Apache has: its modules, files, workers and the CGI site."""
    docroot = directory / "htdocs"
    loads = "".join(f"LoadModule {name} {MODULES / file}\n" for name, file in modules)
    return f"""{loads}
ServerRoot "{directory}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{directory}/apache2.pid"
DefaultRuntimeDir "{directory}"
Mutex file:{directory} default
ErrorLog "{directory}/error.log"
LogLevel warn {log_level}
{_run_as()}
StartServers 2
MinSpareServers 1
MaxSpareServers 4
MaxRequestWorkers 16
SSLSessionCache "shmcb:{directory}/ssl_scache(512000)"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{docroot}">
    Options +ExecCGI
    Require all granted
    SetHandler cgi-script
</Directory>"""


def session_cache(directory: Path, rp: RelyingParty) -> Path:
    return directory / f"oidc-cache-{rp.host}"


def _make_session_caches(directory: Path, parties: Sequence[RelyingParty]) -> None:
    """Each party's cache directory, writable by the children (www-data when run as root)."""
    for rp in parties:
        cache = session_cache(directory, rp)
        cache.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(cache, "www-data", "www-data")


def _write_certificate(directory: Path, hosts: Sequence[str]) -> None:
    """A self-signed certificate for every virtual host's name, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts])
    (directory / "cert.pem").write_bytes(
        certificate_pem(certificate(key, hosts[0], extensions=[(names, False)]))
    )
    (directory / "key.pem").write_bytes(key_pem(key))


def _write_site(directory: Path) -> None:
    docroot = directory / "htdocs"
    (docroot / "protected").mkdir(parents=True)
    for path, script in (
        (docroot / "protected" / "claims", CLAIMS_SCRIPT),
        (docroot / "protected" / "attributes", ATTRIBUTES_SCRIPT),
        (docroot / "signed-out", SIGNED_OUT_SCRIPT),
    ):
        path.write_text(script)
        path.chmod(0o755)
    for folder in (directory, docroot, docroot / "protected"):
        folder.chmod(0o755)  # for the children's user when started as root


def _wait_until_answering(port: int, process: subprocess.Popen[bytes], run: RunningApache) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"apache2 exited ({process.returncode}):\n{run.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as probe:
                probe.sendall(b"HEAD /nothing-here HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                if probe.recv(12).startswith(b"HTTP/"):
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"apache2 did not answer on port {port}:\n{run.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The whole process group: the parent and its children (and any CGI still running)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def _serving(directory: Path, port: int, conf_text: str) -> Iterator[RunningApache]:
    """Checks the configuration, runs Apache in the foreground until the block ends."""
    conf = directory / "apache2.conf"
    conf.write_text(conf_text)
    check = subprocess.run(
        [APACHE, "-t", "-f", str(conf)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, f"apache2 -t refused the configuration:\n{check.stderr}"
    process = subprocess.Popen(
        [APACHE, "-DFOREGROUND", "-f", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, stopped as one
    )
    run = RunningApache(port, directory / "error.log")
    try:
        _wait_until_answering(port, process, run)
        yield run
    finally:
        _stop(process)


@contextmanager
def running_apache(
    port: int, issuer: str, parties: Sequence[RelyingParty]
) -> Iterator[RunningApache]:
    """Apache on 127.0.0.1:`port`, one virtual host per relying party, all trusting `issuer`
    (twofa's public URL, reached through the loopback proxy)."""
    if not Path(APACHE).exists() or not OPENIDC.exists():
        require_or_skip(
            "Apache with mod_auth_openidc is not installed "
            "(apt-get install apache2 libapache2-mod-auth-openidc)"
        )
    # Not pytest's tmp_path: it is private to this user, and the children may be www-data.
    directory = Path(tempfile.mkdtemp(prefix="twofa-apache-"))
    try:
        _write_site(directory)
        _make_session_caches(directory, parties)
        _write_certificate(directory, [rp.host for rp in parties])
        with loopback_proxy() as proxy:
            conf_text = apache_conf(directory, port, issuer, proxy, parties)
            with _serving(directory, port, conf_text) as run:
                yield run
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class MellonServiceProvider:
    """One virtual host as a SAML service provider: its key, certificate and metadata."""

    host: str
    port: int
    key_pem: str
    certificate_pem: str

    @property
    def base(self) -> str:
        return f"https://{self.host}:{self.port}{MELLON_ENDPOINT}"

    @property
    def entity_id(self) -> str:
        return f"{self.base}/metadata"

    @property
    def acs_url(self) -> str:
        return f"{self.base}/postResponse"

    def logout_url(self, return_to: str) -> str:
        """mellon's logout: SLO at the IdP over HTTP-Redirect, then back to `return_to`."""
        return f"{self.base}/logout?ReturnTo={urllib.parse.quote(return_to, safe='')}"

    def metadata(self) -> str:
        """What an admin gives twofa: the ACS (HTTP-POST), the SLO endpoint (HTTP-Redirect),
        the signing certificate, and that mellon signs its requests."""
        body = "".join(
            line for line in self.certificate_pem.splitlines() if not line.startswith("-----")
        )
        return f"""<?xml version="1.0"?>
<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{self.entity_id}">
  <SPSSODescriptor AuthnRequestsSigned="true" WantAssertionsSigned="true"
      protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <KeyDescriptor use="signing">
      <ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
        <ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data>
      </ds:KeyInfo>
    </KeyDescriptor>
    <SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="{self.base}/logout"/>
    <NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</NameIDFormat>
    <AssertionConsumerService index="0" isDefault="true"
        Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{self.acs_url}"/>
  </SPSSODescriptor>
</EntityDescriptor>
"""


def mellon_service_provider(host: str, port: int) -> MellonServiceProvider:
    key_pem, certificate_pem = _rsa_key_and_certificate(host)
    return MellonServiceProvider(host, port, key_pem, certificate_pem)


def _rsa_key_and_certificate(host: str) -> tuple[str, str]:
    """Mellon signs with RSA: a 2048-bit key and its self-signed certificate, for a day."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key_pem(key).decode(), certificate_pem(certificate(key, host)).decode()


# twofa's attributes by their URI names (services.idp.saml), as mellon's environment names.
MELLON_ATTRIBUTES: Final = {
    "username": "urn:oid:0.9.2342.19200300.100.1.1",
    "display_name": "urn:oid:2.16.840.1.113730.3.1.241",
    "email": "urn:oid:0.9.2342.19200300.100.1.3",
    "groups": "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
}


def mellon_virtual_host(sp: MellonServiceProvider, directory: Path) -> str:
    files = directory / sp.host
    files.mkdir()
    (files / "sp.key").write_text(sp.key_pem)
    (files / "sp.crt").write_text(sp.certificate_pem)
    (files / "sp-metadata.xml").write_text(sp.metadata())
    for path in files.iterdir():
        path.chmod(0o644)  # for the children's user when started as root (a throwaway key)
    files.chmod(0o755)
    set_env = "".join(
        f'        MellonSetEnv "{local}" "{name}"\n' for local, name in MELLON_ATTRIBUTES.items()
    )
    return f"""
<VirtualHost 127.0.0.1:{sp.port}>
    ServerName {sp.host}
    DocumentRoot "{directory / "htdocs"}"
    SSLEngine on
    SSLCertificateFile "{directory}/cert.pem"
    SSLCertificateKeyFile "{directory}/key.pem"
    <Location />
        MellonEnable info
        MellonEndpointPath {MELLON_ENDPOINT}
        MellonSPPrivateKeyFile "{files}/sp.key"
        MellonSPCertFile "{files}/sp.crt"
        MellonSPMetadataFile "{files}/sp-metadata.xml"
        MellonIdPMetadataFile "{directory}/idp-metadata.xml"
        MellonUser "{MELLON_ATTRIBUTES["username"]}"
        MellonIdP "IDP"
{set_env}        MellonMergeEnvVars On ","
        MellonSecureCookie On
        MellonCookieSameSite None
        MellonSignatureMethod rsa-sha256
    </Location>
    <Location /protected>
        AuthType Mellon
        MellonEnable auth
        Require valid-user
    </Location>
</VirtualHost>
"""


@contextmanager
def running_mellon_apache(
    port: int, providers: Sequence[MellonServiceProvider], idp_metadata: str
) -> Iterator[RunningApache]:
    """Apache on 127.0.0.1:`port`, one mod_auth_mellon service provider per virtual host,
    all trusting the IdP `idp_metadata` describes."""
    if not Path(APACHE).exists() or not MELLON.exists():
        require_or_skip(
            "Apache with mod_auth_mellon is not installed "
            "(apt-get install apache2 libapache2-mod-auth-mellon)"
        )
    directory = Path(tempfile.mkdtemp(prefix="twofa-mellon-"))
    try:
        _write_site(directory)
        _write_certificate(directory, [sp.host for sp in providers])
        (directory / "idp-metadata.xml").write_text(idp_metadata)
        (directory / "idp-metadata.xml").chmod(0o644)
        hosts = "".join(mellon_virtual_host(sp, directory) for sp in providers)
        conf_text = _server_conf(directory, port, _MELLON_MODULES, "auth_mellon:info") + hosts
        with _serving(directory, port, conf_text) as run:
            yield run
    finally:
        shutil.rmtree(directory, ignore_errors=True)
