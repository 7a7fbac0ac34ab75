"""The gateway's start-up configuration: `settings` (the validated settings object and how it
is loaded), `sections` (Duo, access, security keys, metrics), `directories` (the LDAP and Crowd
sections), `passwords` and `secret_keys`. Callers import from here; the
names below are the package's public face."""

from twofa.config.sections import (
    ACCESS_POLICIES,
    DEFAULT_DUO_FACTORS,
    AccessRuleSettings,
    AccessSettings,
    DuoFactor,
    DuoSettings,
    FailMode,
    MetricsSettings,
    WebAuthnSettings,
    duo_factors_problem,
)
from twofa.config.settings import (
    PLACEHOLDER_SECRET,
    Mode,
    Settings,
    load_settings,
)

__all__ = [
    "ACCESS_POLICIES",
    "DEFAULT_DUO_FACTORS",
    "PLACEHOLDER_SECRET",
    "AccessRuleSettings",
    "AccessSettings",
    "DuoFactor",
    "DuoSettings",
    "FailMode",
    "MetricsSettings",
    "Mode",
    "Settings",
    "WebAuthnSettings",
    "duo_factors_problem",
    "load_settings",
]
