"""twofa: a self-hosted two-factor authentication gateway with Duo Push."""

__version__ = "0.1.0"
