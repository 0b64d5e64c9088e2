"""The web client in Debian's Chromium against the whole platform started by `make run`:
register, wait in the lobby, watch and hear the speakers, raise a hand and get on stage,
chat and Q&A, and a removal. Screenshots of each view go to docs/screenshots/."""

import time

import httpx
from playwright.sync_api import Browser, Page, expect

from services.common.tokens import Role, TokenIssuer
from tests.restream.conftest import Rtmp
from tests.restream.test_restream import decode
from tests.web.browser import DECODED_JS, SCREENSHOTS
from tests.web.conftest import Platform

TIMEOUT = 20_000


def open_page(browser: Browser, url: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    return page


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def decoded(page: Page) -> dict:
    return page.evaluate(DECODED_JS)


def wait_for_media(page: Page, min_videos: int = 1, frames: int = 10) -> dict:
    """Until at least `min_videos` slots decoded `frames` frames and audio arrives."""
    deadline = time.monotonic() + 30
    stats: dict = {}
    while time.monotonic() < deadline:
        stats = decoded(page)
        videos = [m for m, n in stats["byMid"].items() if n >= frames and int(m) >= 6]
        if len(videos) >= min_videos and stats["audio"] > 0:
            return stats
        page.wait_for_timeout(300)
    raise AssertionError(f"media did not play: {stats}")


def test_registration_page_gives_a_join_link(platform: Platform, browser: Browser):
    page = open_page(browser, f"{platform.web_url}/register/{platform.webinar_id}")
    expect(page.locator("#title")).to_have_text("Demo webinar")
    page.fill("#name", "Reggie Registrant")
    page.fill("#email", "reggie@example.org")
    shot(page, "register")
    page.click("#submit")
    link = page.locator("#join-link")
    expect(link).to_be_visible()
    assert "/join?token=" in (link.get_attribute("href") or "")
    page.context.close()


def test_registration_page_names_bad_fields(platform: Platform, browser: Browser):
    page = open_page(browser, f"{platform.web_url}/register/{platform.webinar_id}")
    page.fill("#name", "X")
    page.fill("#email", "x@example.org")
    page.evaluate("document.getElementById('email').type = 'text'")
    page.fill("#email", "not-an-email")
    page.click("#submit")
    expect(page.locator("#form-error")).to_contain_text("email")
    page.context.close()


def test_invalid_link_shows_a_clear_state(platform: Platform, browser: Browser):
    page = open_page(browser, f"{platform.web_url}/join?token=forged.token.value")
    expect(page.locator("#state")).to_have_attribute("data-state", "expired")
    expect(page.locator("#state-title")).to_have_text("This link is not valid")
    shot(page, "invalid-link")
    page.context.close()


def test_webinar_from_lobby_to_stage(platform: Platform, browser: Browser):
    ann = open_page(browser, platform.links["attendee"])
    expect(ann.locator("#state")).to_have_attribute("data-state", "lobby")
    shot(ann, "lobby")

    host = open_page(browser, platform.links["host"])
    expect(host.locator("#room")).to_be_visible()
    host.click("button[data-tab=console]")
    host.click("#webinar-start")
    expect(ann.locator("#room")).to_be_visible()
    bob = open_page(browser, platform.register("Bob Attendee", "bob@example.org"))
    expect(bob.locator("#room")).to_be_visible()

    panelist = open_page(browser, platform.links["panelist"])
    expect(panelist.locator("#publish")).to_be_visible()
    panelist.click("#publish")
    expect(panelist.locator("#local-tile")).to_be_visible()
    host.click("#publish")
    expect(host.locator("#local-tile")).to_be_visible()

    # Both attendees decode the speakers' video and receive their audio.
    for viewer in (ann, bob):
        wait_for_media(viewer, min_videos=2)
        expect(viewer.locator("#stage .tile:not(.hidden)")).to_have_count(2)
    names = set(ann.locator("#stage .tile:not(.hidden) .name").all_inner_texts())
    assert names == {"Host", "Pat Panelist"}
    shot(ann, "attendee")
    shot(panelist, "panelist")

    # Chat: to the speakers only, and to everyone.
    ann.fill("#chat-text", "<b>question for the speakers</b>")
    ann.select_option("#chat-to", "panelists")
    ann.click("#chat-send")
    expect(panelist.locator("#chat-log")).to_contain_text("<b>question for the speakers</b>")
    expect(host.locator("#chat-log")).to_contain_text("question for the speakers")
    bob.fill("#chat-text", "hello everyone")
    bob.click("#chat-send")
    expect(ann.locator("#chat-log")).to_contain_text("hello everyone")
    expect(panelist.locator("#chat-log")).to_contain_text("hello everyone")
    assert "question for the speakers" not in bob.locator("#chat-log").inner_text()
    assert panelist.locator("#chat-log b").count() == 0  # shown as text, never as HTML

    # Q&A: Ann asks, Bob upvotes, the panelist sees one vote.
    ann.click("button[data-tab=qa]")
    ann.fill("#qa-text", "Will the slides be shared?")
    ann.click("#qa-ask")
    bob.click("button[data-tab=qa]")
    question = bob.locator("#qa-list .question", has_text="Will the slides be shared?")
    question.locator("button", has_text="Upvote").click()
    panelist.click("button[data-tab=qa]")
    expect(panelist.locator("#qa-list .question .votes").first).to_have_text("▲ 1")

    # Raise hand -> host approves -> Ann on stage; Bob decodes her camera too.
    ann.click("#hand")
    expect(ann.locator("#hand")).to_have_text("Lower hand")
    host.click("button[data-tab=people]")
    hand = host.locator("#hand-queue [data-hand]", has_text="Ann Attendee")
    expect(hand).to_be_visible()
    shot(host, "host-console")
    hand.locator("button", has_text="Approve").click()
    expect(ann.locator("#promote-prompt")).to_be_visible()
    ann.click("#accept-stage")
    expect(ann.locator("#local-tile")).to_be_visible()
    wait_for_media(bob, min_videos=3)
    expect(bob.locator("#stage .tile:not(.hidden)")).to_have_count(3)
    expect(bob.locator("#stage .tile:not(.hidden)").filter(has_text="Ann Attendee")).to_have_count(
        1
    )
    shot(bob, "attendee-promoted-speaker")

    # The host removes Bob, who sees the removed screen and cannot come back.
    host.click("button[data-tab=people]")
    host.locator("#people-list [data-person]", has_text="Bob Attendee").locator(
        "button", has_text="Remove"
    ).click()
    expect(bob.locator("#state")).to_have_attribute("data-state", "removed")
    shot(bob, "removed")
    bob.reload()
    expect(bob.locator("#state")).to_have_attribute("data-state", "removed")

    host.click("button[data-tab=console]")
    host.click("#webinar-end")
    expect(ann.locator("#state")).to_have_attribute("data-state", "ended")
    shot(ann, "ended")
    for page in (ann, bob, host, panelist):
        page.context.close()
    resp = httpx.get(f"{platform.registry_url}/v1/webinars/{platform.webinar_id}/report",
                     headers={"Authorization": f"Bearer {platform.organizer_key}"})  # fmt: skip
    names = {row["name"] for row in resp.json()["attendees"]}
    assert {"Ann Attendee", "Bob Attendee", "Pat Panelist"} <= names


def test_failure_states(platform: Platform, browser: Browser):
    # An expired link, signed with the platform's own key.
    private = (platform.data_dir / "keys" / "join-private.pem").read_text()
    expired = TokenIssuer(private).issue(platform.webinar_id, "a_late", "Late", Role.ATTENDEE,
                                         int(time.time()) - 60)  # fmt: skip
    page = open_page(browser, f"{platform.web_url}/join?token={expired}")
    expect(page.locator("#state")).to_have_attribute("data-state", "expired")
    expect(page.locator("#state-title")).to_have_text("This link has expired")
    shot(page, "expired")
    page.context.close()

    # A full webinar: two registered, then the organizer lowers the capacity to one.
    small = platform.create_webinar(capacity=2)
    first_link = platform.register_to(small, "First", "first@example.org")
    second_link = platform.register_to(small, "Second", "second@example.org")
    resp = httpx.patch(f"{platform.registry_url}/v1/webinars/{small}", json={"capacity": 1},
                       headers={"Authorization": f"Bearer {platform.organizer_key}"})  # fmt: skip
    assert resp.status_code == 200
    time.sleep(2.5)  # signaling caches webinar data for 2 s
    first = open_page(browser, first_link)
    expect(first.locator("#state")).to_have_attribute("data-state", "lobby")
    second = open_page(browser, second_link)
    expect(second.locator("#state")).to_have_attribute("data-state", "full")
    expect(second.locator("#state-title")).to_have_text("This webinar is full")
    shot(second, "full")
    first.context.close()
    second.context.close()


def test_camera_denied_and_reconnecting(platform: Platform, browser: Browser):
    webinar = platform.create_webinar(title="Rehearsal")
    page = open_page(browser, platform.add_panelist(webinar, "Rita", "rita@example.org"))
    expect(page.locator("#publish")).to_be_visible()
    page.evaluate("""() => { navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException('Permission denied', 'NotAllowedError')); }""")
    page.click("#publish")
    expect(page.locator("#banner")).to_contain_text("Camera or microphone access was denied")
    shot(page, "camera-denied")
    page.evaluate("window.webinarState.ws.close()")
    expect(page.locator("#banner")).to_have_text("Reconnecting…")
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#room")).to_be_visible()
    page.context.close()


def test_host_goes_live_to_an_rtmp_server_and_records(
    platform: Platform, browser: Browser, rtmp_server: Rtmp
):
    _, host_link = platform.create_webinar_with_host(title="Live show")
    host = open_page(browser, host_link)
    host.click("button[data-tab=console]")
    host.click("#webinar-start")
    host.click("#publish")
    expect(host.locator("#local-tile")).to_be_visible()
    host.fill("#restream-url", rtmp_server.url("show"))
    host.click("#restream-start")
    live = host.locator("#restream-list [data-state=started]")
    expect(live).to_be_visible(timeout=30_000)
    assert "show" not in live.inner_text()  # the stream key is never shown back
    host.click("#recording-start")
    expect(host.locator("#recording-state")).to_have_text("● recording")
    seen = decode(rtmp_server.url("show"), video=20, audio=10, within=30)
    assert seen.video >= 20 and seen.audio >= 10, seen
    assert seen.luma_levels > 10  # the host's camera, not a black picture
    # The host sees their own preview once and never hears themselves back.
    expect(host.locator("#stage .tile:not(.hidden)")).to_have_count(1)
    own_audio = host.evaluate("""() => [...document.querySelectorAll('audio[data-mid]')]
        .filter((a) => { const w = window.webinarState.slotMap[a.dataset.mid];
                         return w && w.participant_id === window.webinarState.me.id; })
        .map((a) => a.muted)""")
    assert own_audio == [True]
    shot(host, "host-live")
    host.locator("#restream-list [data-state=started] button", has_text="Stop").click()
    expect(host.locator("#restream-list [data-state=stopped]")).to_be_visible()
    host.click("#recording-stop")
    expect(host.locator("#recording-state")).to_have_text("saved")
    host.context.close()
