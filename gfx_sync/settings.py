"""All of gfx-sync's settings, in one pydantic-settings class.

Every process (CLI, watcher, Prefect runs) builds its settings here, so a name, default or
rule exists once. Invalid values fail at start-up with a message naming the setting.
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Protocol

import orjson
import psycopg
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from gfx_sync.inotify_tree import AVAILABLE as inotify_available_here
from gfx_sync.inotify_tree import FolderNotices

ENV_PREFIX = "GFX_SYNC_"
NETWORK_FILESYSTEMS = frozenset({"cifs", "smb3", "smbfs", "nfs", "nfs4", "fuse.sshfs", "9p"})


class SettingsError(ValueError):
    """A setting or the PC registry is invalid; the message names the setting or file."""


class Target(StrEnum):
    SUPABASE = "supabase"  # REST through supabase-py
    POSTGRES = "postgres"  # a Postgres connection string (direct, or Supabase's pooler)
    EMBEDDED = "embedded"  # neither configured: an embedded server under the state dir


WatchMode = Literal["auto", "native", "polling"]
PC_ID_PATTERN = r"^[A-Za-z0-9._-]+$"  # and not "." or "..": it names a folder under _error/
# A site names a venue sharing one Prefect server and one target with others. It goes into
# table keys, deployment and work-pool names, tags, event labels and Postgres role names, so it
# is kept to lowercase letters, digits and '-' (no quoting anywhere, no clash with a separator).
SITE_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"
DEFAULT_SITE = "default"


def checked_pc_id(pc_id: str) -> str:
    """A PC id from outside the registry (`sync --pc`, a folder name) names a quarantine folder:
    it must be one plain name, as the registry requires."""
    if len(pc_id) > 64 or not re.match(PC_ID_PATTERN, pc_id) or pc_id in (".", ".."):
        raise SettingsError(f"PC id {pc_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return pc_id


class PcConfig(BaseModel):
    """One GFX PC: where its files land under the base folder and how to watch them."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=PC_ID_PATTERN)]
    name: str = ""
    watch_path: str
    enabled: bool = True
    watch_mode: WatchMode = "auto"

    @field_validator("id")
    @classmethod
    def _a_plain_name(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError("a PC id cannot be '.' or '..'")
        return value

    @field_validator("watch_path")
    @classmethod
    def _stays_under_base(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("watch_path must not contain a NUL character")
        path = Path(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"watch_path {value!r} must be relative to the base folder, no '..'")
        return value


class PcRegistry(BaseModel):
    pcs: list[PcConfig]

    @model_validator(mode="after")
    def _unique_ids(self) -> PcRegistry:
        ids = [pc.id for pc in self.pcs]
        duplicates = sorted({pc_id for pc_id in ids if ids.count(pc_id) > 1})
        if duplicates:
            raise ValueError(f"duplicate PC ids: {', '.join(duplicates)}")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        allow_inf_nan=False,  # "inf" seconds would park items forever, "nan" compares as nothing
    )

    base_path: Path = Path("gfx-data")
    registry_path: Path = Path("config/pc_registry.json")
    state_dir: Path = Path(".gfx-sync")
    queue_path: Path | None = None
    # This agent's venue (GFX_SYNC_SITE); a single-site install keeps the default
    site: Annotated[str, Field(pattern=SITE_PATTERN)] = DEFAULT_SITE

    database_url: SecretStr | None = None
    supabase_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_URL", "GFX_SYNC_SUPABASE_URL")
    )
    supabase_service_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_SERVICE_KEY", "GFX_SYNC_SUPABASE_SERVICE_KEY"),
    )

    batch_size: Annotated[int, Field(gt=0, le=10_000)] = 500
    flush_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    batch_max_bytes: Annotated[int, Field(ge=64 * 1024)] = 16 * 1024 * 1024
    # Connections a big batch is written over at once (Postgres target; one part each).
    write_connections: Annotated[int, Field(ge=1, le=8)] = 2
    max_file_bytes: Annotated[int, Field(ge=1024)] = 128 * 1024 * 1024
    max_retries: Annotated[int, Field(ge=0, le=100)] = 5
    backoff_initial: Annotated[float, Field(gt=0)] = 1.0
    backoff_max: Annotated[float, Field(gt=0)] = 300.0
    outage_retry_delay: Annotated[float, Field(gt=0)] = 2.0
    # A batch run that finds the target down probes it this long and drains once it answers.
    outage_wait: Annotated[float, Field(ge=0, le=3600)] = 4.0
    settle_seconds: Annotated[float, Field(ge=0)] = 2.0
    request_timeout: Annotated[float, Field(gt=0, le=600)] = 15.0
    lease_seconds: Annotated[float, Field(gt=0)] = 120.0
    poll_delay_ms: Annotated[int, Field(ge=50)] = 500
    recovery_interval: Annotated[float, Field(ge=10)] = 300.0
    realtime_rate_limit: Annotated[float, Field(ge=0)] = 0.25
    realtime_grace: Annotated[float, Field(ge=0)] = 3.0

    prefect_port: Annotated[int, Field(gt=0, lt=65536)] = 4200
    # The address the local Prefect server binds; 0.0.0.0 in a container, so its UI is reachable
    prefect_host: str = "127.0.0.1"
    # How `up` executes deployment runs; auto: warm on a tested Prefect version, else stock
    runner: Literal["auto", "warm", "stock"] = "auto"
    # `up` drains the queue itself once the Prefect server has been unreachable this long
    orchestrator_grace: Annotated[float, Field(gt=0)] = 10.0
    run_retention_hours: Annotated[int, Field(ge=1)] = 72
    # The database of a Prefect server gfx-sync starts (`up`, `gfx-sync server`): a
    # postgresql+asyncpg:// URL for a central server; unset, SQLite under the state folder
    prefect_database_url: SecretStr | None = None
    alert_webhook_url: SecretStr | None = None
    alert_kind: Literal["webhook", "slack"] = "webhook"
    alert_cooldown: Annotated[float, Field(ge=0)] = 600.0
    # The operator console (`gfx-sync console`, and inside `up`): loopback unless told otherwise
    console_port: Annotated[int, Field(ge=0, lt=65536)] = 4300  # 0: `up` serves no console
    console_host: str = "127.0.0.1"
    console_token: SecretStr | None = None  # actions (requeue) need it; unset: read-only
    # A PC that synced within the hour but not for this long, while others did, is "silent"
    pc_silent_after: Annotated[float, Field(gt=0)] = 300.0
    # Alert when the oldest pending change has waited longer than this
    pending_alert_after: Annotated[float, Field(gt=0)] = 120.0

    @field_validator("database_url")
    @classmethod
    def _parseable(cls, value: SecretStr | None) -> SecretStr | None:
        """Checked at start-up, and never echoed: libpq's own message quotes the string."""
        if value is not None and value.get_secret_value():
            try:
                psycopg.conninfo.conninfo_to_dict(value.get_secret_value())
            except psycopg.ProgrammingError:
                raise ValueError("not a valid Postgres connection string") from None
        return value or None

    @field_validator("prefect_database_url")
    @classmethod
    def _asyncpg_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Prefect's server reads PostgreSQL through asyncpg; never echoed (it holds a password)."""
        text = value.get_secret_value() if value is not None else ""
        if text and not text.startswith("postgresql+asyncpg://"):
            raise ValueError("must be a postgresql+asyncpg:// URL")
        return value or None

    @field_validator("supabase_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value or None

    @model_validator(mode="after")
    def _one_target(self) -> Settings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        if bool(self.supabase_url) != bool(self.supabase_service_key):
            raise ValueError("SUPABASE_URL and SUPABASE_SERVICE_KEY must be set together")
        if self.supabase_url and self.database_url:
            raise ValueError(
                "set either SUPABASE_URL/SUPABASE_SERVICE_KEY or GFX_SYNC_DATABASE_URL, not both"
            )
        return self

    @property
    def target(self) -> Target:
        if self.supabase_url:
            return Target.SUPABASE
        if self.database_url:
            return Target.POSTGRES
        return Target.EMBEDDED

    @property
    def resolved_queue_path(self) -> Path:
        return self.queue_path or self.state_dir / "queue.sqlite3"

    @property
    def error_dir(self) -> Path:
        """Quarantine lives beside the PC folders, and is never watched."""
        return self.base_path / "_error"

    @property
    def embedded_pg_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into one clear message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = (ENV_PREFIX + loc[0]).upper() if loc else "settings"
        if loc and loc[0] in {"SUPABASE_URL", "SUPABASE_SERVICE_KEY"}:
            name = loc[0]
        # Never echo the input: it may be a secret.
        lines.append(f"invalid setting {name}: {error['msg']}")
    return "; ".join(lines)


def load_registry(settings: Settings) -> list[PcConfig]:
    """The PCs to watch: from the registry file, or every `<base>/<PC>/hands/` folder."""
    path = settings.registry_path
    if path.exists():
        document: object = None
        try:
            document = orjson.loads(path.read_bytes())
            registry = PcRegistry.model_validate(document)
        except OSError as exc:
            raise SettingsError(
                f"invalid PC registry {path}: cannot read it ({exc.strerror or exc})"
            ) from None
        except (orjson.JSONDecodeError, ValidationError) as exc:
            detail = describe_registry_error(exc, document)
            raise SettingsError(f"invalid PC registry {path}: {detail}") from None
        pcs = registry.pcs
        where = f"PC registry {path}"
    else:
        pcs = discover_pcs(settings.base_path)
        where = f"PC folders under {settings.base_path}"
    for pc in pcs:
        try:
            ensure_under_base(settings.base_path, pc)
        except SettingsError as exc:
            raise SettingsError(f"invalid {where}: {exc}") from None
    return pcs


# PCs read less than this long after the registry, the base folder or a PC folder last changed
# are read again on the next call: a change within the filesystem's timestamp tick keeps the
# modification time, so a stat alone cannot tell that read from a later edit (git's "racily
# clean" entries).
RACY_SECONDS = 2.0
PcsFingerprint = tuple[object, ...]


class FolderWatches(Protocol):
    """Where `pcs_fingerprint` says which folders it is about to read (`FolderNotices`)."""

    def watch(self, folder: str) -> None: ...


class _WatchCount:
    """Counts the folders `pcs_fingerprint` would watch, watching none."""

    def __init__(self) -> None:
        self.folders = 0

    def watch(self, folder: str) -> None:
        self.folders += 1


def pcs_fingerprint(
    settings: Settings, notices: FolderWatches | None = None
) -> tuple[PcsFingerprint, float]:
    """What `load_registry`'s answer rests on, from stats alone, and the newest time among
    them: the registry file's identity, size and times, the base folder's, and each entry of
    the base folder as an identity and a modification time (a `hands` folder made, removed or
    swapped for a link inside a PC's folder changes that folder's time). Files written inside
    `hands` change none of it. `notices`: the base folder and each folder in it are watched
    before they are read."""
    (registry, base_identity), written = _fingerprint_head(settings)
    if base_identity is None:
        return (registry, None, ()), written
    base = os.fspath(settings.base_path)
    if notices is not None:
        notices.watch(base)
    try:
        with os.scandir(base) as found:
            entries = sorted(_entry_identity(entry, notices) for entry in found)
    except OSError:
        return (registry, None, ()), written
    newest = max((entry[3] for entry in entries if entry[3] is not None), default=0)
    return (registry, base_identity, entries), max(written, newest / 1e9)


def _fingerprint_head(settings: Settings) -> tuple[tuple[object, object], float]:
    """The registry file's identity and the base folder's (a stat each), and the newest time
    among them."""
    try:
        registry_stat = os.stat(settings.registry_path)
    except OSError:
        registry: object = None
        written = 0.0
    else:
        registry = (
            registry_stat.st_ino,
            registry_stat.st_size,
            registry_stat.st_mtime_ns,
            registry_stat.st_ctime_ns,
        )
        written = max(registry_stat.st_mtime, registry_stat.st_ctime)
    try:
        base_stat = os.lstat(settings.base_path)
    except OSError:
        return (registry, None), written
    base = (base_stat.st_ino, base_stat.st_mode, base_stat.st_mtime_ns)
    return (registry, base), max(written, base_stat.st_mtime_ns / 1e9)


def _entry_identity(
    entry: os.DirEntry[str], notices: FolderWatches | None
) -> tuple[str, int, int, int | None]:
    if notices is not None and entry.is_dir():  # a link to a folder cannot be watched: untrusted
        notices.watch(entry.path)
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:  # gone since the listing
        return entry.name, 0, 0, None
    return entry.name, st.st_ino, st.st_mode, st.st_mtime_ns


class RegistryReader:
    """`load_registry`, read again only when `pcs_fingerprint` changed (a PC folder came or
    went, its `hands` folder changed, the registry was edited), when the last read came too
    soon after any of them changed to trust their stats (`RACY_SECONDS`), or `max_age`
    seconds after the last read (a change deeper than the fingerprint looks).
    A read that fails is not kept: the next call reads again. Thread-safe.

    `watch`: for a process that asks every second. On a local base folder, the folders the
    fingerprint lists are then watched (`FolderNotices`: an inotify instance and a watch per
    folder); while no event came, a call stats the registry and the base folder and no more."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.time,
        watch: bool = False,
    ) -> None:
        self.settings = settings
        self.max_age = max_age
        self.watch = watch
        self._clock = clock
        self._lock = threading.Lock()
        self._fingerprint: PcsFingerprint | None = None
        self._written = 0.0  # the newest time the fingerprint held when it was taken
        self._notices: FolderNotices | None = None
        self._read_at = 0.0
        self._pcs: list[PcConfig] = []
        self.reads = 0  # full reads (tests, the bench)
        self.looks = 0  # full fingerprints (tests, the bench)

    @classmethod
    def shared(cls, settings: Settings, *, watch: bool = False) -> RegistryReader:
        """The process's reader for this registry and base folder (all `load_registry` reads):
        `up`'s watcher supervisor, console and status table ask the same question, so one
        answer serves them. Kept while someone holds it; `watch` once anyone asked for it."""
        key = (os.fspath(settings.registry_path), os.fspath(settings.base_path))
        with _SHARED_READERS_LOCK:
            reader = _SHARED_READERS.get(key)
            if reader is None:
                reader = _SHARED_READERS[key] = cls(settings)
            reader.watch = reader.watch or watch
            return reader

    def __call__(self) -> list[PcConfig]:
        with self._lock:
            now = self._clock()
            if self._quiet_since_last_look(now):
                return self._pcs
            if self._notices is not None:
                self._notices.close()
            local = self.watch and events_trusted(self.settings.base_path)
            self._notices = FolderNotices() if local else None
            fingerprint, self._written = pcs_fingerprint(self.settings, self._notices)
            self.looks += 1
            if (
                fingerprint == self._fingerprint
                and self._read_at - self._written > RACY_SECONDS  # read when already settled
                and now - self._read_at < self.max_age
            ):
                return self._pcs
            self._fingerprint = None
            self._pcs = load_registry(self.settings)
            self.reads += 1
            self._fingerprint, self._read_at = fingerprint, now
            return self._pcs

    def _quiet_since_last_look(self, now: float) -> bool:
        """Nothing the fingerprint rests on can have changed since it was taken: its folders'
        watches saw nothing and the registry and base folder stat the same."""
        return (
            self._notices is not None
            and self._fingerprint is not None
            and self._read_at - self._written > RACY_SECONDS
            and now - self._read_at < self.max_age
            and _fingerprint_head(self.settings)[0] == self._fingerprint[:2]
            and not self._notices.changed()
        )


def events_trusted(folder: Path) -> bool:
    """Whether inotify events can tell what changes in `folder` (not a network share, whose
    other hosts' writes raise none; no polling forced)."""
    if os.environ.get("WATCHFILES_FORCE_POLLING"):
        return False
    return filesystem_type(folder) not in NETWORK_FILESYSTEMS


def pc_check_watches(settings: Settings) -> int:
    """The inotify watches a watching `RegistryReader` (`up`'s) takes: the folders its
    fingerprint watches, on a local base folder."""
    if not (inotify_available_here and events_trusted(settings.base_path)):
        return 0
    count = _WatchCount()
    pcs_fingerprint(settings, count)
    return count.folders


_SHARED_READERS: weakref.WeakValueDictionary[tuple[str, str], RegistryReader] = (
    weakref.WeakValueDictionary()
)
_SHARED_READERS_LOCK = threading.Lock()


def describe_registry_error(exc: Exception, document: object = None) -> str:
    """Each problem with its place; a PC entry is named by its id where it has one."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    entries = document.get("pcs") if isinstance(document, dict) else None
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        place = ".".join(loc)
        if len(loc) >= 2 and loc[0] == "pcs" and loc[1].isdigit() and isinstance(entries, list):
            entry = entries[int(loc[1])] if int(loc[1]) < len(entries) else None
            pc_id = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(pc_id, str) and pc_id:
                place += f" (PC {pc_id[:64]!r})"
        problems.append(f"{place}: {error['msg']}")
    return "; ".join(problems)


def discover_pcs(base_path: Path) -> list[PcConfig]:
    """Every `<base>/<PC>/hands/`; a folder whose name cannot be a PC id is an error, not
    skipped (its files would silently never sync): list it in the registry under an id."""
    if not base_path.is_dir():
        return []
    pcs = []
    for child in sorted(base_path.iterdir()):
        if child.name.startswith(("_", ".")) or not (child / "hands").is_dir():
            continue
        try:
            pcs.append(PcConfig(id=child.name, name=child.name, watch_path=f"{child.name}/hands"))
        except ValidationError:
            raise SettingsError(
                f"PC folder {child}: {child.name!r} is not a PC id (1-64 letters, digits, "
                "'.', '_' or '-'); give it an id in the PC registry (GFX_SYNC_REGISTRY_PATH)"
            ) from None
    return pcs


def ensure_under_base(base_path: Path, pc: PcConfig) -> Path:
    """Resolve a PC's folder, refusing one that escapes the base folder through a symlink."""
    try:
        base = base_path.resolve()
        folder = (base_path / pc.watch_path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a loop of links (3.11: RuntimeError)
        raise SettingsError(
            f"PC {pc.id}: watch_path {pc.watch_path!r} cannot be resolved: {exc}"
        ) from None
    if folder != base and base not in folder.parents:
        raise SettingsError(f"PC {pc.id}: watch_path {pc.watch_path!r} resolves outside the base")
    return folder


def filesystem_type(path: Path) -> str | None:
    """The mount type holding `path` (Linux /proc/mounts), to pick polling for network shares."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    resolved = str(path.resolve())
    best: tuple[int, str] | None = None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), parts[2])
    return best[1] if best else None


def uses_polling(pc: PcConfig, folder: Path) -> bool:
    """Network shares do not raise native events for other hosts' writes: poll them."""
    if pc.watch_mode != "auto":
        return pc.watch_mode == "polling"
    return not events_trusted(folder)
