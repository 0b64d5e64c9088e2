"use strict";
// Registration page: /register/<webinar id>. Talks to the registry REST API.
const cfg = window.WEBINAR_CONFIG || {};
const api = cfg.registry_url || "";
const webinarId = location.pathname.split("/").filter(Boolean).pop();
const $ = (id) => document.getElementById(id);

function text(el, value) { el.textContent = value; }

async function load() {
  const resp = await fetch(`${api}/v1/webinars/${encodeURIComponent(webinarId)}`);
  if (!resp.ok) { text($("title"), "This webinar does not exist."); return; }
  const w = await resp.json();
  text($("title"), w.title);
  text($("when"), new Date(w.starts_at).toLocaleString() + ` · ${w.duration_minutes} min`);
  document.title = `Register · ${w.title}`;
  for (const q of w.questions) {
    const label = document.createElement("label");
    label.htmlFor = `q_${q.id}`;
    text(label, q.label + (q.required ? " *" : ""));
    let input;
    if (q.choices.length) {
      input = document.createElement("select");
      input.append(new Option("", ""));
      for (const c of q.choices) input.append(new Option(c, c));
    } else {
      input = document.createElement("input");
      input.maxLength = 1000;
    }
    input.id = `q_${q.id}`;
    input.dataset.question = q.id;
    input.required = q.required;
    $("questions").append(label, input);
  }
  $("form").classList.remove("hidden");
}

function showResult(body) {
  $("form").classList.add("hidden");
  const box = $("result");
  box.classList.remove("hidden");
  box.replaceChildren();
  const p = document.createElement("p");
  if (body.status === "approved") {
    text(p, "You are registered. Keep this link to join:");
    const a = document.createElement("a");
    a.href = body.join_url; a.id = "join-link"; text(a, "Join the webinar");
    box.append(p, a);
  } else if (body.status === "pending") {
    p.id = "pending";
    text(p, "Your registration is pending approval by the organizer. Keep this page open; it updates when you are approved.");
    box.append(p);
    if (body.status_url) setTimeout(() => poll(body.status_url), 3000);
  } else {
    text(p, "Your registration was not accepted.");
    box.append(p);
  }
}

async function poll(statusUrl) {
  const resp = await fetch(api + statusUrl);
  if (!resp.ok) return;
  const body = await resp.json();
  if (body.status === "pending") { setTimeout(() => poll(statusUrl), 5000); return; }
  showResult(body);
}

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  text($("form-error"), "");
  const answers = {};
  for (const el of document.querySelectorAll("[data-question]")) {
    if (el.value) answers[el.dataset.question] = el.value;
  }
  const body = { name: $("name").value, email: $("email").value, answers };
  const resp = await fetch(`${api}/v1/webinars/${encodeURIComponent(webinarId)}/registrations`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await resp.json();
  if (resp.ok) { showResult(data); return; }
  if (resp.status === 409) { text($("form-error"), "Sorry, this webinar is full."); return; }
  const fields = (data.error && data.error.fields) || [];
  text($("form-error"), fields.length
    ? fields.map((f) => `${f.field}: ${f.message}`).join("; ")
    : (data.error && data.error.message) || "Registration failed.");
});

load();
