"""The names gfx-sync's runs and events carry on a Prefect server that several sites share:
tags on deployments (and so on their runs) and resource labels on events. One place, so the
watcher that emits, the triggers and automations that match, and the views that filter agree.
"""

from __future__ import annotations

TAG = "gfx-sync"
SITE_TAG_PREFIX = "site:"
SITE_LABEL = "gfx.site"  # the resource label naming the site on every gfx event


def site_tag(site: str) -> str:
    """The tag on a site's deployments and so on all their runs: filter on it to find them."""
    return f"{SITE_TAG_PREFIX}{site}"


def site_tags(site: str) -> list[str]:
    return [TAG, site_tag(site)]
