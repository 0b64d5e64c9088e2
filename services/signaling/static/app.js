"use strict";
// The web client: one WebSocket to signaling, one peer connection to receive the stage
// (fixed slots), one to publish when on stage. No build step; all text via textContent.
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token") || "";
const HOSTS = ["host", "cohost"];
const STAGE = ["host", "cohost", "panelist"];

const S = {
  ws: null, nextId: 1, pending: new Map(), me: null, webinar: null, onStage: false,
  slots: { audio: 6, video: 6, screen: 1 }, slotMap: {}, names: {}, people: new Map(),
  hands: [], questions: new Map(), polls: new Map(), restreams: new Map(),
  sub: null, pub: null, localStream: null, screenTrack: null, everLive: false,
  closedFinal: false, retries: 0,
};
window.webinarState = S; // for tests and debugging

// ---- screens ---------------------------------------------------------------
function showState(title, text, id) {
  $("room").classList.add("hidden");
  $("state").classList.remove("hidden");
  $("state").dataset.state = id;
  $("state-title").textContent = title;
  $("state-text").textContent = text || "";
}
function showRoom() {
  $("state").classList.add("hidden");
  $("state").dataset.state = "room";
  $("room").classList.remove("hidden");
}
function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.classList.toggle("hidden", !text);
}
const isHost = () => S.me && HOSTS.includes(S.me.role);
const canPublish = () => S.webinar && (S.webinar.mode === "meeting" || S.onStage);

function refreshControls() {
  const show = (sel, on) => document.querySelectorAll(sel).forEach((e) => e.classList.toggle("hidden", !on));
  show(".host-only", isHost());
  show(".attendee-only", S.me && S.me.role === "attendee" && !S.onStage);
  show(".stage-only", canPublish() && !S.pub);
  show(".publishing-only", !!S.pub);
  $("chat-to").querySelector("option[value=panelists]").textContent =
    S.me && STAGE.includes(S.me.role) ? "Panelists only" : "Speakers only";
  $("me").textContent = S.me ? `${S.me.name} · ${S.onStage && S.me.role === "attendee" ? "on stage" : S.me.role}` : "";
  const live = S.webinar && S.webinar.status === "live";
  $("status").textContent = live ? "live" : (S.webinar ? S.webinar.status : "");
  $("status").classList.toggle("live", !!live);
}

// ---- WebSocket ---------------------------------------------------------------
function connect() {
  if (!token) { showState("This link is not valid", "The join link has no token.", "expired"); return; }
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/v1/ws?token=${encodeURIComponent(token)}`);
  S.ws = ws;
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = (ev) => onClose(ev);
}

function request(type, fields = {}) {
  const id = S.nextId++;
  S.ws.send(JSON.stringify({ id, type, ...fields }));
  return new Promise((resolve, reject) => S.pending.set(id, { resolve, reject }));
}
async function act(type, fields) {
  try { return await request(type, fields); } catch (err) { banner(err.message); setTimeout(() => banner(""), 4000); return null; }
}

function onFrame(msg) {
  if (msg.type === "welcome") return onWelcome(msg);
  if (msg.type === "event") return onEvent(msg.event, msg.data || {});
  if (msg.type === "notice") return onNotice(msg.notice, msg.data || {});
  if (msg.type === "renegotiate") { if (msg.subscribe) resubscribe(); if (msg.publish && S.pub) republish(); return; }
  if (msg.id && S.pending.has(msg.id)) {
    const p = S.pending.get(msg.id);
    S.pending.delete(msg.id);
    if (msg.type === "error") p.reject(Object.assign(new Error(msg.message || msg.code), { code: msg.code }));
    else p.resolve(msg);
    return;
  }
  if (msg.type === "error" && !msg.id) finalError(msg.code, msg.message);
}

function finalError(code, message) {
  const m = (message || "").toLowerCase();
  if (code === "removed" || m.includes("removed") || m.includes("revoked")) {
    S.closedFinal = true; showState("You were removed from this webinar", "The host removed you. You cannot rejoin with this link.", "removed");
  } else if (m.includes("expired")) {
    S.closedFinal = true; showState("This link has expired", "Ask the organizer for a new join link.", "expired");
  } else if (code === "full" || m.includes("full") || m.includes("capacity")) {
    S.closedFinal = true; showState("This webinar is full", "All seats are taken. Try again later.", "full");
  } else if (m.includes("ended")) {
    S.closedFinal = true; showState("The webinar has ended", "Thank you for attending.", "ended");
  } else if (m.includes("elsewhere")) {
    S.closedFinal = true; showState("You joined from another tab or device", "This page is no longer connected.", "replaced");
  } else if (m.includes("locked")) {
    S.closedFinal = true; showState("The room is locked", "The host locked the room.", "locked");
  } else if (code === "unauthorized" || m.includes("token")) {
    S.closedFinal = true; showState("This link is not valid", message || "", "expired");
  }
}

function onClose(ev) {
  stopPublishing(); closeSubscriber();
  if (S.closedFinal) return;
  const reason = ev.reason || "";
  if (ev.code >= 4000) { finalError(ev.code === 4401 ? "unauthorized" : "", reason || "closed"); if (S.closedFinal) return; }
  if (S.retries > 20) { showState("Connection lost", "Reload the page to try again.", "lost"); return; }
  S.retries += 1;
  banner("Reconnecting…");
  $("status").textContent = "reconnecting";
  setTimeout(connect, Math.min(500 * S.retries, 3000));
}

async function onWelcome(msg) {
  S.retries = 0; banner("");
  S.me = msg.participant; S.webinar = msg.webinar;
  S.onStage = !!(msg.participant.on_stage || STAGE.includes(msg.participant.role));
  if (msg.slots) S.slots = msg.slots;
  S.hands = msg.hands || [];
  for (const p of msg.participants || []) S.people.set(p.id, p);
  for (const p of msg.stage || []) S.names[p.id || p.participant_id] = p.name;
  $("title").textContent = S.webinar.title || "Webinar";
  document.title = S.webinar.title || "Webinar";
  if (msg.slot_map) S.slotMap = msg.slot_map;
  const waiting = msg.lobby || (S.webinar.status !== "live" && S.me.role === "attendee");
  if (waiting) {
    showState("Waiting for the host to start", `${S.webinar.title} starts soon. This page opens the stage by itself.`, "lobby");
    refreshControls();
    return;
  }
  enterRoom();
}

async function enterRoom() {
  showRoom(); refreshControls(); renderHands(); renderPeople();
  loadLists();
  await subscribe();
}

function onNotice(notice, d) {
  if (notice === "promoted") { S.onStage = true; S.myHand = false; $("promote-prompt").classList.remove("hidden"); refreshControls(); }
  if (notice === "demoted") { S.onStage = false; stopPublishing(); $("promote-prompt").classList.add("hidden"); refreshControls(); }
  if (notice === "hand.lowered") { S.myHand = false; S.hands = S.hands.filter((h) => (h.participant_id || h.id) !== S.me.id); renderHands(); }
  if (notice === "muted" && S.localStream && d.muted !== false) {
    for (const t of S.localStream.getTracks()) if (t.kind === (d.kind === "screen" ? "video" : d.kind)) t.enabled = false;
    banner(`The host muted your ${d.kind}.`); setTimeout(() => banner(""), 4000);
  }
}

async function loadPeople() {
  if (!isHost()) return;
  const listed = await act("participant.list", {});
  if (!listed) return;
  for (const p of listed.participants || []) S.people.set(p.id, p);
  S.hands = listed.hands || S.hands;
  renderPeople(); renderHands();
}

async function loadLists() {
  loadPeople();
  const hist = await act("chat.history", {});
  if (hist) { $("chat-log").replaceChildren(); for (const m of hist.messages || []) addChat(m); }
  const qa = await act("qa.list", {});
  if (qa) { for (const q of qa.questions || []) S.questions.set(q.id, q); renderQuestions(); }
  const polls = await act("poll.list", {});
  if (polls) { for (const p of polls.polls || []) S.polls.set(p.id, p); renderPolls(); }
}

// ---- events ------------------------------------------------------------------
function onEvent(type, d) {
  const pid = d.participant_id;
  if (pid && d.name && S.names[pid] !== d.name) { S.names[pid] = d.name; renderSlots(); }
  switch (type) {
    case "webinar.started":
      S.webinar.status = "live";
      if ($("state").dataset.state === "lobby") enterRoom(); else refreshControls();
      break;
    case "webinar.ended":
      S.closedFinal = true; S.webinar.status = "ended";
      stopPublishing(); closeSubscriber();
      showState("The webinar has ended", "Thank you for attending.", "ended");
      break;
    case "participant.joined": S.people.set(pid, { id: pid, name: d.name, role: d.role }); renderPeople(); break;
    case "participant.left": S.people.delete(pid); renderPeople(); break;
    case "participant.promoted":
      if (pid === S.me.id && !S.onStage) { S.onStage = true; $("promote-prompt").classList.remove("hidden"); }
      S.hands = S.hands.filter((h) => (h.participant_id || h.id) !== pid);
      renderHands(); refreshControls(); break;
    case "participant.demoted":
      if (pid === S.me.id && S.onStage) { S.onStage = false; stopPublishing(); $("promote-prompt").classList.add("hidden"); }
      refreshControls(); break;
    case "participant.muted":
      if (pid === S.me.id && S.localStream) {
        banner(`The host muted your ${d.kind}.`); setTimeout(() => banner(""), 4000);
        for (const t of S.localStream.getTracks()) if (t.kind === d.kind) t.enabled = false;
      }
      break;
    case "participant.removed":
      if (pid === S.me.id) { S.closedFinal = true; showState("You were removed from this webinar", "The host removed you. You cannot rejoin with this link.", "removed"); }
      S.people.delete(pid); renderPeople(); break;
    case "hand.raised": case "hand.lowered":
      if (Array.isArray(d.hands)) S.hands = d.hands;
      else if (type === "hand.raised") S.hands.push({ participant_id: pid, name: d.name });
      else S.hands = S.hands.filter((h) => (h.participant_id || h.id) !== pid);
      renderHands(); break;
    case "chat.message": addChat(d); break;
    case "chat.deleted": { const el = document.querySelector(`[data-message="${CSS.escape(d.message_id || d.id)}"]`); if (el) el.remove(); break; }
    case "qa.asked": case "qa.upvoted": case "qa.answered": case "qa.dismissed": {
      const id = d.id || d.question_id;
      const update = type === "qa.dismissed" ? { status: "dismissed" } : d;
      if (id) S.questions.set(id, { ...(S.questions.get(id) || {}), ...update, id });
      renderQuestions(); break;
    }
    case "poll.opened": case "poll.voted": case "poll.closed": {
      const id = d.id || d.poll_id;
      if (id) S.polls.set(id, { ...(S.polls.get(id) || {}), ...d, id });
      renderPolls(); break;
    }
    case "slots.changed": S.slotMap = d.slots || {}; renderSlots(); break;
    case "media.node.down": resubscribe(); if (S.pub) republish(); break;
    case "restream.started": case "restream.failed": case "restream.stopped":
      S.restreams.set(d.restream_id, { ...d, state: type.split(".")[1] }); renderRestreams(); break;
    case "recording.started": case "recording.stopped":
      $("recording-state").textContent = type === "recording.started" ? "● recording" : "saved"; break;
    case "room.locked": case "room.unlocked": $("room-lock").textContent = type === "room.locked" ? "Unlock room" : "Lock room"; break;
    case "chat.disabled": case "chat.enabled": $("chat-disable").textContent = type === "chat.disabled" ? "Enable chat" : "Disable chat"; break;
  }
}

// ---- media -------------------------------------------------------------------
async function gathered(pc) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000);
  });
}

function slotKinds() {
  const kinds = [];
  for (let i = 0; i < S.slots.audio; i++) kinds.push("audio");
  for (let i = 0; i < S.slots.video; i++) kinds.push("video");
  for (let i = 0; i < S.slots.screen; i++) kinds.push("screen");
  return kinds;
}

async function subscribe() {
  closeSubscriber();
  const pc = new RTCPeerConnection({ iceServers: cfgIceServers() });
  S.sub = pc;
  S.tiles = {};
  slotKinds().forEach((kind) => pc.addTransceiver(kind === "audio" ? "audio" : "video", { direction: "recvonly" }));
  pc.ontrack = (ev) => attachSlot(ev.transceiver.mid, ev.track, ev.streams[0]);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  try {
    const reply = await request("subscribe", { sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    if (reply.slots && typeof reply.slots === "object" && !("audio" in reply.slots)) S.slotMap = reply.slots;
    renderSlots();
  } catch (err) {
    banner(`Cannot receive the stage: ${err.message}`);
  }
}
function resubscribe() { if (S.sub) subscribe(); }
function closeSubscriber() { if (S.sub) { S.sub.close(); S.sub = null; } }

function attachSlot(mid, track, stream) {
  const kinds = slotKinds();
  const kind = kinds[Number(mid)] || track.kind;
  const media = new MediaStream([track]);
  if (kind === "audio") {
    const el = document.createElement("audio");
    el.autoplay = true; el.dataset.mid = mid; el.srcObject = media;
    document.body.append(el);
    S.tiles[mid] = { kind, el };
    return;
  }
  const tile = document.createElement("div");
  tile.className = `tile ${kind === "screen" ? "screen" : ""} hidden`;
  tile.dataset.mid = mid;
  const video = document.createElement("video");
  video.autoplay = true; video.playsInline = true; video.muted = true; video.srcObject = media;
  const name = document.createElement("span");
  name.className = "name";
  tile.append(video, name);
  (kind === "screen" ? $("screen-tile") : $("stage")).append(tile);
  S.tiles[mid] = { kind, el: tile, video };
  renderSlots();
}

function renderSlots() {
  for (const [mid, t] of Object.entries(S.tiles || {})) {
    const who = S.slotMap[mid];
    const mine = !!who && !!S.me && who.participant_id === S.me.id;
    if (t.kind === "audio") { t.el.muted = mine; continue; }  // never hear yourself back
    t.el.classList.toggle("hidden", !who || mine);  // your own preview is #local-tile
    t.el.dataset.participant = who ? who.participant_id : "";
    t.el.querySelector(".name").textContent = who ? (who.name || S.names[who.participant_id] || (S.people.get(who.participant_id) || {}).name || "") : "";
  }
}

async function activeSpeaker() {
  if (!S.sub) return;
  const stats = await S.sub.getStats();
  const levels = {};
  stats.forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "audio" && r.mid !== undefined) levels[r.mid] = r.audioLevel || 0; });
  let loudest = null, max = 0.02;
  for (const [mid, level] of Object.entries(levels)) if (level > max && S.slotMap[mid]) { max = level; loudest = S.slotMap[mid].participant_id; }
  for (const t of Object.values(S.tiles || {})) if (t.kind === "video") t.el.classList.toggle("speaking", !!loudest && t.el.dataset.participant === loudest);
}
setInterval(() => activeSpeaker().catch(() => {}), 700);

async function publish() {
  try {
    S.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  } catch (err) {
    banner("Camera or microphone access was denied. Allow it in the browser and try again.");
    $("state").dataset.camera = "denied";
    document.body.dataset.camera = "denied";
    return;
  }
  const pc = new RTCPeerConnection({ iceServers: cfgIceServers() });
  S.pub = pc;
  const [audio] = S.localStream.getAudioTracks();
  const [video] = S.localStream.getVideoTracks();
  pc.addTransceiver(audio, { direction: "sendonly", streams: [S.localStream] });
  pc.addTransceiver(video, { direction: "sendonly", streams: [S.localStream] });
  S.screenTx = pc.addTransceiver("video", { direction: "sendonly" });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  try {
    const reply = await request("publish", { sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    showLocalPreview();
    $("promote-prompt").classList.add("hidden");
  } catch (err) {
    banner(`Cannot publish: ${err.message}`);
    stopPublishing();
  }
  refreshControls();
}
async function republish() { stopPublishing(); await publish(); }

function showLocalPreview() {
  let tile = $("local-tile");
  if (!tile) {
    tile = document.createElement("div");
    tile.id = "local-tile"; tile.className = "tile";
    const v = document.createElement("video");
    v.autoplay = true; v.muted = true; v.playsInline = true;
    const n = document.createElement("span"); n.className = "name"; n.textContent = `${S.me.name} (you)`;
    tile.append(v, n);
    $("stage").prepend(tile);
  }
  tile.querySelector("video").srcObject = S.localStream;
}

function stopPublishing() {
  if (S.pub) { S.pub.close(); S.pub = null; }
  if (S.localStream) { S.localStream.getTracks().forEach((t) => t.stop()); S.localStream = null; }
  if (S.screenTrack) { S.screenTrack.stop(); S.screenTrack = null; }
  const tile = $("local-tile"); if (tile) tile.remove();
  if (S.me) refreshControls();
}

async function shareScreen() {
  if (S.screenTrack) { S.screenTrack.stop(); S.screenTrack = null; await S.screenTx.sender.replaceTrack(null); $("share-screen").textContent = "Share screen"; return; }
  try {
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true });
    S.screenTrack = display.getVideoTracks()[0];
    await S.screenTx.sender.replaceTrack(S.screenTrack);
    $("share-screen").textContent = "Stop sharing";
  } catch (err) { banner("Screen sharing was cancelled or denied."); }
}

function toggleLocal(kind, button, on, off) {
  if (!S.localStream) return;
  for (const t of S.localStream.getTracks()) if (t.kind === kind) { t.enabled = !t.enabled; button.textContent = t.enabled ? on : off; }
}

function cfgIceServers() { return (window.WEBINAR_CONFIG && window.WEBINAR_CONFIG.ice_servers) || []; }

// ---- chat, Q&A, polls ----------------------------------------------------------
function addChat(m) {
  const div = document.createElement("div");
  div.className = "msg"; div.dataset.message = m.id || m.message_id || "";
  const who = document.createElement("span"); who.className = "who"; who.textContent = (m.sender && m.sender.name) || m.name || "";
  const to = document.createElement("span"); to.className = "to";
  if (m.to && m.to !== "everyone") to.textContent = m.to === "panelists" ? "(to speakers) " : "(private) ";
  const text = document.createElement("span"); text.className = "text"; text.textContent = m.text;
  div.append(who, to, text);
  if (isHost()) {
    const del = document.createElement("button"); del.className = "secondary"; del.textContent = "×"; del.title = "Delete";
    del.onclick = () => act("chat.delete", { message_id: div.dataset.message });
    div.append(" ", del);
  }
  $("chat-log").append(div);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
}

function renderQuestions() {
  const list = [...S.questions.values()].filter((q) => q.status !== "dismissed").sort((a, b) => (b.votes || 0) - (a.votes || 0));
  $("qa-list").replaceChildren(...list.map((q) => {
    const div = document.createElement("div"); div.className = "question"; div.dataset.question = q.id;
    const votes = document.createElement("span"); votes.className = "votes"; votes.textContent = `▲ ${q.votes || 0}`;
    const text = document.createElement("span"); text.className = "text"; text.textContent = q.text;
    const by = document.createElement("div"); by.className = "to"; by.textContent = (q.anonymous ? "anonymous" : q.name || "") + (q.answer ? ` · answered: ${q.answer}` : q.answered_live ? " · answered live" : "");
    const up = document.createElement("button"); up.className = "secondary"; up.textContent = "Upvote";
    up.onclick = () => act("qa.upvote", { question_id: q.id });
    div.append(votes, text, " ", up, by);
    if (S.me && STAGE.includes(S.me.role)) {
      const ans = document.createElement("button"); ans.className = "secondary"; ans.textContent = "Answered live";
      ans.onclick = () => act("qa.answer", { question_id: q.id, live: true });
      const dis = document.createElement("button"); dis.className = "secondary"; dis.textContent = "Dismiss";
      dis.onclick = () => act("qa.dismiss", { question_id: q.id });
      div.append(ans, dis);
    }
    return div;
  }));
}

function renderPolls() {
  $("poll-list").replaceChildren(...[...S.polls.values()].map((p) => {
    const div = document.createElement("div"); div.className = "question"; div.dataset.poll = p.id;
    const q = document.createElement("div"); q.textContent = p.question + (p.status === "closed" ? " (closed)" : "");
    div.append(q);
    (p.options || []).forEach((opt, i) => {
      const row = document.createElement("div"); row.className = "row";
      const label = typeof opt === "string" ? opt : opt.text;
      const count = Array.isArray(p.counts) ? ` — ${p.counts[i] ?? 0}` : "";
      const b = document.createElement("button"); b.className = "secondary"; b.textContent = label + count;
      b.disabled = p.status === "closed";
      b.onclick = () => act("poll.vote", { poll_id: p.id, choices: [i] });
      row.append(b); div.append(row);
    });
    if (isHost() && p.status !== "closed") {
      const c = document.createElement("button"); c.className = "danger"; c.textContent = "Close poll";
      c.onclick = () => act("poll.close", { poll_id: p.id }); div.append(c);
    }
    return div;
  }));
}

function renderHands() {
  $("hand").textContent = S.myHand ? "Lower hand" : "Raise hand";
  $("hand-queue").replaceChildren(...S.hands.map((h) => {
    const pid = h.participant_id || h.id;
    const row = document.createElement("div"); row.className = "row"; row.dataset.hand = pid;
    const name = document.createElement("span"); name.textContent = h.name || pid;
    const ok = document.createElement("button"); ok.textContent = "Approve"; ok.onclick = () => act("participant.promote", { participant_id: pid });
    const no = document.createElement("button"); no.className = "secondary"; no.textContent = "Deny"; no.onclick = () => act("hand.lower", { participant_id: pid });
    row.append(name, ok, no); return row;
  }));
}

function renderPeople() {
  $("people-list").replaceChildren(...[...S.people.values()].filter((p) => !S.me || p.id !== S.me.id).map((p) => {
    const row = document.createElement("div"); row.className = "row"; row.dataset.person = p.id;
    const name = document.createElement("span"); name.textContent = `${p.name} (${p.role})`;
    const mute = document.createElement("button"); mute.className = "secondary"; mute.textContent = "Mute";
    mute.onclick = () => act("participant.mute", { participant_id: p.id, kind: "audio" });
    const demote = document.createElement("button"); demote.className = "secondary"; demote.textContent = "To audience";
    demote.onclick = () => act("participant.demote", { participant_id: p.id });
    const remove = document.createElement("button"); remove.className = "danger"; remove.textContent = "Remove";
    remove.onclick = () => act("participant.remove", { participant_id: p.id });
    row.append(name, mute, demote, remove); return row;
  }));
}

function renderRestreams() {
  $("restream-list").replaceChildren(...[...S.restreams.values()].map((r) => {
    const row = document.createElement("div"); row.className = "row";
    const s = document.createElement("span"); s.textContent = `${r.destination || r.restream_id}: ${r.state}`;
    row.dataset.restream = r.restream_id; row.dataset.state = r.state;
    row.append(s);
    if (r.state === "started") { const b = document.createElement("button"); b.className = "danger"; b.textContent = "Stop"; b.onclick = () => act("restream.stop", { restream_id: r.restream_id }); row.append(b); }
    return row;
  }));
}

// ---- wiring --------------------------------------------------------------------
document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll(".tabs button").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === `panel-${b.dataset.tab}`));
}));
async function sendChat() {
  const text = $("chat-text").value.trim();
  if (!text) return;
  if (await act("chat.send", { text, to: $("chat-to").value })) $("chat-text").value = "";
}
$("chat-send").onclick = sendChat;
$("chat-text").addEventListener("keydown", (e) => { if (e.key === "Enter") sendChat(); });
$("qa-ask").onclick = async () => { const text = $("qa-text").value.trim(); if (text && await act("qa.ask", { text })) $("qa-text").value = ""; };
$("poll-open").onclick = () => act("poll.create", { question: $("poll-question").value, options: $("poll-options").value.split(",").map((s) => s.trim()).filter(Boolean), multiple: $("poll-multiple").checked });
$("hand").onclick = async () => {
  const raising = !S.myHand;
  if (await act(raising ? "hand.raise" : "hand.lower", {})) { S.myHand = raising; renderHands(); }
};
$("publish").onclick = publish;
$("accept-stage").onclick = publish;
$("mute-audio").onclick = () => toggleLocal("audio", $("mute-audio"), "Mute mic", "Unmute mic");
$("mute-video").onclick = () => toggleLocal("video", $("mute-video"), "Stop camera", "Start camera");
$("share-screen").onclick = shareScreen;
$("leave").onclick = () => { S.closedFinal = true; S.ws.close(); showState("You left the webinar", "", "left"); };
$("webinar-start").onclick = () => act("webinar.start", {});
$("webinar-end").onclick = () => act("webinar.end", {});
$("room-lock").onclick = () => act("room.lock", { locked: $("room-lock").textContent === "Lock room" });
$("chat-disable").onclick = () => act("chat.disable", { disabled: $("chat-disable").textContent === "Disable chat" });
$("restream-start").onclick = async () => {
  const r = await act("restream.start", { url: $("restream-url").value });
  if (!r) return;
  const known = S.restreams.get(r.restream_id);  // the started event may come first
  S.restreams.set(r.restream_id, { state: "starting", ...known, restream_id: r.restream_id, destination: r.destination });
  $("restream-url").value = ""; renderRestreams();
};
$("recording-start").onclick = () => act("recording.start", {});
$("recording-stop").onclick = () => act("recording.stop", {});

connect();
