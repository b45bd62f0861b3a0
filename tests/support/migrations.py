"""Databases migrated up to a given file, as a database that applied the files of its day."""

from __future__ import annotations

import shutil
from pathlib import Path

from gfx_sync.migrate import apply_migrations, migration_files


def apply_until(database_url: str, last_version: str, scratch: Path) -> list[str]:
    """Apply the migrations up to and including `last_version` (a file's stem) to an empty
    database, through the ledger as gfx-sync does; returns the versions applied."""
    folder = scratch / f"migrations-until-{last_version}"
    folder.mkdir(parents=True, exist_ok=True)
    files = [path for path in migration_files() if path.stem <= last_version]
    assert files and files[-1].stem == last_version, f"no migration {last_version}"
    for path in files:
        shutil.copy(path, folder / path.name)
    return apply_migrations(database_url, folder)
