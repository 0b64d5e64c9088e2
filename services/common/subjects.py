"""NATS subject names and the JetStream stream, in one place."""

EVENTS_STREAM = "WEBINAR_EVENTS"
EVENTS_STREAM_SUBJECTS = ["webinar.>"]

MEDIA_HEARTBEAT = "svc.media.heartbeat"
REGISTRY_WEBINAR_GET = "svc.registry.webinar.get"


def webinar_event(webinar_id: str, event_type: str) -> str:
    """`webinar.<id>.<event type>`, e.g. webinar.9f2c.hand.raised."""
    return f"webinar.{webinar_id}.{event_type}"


def media_relay(webinar_id: str, track_id: str) -> str:
    return f"svc.media.relay.{webinar_id}.{track_id}"


def media_relay_pli(webinar_id: str, track_id: str) -> str:
    return f"{media_relay(webinar_id, track_id)}.pli"


def chat_command(op: str) -> str:
    """Request-reply commands to the chat service, e.g. svc.chat.send."""
    return f"svc.chat.{op}"
