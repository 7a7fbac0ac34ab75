"""pyproject.toml caps every dependency below its next breaking release, and constraints.txt, the
pinned set CI installs and audits, pins each of them inside its bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# A CA bundle versioned by date: a cap would only keep installs on an old bundle.
UNCAPPED = {"certifi"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [entry for group in project["optional-dependencies"].values() for entry in group]
    return [Requirement(entry) for entry in [*project["dependencies"], *extras]]


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = [line.split("#", 1)[0].strip().partition("==") for line in lines]
    return {canonical(name): version for name, _, version in pairs if version}


@pytest.mark.parametrize(
    "requirement", [r for r in declared() if canonical(r.name) not in UNCAPPED], ids=str
)
def test_every_dependency_is_capped_below_its_next_major_release(requirement: Requirement) -> None:
    operators = {specifier.operator for specifier in requirement.specifier}
    assert operators & {"<", "=="}, f"{requirement} has no upper bound"


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_dependency_is_pinned_within_its_bounds(requirement: Requirement) -> None:
    pinned = pins().get(canonical(requirement.name))

    assert pinned is not None, f"constraints.txt pins no {requirement.name}"
    assert requirement.specifier.contains(pinned, prereleases=True), (
        f"constraints.txt pins {requirement.name}=={pinned}, outside {requirement.specifier}"
    )
