"""CloudEvents 1.0 envelope and the public event types.

Every public event goes to `webinar.<webinar_id>.<event type>` with type
`io.webinar.<event type>.v1` and the webinar id as subject.
"""

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

EVENT_TYPES = frozenset(
    {
        "webinar.created", "webinar.updated", "webinar.deleted", "webinar.started", "webinar.ended",
        "panelist.added",
        "registration.created", "registration.approved", "registration.rejected",
        "participant.joined", "participant.left", "participant.promoted", "participant.demoted",
        "participant.muted", "participant.removed",
        "hand.raised", "hand.lowered",
        "room.locked", "room.unlocked", "chat.disabled", "chat.enabled",
        "chat.message", "chat.deleted",
        "qa.asked", "qa.upvoted", "qa.answered", "qa.dismissed",
        "poll.opened", "poll.voted", "poll.closed",
        "restream.started", "restream.failed", "restream.stopped",
        "recording.started", "recording.stopped",
        "slots.changed",
        "media.node.up", "media.node.down",
    }
)  # fmt: skip

TYPE_PREFIX = "io.webinar."
TYPE_SUFFIX = ".v1"


class CloudEvent(BaseModel):
    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    type: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    @property
    def event_type(self) -> str:
        """The short type, e.g. `hand.raised`."""
        return self.type.removeprefix(TYPE_PREFIX).removesuffix(TYPE_SUFFIX)


def make_event(event_type: str, webinar_id: str, data: dict[str, Any], source: str) -> CloudEvent:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    return CloudEvent(
        source=source, type=f"{TYPE_PREFIX}{event_type}{TYPE_SUFFIX}", subject=webinar_id, data=data
    )
