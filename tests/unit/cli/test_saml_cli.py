"""`twofa saml …`: a service provider is registered from its metadata file (entity id and ACS
taken from it), listed and shown as an application of the one registry, refused when its
metadata has no ACS, is unreadable or names an entity registered already, and removed; the
signing key rotated with the old certificate still in the metadata; each change audited."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support.apache import mellon_service_provider
from tests.unit.cli.conftest import TwofaCli

SP = mellon_service_provider("wiki.example.test", 8443)


def metadata_file(tmp_path: Path, xml: str, name: str = "sp.xml") -> Path:
    path = tmp_path / name
    path.write_text(xml, encoding="utf-8")
    return path


def certificates(metadata: str) -> list[str]:
    return re.findall(r"X509Certificate>([^<]+)<", metadata)


def test_add_list_show_remove_a_service_provider(cli: TwofaCli, tmp_path: Path) -> None:
    added = cli.ok(
        "saml", "sp", "add", "Wiki", "--metadata", str(metadata_file(tmp_path, SP.metadata())),
        "--group", "staff", "--no-second-factor", "--nameid", "email",
    )  # fmt: skip
    assert SP.entity_id in added.stdout
    assert f"ACS {SP.acs_url}" in added.stdout

    [listed] = json.loads(cli.ok("saml", "sp", "list", "--json").stdout)
    assert listed["entity_id"] == SP.entity_id
    assert listed["protocol"] == "saml"
    assert listed["allowed_groups"] == ["staff"]
    assert listed["second_factor_required"] is False
    assert listed["name_id_format"] == "email"
    assert listed["authn_requests_signed"] is True
    assert [e["location"] for e in listed["acs_endpoints"]] == [SP.acs_url]
    assert json.loads(cli.ok("saml", "sp", "show", SP.entity_id).stdout)["name"] == "Wiki"
    # One registry: the OpenID Connect listing shows it too, by its protocol.
    [application] = json.loads(cli.ok("oidc", "client", "list", "--json").stdout)
    assert application["protocol"] == "saml"

    assert "removed 'Wiki'" in cli.ok("saml", "sp", "remove", "Wiki").stdout
    assert json.loads(cli.ok("saml", "sp", "list", "--json").stdout) == []
    kinds = [(row.kind, row.outcome) for row in cli.audit_rows("cli")]
    assert ("application", "added") in kinds
    assert ("application", "removed") in kinds


def test_metadata_that_cannot_be_used_is_refused_with_the_reason(
    cli: TwofaCli, tmp_path: Path
) -> None:
    no_acs = re.sub(r"<AssertionConsumerService[^>]*/>", "", SP.metadata(), flags=re.S)
    refused = cli("saml", "sp", "add", "A", "--metadata", str(metadata_file(tmp_path, no_acs)))
    assert refused.exit_code != 0
    assert "no AssertionConsumerService" in refused.output

    garbage = metadata_file(tmp_path, "<EntityDescriptor", "bad.xml")
    refused = cli("saml", "sp", "add", "B", "--metadata", str(garbage))
    assert refused.exit_code != 0
    assert "cannot be read" in refused.output

    good = metadata_file(tmp_path, SP.metadata(), "good.xml")
    cli.ok("saml", "sp", "add", "C", "--metadata", str(good))
    refused = cli("saml", "sp", "add", "D", "--metadata", str(good))
    assert refused.exit_code != 0
    assert "is registered" in refused.output


def test_a_rotation_announces_the_new_key_before_it_signs(cli: TwofaCli) -> None:
    [first] = certificates(cli.ok("saml", "metadata").stdout)
    announced = cli.ok("saml", "keys", "rotate").stdout
    assert "new signing key: saml-" in announced
    assert "signing from" in announced
    after = certificates(cli.ok("saml", "metadata").stdout)
    assert len(after) == 2
    assert after[0] == first  # the key in use signs (and is listed first) for a week more
    second = after[1]

    cli.ok("saml", "keys", "rotate", "--now")  # a key thought stolen: switch at once
    now = certificates(cli.ok("saml", "metadata").stdout)
    assert len(now) == 3  # the new one, and both older ones during the overlap
    assert now[0] not in (first, second)
    kinds = [(r.kind, r.outcome) for r in cli.audit_rows("cli")]
    assert kinds.count(("saml_keys", "rotated")) == 2
