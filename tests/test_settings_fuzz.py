"""Fuzzing settings and the PC registry: any environment value, any registry file, becomes
`Settings`/a PC list or a `SettingsError` that names the setting or the file (and never
echoes a secret). `GFX_SYNC_FUZZ=soak` runs it long (tests/support/fuzz.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gfx_sync.settings import (
    ENV_PREFIX,
    PcConfig,
    Settings,
    SettingsError,
    load_registry,
    load_settings,
)
from support.fuzz import fuzz_settings

CANARY = "c4n4ry-s3cr3t-"
SECRET_FIELDS = {"database_url", "supabase_service_key", "alert_webhook_url"}
ALIASES = {"supabase_url": "SUPABASE_URL", "supabase_service_key": "SUPABASE_SERVICE_KEY"}
ENV_NAMES = {
    name: ALIASES.get(name, f"{ENV_PREFIX}{name.upper()}") for name in Settings.model_fields
}


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set (only) these gfx-sync variables; hypothesis cannot use function-scoped monkeypatch."""
    names = set(ENV_NAMES.values()) | {f"{ENV_PREFIX}{n}" for n in ALIASES.values()}
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    os.environ.update(values)
    try:
        yield
    finally:
        for name in values:
            os.environ.pop(name, None)
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's tree


# Environment values: what a shell can hold (no NUL, no lone surrogates).
ENV_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
ENV_VALUES = st.one_of(
    ENV_TEXT,
    st.sampled_from(["", "0", "-1", "1e309", "inf", "-inf", "nan", "NaN", "1_000", " 5 "]),
    st.sampled_from(["0x10", "true", "http://", "https://x", "postgresql://u:p@h/db", "{}"]),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats().map(repr),
)


@fuzz_settings(weight=2)
@given(st.dictionaries(st.sampled_from(sorted(ENV_NAMES)), ENV_VALUES, max_size=4))
@example({"flush_interval": "inf"})
@example({"backoff_initial": "nan"})
@example({"lease_seconds": "inf"})
def test_any_environment_is_settings_or_an_error_naming_the_setting(
    values: dict[str, str],
) -> None:
    # Secrets carry a canary, so "was it echoed" cannot be fooled by a value like "http".
    env = {
        ENV_NAMES[name]: (CANARY + value if name in SECRET_FIELDS else value)
        for name, value in values.items()
    }
    with environment(env):
        try:
            settings = load_settings()
        except SettingsError as error:
            message = str(error)
            assert re.search(r"invalid setting (GFX_SYNC_\w+|SUPABASE_\w+|settings):", message)
            named = {n for n in ENV_NAMES.values() if n in message}
            assert named or "settings:" in message, message
            assert named <= set(env) | {"SUPABASE_URL", "SUPABASE_SERVICE_KEY"}, message
            assert CANARY not in message, "a secret was echoed"
            return
    for name, value in settings.model_dump().items():
        if isinstance(value, float):
            assert math.isfinite(value), f"{ENV_NAMES[name]} accepted {value}"
    assert settings.backoff_max >= settings.backoff_initial
    assert settings.target is not None


# --- the registry file ----------------------------------------------------------------------

PC_IDS = st.text(min_size=0, max_size=70) | st.sampled_from(["PC01", "PC02", "a.b-c_d"])
WATCH_PATHS = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["PC01/hands", "", ".", "..", "../x", "a/../../x", "/etc", "//x", "a/./b"]),
    st.sampled_from(["~/x", "a\x00b", "C:\\x", "\\\\nas\\share", "escape/PC01", "loop/x"]),
    st.sampled_from(["a" * 300, "/".join(["a" * 255] * 20)]),
)
PC_ENTRIES = st.fixed_dictionaries(
    {"id": PC_IDS, "watch_path": WATCH_PATHS},
    optional={
        "name": st.text(max_size=20) | st.integers(),
        "enabled": st.booleans() | st.sampled_from(["yes", "no", 2, None]),
        "watch_mode": st.sampled_from(["auto", "native", "polling", "smb", 1, None]),
        "extra": st.text(max_size=5),
    },
)
JSON_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
REGISTRIES = st.one_of(
    st.fixed_dictionaries({"pcs": st.lists(PC_ENTRIES, max_size=4)}).map(json.dumps),
    st.fixed_dictionaries({"pcs": JSON_ANY}).map(json.dumps),
    JSON_ANY.map(json.dumps),
    st.text(max_size=200),
)


def check_registry(base: Path, registry: Path, content: bytes) -> list[PcConfig] | None:
    """Loads to PCs inside the base, or a SettingsError naming the registry file."""
    registry.write_bytes(content)
    settings = load_settings(base_path=base, registry_path=registry)
    try:
        pcs = load_registry(settings)
    except SettingsError as error:
        assert str(registry) in str(error), f"the error does not name the file: {error}"
        return None
    resolved_base = base.resolve()
    for pc in pcs:
        folder = (base / pc.watch_path).resolve()
        assert folder == resolved_base or resolved_base in folder.parents
    return pcs


@fuzz_settings(weight=2)
@given(REGISTRIES, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
@example('{"pcs":[{"id":"PC01","watch_path":"a\\u0000b"}]}', "utf-8")
@example('{"pcs":[{"id":"PC01","watch_path":"' + "a" * 300 + '"}]}', "utf-8")
def test_any_registry_file_is_pcs_inside_the_base_or_an_error_naming_it(
    tmp_path_factory: pytest.TempPathFactory, text: str, encoding: str
) -> None:
    root = tmp_path_factory.mktemp("registry")
    (root / "base" / "PC01" / "hands").mkdir(parents=True)
    (root / "outside").mkdir()
    (root / "base" / "escape").symlink_to(root / "outside")
    (root / "base" / "loop").symlink_to(root / "base" / "loop")
    try:
        content = text.encode(encoding, "surrogatepass")
    except UnicodeEncodeError:
        content = text.encode("utf-8", "surrogatepass")
    check_registry(root / "base", root / "pcs.json", content)


@fuzz_settings()
@given(st.binary(max_size=512))
def test_any_registry_bytes_are_pcs_or_an_error_naming_the_file(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    root = tmp_path_factory.mktemp("registry")
    (root / "base").mkdir()
    check_registry(root / "base", root / "pcs.json", content)


def test_a_registry_that_is_not_a_readable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    """Found by fuzzing the registry loader: OSErrors escaped as themselves."""
    registry = tmp_path / "pcs.json"
    registry.mkdir()
    with pytest.raises(SettingsError, match=re.escape(str(registry))):
        load_registry(load_settings(base_path=tmp_path, registry_path=registry))


def _registry(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps({"pcs": entries}).encode()
