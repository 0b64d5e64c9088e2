"""Who may see an event or a message: see CONTRACTS.md, "Audience of an event"."""

from typing import Any

STAGE_ROLES = frozenset({"host", "cohost", "panelist"})
HOST_ROLES = frozenset({"host", "cohost"})


def visible_to(data: dict[str, Any], participant_id: str, role: str, on_stage: bool) -> bool:
    audience = data.get("audience", "everyone")
    if audience == "everyone":
        return True
    if audience == "panelists":
        return role in STAGE_ROLES or on_stage
    if audience == "hosts":
        return role in HOST_ROLES
    if audience == "private":
        return participant_id in data.get("recipients", ())
    return False
