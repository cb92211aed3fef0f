// The buyer's page: a plain client of API.md. Everything it knows comes from the API; every
// error the API can give is shown as a sentence.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
const state = {
  session: JSON.parse(sessionStorage.getItem("session") || "null"),
  queueToken: null,
  date: null,
  seats: new Map(),
  selected: new Set(),
  limit: 4,
  hold: null,
  streams: [],
  countdown: null,
  pendingDate: null,
  olderReservations: null,
};

const MESSAGES = {
  unauthenticated: "Please sign in again: your session has ended.",
  invalid_credentials: "That username and password do not match. Check them, or create an account.",
  username_taken: "That username is already taken. Please choose another one.",
  queue_token_invalid: "Your place in the waiting room was lost. Please join the line again.",
  not_admitted: "It is not your turn yet. Please wait in the waiting room.",
  queue_token_expired: "Your shopping time is over. Please join the waiting room again.",
  forbidden: "That belongs to someone else.",
  seat_unavailable: "Sorry, one of those seats was just taken by someone else. Please pick another.",
  hold_limit: () => `You can hold at most ${state.limit} seats at once on one date, and there is a limit over all dates together too. Pay for or cancel a hold first.`,
  rehold_cooldown: "You let go of one of those seats a moment ago, so it is not yours to hold again just yet. Please pick another seat, or try again in a minute.",
  hold_expired: "Your hold expired and the seats went back on sale. Please pick your seats again.",
  insufficient_balance: "Your balance is too low for this. Top up, then pay.",
  invalid_amount: "Please enter a whole amount of won between 1 and 10,000,000.",
  balance_limit: "That top-up would take your balance over the limit. Try a smaller amount.",
  already_paid: "This reservation is already paid. You're all set.",
  reservation_not_held: "These seats are no longer held for you.",
  rate_limited: "Too many tries in a short time. Please wait a moment and try again.",
  overloaded: "The box office is very busy right now. Please try again in a moment.",
  not_found: "We could not find that. It may have been removed.",
  idempotency_key_reused: "That request was already sent with different details. Please try again.",
  payload_too_large: "That was too much to send at once.",
  unsupported_media_type: "Something went wrong sending that. Please reload the page.",
  malformed_request: "Something went wrong sending that. Please reload the page and try again.",
};

class Problem extends Error {
  constructor(code, detail, status) {
    const known = MESSAGES[code];
    let text = typeof known === "function" ? known() : known;
    if (!text && code === "invalid_input") text = `Please check what you entered: ${detail}.`;
    super(text || "Something unexpected went wrong. Please try again.");
    this.code = code;
    this.status = status;
  }
}

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !text;
}

function headers(extra = {}) {
  const h = { ...extra };
  if (state.session) h.authorization = `Bearer ${state.session.token}`;
  if (state.queueToken) h["x-queue-token"] = state.queueToken;
  return h;
}

async function api(method, path, { body, idempotent } = {}) {
  const extra = {};
  if (body !== undefined) extra["content-type"] = "application/json";
  if (idempotent) extra["idempotency-key"] = idempotent;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers: headers(extra),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new Problem("network", "", 0);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Problem(data.code, data.detail || "", response.status);
  return data;
}

function show(section) {
  for (const id of ["catalog", "auth", "waiting", "seats", "done", "mine"]) $(id).hidden = id !== section;
  const heading = $(section).querySelector("h2");
  if (heading) { heading.tabIndex = -1; heading.focus(); }
}

function stopStreams() {
  for (const controller of state.streams) controller.abort();
  state.streams = [];
}

const won = (n) => `${Number(n).toLocaleString("en-US")}`;
const when = (iso) => new Date(iso).toLocaleString();

// ----- catalogue -------------------------------------------------------------------------

async function showCatalog() {
  stopStreams();
  show("catalog");
  const list = $("concerts");
  try {
    const { concerts } = await api("GET", "/concerts");
    list.replaceChildren();
    if (concerts.length === 0) list.textContent = "No concerts on sale yet.";
    for (const concert of concerts) {
      const box = document.createElement("article");
      box.className = "concert";
      const title = document.createElement("h3");
      title.textContent = `${concert.title} — ${concert.venue}`;
      const dates = document.createElement("ul");
      dates.className = "dates";
      const { dates: all } = await api("GET", `/concerts/${concert.concert_id}/dates`);
      for (const date of all) {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.date = date.date_id;
        button.textContent = "Choose seats";
        button.disabled = date.available_seats === 0;
        button.addEventListener("click", () => chooseDate({ ...date, concert }));
        item.append(`${when(date.starts_at)} · ${date.available_seats} of ${date.total_seats} seats available · ${won(date.price)} won each `, button);
        dates.append(item);
      }
      box.append(title, dates);
      list.append(box);
    }
  } catch (problem) {
    say(problem.message);
  }
}

// ----- account ---------------------------------------------------------------------------

function setSession(session) {
  state.session = session;
  if (session) sessionStorage.setItem("session", JSON.stringify(session));
  else sessionStorage.removeItem("session");
  $("account").hidden = !session;
  if (session) { $("who").textContent = session.username; refreshBalance(); }
}

async function refreshBalance() {
  try {
    const { balance } = await api("GET", "/balance");
    $("balance").textContent = won(balance);
    return balance;
  } catch (problem) {
    if (problem.code === "unauthenticated") setSession(null);
    return 0;
  }
}

async function signIn(create) {
  const username = $("username").value.trim();
  const password = $("password").value;
  say("");
  try {
    if (create) await api("POST", "/users", { body: { username, password } });
    const session = await api("POST", "/sessions", { body: { username, password } });
    setSession({ token: session.session_token, username });
    if (state.pendingDate) chooseDate(state.pendingDate); else showCatalog();
  } catch (problem) {
    say(problem.message);
  }
}

// ----- waiting room ----------------------------------------------------------------------

async function chooseDate(date) {
  state.date = date;
  if (!state.session) {
    state.pendingDate = date;
    show("auth");
    say("Please sign in or create an account to choose seats.", "info");
    return;
  }
  state.pendingDate = null;
  say("");
  show("waiting");
  try {
    const status = await api("POST", "/queue/tokens");
    onQueueStatus(status);
    if (status.status !== "active") watchQueue();
  } catch (problem) {
    say(problem.message);
  }
}

function onQueueStatus(status) {
  state.queueToken = status.queue_token;
  if (status.status === "active") {
    $("queue-status").textContent = "It's your turn!";
    stopStreams();
    openSeats();
  } else {
    const minutes = Math.ceil(status.estimated_wait_seconds / 60);
    $("queue-status").textContent = `You are number ${status.position} in line. ` +
      (status.estimated_wait_seconds < 60 ? "Less than a minute to wait." : `About ${minutes} minutes to wait.`);
  }
}

// Reads a Server-Sent Events response with fetch (EventSource cannot send our headers).
async function stream(path, onEvent) {
  const controller = new AbortController();
  state.streams.push(controller);
  const response = await fetch(API + path, { headers: headers(), signal: controller.signal });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Problem(data.code, data.detail || "", response.status);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

async function watchQueue() {
  try {
    await stream("/queue/tokens/current/events", (_, status) => onQueueStatus(status));
  } catch (problem) {
    if (problem.name === "AbortError") return;
  }
  if ($("waiting").hidden) return;
  // The stream ended: the token may have been replaced. Poll once, then listen again.
  try {
    const status = await api("GET", "/queue/tokens/current");
    onQueueStatus(status);
    if (status.status !== "active") setTimeout(watchQueue, 1000);
  } catch (problem) {
    say(problem.message);
  }
}

// ----- seat map --------------------------------------------------------------------------

const LABEL = { available: "available", held: "held by someone else", sold: "sold", mine: "held by you", selected: "selected by you" };
const GLYPH = { held: "H", sold: "✕", mine: "★", selected: "✓" };

function seatLook(seat) {
  if (state.hold && state.hold.seat_nos.includes(seat) && state.seats.get(seat) === "held") return "mine";
  if (state.selected.has(seat)) return "selected";
  return state.seats.get(seat);
}

function renderSeat(seat) {
  const button = $("seat-grid").querySelector(`[data-seat="${seat}"]`);
  if (!button) return;
  const look = seatLook(seat);
  button.className = `seat ${look}`;
  button.textContent = GLYPH[look] ? `${GLYPH[look]}${seat}` : String(seat);
  button.setAttribute("aria-label", `Seat ${seat}, ${LABEL[look]}`);
  button.setAttribute("aria-pressed", String(look === "selected"));
  button.setAttribute("aria-disabled", String(look !== "available" && look !== "selected"));
}

function renderSelection() {
  const count = state.selected.size;
  $("selection").textContent = count === 0
    ? `Pick up to ${state.limit} seats.`
    : `${count} of ${state.limit} seats chosen: ${[...state.selected].sort((a, b) => a - b).join(", ")}.`;
  $("hold").disabled = count === 0 || state.hold !== null;
}

function buildGrid(listing) {
  const grid = $("seat-grid");
  grid.replaceChildren();
  const columns = Math.min(10, listing.seats.length);
  grid.style.setProperty("--cols", columns);
  for (const { seat_no } of listing.seats) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.seat = seat_no;
    button.addEventListener("click", () => toggleSeat(seat_no));
    button.addEventListener("keydown", (event) => moveFocus(event, seat_no, columns, listing.seats.length));
    grid.append(button);
  }
}

function moveFocus(event, seat, columns, count) {
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
  if (!step) return;
  const next = seat + step;
  if (next < 1 || next > count) return;
  event.preventDefault();
  $("seat-grid").querySelector(`[data-seat="${next}"]`).focus();
}

function toggleSeat(seat) {
  if (state.hold) { say("Pay for or release your current hold before choosing other seats."); return; }
  if (state.selected.has(seat)) state.selected.delete(seat);
  else if (state.seats.get(seat) !== "available") { say(`Seat ${seat} is ${LABEL[state.seats.get(seat)]}. Please pick another.`); return; }
  else if (state.selected.size >= state.limit) { say(`You can hold at most ${state.limit} seats at once on this date.`); return; }
  else state.selected.add(seat);
  say("");
  renderSeat(seat);
  renderSelection();
}

function applySeats(changes) {
  for (const { seat_no, status } of changes) {
    state.seats.set(seat_no, status);
    if (status !== "available" && state.selected.has(seat_no) && !state.hold) {
      state.selected.delete(seat_no);
      say(`Seat ${seat_no} was just taken by someone else.`);
      renderSelection();
    }
    renderSeat(seat_no);
  }
}

async function openSeats() {
  show("seats");
  const date = state.date;
  $("date-info").textContent = `${date.concert.title} at ${date.concert.venue}, ${when(date.starts_at)} · ${won(date.price)} won per seat`;
  try {
    const listing = await api("GET", `/dates/${date.date_id}/seats`);
    state.limit = listing.max_seats_per_user;
    buildGrid(listing);
    applySeats(listing.seats);
    renderSelection();
    listenSeats();
  } catch (problem) {
    say(problem.message);
  }
}

async function listenSeats() {
  try {
    await stream(`/dates/${state.date.date_id}/seats/events`, (name, data) => {
      applySeats(name === "snapshot" ? data.seats : data);
    });
  } catch (problem) {
    if (problem.name === "AbortError") return;
    say(problem.message);
  }
}

// ----- hold, top up, pay -----------------------------------------------------------------

const key = () => (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));

async function holdSeats() {
  const seat_nos = [...state.selected].sort((a, b) => a - b);
  try {
    state.hold = await api("POST", "/reservations", { body: { date_id: state.date.date_id, seat_nos }, idempotent: key() });
    state.selected.clear();
    for (const seat of seat_nos) { state.seats.set(seat, "held"); renderSeat(seat); }
    renderSelection();
    say("");
    $("hold-summary").textContent = `Seats ${seat_nos.join(", ")} · ${won(state.hold.price)} won in total.`;
    $("hold-panel").hidden = false;
    const balance = await refreshBalance();
    $("amount").value = Math.max(1, state.hold.price - balance);
    startCountdown(new Date(state.hold.expires_at).getTime());
  } catch (problem) {
    say(problem.message);
  }
}

function startCountdown(until) {
  clearInterval(state.countdown);
  const tick = () => {
    const left = Math.max(0, Math.round((until - Date.now()) / 1000));
    $("countdown").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    if (left === 0) {
      clearInterval(state.countdown);
      endHold();
      say("Your hold expired and the seats went back on sale. Please pick your seats again.");
    }
  };
  tick();
  state.countdown = setInterval(tick, 250);
}

function endHold() {
  const seats = state.hold ? state.hold.seat_nos : [];
  state.hold = null;
  $("hold-panel").hidden = true;
  clearInterval(state.countdown);
  for (const seat of seats) renderSeat(seat);
  renderSelection();
}

async function topUp(event) {
  event.preventDefault();
  const amount = Number($("amount").value);
  if (!Number.isInteger(amount) || amount < 1) { say(MESSAGES.invalid_amount); return; }
  try {
    const charge = await api("POST", "/balance/charges", { body: { amount }, idempotent: key() });
    $("balance").textContent = won(charge.balance);
    say(`Added ${won(amount)} won. Your balance is ${won(charge.balance)} won.`, "info");
  } catch (problem) {
    say(problem.message);
  }
}

async function pay() {
  try {
    const payment = await api("POST", "/payments", { body: { reservation_id: state.hold.reservation_id }, idempotent: key() });
    endHold();
    stopStreams();
    state.queueToken = null;
    $("balance").textContent = won(payment.balance);
    $("confirmation").textContent = `Seats ${payment.seat_nos.join(", ")} for ${state.date.concert.title}, ${when(state.date.starts_at)} are yours. ` +
      `You paid ${won(payment.amount)} won (payment ${payment.payment_id}); ${won(payment.balance)} won is left on your balance.`;
    say("");
    show("done");
  } catch (problem) {
    if (problem.code === "hold_expired") endHold();
    say(problem.message);
  }
}

async function release() {
  try {
    await api("DELETE", `/reservations/${state.hold.reservation_id}`);
    endHold();
    say("Your seats were released.", "info");
  } catch (problem) {
    say(problem.message);
  }
}

async function showMine() {
  stopStreams();
  show("mine");
  await showReservations(null);
}

// The list comes a page at a time, newest first; "Show older" follows next_cursor.
async function showReservations(cursor) {
  const list = $("reservation-list");
  const older = $("older-reservations");
  older.hidden = true;
  try {
    const query = cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
    const { reservations, next_cursor } = await api("GET", `/reservations${query}`);
    if (!cursor) list.replaceChildren();
    if (!cursor && reservations.length === 0) list.textContent = "You have no reservations yet.";
    for (const r of reservations) {
      const item = document.createElement("li");
      item.textContent = `${r.reservation_id}: seats ${r.seat_nos.join(", ")} · ${won(r.price)} won · ${r.status}`;
      list.append(item);
    }
    state.olderReservations = next_cursor;
    older.hidden = !next_cursor;
  } catch (problem) {
    say(problem.message);
  }
}

// ----- wiring ----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("home").addEventListener("click", (e) => { e.preventDefault(); say(""); showCatalog(); });
  $("auth-form").addEventListener("submit", (e) => { e.preventDefault(); signIn(false); });
  $("sign-up").addEventListener("click", () => { if ($("auth-form").reportValidity()) signIn(true); });
  $("sign-out").addEventListener("click", async () => {
    try { await api("DELETE", "/sessions/current"); } catch { /* signed out either way */ }
    stopStreams();
    setSession(null);
    showCatalog();
  });
  $("my-reservations").addEventListener("click", showMine);
  $("see-reservations").addEventListener("click", showMine);
  $("older-reservations").addEventListener("click", () => showReservations(state.olderReservations));
  $("hold").addEventListener("click", holdSeats);
  $("top-up-form").addEventListener("submit", topUp);
  $("pay").addEventListener("click", pay);
  $("release").addEventListener("click", release);
  setSession(state.session);
  showCatalog();
});
