"""The gateway's start-up configuration: `settings` (the validated settings object and how it
is loaded) and `directories` (the LDAP and Crowd sections). Callers import from here; the
names below are the package's public face."""

from twofa.config.settings import (
    ACCESS_POLICIES,
    DEFAULT_DUO_FACTORS,
    PLACEHOLDER_SECRET,
    AccessRuleSettings,
    AccessSettings,
    DuoFactor,
    DuoSettings,
    FailMode,
    Mode,
    Settings,
    WebAuthnSettings,
    duo_factors_problem,
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
    "Mode",
    "Settings",
    "WebAuthnSettings",
    "duo_factors_problem",
    "load_settings",
]
