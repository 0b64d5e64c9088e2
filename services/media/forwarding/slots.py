"""Fixed subscriber slots and the mapping of stage tracks onto them."""

from dataclasses import dataclass

KINDS = ("audio", "video", "screen")


@dataclass(frozen=True, slots=True)
class Track:
    track_id: str
    participant_id: str
    kind: str  # audio | video | screen


def track_id_for(participant_id: str, kind: str) -> str:
    """A NATS-token-safe track id, e.g. `p42_video`."""
    return f"{participant_id}_{kind}"


class SlotMap:
    """A audio, then V video, then S screen slots, in a subscriber's transceiver order.

    The mapping is stable: a track keeps its slot while it is on stage, so promoting,
    demoting or switching speakers only touches the slots that change.
    """

    def __init__(self, audio: int, video: int, screen: int) -> None:
        self.kinds: list[str] = ["audio"] * audio + ["video"] * video + ["screen"] * screen
        self.slots: list[Track | None] = [None] * len(self.kinds)

    def assign(self, tracks: list[Track]) -> list[int]:
        """Fit `tracks` (stage order) into the slots; returns the indexes that changed."""
        wanted = {t.track_id: t for t in tracks}
        changed: list[int] = []
        for i, current in enumerate(self.slots):
            if current is not None and current.track_id not in wanted:
                self.slots[i] = None
                changed.append(i)
        placed = {t.track_id for t in self.slots if t is not None}
        for track in tracks:
            if track.track_id in placed:
                continue
            for i, kind in enumerate(self.kinds):
                if kind == track.kind and self.slots[i] is None:
                    self.slots[i] = track
                    placed.add(track.track_id)
                    if i not in changed:
                        changed.append(i)
                    break
        return sorted(changed)

    def index_of(self, track_id: str) -> int | None:
        for i, t in enumerate(self.slots):
            if t is not None and t.track_id == track_id:
                return i
        return None

    def to_public(self, mids: list[str] | None = None) -> dict[str, dict[str, str] | None]:
        """`{mid: {participant_id, kind} | None}`; mids default to the slot indexes,
        which is what aiortc and browsers assign to an offer made only of the slots."""
        keys = mids or [str(i) for i in range(len(self.slots))]
        return {
            keys[i]: None if t is None else {"participant_id": t.participant_id, "kind": t.kind}
            for i, t in enumerate(self.slots)
        }
