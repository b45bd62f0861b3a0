""".env.example lists every setting of `Settings` with the class's default and a comment.

The file is parsed, not trusted: its values are read back through `Settings` from the
environment, as gfx-sync reads them, and must come out as the class's defaults. A field added to
the class without a line here, a default changed on one side only, or a misspelt name fails.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices

from gfx_sync.settings import ENV_PREFIX, Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"
# `#NAME=value`: an assignment left commented (so copying the file changes nothing); prose
# comments are `# text`.
ASSIGNMENT = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")


def env_name(field_name: str) -> str:
    """The variable a field is read from: its first alias, else the prefixed name."""
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        assert isinstance(first, str)
        return first
    if isinstance(alias, str):
        return alias
    return f"{ENV_PREFIX}{field_name}".upper()


def parse_env_example() -> tuple[dict[str, str], list[str]]:
    """The assignments, and the names of those without a comment on the line above."""
    values: dict[str, str] = {}
    uncommented: list[str] = []
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if match is None:
            continue
        name, value = match.groups()
        assert name not in values, f".env.example line {number + 1}: {name} appears twice"
        values[name] = value
        previous = lines[number - 1] if number else ""
        if not (previous.startswith("# ") and len(previous) > 3):
            uncommented.append(name)
    return values, uncommented


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name.startswith("SUPABASE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env from the developer's tree


def test_every_setting_is_listed_with_a_comment() -> None:
    values, uncommented = parse_env_example()
    missing = [env_name(field) for field in Settings.model_fields if env_name(field) not in values]
    assert not missing, f".env.example lacks {', '.join(missing)}: add each with its default"
    assert not uncommented, f".env.example: no one-line comment above {', '.join(uncommented)}"


def test_no_unknown_gfx_sync_names() -> None:
    values, _ = parse_env_example()
    known = {env_name(field) for field in Settings.model_fields}
    unknown = sorted(name for name in values if name.startswith(ENV_PREFIX) and name not in known)
    assert not unknown, f".env.example names settings that do not exist: {', '.join(unknown)}"


@pytest.mark.usefixtures("clean_environment")
def test_values_are_the_class_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    values, _ = parse_env_example()
    blank_but_defaulted = []
    for field_name, field in Settings.model_fields.items():
        value = values.get(env_name(field_name))
        if value is None:
            continue  # reported by test_every_setting_is_listed_with_a_comment
        if value == "":
            if field.default is not None:
                blank_but_defaulted.append(env_name(field_name))
            continue  # blank: unset (a secret, or a path derived from another setting)
        monkeypatch.setenv(env_name(field_name), value)
    assert not blank_but_defaulted, f"blank in .env.example, with a default: {blank_but_defaulted}"

    read_back = Settings(_env_file=None)  # type: ignore[call-arg]
    differ = {
        env_name(name): (values[env_name(name)], field.default)
        for name, field in Settings.model_fields.items()
        if getattr(read_back, name) != field.default
    }
    assert not differ, f".env.example value vs the class's default: {differ}"


def test_secrets_are_blank() -> None:
    values, _ = parse_env_example()
    secrets = [
        env_name(name)
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    ]
    assert secrets, "Settings has no SecretStr field: this test looks for the wrong thing"
    filled = [name for name in secrets if values.get(name)]
    assert not filled, f".env.example must leave secrets blank: {filled}"
