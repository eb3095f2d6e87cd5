"""The fleet report behind ``mdpctl status``: one JSON-able map, and its text rendering."""

from __future__ import annotations

from typing import Any

from mdpctl.fleet import Fleet
from mdpctl.table import format_duration, format_table


def build_report(fleet: Fleet) -> dict[str, Any]:
    """Brokers, hosts, services and workers, as plain data (``mdpctl status --json``)."""
    endpoints = [v.endpoint for v in fleet.brokers]
    return {
        "brokers": [_broker(v) for v in fleet.brokers],
        "hosts": [
            {
                "name": h.name,
                "supervisor": h.host.supervisor.display(),
                "up": h.error is None,
                "error": h.error,
                "pid": h.supervisord_pid or None,
            }
            for h in fleet.hosts
        ],
        "services": _services(fleet, endpoints),
        "workers": _workers(fleet),
        "unmanaged": [
            {
                "broker": endpoint,
                "service": service,
                "host": w.host,
                "pid": w.pid,
                "state": w.state,
                "version": w.version,
                "served": w.served,
            }
            for endpoint, service, w in fleet.unmatched()
        ],
    }


def _broker(view: Any) -> dict[str, Any]:
    status = view.status
    if status is None:
        return {"endpoint": view.endpoint, "up": False, "error": view.error}
    return {
        "endpoint": view.endpoint,
        "up": True,
        "error": None,
        "pid": status.broker.pid,
        "host": status.broker.host,
        "version": status.broker.version,
        "uptime_s": status.broker.uptime_s,
        "counters": status.counters.to_wire(),
    }


def _services(fleet: Fleet, endpoints: list[str]) -> list[dict[str, Any]]:
    names = {s.service for s in fleet.slots()}
    for view in fleet.brokers:
        if view.status is not None:
            names.update(view.status.services)
    result = []
    for name in sorted(names):
        slots = fleet.slots(name)
        queue: dict[str, int | None] = {}
        serving: dict[str, int | None] = {}
        for view in fleet.brokers:
            if view.status is None:
                queue[view.endpoint] = serving[view.endpoint] = None
                continue
            entry = view.status.services.get(name)
            queue[view.endpoint] = entry.queue if entry else 0
            serving[view.endpoint] = entry.serving if entry else 0
        hosts = {}
        for host in fleet.hosts:
            if host.service_slots(name):
                hosts[host.name] = {
                    "running": sum(s.process.is_up for s in host.service_slots(name)),
                    "chosen": host.chosen(name),
                }
        chosen = [h["chosen"] for h in hosts.values() if h["chosen"] is not None]
        known = bool(hosts) and len(chosen) == len(hosts)
        result.append(
            {
                "name": name,
                "slots": len(slots),
                "running": sum(s.process.is_up for s in slots),
                "chosen": sum(chosen) if known else None,
                "hosts": hosts,
                "queue": queue,
                "serving": serving,
            }
        )
    return result


def _workers(fleet: Fleet) -> list[dict[str, Any]]:
    hostnames = fleet.hostnames()
    result = []
    for slot in fleet.slots():
        found = fleet.registrations(slot, hostnames)
        entries = [e for e in found.values() if e is not None]
        versions = sorted({e.version for e in entries})
        result.append(
            {
                "host": slot.host,
                "service": slot.service,
                "process": slot.fullname,
                "state": slot.process.state,
                "pid": slot.process.pid or None,
                "uptime_s": slot.process.uptime_s if slot.process.state == "RUNNING" else None,
                "autostart": slot.autostart,
                "served": sum(e.served for e in entries) if entries else None,
                "version": versions[0] if len(versions) == 1 else (",".join(versions) or None),
                "brokers": {endpoint: (e.state if e else None) for endpoint, e in found.items()},
            }
        )
    return result


def render_text(report: dict[str, Any]) -> str:
    """The report as tables for a person."""
    sections = [_brokers_table(report), _hosts_table(report), _services_table(report)]
    sections.append(_workers_table(report))
    if report["unmanaged"]:
        rows = [
            [u["broker"], u["service"], u["host"], u["pid"], u["state"], u["served"], u["version"]]
            for u in report["unmanaged"]
        ]
        headers = ["BROKER", "SERVICE", "HOST", "PID", "STATE", "SERVED", "VERSION"]
        sections.append(
            "Workers not run by any listed supervisord:\n" + format_table(headers, rows)
        )
    return "\n\n".join(sections) + "\n"


def _brokers_table(report: dict[str, Any]) -> str:
    rows = []
    for b in report["brokers"]:
        if not b["up"]:
            rows.append([b["endpoint"], "DOWN", None, None, None, b["error"]])
            continue
        c = b["counters"]
        counts = "/".join(
            str(c.get(k, "-")) for k in ("requests", "replies", "errors", "expired", "requeued")
        )
        rows.append(
            [b["endpoint"], "up", b["pid"], format_duration(b["uptime_s"]), b["version"], counts]
        )
    headers = ["BROKER", "STATE", "PID", "UPTIME", "VERSION", "REQ/REPLY/ERR/EXPIRED/REQUEUED"]
    return format_table(headers, rows)


def _hosts_table(report: dict[str, Any]) -> str:
    rows = [
        [
            h["name"],
            "up" if h["up"] else "DOWN",
            h["pid"],
            h["supervisor"] if h["up"] else h["error"],
        ]
        for h in report["hosts"]
    ]
    return format_table(["HOST", "SUPERVISORD", "PID", "ENDPOINT"], rows)


def _per_broker(values: dict[str, int | None]) -> str:
    return " ".join("-" if v is None else str(v) for v in values.values())


def _services_table(report: dict[str, Any]) -> str:
    rows = [
        [
            s["name"],
            _per_broker(s["queue"]),
            s["running"],
            "-" if s["chosen"] is None else s["chosen"],
            s["slots"],
            _per_broker(s["serving"]),
        ]
        for s in report["services"]
    ]
    headers = ["SERVICE", "QUEUE", "RUNNING", "CHOSEN", "SLOTS", "REGISTERED"]
    table = format_table(headers, rows)
    table += "\n(QUEUE and REGISTERED: one number per broker, in the order above)"
    differ = scale_differences(report)
    if differ:
        table += "\nRunning count differs from the chosen one (`mdpctl scale` sets it):\n"
        table += "\n".join(f"  {line}" for line in differ)
    return table


def scale_differences(report: dict[str, Any]) -> list[str]:
    """``host service: running R, chosen C`` wherever the two differ."""
    lines = []
    for service in report["services"]:
        for host, counts in service.get("hosts", {}).items():
            if counts["chosen"] is not None and counts["running"] != counts["chosen"]:
                lines.append(
                    f"{host} {service['name']}: running {counts['running']}, "
                    f"chosen {counts['chosen']}"
                )
    return lines


def _workers_table(report: dict[str, Any]) -> str:
    rows = []
    hidden = 0
    for w in report["workers"]:
        if w["state"] == "STOPPED" and not w["autostart"]:
            hidden += 1
            continue
        states = " ".join(s or "-" for s in w["brokers"].values())
        rows.append(
            [
                w["host"],
                w["process"],
                w["state"],
                w["pid"],
                format_duration(w["uptime_s"]),
                w["served"],
                states,
                w["version"],
            ]
        )
    headers = ["HOST", "WORKER", "STATE", "PID", "UPTIME", "SERVED", "AT BROKERS", "VERSION"]
    table = format_table(headers, rows)
    if hidden:
        table += f"\n({hidden} spare slot(s) stopped; `mdpctl scale` starts them)"
    return table
