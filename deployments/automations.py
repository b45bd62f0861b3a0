"""Alerts: Prefect automations that notify when a gfx-sync flow run fails or crashes, and
when something fails silently (the `gfx.alert.*` events of deployments/alerting.py).

prefect.yaml cannot declare automations, so `gfx-sync up` creates them idempotently (by
name): the notification block and the automations are updated in place on every start.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from deployments.definitions import site_suffix
from flows.hooks import RUN_PROBLEM_EVENT_PREFIX
from flows.labels import site_tag
from gfx_sync.settings import DEFAULT_SITE, Settings

log = logging.getLogger(__name__)

AUTOMATION_NAME = "gfx-sync: run failed or crashed"
BLOCK_NAME = "gfx-sync-alerts"
ALERT_SUBJECT = (
    "gfx-sync: {{ event.payload.flow }} run {{ event.payload.run }} {{ event.payload.state }}"
)
ALERT_BODY = (
    "Flow run {{ event.payload.run }} of {{ event.payload.flow }} entered "
    "{{ event.payload.state }}: {{ event.payload.message }}"
)
# Silent failures (a PC silent, the queue stalled, files dead-lettered or quarantined): the
# events `up`'s alerting thread emits (deployments/alerting.py), sent through the same block.
SILENT_FAILURE_AUTOMATION_NAME = "gfx-sync: silent failure raised or cleared"
SILENT_FAILURE_EVENT_PREFIX = "gfx.alert."
SILENT_FAILURE_RAISED = f"{SILENT_FAILURE_EVENT_PREFIX}raised"
SILENT_FAILURE_CLEARED = f"{SILENT_FAILURE_EVENT_PREFIX}cleared"
SILENT_FAILURE_SUBJECT = "{{ event.payload.subject }}"
SILENT_FAILURE_BODY = "{{ event.payload.text }}"


def automation_name(name: str, site: str) -> str:
    """Each site has its own automations on a shared server; the default site's keep their
    names."""
    return name if site == DEFAULT_SITE else f"{name} (site {site})"


def block_name(site: str) -> str:
    return f"{BLOCK_NAME}{site_suffix(site)}"


def failed_run_trigger(settings: Settings) -> EventTrigger:
    """Failed or crashed runs of this site (see flows/hooks.py for why these events, not
    Prefect's state events); at most one alert per `alert_cooldown`, so an outage is one
    message."""
    return EventTrigger(
        expect={f"{RUN_PROBLEM_EVENT_PREFIX}failed", f"{RUN_PROBLEM_EVENT_PREFIX}crashed"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.id": f"prefect.tag.{site_tag(settings.site)}"},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(seconds=settings.alert_cooldown),
    )


def save_notification_block(settings: Settings) -> UUID:
    """Save (or overwrite) the block the alerts are sent through; returns its document id."""
    assert settings.alert_webhook_url is not None
    if settings.alert_kind == "slack":
        block: CustomWebhookNotificationBlock | SlackWebhook = SlackWebhook(
            url=settings.alert_webhook_url
        )
    else:
        block = CustomWebhookNotificationBlock(
            name="gfx-sync",
            # The URL is the secret (its token): kept in the block's SecretDict, which the API
            # and the UI mask, and put into the URL template only when the alert is sent.
            url="{{webhook_url}}",
            secrets={"webhook_url": settings.alert_webhook_url.get_secret_value()},
            json_data={"subject": "{{subject}}", "text": "{{body}}", "source": "gfx-sync"},
            allow_private_urls=True,
        )
    return block.save(block_name(settings.site), overwrite=True)


def silent_failure_trigger(site: str = DEFAULT_SITE) -> EventTrigger:
    """Every `gfx.alert.raised` / `.cleared` event of this site: `up`'s alerting thread
    already sends one per condition, with its own per-condition cooldown
    (gfx_sync/alerts.py), so none is held back here."""
    return EventTrigger(
        expect={SILENT_FAILURE_RAISED, SILENT_FAILURE_CLEARED},
        match={"prefect.resource.id": f"{SILENT_FAILURE_EVENT_PREFIX}*"},
        match_related={"prefect.resource.id": f"prefect.tag.{site_tag(site)}"},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(0),
    )


def ensure_silent_failure_automation(block_document_id: UUID, site: str) -> Automation:
    """Create or update the automation forwarding the site's silent-failure alerts."""
    automation = Automation(
        name=automation_name(SILENT_FAILURE_AUTOMATION_NAME, site),
        description="Notify when a PC goes silent, the queue stalls or files fail to sync.",
        trigger=silent_failure_trigger(site),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject=SILENT_FAILURE_SUBJECT,
                body=SILENT_FAILURE_BODY,
            )
        ],
    )
    return _create_or_update(automation)


def _create_or_update(automation: Automation) -> Automation:
    try:
        existing = Automation.read(name=automation.name)
    except ValueError:
        existing = None
    if existing is None:
        return automation.create()
    automation.id = existing.id
    automation.update()
    return automation


def ensure_alert_automation(settings: Settings) -> Automation | None:
    """Create or update the alerts (failed runs, silent failures); without a webhook
    configured there is nothing to send to. Returns the failed-run one."""
    if settings.alert_webhook_url is None:
        log.info("alerts off: set GFX_SYNC_ALERT_WEBHOOK_URL to be notified of failed runs")
        return None
    block_document_id = save_notification_block(settings)
    ensure_silent_failure_automation(block_document_id, settings.site)
    automation = Automation(
        name=automation_name(AUTOMATION_NAME, settings.site),
        description="Notify when a gfx-sync flow run fails or crashes.",
        trigger=failed_run_trigger(settings),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject=ALERT_SUBJECT,
                body=ALERT_BODY,
            )
        ],
    )
    return _create_or_update(automation)
