"""Headless Debian Chromium driven by Playwright, with fake camera and microphone."""

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]

# Counts decoded video frames and received audio per slot from getStats, in the page.
DECODED_JS = """
async () => {
  const pc = window.webinarState && window.webinarState.sub;
  if (!pc) return {video: 0, audio: 0, byMid: {}};
  const stats = await pc.getStats();
  let video = 0, audio = 0; const byMid = {};
  stats.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    if (r.kind === 'video') { video += r.framesDecoded || 0; byMid[r.mid] = r.framesDecoded || 0; }
    if (r.kind === 'audio') { audio += r.totalSamplesReceived || 0; byMid[r.mid] = r.totalSamplesReceived || 0; }
  });
  return {video, audio, byMid};
}
"""
