// The review page: the audit's suspects per class, and the person's decisions about them.
// Every text from the CSV files goes into the page as text (textContent), never as markup.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const FILTERS = ["suspects", "all", "decided"];
const VERDICT_TEXT = { reject: "rejected", keep: "kept" };

const state = {
  classes: [], suspects: [], decisions: {}, total: 0, file: "", canUndo: false,
  current: null, filter: "suspects", focus: 0, moving: null, chosen: 0,
};
// Requests run one after another, in the order the person acted.
let queue = Promise.resolve();

// ---- Talking to the server ----------------------------------------------------------------------

async function api(method, path, body) {
  const options = { method, headers: { "X-Review-Token": TOKEN } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const answer = await response.json();
  if (!response.ok) {
    throw new Error(typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail));
  }
  return answer;
}

function send(request) {
  queue = queue.then(request).then(accept, showError);
  return queue;
}

function accept(answer) {
  state.decisions = answer.decisions;
  state.total = answer.total;
  state.file = answer.file;
  state.canUndo = answer.can_undo;
  showError(null);
  render();
}

function showError(error) {
  const message = document.getElementById("message");
  message.hidden = !error;
  message.textContent = error ? `Not saved: ${error.message}` : "";
}

function decide(images, decision, target = "", note = "") {
  const changes = images.map((image) => ({ image, decision, class: target, note }));
  return send(() => api("POST", "/api/decisions", { changes }));
}

function undo() {
  if (state.canUndo) send(() => api("POST", "/api/undo"));
}

// ---- What is shown ------------------------------------------------------------------------------

function flagged(suspect) {
  return suspect.issue !== "ok";
}

function shown(suspect) {
  if (suspect.class !== state.current) return false;
  if (state.filter === "suspects") return flagged(suspect);
  if (state.filter === "decided") return suspect.image in state.decisions;
  return true;
}

// The current class's pictures in the file's order (most suspicious first), each group of a
// cluster together where its most suspicious member is.
function blocks() {
  const result = [];
  const groups = new Map();
  for (const suspect of state.suspects.filter(shown)) {
    if (!suspect.cluster) {
      result.push({ cluster: "", members: [suspect] });
    } else if (groups.has(suspect.cluster)) {
      groups.get(suspect.cluster).members.push(suspect);
    } else {
      const group = { cluster: suspect.cluster, members: [suspect] };
      groups.set(suspect.cluster, group);
      result.push(group);
    }
  }
  return result;
}

function ordered() {
  return blocks().flatMap((block) => block.members);
}

function focused() {
  return ordered()[state.focus];
}

function groupOf(suspect) {
  return state.suspects.filter((other) => other.cluster && other.cluster === suspect.cluster);
}

// ---- Drawing ------------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null));
  return node;
}

function render() {
  state.focus = Math.max(0, Math.min(state.focus, ordered().length - 1));
  renderStatus();
  renderClasses();
  renderToolbar();
  renderGrid();
}

function renderStatus() {
  const status = document.getElementById("status");
  const count = `${state.total} decision${state.total === 1 ? "" : "s"} in ${state.file}.`;
  status.replaceChildren(count, " Next: run ", el("code", {}, "dvc repro"),
    " (rejected pictures leave the split, relabeled ones move), then commit ",
    el("code", {}, state.file), ".");
  document.getElementById("undo").disabled = !state.canUndo;
}

function renderClasses() {
  const list = document.getElementById("classes");
  list.replaceChildren(...state.classes.map((name) => {
    const suspects = state.suspects.filter((s) => s.class === name && flagged(s));
    const open = suspects.filter((s) => !(s.image in state.decisions)).length;
    const button = el("button", { type: "button", "data-class": name, onclick: () => showClass(name) },
      el("span", {}, name),
      el("span", { class: "count", title: `${suspects.length} suspects, ${open} undecided` },
        `${suspects.length}` + (open < suspects.length ? ` (${open} left)` : "")));
    if (name === state.current) button.classList.add("current");
    return el("li", {}, button);
  }));
}

function renderToolbar() {
  document.getElementById("class-title").textContent = state.current;
  for (const button of document.querySelectorAll("#filters button")) {
    button.setAttribute("aria-checked", String(button.dataset.filter === state.filter));
  }
}

function renderGrid() {
  const grid = document.getElementById("grid");
  const current = focused();
  const nodes = blocks().map((block) => (block.cluster ? group(block) : card(block.members[0])));
  grid.replaceChildren(...(nodes.length ? nodes : [el("p", { class: "empty" }, emptyText())]));
  const node = current && grid.querySelector(`[data-image="${current.image}"]`);
  if (node) {
    node.classList.add("focused");
    node.scrollIntoView({ block: "nearest" });
  }
}

function emptyText() {
  if (state.filter === "suspects") return "No suspects in this class: the audit flagged none.";
  if (state.filter === "decided") return "No decisions in this class yet.";
  return "No pictures in this class.";
}

function group(block) {
  const members = groupOf(block.members[0]);
  return el("section", { class: "group", "data-cluster": block.cluster },
    el("h3", {}, `Group ${block.cluster}: ${members.length} pictures`,
      el("button", { type: "button", class: "reject-group", title: "g",
        onclick: () => rejectGroup(block.members[0]) }, "Reject the group")),
    el("div", { class: "cards" }, ...block.members.map(card)));
}

function card(suspect) {
  const decision = state.decisions[suspect.image];
  const node = el("figure", { class: "card", "data-image": suspect.image },
    el("img", { src: `/images/${suspect.image}`, alt: suspect.file, loading: "lazy" }),
    el("figcaption", {},
      el("span", { class: "score", title: "score: higher is more suspicious" }, suspect.score.toFixed(2)),
      " ", el("span", { class: `issue ${suspect.issue}` }, suspect.issue),
      suspect.suggested ? ` suggests ${suspect.suggested}` : "",
      decision ? el("span", { class: "verdict" }, verdictText(decision)) : null),
    actions(suspect, decision));
  if (decision) node.classList.add(decision.decision);
  node.addEventListener("click", () => focus(suspect));
  return node;
}

function verdictText(decision) {
  return decision.decision === "relabel" ? `moved to ${decision.class}` : VERDICT_TEXT[decision.decision];
}

function actions(suspect, decision) {
  const button = (name, text, title, action) =>
    el("button", { type: "button", "data-action": name, title, onclick: action }, text);
  return el("div", { class: "actions" },
    button("reject", "Reject", "r", () => decide([suspect.image], "reject")),
    button("keep", "Keep", "k", () => decide([suspect.image], "keep")),
    suspect.suggested
      ? button("suggested", `→ ${suspect.suggested}`, "s",
        () => decide([suspect.image], "relabel", suspect.suggested))
      : null,
    button("move", "Move to…", "m", () => openMove(suspect)),
    decision ? button("clear", "Clear", "c", () => decide([suspect.image], null)) : null);
}

// ---- Acting -------------------------------------------------------------------------------------

function focus(suspect) {
  state.focus = Math.max(0, ordered().indexOf(suspect));
  renderGrid();
}

function moveFocus(by) {
  state.focus = Math.max(0, Math.min(state.focus + by, ordered().length - 1));
  renderGrid();
}

function showClass(name) {
  state.current = name;
  state.focus = 0;
  render();
}

function setFilter(filter) {
  state.filter = filter;
  state.focus = 0;
  render();
}

// Acting on the focused picture moves on to the next one, as a reviewer works down the grid.
function decideFocused(decision, target = "") {
  const suspect = focused();
  if (!suspect) return;
  state.focus += 1;
  decide([suspect.image], decision, target);
}

function rejectGroup(suspect) {
  const members = groupOf(suspect);
  if (members.length) decide(members.map((m) => m.image), "reject", "", `group ${suspect.cluster}`);
}

function stepClass(by) {
  const count = state.classes.length;
  showClass(state.classes[(state.classes.indexOf(state.current) + by + count) % count]);
}

// ---- Moving to any class ------------------------------------------------------------------------

function openMove(suspect) {
  state.moving = suspect;
  state.chosen = 0;
  const input = document.getElementById("move-filter");
  input.value = "";
  renderMove();
  document.getElementById("move").showModal();
  input.focus();
}

function moveChoices() {
  const typed = document.getElementById("move-filter").value.trim().toLowerCase();
  return state.classes.filter((name) => name !== state.moving.class && name.toLowerCase().includes(typed));
}

function renderMove() {
  const choices = moveChoices();
  state.chosen = Math.max(0, Math.min(state.chosen, choices.length - 1));
  document.getElementById("move-list").replaceChildren(...choices.map((name, index) =>
    el("li", { class: index === state.chosen ? "chosen" : "", "data-class": name,
      onclick: () => move(name) }, name)));
}

function move(name) {
  const suspect = state.moving;
  document.getElementById("move").close();
  if (suspect.image === focused()?.image) state.focus += 1;
  decide([suspect.image], "relabel", name);
}

function onMoveKey(event) {
  const choices = moveChoices();
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    state.chosen += event.key === "ArrowDown" ? 1 : -1;
    renderMove();
    event.preventDefault();
  } else if (event.key === "Enter" && choices.length) {
    move(choices[state.chosen]);
    event.preventDefault();
  }
}

// ---- Keyboard -----------------------------------------------------------------------------------

const KEYS = {
  ArrowRight: () => moveFocus(1),
  ArrowLeft: () => moveFocus(-1),
  "]": () => stepClass(1),
  "[": () => stepClass(-1),
  r: () => decideFocused("reject"),
  k: () => decideFocused("keep"),
  s: () => { const s = focused(); if (s && s.suggested) decideFocused("relabel", s.suggested); },
  m: () => { const s = focused(); if (s) openMove(s); },
  g: () => { const s = focused(); if (s && s.cluster) rejectGroup(s); },
  c: () => { const s = focused(); if (s && s.image in state.decisions) decide([s.image], null); },
  u: undo,
  1: () => setFilter(FILTERS[0]),
  2: () => setFilter(FILTERS[1]),
  3: () => setFilter(FILTERS[2]),
};

function onKey(event) {
  if (document.getElementById("move").open || event.altKey || event.metaKey) return;
  if (event.ctrlKey) {
    if (event.key === "z") { undo(); event.preventDefault(); }
    return;
  }
  const action = KEYS[event.key];
  if (action) {
    action();
    event.preventDefault();
  }
}

// ---- Start --------------------------------------------------------------------------------------

async function start() {
  document.addEventListener("keydown", onKey);
  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("move-filter").addEventListener("input", () => { state.chosen = 0; renderMove(); });
  document.getElementById("move-filter").addEventListener("keydown", onMoveKey);
  for (const button of document.querySelectorAll("#filters button")) {
    button.addEventListener("click", () => setFilter(button.dataset.filter));
  }
  try {
    const answer = await api("GET", "/api/state");
    state.classes = answer.classes;
    state.suspects = answer.suspects;
    // Start where the most suspicious picture is filed (the file lists it first).
    state.current = state.suspects.length ? state.suspects[0].class : state.classes[0];
    accept(answer);
  } catch (error) {
    showError(error);
  }
}

start();
