"""Settings and the PC registry: documented names, safe defaults, clear start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gfx_sync.settings import (
    PcConfig,
    SettingsError,
    Target,
    ensure_under_base,
    load_registry,
    load_settings,
    uses_polling,
)

SECRET = "eyJ-service-key-do-not-print"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_KEY", "WATCHFILES_FORCE_POLLING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env or config/ from the developer's tree


def test_defaults_are_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.batch_size == 500
    assert settings.flush_interval == 5.0
    assert settings.max_retries == 5
    assert settings.target is Target.EMBEDDED
    assert settings.resolved_queue_path == Path(".gfx-sync/queue.sqlite3")


def test_documented_environment_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GFX_SYNC_BASE_PATH", "/mnt/nas")
    monkeypatch.setenv("GFX_SYNC_REGISTRY_PATH", "/etc/gfx/pcs.json")
    monkeypatch.setenv("GFX_SYNC_STATE_DIR", "/var/lib/gfx-sync")
    monkeypatch.setenv("GFX_SYNC_BATCH_SIZE", "50")
    monkeypatch.setenv("GFX_SYNC_FLUSH_INTERVAL", "2.5")
    monkeypatch.setenv("GFX_SYNC_DATABASE_URL", "postgresql://u:pw@db/gfx")
    settings = load_settings()
    assert settings.base_path == Path("/mnt/nas")
    assert settings.registry_path == Path("/etc/gfx/pcs.json")
    assert settings.resolved_queue_path == Path("/var/lib/gfx-sync/queue.sqlite3")
    assert (settings.batch_size, settings.flush_interval) == (50, 2.5)
    assert settings.target is Target.POSTGRES


def test_supabase_target_keeps_the_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", SECRET)
    settings = load_settings()
    assert settings.target is Target.SUPABASE
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.supabase_service_key.get_secret_value() == SECRET


def test_a_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GFX_SYNC_BATCH_SIZE=42\n")
    assert load_settings().batch_size == 42


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("GFX_SYNC_BATCH_SIZE", "0", "GFX_SYNC_BATCH_SIZE"),
        ("GFX_SYNC_BATCH_SIZE", "lots", "GFX_SYNC_BATCH_SIZE"),
        ("GFX_SYNC_FLUSH_INTERVAL", "-1", "GFX_SYNC_FLUSH_INTERVAL"),
        ("SUPABASE_URL", "ftp://x", "SUPABASE_URL"),
    ],
)
def test_an_invalid_setting_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_half_a_supabase_target_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    with pytest.raises(SettingsError, match="SUPABASE_SERVICE_KEY"):
        load_settings()


def test_errors_never_echo_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", SECRET)
    monkeypatch.setenv("SUPABASE_URL", "not-a-url")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert SECRET not in str(caught.value)


def test_without_a_registry_every_pc_folder_with_hands_is_a_pc(tmp_path: Path) -> None:
    for name in ("PC02", "PC01", "_error", "notes"):
        (tmp_path / "nas" / name / ("hands" if name != "notes" else "misc")).mkdir(parents=True)
    settings = load_settings(base_path=tmp_path / "nas")
    assert [(pc.id, pc.watch_path) for pc in load_registry(settings)] == [
        ("PC01", "PC01/hands"),
        ("PC02", "PC02/hands"),
    ]


def test_the_registry_file_is_read_and_validated(tmp_path: Path) -> None:
    registry = tmp_path / "pcs.json"
    registry.write_text(
        '{"pcs":[{"id":"PC01","name":"Feature table","watch_path":"PC01/hands",'
        '"enabled":true,"watch_mode":"polling"},'
        '{"id":"PC02","name":"Outer","watch_path":"PC02/hands","enabled":false}]}'
    )
    pcs = load_registry(load_settings(base_path=tmp_path, registry_path=registry))
    assert [(pc.id, pc.enabled, pc.watch_mode) for pc in pcs] == [
        ("PC01", True, "polling"),
        ("PC02", False, "auto"),
    ]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "invalid PC registry"),
        ('{"pcs":[{"id":"PC01"}]}', "watch_path"),
        ('{"pcs":[{"id":"PC01","watch_path":"../etc"}]}', "no '..'"),
        ('{"pcs":[{"id":"PC01","watch_path":"/etc"}]}', "relative"),
        ('{"pcs":[{"id":"P 1","watch_path":"a"}]}', "pcs.0.id"),
        ('{"pcs":[{"id":"A","watch_path":"a"},{"id":"A","watch_path":"b"}]}', "duplicate"),
    ],
)
def test_a_bad_registry_names_the_file_and_the_problem(
    tmp_path: Path, content: str, words: str
) -> None:
    registry = tmp_path / "pcs.json"
    registry.write_text(content)
    with pytest.raises(SettingsError) as caught:
        load_registry(load_settings(base_path=tmp_path, registry_path=registry))
    assert str(registry) in str(caught.value) and words in str(caught.value)


def test_a_symlink_out_of_the_base_is_refused(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "base" / "PC01").symlink_to(tmp_path / "elsewhere")
    pc = PcConfig(id="PC01", watch_path="PC01")
    with pytest.raises(SettingsError, match="outside the base"):
        ensure_under_base(tmp_path / "base", pc)


@pytest.mark.parametrize(
    ("watch_path", "words"),
    [("../PC01", "no '..'"), ("PC01/../../x", "no '..'"), ("/srv/nas/PC01", "relative")],
)
def test_a_registry_path_out_of_the_base_names_the_file_and_the_pc(
    tmp_path: Path, watch_path: str, words: str
) -> None:
    registry = tmp_path / "pcs.json"
    registry.write_text(
        '{"pcs":[{"id":"PC00","watch_path":"PC00/hands"},'
        f'{{"id":"PC07","watch_path":"{watch_path}"}}]}}'
    )
    with pytest.raises(SettingsError) as caught:
        load_registry(load_settings(base_path=tmp_path / "base", registry_path=registry))
    message = str(caught.value)
    assert str(registry) in message and "PC07" in message and words in message
    assert "PC00" not in message


def test_a_registry_symlink_out_of_the_base_names_the_file_and_the_pc(tmp_path: Path) -> None:
    (tmp_path / "base" / "PC01").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "base" / "PC01" / "hands").symlink_to(tmp_path / "elsewhere")
    registry = tmp_path / "pcs.json"
    registry.write_text('{"pcs":[{"id":"PC01","watch_path":"PC01/hands"}]}')
    with pytest.raises(SettingsError) as caught:
        load_registry(load_settings(base_path=tmp_path / "base", registry_path=registry))
    message = str(caught.value)
    assert str(registry) in message and "PC PC01" in message and "outside the base" in message


def test_a_discovered_pc_folder_linking_out_of_the_base_is_refused(tmp_path: Path) -> None:
    (tmp_path / "base" / "PC02").mkdir(parents=True)
    (tmp_path / "elsewhere" / "hands").mkdir(parents=True)
    (tmp_path / "base" / "PC02" / "hands").symlink_to(tmp_path / "elsewhere" / "hands")
    settings = load_settings(base_path=tmp_path / "base", registry_path=tmp_path / "none.json")
    with pytest.raises(SettingsError, match=r"PC PC02: .*outside the base"):
        load_registry(settings)


def test_a_symlink_loop_or_nul_in_a_watch_path_is_a_settings_error(tmp_path: Path) -> None:
    """Found by tests/test_settings_fuzz.py: these escaped as RuntimeError / ValueError."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "loop").symlink_to(tmp_path / "base" / "loop")
    registry = tmp_path / "pcs.json"
    for watch_path, words in (("loop/hands", "cannot be resolved"), ("a\\u0000b", "NUL")):
        registry.write_text(f'{{"pcs":[{{"id":"PC01","watch_path":"{watch_path}"}}]}}')
        with pytest.raises(SettingsError, match=words) as caught:
            load_registry(load_settings(base_path=tmp_path / "base", registry_path=registry))
        assert str(registry) in str(caught.value) and "PC01" in str(caught.value)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_non_finite_number_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Found by tests/test_settings_fuzz.py: an "inf" lease or settle time was accepted."""
    monkeypatch.setenv("GFX_SYNC_LEASE_SECONDS", value)
    with pytest.raises(SettingsError, match="GFX_SYNC_LEASE_SECONDS"):
        load_settings()


def test_watch_mode_auto_polls_only_network_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pc = PcConfig(id="PC01", watch_path="PC01/hands")
    assert uses_polling(pc, tmp_path) is False  # a local disk
    assert uses_polling(pc.model_copy(update={"watch_mode": "polling"}), tmp_path) is True
    monkeypatch.setattr("gfx_sync.settings.filesystem_type", lambda _path: "cifs")
    assert uses_polling(pc, tmp_path) is True
    assert uses_polling(pc.model_copy(update={"watch_mode": "native"}), tmp_path) is False


@pytest.mark.parametrize(
    "url", ["postgresq://gfx:pw-canary-2@h/db", "postgresql://gfx:pw-canary-2@[::1/db"]
)
def test_an_unparseable_database_url_fails_at_start_up_without_echo(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """libpq quotes a string it cannot parse, password and all: checked here, said without it."""
    monkeypatch.setenv("GFX_SYNC_DATABASE_URL", url)
    with pytest.raises(SettingsError, match="GFX_SYNC_DATABASE_URL") as caught:
        load_settings()
    assert "pw-canary-2" not in str(caught.value)
