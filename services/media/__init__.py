"""Media node: an SFU on aiortc that forwards RTP without transcoding."""
