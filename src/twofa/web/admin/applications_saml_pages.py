"""The SAML half of the console's Applications page: the form that adds a service provider from
its metadata (pasted, or uploaded as a file) or edits one, read from the posted form as typed
so a refused one comes back unchanged, and the registry's refusals put under their field. The
routes live with the rest of the page in `applications_pages`; the registry and its audit
records in services.idp.saml.registry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from starlette.datastructures import FormData, UploadFile

from twofa.errors import TwofaError
from twofa.services.idp.saml.registry import (
    NewServiceProvider,
    ServiceProvider,
    ServiceProviderEdit,
)
from twofa.services.idp.saml.sp_metadata import MAX_METADATA_BYTES

# The SAML form's fields carry this prefix: both forms are on one page, and ids must be unique.
SAML_FIELD_PREFIX: Final = "sp_"
# The registry's field names → the form's; a duplicate entity id is the metadata's problem.
FORM_FIELDS: Final = {"name": "sp_name", "name_id_format": "sp_name_id_format"}
NAME_ID_CHOICES: Final = (
    ("persistent", "Persistent: an opaque value, one per user and provider"),
    ("email", "Username: the twofa username (format emailAddress when it has an @)"),
)
_SEPARATORS = re.compile(r"[\s,]+")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part for part in _SEPARATORS.split(text) if part)


@dataclass(frozen=True)
class ServiceProviderForm:
    """The SAML form as typed (lists as text). A new provider needs a second factor unless
    unticked, as `NewServiceProvider` does; on an edit, no metadata keeps the one it has."""

    name: str = ""
    metadata: str = ""
    allowed_users: str = ""
    allowed_groups: str = ""
    second_factor_required: bool = True
    name_id_format: str = "persistent"

    @classmethod
    async def typed(cls, form: FormData) -> tuple[ServiceProviderForm, dict[str, str]]:
        """The form, its metadata from the uploaded file when one was chosen (else the
        textarea); and the problems of reading the file (too large, not UTF-8)."""

        def text(name: str) -> str:
            value = form.get(SAML_FIELD_PREFIX + name)
            return value.strip() if isinstance(value, str) else ""

        metadata, problems = await _uploaded(form.get(SAML_FIELD_PREFIX + "metadata_file"))
        typed = cls(
            name=text("name"),
            metadata=metadata or text("metadata"),
            allowed_users=text("allowed_users"),
            allowed_groups=text("allowed_groups"),
            second_factor_required=text("second_factor_required") == "on",
            name_id_format=text("name_id_format") or "persistent",
        )
        return typed, problems

    @classmethod
    def of(cls, provider: ServiceProvider) -> ServiceProviderForm:
        application = provider.application
        return cls(
            name=application.name,
            allowed_users=", ".join(application.allowed_users),
            allowed_groups=", ".join(application.allowed_groups),
            second_factor_required=application.second_factor_required,
            name_id_format=provider.name_id_format,
        )

    def new(self) -> NewServiceProvider:
        return NewServiceProvider(
            name=self.name,
            metadata_xml=self.metadata,
            allowed_users=_names(self.allowed_users),
            allowed_groups=_names(self.allowed_groups),
            second_factor_required=self.second_factor_required,
            name_id_format=self.name_id_format,
        )

    def edit(self) -> ServiceProviderEdit:
        return ServiceProviderEdit(
            name=self.name,
            allowed_users=_names(self.allowed_users),
            allowed_groups=_names(self.allowed_groups),
            second_factor_required=self.second_factor_required,
            name_id_format=self.name_id_format,
            metadata_xml=self.metadata or None,
        )


async def _uploaded(value: object) -> tuple[str, dict[str, str]]:
    """A browser sends an empty part when no file was chosen: that is no file."""
    if not isinstance(value, UploadFile):
        return "", {}
    content = await value.read(MAX_METADATA_BYTES + 1)
    if len(content) > MAX_METADATA_BYTES:
        return "", {"sp_metadata": "the metadata file is larger than 256 KiB"}
    try:
        return content.decode("utf-8-sig").strip(), {}
    except UnicodeDecodeError:
        return "", {"sp_metadata": "the metadata file is not UTF-8 text (an XML file)"}


def form_problems(refused: TwofaError) -> dict[str, str]:
    """The registry's refusal under the form's field: the name, the NameID format, or else
    the metadata (unreadable, no ACS, an entity id registered already)."""
    fields = dict(refused.fields) or {"metadata": str(refused)}
    return {FORM_FIELDS.get(name, "sp_metadata"): why for name, why in fields.items()}


def acs_urls(provider: ServiceProvider) -> tuple[str, ...]:
    return tuple(str(endpoint["location"]) for endpoint in provider.acs_endpoints)
