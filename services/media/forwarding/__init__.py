"""The forwarding core: RTP rewrite, retransmission history, RTCP, slots.

Nothing here imports NATS, HTTP or aiortc: it works on plain bytes so that it can be
tested and benchmarked alone.
"""

from services.media.forwarding.codecs import Codec, match_codec
from services.media.forwarding.forwarder import Leg, Source
from services.media.forwarding.history import History
from services.media.forwarding.rtp import ExtensionMap, RtpHeader, parse_header
from services.media.forwarding.slots import SlotMap, Track

__all__ = [
    "Codec",
    "ExtensionMap",
    "History",
    "Leg",
    "RtpHeader",
    "SlotMap",
    "Source",
    "Track",
    "match_codec",
    "parse_header",
]
