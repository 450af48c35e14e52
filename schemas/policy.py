"""The routing policy file: which intents and categories go to a person, and the thresholds.

A contract between a team's taxonomy and the service: training checks a policy against the labelled data, the
service checks it against the model it loads (at start and on every model swap), both with :meth:`fit_problems`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILT_IN = "built-in policy.toml"
#: names listed in a message before "and N more"
SHOWN_NAMES = 10
#: an intent less confident than this goes to a person, unless a policy says otherwise
DEFAULT_ABSTAIN_THRESHOLD = 0.5


class PolicyError(ValueError):
    """A policy file that cannot be read, is not valid, or does not fit a model's labels."""


class PolicyRules(BaseModel):
    """``[routing]`` of a policy file. With ``auto_intents`` the policy is complete: it names every intent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    human_intents: frozenset[str] = frozenset()
    auto_intents: frozenset[str] = frozenset()
    human_categories: frozenset[str] = frozenset()
    negative_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    abstain_threshold: float = Field(default=DEFAULT_ABSTAIN_THRESHOLD, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_route_per_intent(self) -> Self:
        both = sorted(self.human_intents & self.auto_intents)
        if both:
            raise ValueError(f"intents in both human_intents and auto_intents: {', '.join(both)}")
        return self

    @classmethod
    def default(cls) -> Self:
        text = resources.files("schemas").joinpath("policy.toml").read_text(encoding="utf-8")
        return cls.from_text(text, BUILT_IN)

    @classmethod
    def from_file(cls, path: str | Path | None) -> Self:
        """The policy in ``path``; the built-in one when ``path`` is None."""
        if path is None:
            return cls.default()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read routing policy {path}: {exc}") from exc
        return cls.from_text(text, str(path))

    @classmethod
    def from_text(cls, text: str, source: str) -> Self:
        try:
            data = tomllib.loads(text)
            return cls.model_validate(data.get("routing", {}))
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise PolicyError(f"invalid routing policy in {source}: {exc}") from exc

    def fit_problems(self, intents: Iterable[str], categories: Iterable[str], holder: str = "model") -> list[str]:
        """What keeps this policy from routing a model (or data) with these intents and categories: names the
        policy uses that do not exist (a typo, or a policy written for another taxonomy), and, for a complete
        policy, intents it does not name (a new intent would otherwise be answered automatically). ``holder`` is
        what the labels belong to in the messages ("model", "data")."""
        intents, categories = set(intents), set(categories)
        problems = []
        named = self.human_intents | self.auto_intents
        if named and not named & intents:
            problems.append(f"the policy names none of the {holder}'s intents: it was written for another taxonomy")
        unknown = sorted(named - intents)
        if unknown:
            problems.append(f"the policy names intents the {holder} does not have: {_names(unknown)}")
        unknown_categories = sorted(self.human_categories - categories)
        if unknown_categories:
            problems.append(f"the policy names categories the {holder} does not have: {_names(unknown_categories)}")
        if self.auto_intents:
            unnamed = sorted(intents - named)
            if unnamed:
                problems.append(
                    f"intents the policy does not name (add each to human_intents or auto_intents): {_names(unnamed)}"
                )
        return problems


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")
