"""Pure evaluation of one access against the policy's `access` rules, and the alerts it
makes. No I/O, no clock: the monitor passes the digest's state and the time."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from ..model import Outcome, Severity
from ..notify import AccessAlertDetail, Alert
from ..policy import DEFAULT_DEDUPE_WINDOW, Access
from ..reference import ImageRef, short_digest
from ._model import AccessEvent, AccessFinding, DigestState

__all__ = [
    "AccessRules",
    "access_alert",
    "evaluate",
    "principal_glob",
    "rate_finding",
    "summary_alert",
]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_BLOCKING = frozenset({"FAILED", "PENDING"})


@lru_cache(maxsize=1024)
def principal_glob(glob: str) -> re.Pattern[str]:
    """A principal glob as a regex: `*` any run of characters (`/` and `:` too), `?` one
    character, everything else literal; case matters. Compiled once per glob."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob]
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class AccessRules:
    """A repository's `access` section, compiled (globs as regexes, CIDRs parsed)."""

    pushers: tuple[re.Pattern[str], ...] | None = None
    pullers: tuple[re.Pattern[str], ...] | None = None
    networks: tuple[_Network, ...] | None = None
    blocked_pull: bool = True
    unexpected_pusher: bool = False
    unexpected_puller: bool = False
    pull_rate: int | None = None
    dedupe_window: timedelta = DEFAULT_DEDUPE_WINDOW

    @staticmethod
    def of(access: Access | None) -> AccessRules:
        """The rules of a section (None: no section, only blocked pulls alert); cached per
        section, which is frozen and hashable."""
        return _compile(access)

    def allows_principal(self, action: str, principal: str | None) -> bool:
        globs = self.pushers if action == "push" else self.pullers
        if globs is None:
            return True
        return principal is not None and any(g.fullmatch(principal) for g in globs)

    def allows_address(self, address: str | None) -> bool:
        if self.networks is None or address is None:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return True  # not an address (a host name): nothing to check
        return any(ip.version == n.version and ip in n for n in self.networks)


@lru_cache(maxsize=256)
def _compile(access: Access | None) -> AccessRules:
    if access is None:
        return AccessRules()
    networks = None
    if access.networks is not None:
        networks = tuple(ipaddress.ip_network(n) for n in access.networks)
    return AccessRules(
        pushers=None if access.pushers is None else tuple(map(principal_glob, access.pushers)),
        pullers=None if access.pullers is None else tuple(map(principal_glob, access.pullers)),
        networks=networks,
        blocked_pull=access.alert_on.blocked_pull,
        unexpected_pusher=access.alerts_unexpected_pusher,
        unexpected_puller=access.alerts_unexpected_puller,
        pull_rate=access.alert_on.pull_rate,
        dedupe_window=access.dedupe_window,
    )


def evaluate(
    event: AccessEvent,
    rules: AccessRules,
    state: DigestState,
    now: datetime,
    *,
    pulls_last_minute: int = 0,
) -> list[AccessFinding]:
    """What is worth an alert about `event`: a pull of a blocked digest (quarantined,
    FAILED or PENDING), a principal outside the lists or an address outside the
    networks, a principal's pull rate over the threshold (`pulls_last_minute`: the
    monitor's count for the principal, this pull included). `now` is when it is judged."""
    del now  # the findings depend on the event and the state alone
    findings: list[AccessFinding] = []
    if event.action == "pull":
        if rules.blocked_pull:
            blocked = _blocked(state)
            if blocked is not None:
                severity = Severity.HIGH if state.verdict == "PENDING" else Severity.CRITICAL
                who, where, image = _words(event)
                findings.append(
                    AccessFinding(
                        kind="blocked-pull",
                        severity=severity,
                        reason=f"{image} is {blocked}; {who} pulled it{where}",
                    )
                )
        if rules.unexpected_puller:
            why = _unexpected(rules, event)
            if why is not None:
                who, where, image = _words(event)
                findings.append(
                    AccessFinding(
                        kind="unexpected-puller",
                        severity=Severity.HIGH,
                        reason=f"{who} pulled {image}{where}: {why}",
                    )
                )
        if rules.pull_rate is not None:
            over = rate_finding(event, pulls_last_minute, rules.pull_rate)
            if over is not None:
                findings.append(over)
    elif rules.unexpected_pusher:
        why = _unexpected(rules, event)
        if why is not None:
            who, where, image = _words(event)
            findings.append(
                AccessFinding(
                    kind="unexpected-pusher",
                    severity=Severity.HIGH,
                    reason=f"{who} pushed {image}{where}: {why}",
                )
            )
    return findings


def rate_finding(event: AccessEvent, pulls: int, threshold: int) -> AccessFinding | None:
    """The pull-rate finding when `pulls` (the principal's in one minute, `event` among
    them) is over the policy's `pullRate` of `threshold`."""
    if pulls <= threshold:
        return None
    return AccessFinding(
        kind="pull-rate",
        severity=Severity.MEDIUM,
        reason=(
            f"{_words(event)[0]} pulled {pulls} times in a minute, "
            f"over the policy's pullRate of {threshold}"
        ),
    )


def _words(event: AccessEvent) -> tuple[str, str, str]:
    """(who, " from <address>" or "", "repository@<short digest or tag>") for reasons:
    built only for a finding, never per event."""
    who = event.principal or "an anonymous client"
    where = f" from {event.source_ip}" if event.source_ip else ""
    ref = short_digest(event.digest) if event.digest else event.tag
    return who, where, f"{event.repository}@{ref}"


def _blocked(state: DigestState) -> str | None:
    if state.quarantined:
        held = f" (held in {state.quarantine_location})" if state.quarantine_location else ""
        return f"quarantined{held}"
    if state.verdict in _BLOCKING:
        return state.verdict
    return None


def _unexpected(rules: AccessRules, event: AccessEvent) -> str | None:
    listed = "pushers" if event.action == "push" else "pullers"
    if not rules.allows_principal(event.action, event.principal):
        if event.principal is None:
            return f"no principal named, and the policy lists {listed}"
        return f"not in the policy's {listed}"
    if not rules.allows_address(event.source_ip):
        return "outside the policy's networks"
    return None


def _outcome(state: DigestState) -> Outcome:
    """The alert's `outcome`: the digest's last verdict, FAILED for a quarantined one the
    ledger holds no verdict for, PENDING for one never judged."""
    if state.verdict is not None:
        try:
            return Outcome(state.verdict)
        except ValueError:
            pass
    return Outcome.FAILED if state.quarantined else Outcome.PENDING


def access_alert(
    event: AccessEvent,
    finding: AccessFinding,
    *,
    image: ImageRef,
    state: DigestState,
    team: str | None,
    window_start: datetime,
) -> Alert:
    """The alert the first access of a window raises. `image` is the image it concerns,
    by digest (for a pull from the quarantine location: the source image)."""
    return Alert(
        time=event.time,
        image=image,
        tags=(event.tag,) if event.tag else (),
        team=team,
        outcome=_outcome(state),
        severity=finding.severity,
        action="access",
        summary=finding.reason,
        reasons=(),
        kind="access",
        access=AccessAlertDetail(
            finding=finding.kind,
            access=event.action,
            principal=event.principal,
            principal_type=event.principal_type,
            source_ip=event.source_ip,
            user_agent=event.user_agent,
            source=event.source,
            reference=event.reference,
            window_start=window_start,
            last_seen=event.time,
        ),
    )


def summary_alert(
    opening: Alert, *, count: int, closed_at: datetime, last_seen: datetime | None
) -> Alert:
    """The summary sent when a window closes: the opening alert with the window's `count`
    (the accesses after the opening one, which alerted on its own)."""
    detail = opening.access
    if detail is None:
        raise ValueError("a summary is built from an access alert")
    if count < 1:
        raise ValueError("a window with no further accesses closes without a summary")
    summary = (
        f"{count} more {detail.finding} accesses by {detail.who} after the first, in the "
        f"window {detail.window_start.isoformat()} – {closed_at.isoformat()}"
    )
    return opening.model_copy(
        update={
            "time": closed_at,
            "summary": summary,
            "reasons": (opening.summary,),
            "access": detail.model_copy(
                update={
                    "count": count,
                    "summary": True,
                    "window_end": closed_at,
                    "last_seen": last_seen or detail.last_seen,
                }
            ),
        }
    )
