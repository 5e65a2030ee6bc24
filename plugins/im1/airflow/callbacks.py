"""Failure notification for every IM1 task (plugged in through ``default_args``).

Always writes a clear, single-paragraph alert to the task log; also posts it to a webhook when
``IM1_ALERT_WEBHOOK_URL`` is set (JSON ``{"text": ...}``, the Slack/Teams/Mattermost shape).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request

log = logging.getLogger("im1.alerts")


def alert_text(context: dict) -> str:
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    run_id = context.get("run_id", "?")
    exc = context.get("exception")
    label = f"{task_id}[{map_index}]" if map_index not in (-1, None) else task_id
    return f"IM1 ALERT: {dag_id}.{label} failed in run {run_id}: {exc}"


def notify_failure(context: dict) -> None:
    text = alert_text(context)
    log.error(text)
    url = os.environ.get("IM1_ALERT_WEBHOOK_URL")
    if url:
        req = urllib.request.Request(
            url, data=json.dumps({"text": text}).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except OSError as err:
            log.error("could not post the alert to the webhook: %s", err)
