"""The `[passwords]` section: the argon2id cost of local users' password hashes. A stored hash
made with other parameters is replaced at the user's next sign-in (directories.local)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PasswordSettings(BaseModel):
    """The defaults are argon2-cffi's RFC 9106 "low memory" profile (its own defaults): 3
    passes over 64 MiB with 4 lanes, about 50 ms on one core. The floors keep an edit from
    making hashes cheap to guess offline: OWASP's smallest recommended memory is 19 MiB."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    argon2_time_cost: int = Field(default=3, ge=1, le=20)
    argon2_memory_kib: int = Field(default=65_536, ge=19_456, le=4_194_304)
    argon2_parallelism: int = Field(default=4, ge=1, le=16)
