"""Runs Debian's OpenLDAP server (slapd) for tests: a throwaway `slapd.conf` and mdb database in
a temporary directory, on free loopback ports (plain LDAP with StartTLS, and LDAPS), with the
memberof overlay and a small tree of people and (nested) groups loaded over LDAP so the overlay
sees it. Without slapd the test skips, except in CI (`CI_REQUIRE_ALL_SERVICES=1`)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.certificates import certificate, certificate_pem, key_pem
from tests.support.databases import require_or_skip
from tests.support.servers import free_port

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
HOST = "127.0.0.1"
# Another loopback address on the same server, absent from its certificate: a name mismatch.
OTHER_HOST = "127.0.0.2"
BASE_DN = "dc=example,dc=org"
ROOT_DN = f"cn=root,{BASE_DN}"
ROOT_PASSWORD = "root-secret"
SERVICE_DN = f"cn=twofa,ou=services,{BASE_DN}"
SERVICE_PASSWORD = "service-secret"
PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"

# A uid full of characters that mean something in filters and DNs.
SPECIAL_UID = "dana (ops), o'neil*\\x"
SPECIAL_DN = f"uid={ldap3.utils.dn.escape_rdn(SPECIAL_UID)},{PEOPLE}"

PASSWORDS = {
    "alice": "alice-pass",
    "bob": "bob-pass",
    "carol": "carol-pass",
    SPECIAL_UID: "dana-pass",
    "twin": "twin-pass",
}

SLAPD_CONF = """
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
TLSCACertificateFile {root}/ca.pem
TLSCertificateFile {root}/server-cert.pem
TLSCertificateKeyFile {root}/server-key.pem

database mdb
maxsize 16777216
suffix "{base}"
rootdn "{root_dn}"
rootpw {root_password}
directory {root}/db
overlay memberof
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by users read
    by * none
"""


@dataclass(frozen=True)
class RunningSlapd:
    port: int
    ldaps_port: int
    ca_file: Path
    # A CA that signed nothing this server shows: trusting only it must fail.
    foreign_ca_file: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"ldap://{HOST}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{HOST}:{self.ldaps_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def ssha(password: str) -> str:
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 (slapd's {SSHA})
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _person(uid: str, cn: str, mail: str | None, password: str) -> dict[str, object]:
    attributes: dict[str, object] = {
        "objectClass": ["inetOrgPerson"],
        "uid": uid,
        "cn": cn,
        "sn": cn.split()[-1],
        "userPassword": password,
    }
    if mail is not None:
        attributes["mail"] = mail
    return attributes


def tree_entries() -> list[tuple[str, dict[str, object]]]:
    """Entries in the order they can be added; groups last so the overlay writes memberOf."""
    alice, bob = f"uid=alice,{PEOPLE}", f"uid=bob,{PEOPLE}"
    return [
        (BASE_DN, {"objectClass": ["dcObject", "organization"], "dc": "example", "o": "Example"}),
        (PEOPLE, {"objectClass": ["organizationalUnit"], "ou": "people"}),
        (GROUPS, {"objectClass": ["organizationalUnit"], "ou": "groups"}),
        (f"ou=services,{BASE_DN}", {"objectClass": ["organizationalUnit"], "ou": "services"}),
        (f"ou=contractors,{BASE_DN}", {"objectClass": ["organizationalUnit"], "ou": "contractors"}),
        (
            SERVICE_DN,
            {
                "objectClass": ["applicationProcess", "simpleSecurityObject"],
                "cn": "twofa",
                "userPassword": ssha(SERVICE_PASSWORD),
            },
        ),
        (alice, _person("alice", "Alice Liddell", "alice@example.org", ssha("alice-pass"))),
        # bob's password is stored in clear text, as some old directories do
        (bob, _person("bob", "Bob Builder", "bob@example.org", "bob-pass")),
        (f"uid=carol,{PEOPLE}", _person("carol", "Carol Danvers", None, ssha("carol-pass"))),
        (SPECIAL_DN, _person(SPECIAL_UID, "Dana Oneil", "dana@example.org", ssha("dana-pass"))),
        # the same uid twice: a directory that cannot say who "twin" is
        (f"uid=twin,{PEOPLE}", _person("twin", "Twin One", None, ssha("twin-pass"))),
        (
            f"uid=twin,ou=contractors,{BASE_DN}",
            _person("twin", "Twin Two", None, ssha("twin-pass")),
        ),
        (f"cn=engineering,{GROUPS}", _group("engineering", [alice, SPECIAL_DN])),
        (f"cn=admins,{GROUPS}", _group("admins", [alice, bob])),
        # staff holds engineering: alice and dana are in staff through it
        (f"cn=staff,{GROUPS}", _group("staff", [f"cn=engineering,{GROUPS}"])),
    ]


def _group(name: str, members: list[str]) -> dict[str, object]:
    return {"objectClass": ["groupOfNames"], "cn": name, "member": members}


def _certificate_authority(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    authority = [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (usage, True),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    ]
    return key, certificate(key, common_name, extensions=authority)


def write_throwaway_tls(directory: Path) -> None:
    """ca.pem, server-cert.pem / server-key.pem (localhost and 127.0.0.1 only) and
    foreign-ca.pem (an unrelated CA) into `directory`."""
    ca_key, ca_cert = _certificate_authority("twofa LDAP test CA")
    _, foreign_ca = _certificate_authority("someone else's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    names = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(IPv4Address(HOST))]
    )
    server = [
        (names, False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ]
    cert = certificate(key, "localhost", issuer=(ca_key, ca_cert), extensions=server)
    (directory / "ca.pem").write_bytes(certificate_pem(ca_cert))
    (directory / "foreign-ca.pem").write_bytes(certificate_pem(foreign_ca))
    (directory / "server-cert.pem").write_bytes(certificate_pem(cert))
    (directory / "server-key.pem").write_bytes(key_pem(key))


def _wait_until_answering(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited ({process.returncode}): {log.read_text()[-3000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"slapd did not start listening on {port}: {log.read_text()[-3000:]}")


def load_tree(port: int) -> None:
    """Adds the test tree over LDAP as the root DN (slapadd would bypass the memberof
    overlay)."""
    server = ldap3.Server(HOST, port=port, get_info=ldap3.NONE, connect_timeout=5)
    with ldap3.Connection(
        server, ROOT_DN, ROOT_PASSWORD, auto_bind=True, receive_timeout=10
    ) as connection:
        for dn, attributes in tree_entries():
            object_classes = attributes["objectClass"]
            rest = {k: v for k, v in attributes.items() if k != "objectClass"}
            if not connection.add(dn, object_classes, rest):
                raise RuntimeError(f"could not add {dn}: {connection.result}")


@contextmanager
def running_slapd(directory: Path) -> Iterator[RunningSlapd]:
    """slapd on 127.0.0.1 (and 127.0.0.2, for the certificate name check), loaded with the
    test tree; stopped afterwards."""
    if not Path(SLAPD).exists():
        require_or_skip("slapd is not installed (Debian packages slapd and ldap-utils)")
    (directory / "db").mkdir(parents=True)
    write_throwaway_tls(directory)
    conf = directory / "slapd.conf"
    conf.write_text(
        SLAPD_CONF.format(
            root=directory, base=BASE_DN, root_dn=ROOT_DN, root_password=ROOT_PASSWORD
        )
    )
    port, ldaps_port = free_port(), free_port()
    listeners = " ".join(
        [
            f"ldap://{HOST}:{port}/",
            f"ldap://{OTHER_HOST}:{port}/",
            f"ldaps://{HOST}:{ldaps_port}/",
        ]
    )
    log = directory / "slapd.log"
    with log.open("wb") as log_file:
        # -d 0: stay in the foreground (so this process owns it) without debug output
        process = subprocess.Popen(
            [SLAPD, "-f", str(conf), "-h", listeners, "-d", "0"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    running = RunningSlapd(
        port, ldaps_port, directory / "ca.pem", directory / "foreign-ca.pem", process
    )
    try:
        _wait_until_answering(port, process, log)
        _wait_until_answering(ldaps_port, process, log)
        load_tree(port)
        yield running
    finally:
        running.stop()
