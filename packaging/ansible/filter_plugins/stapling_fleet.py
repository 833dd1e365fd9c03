"""Filters that turn each host's audit into the fleet report (audit.yml).

stapling_audit_result: one host's audit run (the registered command result) to its audit, or
to {"status": "failed", "summary": why} when there is no audit JSON: the host was
unreachable, the install or the copy failed (setup_error), or it printed something else. It
never raises, so one host's garbage cannot fail the report play.

stapling_by_responder: every host's audit to one entry per responder, with the hosts failing
on it. The audit counts failures per responder (failures.by_responder) but keeps its first and
last failure per host (failures.first, failures.last), so a responder's first and last are
the earliest first and latest last of the hosts failing on it: a bound, exact when the host
failed on that responder alone. Sorted by hosts, then failures (most first), then name: a
CA outage ("many hosts, one responder") comes first, and a host whose every responder fails
("one host, every CA") shows as many responders with that one host.

Python 3 standard library only: the filters run on the control node.
"""

import datetime
import json
import re

# Go's time.RFC3339Nano, as stapling-agent writes it.
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def _when(text):
    """The instant a timestamp names, or None for anything else."""
    m = _TIME.match(text) if isinstance(text, str) else None
    if not m:
        return None
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.datetime.fromisoformat(m.group(1) + "." + frac + zone)
    except ValueError:
        return None


def _text(value, limit=4096):
    return str(value if value is not None else "")[:limit]


def stapling_audit_result(run, setup_error=""):
    if setup_error:
        return {"status": "failed", "summary": _text(setup_error)}
    if not isinstance(run, dict):
        return {"status": "failed", "summary": "no audit ran"}
    if run.get("unreachable"):
        return {"status": "failed", "summary": "unreachable: " + _text(run.get("msg"))}
    out = run.get("stdout") or ""
    if out.lstrip().startswith("{"):
        try:
            audit = json.loads(out)
        except ValueError as err:
            return {"status": "failed", "summary": "audit printed invalid JSON: %s" % err}
        if isinstance(audit, dict) and isinstance(audit.get("status"), str):
            return audit
        return {"status": "failed", "summary": "audit printed JSON without a status"}
    why = run.get("stderr") or run.get("msg") or "no output (exit %s)" % run.get("rc", "none")
    return {"status": "failed", "summary": _text(why)}


def stapling_by_responder(audits):
    responders = {}
    for host, audit in (audits or {}).items():
        failures = audit.get("failures") if isinstance(audit, dict) else None
        if not isinstance(failures, dict) or not isinstance(failures.get("by_responder"), dict):
            continue
        first, last = failures.get("first"), failures.get("last")
        for name, count in failures["by_responder"].items():
            if not isinstance(count, int) or count <= 0:
                continue
            r = responders.setdefault(name, {"responder": name, "hosts": [], "failures": 0,
                                             "first": None, "last": None})
            r["hosts"].append({"host": host, "failures": count, "first": first, "last": last})
            r["failures"] += count
            if _when(first) and (r["first"] is None or _when(first) < _when(r["first"])):
                r["first"] = first
            if _when(last) and (r["last"] is None or _when(last) > _when(r["last"])):
                r["last"] = last
    out = []
    for r in responders.values():
        r["hosts"].sort(key=lambda h: (-h["failures"], str(h["host"])))
        r["host_count"] = len(r["hosts"])
        out.append(r)
    out.sort(key=lambda r: (-r["host_count"], -r["failures"], str(r["responder"])))
    return out


class FilterModule:
    def filters(self):
        return {
            "stapling_audit_result": stapling_audit_result,
            "stapling_by_responder": stapling_by_responder,
        }
