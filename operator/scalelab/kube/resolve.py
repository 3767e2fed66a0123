"""Keep kopf watching the APIs the operator needs when they appear after it started.

kopf resolves its handlers' resources from the API server's discovery at start, and again on
every CRD event. A CRD created just after the operator started (the MPI operator or Kueue
installed after scalelab) can have all its events arrive before discovery serves the new group.
kopf then logs "Unresolved resources cannot be served (try creating their CRDs)" and never
watches it until restarted: the operator creates MPIJobs but never sees their status, and the
trials stay Pending after their MPIJobs succeeded. This happened on the real node under load;
azimuth-cloud/zenith#15 reports the same with kopf.

While one of the needed resources is unresolved, `keep_resolved` asks discovery for its API
group with a backoff from 5 s to 60 s (one request per unresolved group per wait; Kueue stays
unresolved where it is not installed), and once discovery serves it runs kopf's own rescan of
that group (what kopf does on a CRD event). kopf has no public call for a rescan; the internals
used here are those of kopf 1.45.2, which images/requirements/operator.txt pins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

import kopf
from kopf._cogs.clients.scanning import scan_resources
from kopf._cogs.structs.references import Insights
from kopf._core.reactor.observation import process_discovered_resource_event

log = logging.getLogger(__name__)

FIRST_WAIT_SECONDS, MAX_WAIT_SECONDS = 5.0, 60.0


def unresolved(insights: Insights, needed: Collection[tuple[str, str, str]]) -> list[str]:
    """The API groups of the (group, version, plural) in `needed` that kopf does not serve now."""
    served = {(r.group, r.plural) for r in insights.watched_resources | insights.indexed_resources}
    return sorted({group for group, _, plural in needed if (group, plural) not in served})


async def rescan(
    group: str,
    needed: Collection[tuple[str, str, str]],
    settings: kopf.OperatorSettings,
    registry: kopf.OperatorRegistry,
    insights: Insights,
) -> None:
    """Resolve one API group again, as kopf does when one of its CRDs changes, once discovery
    serves a needed resource of it (else kopf would only log its warning once more)."""
    served = await scan_resources(groups={group}, settings=settings, logger=log)
    if not {(r.group, r.plural) for r in served} & {(g, p) for g, _, p in needed}:
        return
    event: Any = {"type": "MODIFIED", "object": {"spec": {"group": group}}}
    await process_discovered_resource_event(
        raw_event=event, settings=settings, registry=registry, insights=insights
    )


async def keep_resolved(
    needed: Collection[tuple[str, str, str]],
    settings: kopf.OperatorSettings,
    registry: kopf.OperatorRegistry,
    insights: Insights,
) -> None:
    """Rescan the groups of `needed` kopf has not resolved, with backoff; runs until cancelled."""
    wait = FIRST_WAIT_SECONDS
    while True:
        await asyncio.sleep(wait)
        missing = unresolved(insights, needed)
        for group in missing:
            try:
                await rescan(group, needed, settings, registry, insights)
            except Exception as e:  # the API server may be away for a moment: next time
                log.warning("rescanning API group %s failed: %s", group, e)
        found = [g for g in missing if g not in unresolved(insights, needed)]
        if found:
            log.info("now watching API group(s) that appeared after start: %s", ", ".join(found))
        wait = FIRST_WAIT_SECONDS if found or not missing else min(2 * wait, MAX_WAIT_SECONDS)


def register(
    registry: kopf.OperatorRegistry,
    settings: kopf.OperatorSettings,
    insights: Insights,
    needed: Collection[tuple[str, str, str]],
) -> None:
    """Run `keep_resolved` for the operator's lifetime (started and cancelled by kopf)."""
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_resolving(**_: Any) -> None:
        tasks.append(asyncio.create_task(keep_resolved(needed, settings, registry, insights)))

    @kopf.on.cleanup(registry=registry)
    async def stop_resolving(**_: Any) -> None:
        for task in tasks:
            task.cancel()
