"""The answers the template is tested with, read from copier.yml.

Every question with ``choices`` (except those in ``NOT_AXES``) is an axis of the matrix, so a
new choice, or a new choice question, is tested without editing the tests.
``python tests/combinations.py`` prints the combination ids as JSON: the GitHub workflow builds
its job matrix from that.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
COPIER_YML = REPO / "copier.yml"

# Choice questions that are not axes: each Python version is exercised by its own full
# combination instead (tests/test_lockfile.py), since the machine may not have all of them; a
# license changes only LICENSE and one pyproject.toml line (tests/test_project_workflow.py).
NOT_AXES = frozenset({"python_version", "license"})


@cache
def questions() -> dict[str, dict[str, Any]]:
    """copier.yml's questions (settings, which start with an underscore, left out)."""
    data = yaml.safe_load(COPIER_YML.read_text(encoding="utf-8"))
    return {name: spec for name, spec in data.items() if not name.startswith("_")}


def asked_questions() -> dict[str, dict[str, Any]]:
    """The questions a user answers (computed values have ``when: false``)."""
    return {name: spec for name, spec in questions().items() if spec.get("when") is not False}


def choice_values(name: str) -> list[str]:
    """The values a choice question accepts, in copier.yml's order."""
    choices = questions()[name]["choices"]
    if isinstance(choices, dict):
        values = [
            value["value"] if isinstance(value, dict) else value for value in choices.values()
        ]
    else:
        values = [item[1] if isinstance(item, list) else item for item in choices]
    return [str(value) for value in values]


def default(name: str) -> str:
    return str(questions()[name]["default"])


def axes() -> dict[str, list[str]]:
    return {
        name: choice_values(name)
        for name, spec in asked_questions().items()
        if "choices" in spec and name not in NOT_AXES
    }


@dataclass(frozen=True)
class Combination:
    """One set of answers to the matrix questions, e.g. transport=grpc, executor=thread."""

    answers: tuple[tuple[str, str], ...]

    @property
    def id(self) -> str:
        return "-".join(value for _, value in self.answers)

    @property
    def data(self) -> dict[str, str]:
        return dict(self.answers)

    def indices(self) -> tuple[int, ...]:
        """The position of each answer in its axis, e.g. (0, 1, 2)."""
        return tuple(axes()[name].index(value) for name, value in self.answers)

    def __getitem__(self, name: str) -> str:
        return self.data[name]

    def __str__(self) -> str:
        return self.id


def combinations() -> list[Combination]:
    """Every combination of every axis (the product)."""
    names = list(axes())
    return [
        Combination(tuple(zip(names, values, strict=True)))
        for values in itertools.product(*axes().values())
    ]


def covering_set() -> list[Combination]:
    """A few combinations that between them use every value of every axis at least once."""
    names = list(axes())
    width = max(len(values) for values in axes().values())
    picked = [
        Combination(tuple((name, axes()[name][i % len(axes()[name])]) for name in names))
        for i in range(width)
    ]
    return list(dict.fromkeys(picked))


def every_pair_of(first: str, second: str) -> list[Combination]:
    """One combination for each pair of values of two axes; the other axes' values take turns."""
    names = list(axes())
    pairs = itertools.product(axes()[first], axes()[second])
    picked = []
    for turn, (one, other) in enumerate(pairs):
        chosen = {first: one, second: other}
        picked.append(
            Combination(
                tuple(
                    (name, chosen.get(name) or axes()[name][turn % len(axes()[name])])
                    for name in names
                )
            )
        )
    return picked


if __name__ == "__main__":
    print(json.dumps([combination.id for combination in combinations()]))
