"""A NAS laid out in a test's temporary folder, and settings that point at it.

No registry file: every `<base>/<PC>/hands` folder is a PC, as on a fresh install.
"""

from __future__ import annotations

from pathlib import Path

from gfx_sync.settings import Settings


def make_nas(root: Path, pcs: tuple[str, ...] = ("PC01", "PC02")) -> Path:
    """`<root>/nas/<PC>/hands` for each PC; returns the base folder."""
    base = root / "nas"
    for pc in pcs:
        (base / pc / "hands").mkdir(parents=True, exist_ok=True)
    return base


def nas_settings(root: Path, **overrides: object) -> Settings:
    """Settings for the NAS under `root` (made with `make_nas`), state in `<root>/state`."""
    values: dict[str, object] = {
        "base_path": root / "nas",
        "state_dir": root / "state",
        "registry_path": root / "no-registry.json",
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]
