// The buyer's page: a plain client of API.md. Everything it shows comes from the server (a reload
// or a second tab finds the same hold), and every error the API can give is shown as a sentence.
"use strict";

const API = "/api/v1";
const STORED = "boxoffice.session";
const $ = (id) => document.getElementById(id);

function freshState() {
  return {
    session: null, // {token, username}
    // A token per waiting room: "general", or the id of a concert with a room of its own.
    queueTokens: {},
    room: "general", // the room of the date the buyer is on
    queueToken: null, // queueTokens[room]
    opensCountdown: null,
    date: null, // the date whose seats are open: GET /dates/{id}
    map: null, // SeatMap of that date
    selected: new Set(),
    owned: new Set(), // seats of this date the buyer has paid for
    limit: 4,
    hold: null, // the newest live held reservation, with its date
    streams: [],
    countdown: null,
    announced: null,
    pendingRoute: null,
    olderReservations: null,
    entry: null, // the buyer's live waiting-list entry for the open date
    entryPoll: null,
    epoch: 0, // bumped on sign-out, so answers for the previous buyer are dropped
  };
}
let state = freshState();

const MESSAGES = {
  unauthenticated: "Please sign in again: your session has ended.",
  invalid_credentials: "That username and password do not match. Check them, or create an account.",
  username_taken: "That username is already taken. Please choose another one.",
  queue_token_invalid: "Your place in the waiting room was lost. Please join the line again.",
  not_admitted: "It is not your turn yet. Please wait in the waiting room.",
  queue_token_expired: "Your shopping time is over. Please join the waiting room again.",
  queue_token_wrong_room: "Your place in line is for another concert. Please join this concert's waiting room.",
  forbidden: "That belongs to someone else.",
  seat_unavailable: "Sorry, one of those seats was just taken by someone else. Please pick another.",
  no_adjacent_seats: "There are no seats that many together there right now. Ask for fewer, try another section, or pick seats on the map.",
  hold_limit: (detail) => `You cannot hold more seats right now: ${detail}. Your holds are listed under “My reservations”.`,
  rehold_cooldown: (detail) => `You let go of that seat a moment ago, so it is not yours to hold again just yet (${detail}). Please pick another seat.`,
  hold_expired: "Your hold expired and the seats went back on sale. Please pick your seats again.",
  insufficient_balance: "Your balance is too low for this. Top up, then pay.",
  invalid_amount: "Please enter a whole amount of won between 1 and 10,000,000.",
  balance_limit: "That top-up would take your balance over the limit. Try a smaller amount.",
  already_paid: "This reservation is already paid. You're all set.",
  reservation_not_held: "These seats are no longer held for you.",
  reservation_not_paid: "Only a paid reservation can be refunded or given away.",
  refund_window_closed: "Refunds for this date have closed: it starts too soon.",
  seats_available: "Seats are still to be had on this date: pick them on the map instead of waiting.",
  date_cancelled: "This date was cancelled. Every paid seat was refunded in full to whoever paid for it.",
  sales_closed: "This date has started, so its sales are closed.",
  rate_limited: "Too many tries in a short time. Please wait a moment and try again.",
  overloaded: "The box office is very busy right now. Please try again in a moment.",
  not_found: "We could not find that. It may have been removed.",
  idempotency_key_reused: "That request was already sent with different details. Please try again.",
  payload_too_large: "That was too much to send at once.",
  unsupported_media_type: "Something went wrong sending that. Please reload the page.",
  malformed_request: "Something went wrong sending that. Please reload the page and try again.",
  network: "The box office cannot be reached. Check your connection and try again.",
};

class Problem extends Error {
  constructor(code, detail, status) {
    const known = MESSAGES[code];
    let text = typeof known === "function" ? known(detail) : known;
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

// Answers that arrive after the buyer signed out belong to nobody on this page.
class Stale extends Error {}

async function api(method, path, { body, idempotent } = {}) {
  const epoch = state.epoch;
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
  const data = response.status === 204 ? null : await response.json().catch(() => ({}));
  if (epoch !== state.epoch) throw new Stale();
  if (!response.ok) {
    if (data.code === "unauthenticated" && state.session) signedOutElsewhere();
    throw new Problem(data.code, data.detail || "", response.status);
  }
  return data;
}

function fail(problem) {
  if (problem instanceof Stale || problem.name === "AbortError") return;
  say(problem.message);
}

const SECTIONS = ["catalog", "auth", "waiting", "seats", "done", "mine"];

function show(section) {
  for (const id of SECTIONS) $(id).hidden = id !== section;
  const heading = $(section).querySelector("h1");
  if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
  window.scrollTo(0, 0);
}

function stopStreams() {
  for (const controller of state.streams) controller.abort();
  state.streams = [];
}

const won = (n) => Number(n).toLocaleString("en-US");
const WHEN = new Intl.DateTimeFormat(undefined, {
  weekday: "short", day: "numeric", month: "short", year: "numeric",
  hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});
const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
const when = (iso) => WHEN.format(new Date(iso));
const seatList = (seats) => [...seats].sort((a, b) => a - b).join(", ");
const plural = (n, one, many) => `${won(n)} ${n === 1 ? one : many}`;

// ----- routes: the address says where the buyer is, so a reload comes back to it ---------

function go(route) {
  if (location.hash === route) onRoute(); else location.hash = route;
}

function onRoute() {
  const route = location.hash.replace(/^#\/?/, "");
  const date = /^dates\/([^/]+)$/.exec(route);
  if (route === "sign-in") return showSignIn();
  if (route === "reservations") return needSession(showMine);
  if (date) return needSession(() => chooseDate(decodeURIComponent(date[1])));
  showCatalog();
}

function needSession(then) {
  if (state.session) return then();
  state.pendingRoute = location.hash;
  showSignIn();
  say("Please sign in or create an account to go on.", "info");
}

// ----- catalogue -------------------------------------------------------------------------

async function showCatalog() {
  leaveSeats();
  show("catalog");
  const list = $("concerts");
  try {
    const { concerts } = await api("GET", "/concerts");
    const boxes = [];
    for (const concert of concerts) {
      const box = document.createElement("article");
      box.className = "concert";
      const title = document.createElement("h2");
      title.textContent = `${concert.title} — ${concert.venue}`;
      box.append(title);
      // Before its opening, a sale's waiting room takes places that are drawn at the opening.
      const opens = concert.sale_opens_at ? Date.parse(concert.sale_opens_at) : 0;
      if (opens > Date.now()) {
        const note = document.createElement("p");
        note.className = "opening";
        note.textContent = `The sale opens ${when(concert.sale_opens_at)}. Join the waiting room before then and your place in line is drawn at random at the opening.`;
        box.append(note);
      }
      const dates = document.createElement("ul");
      dates.className = "dates";
      const { dates: all } = await api("GET", `/concerts/${concert.concert_id}/dates`);
      for (const date of all) {
        const item = document.createElement("li");
        const about = document.createElement("div");
        const text = document.createElement("span");
        const sectioned = Boolean(date.sections && date.sections.length > 1);
        const from = sectioned ? "from " : "";
        text.textContent = `${when(date.starts_at)} · ${won(date.available_seats)} of ${won(date.total_seats)} seats available · ${from}${won(date.price)} won each`;
        // A date of several sections says what is left in each, at its price.
        if (sectioned) {
          const sections = document.createElement("ul");
          sections.className = "sections";
          sections.setAttribute("aria-label", "Seats left by section");
          for (const section of date.sections) {
            const line = document.createElement("li");
            line.textContent = `${section.name}: ${won(section.available_seats)} of ${won(section.total_seats)} left · ${won(section.price)} won`;
            sections.append(line);
          }
          about.append(text, sections);
        } else {
          about.append(text);
        }
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.date = date.date_id;
        const onSale = (date.status || "on_sale") === "on_sale";
        // A sold-out date is one to wait for: its waiting list is behind the waiting room too.
        button.textContent = !onSale ? (DATE_STATUS[date.status] || "Not on sale")
          : date.available_seats === 0 ? "Sold out: join the waiting list"
            : opens > Date.now() ? "Join the waiting room" : "Choose seats";
        button.setAttribute("aria-label", `${button.textContent}: ${concert.title}, ${when(date.starts_at)}`);
        button.disabled = !onSale;
        button.addEventListener("click", () => go(`#/dates/${encodeURIComponent(date.date_id)}`));
        item.append(about, button);
        dates.append(item);
      }
      box.append(dates);
      boxes.push(box);
    }
    list.replaceChildren(...boxes);
    if (boxes.length === 0) list.textContent = "No concerts on sale yet.";
  } catch (problem) {
    fail(problem);
  }
}

const DATE_STATUS = { cancelled: "Cancelled", sales_closed: "Sales closed" };

// Which concert, venue and time a date is: reservations carry only the date's id.
const dateInfo = new Map();
async function aboutDate(dateId) {
  if (!dateInfo.has(dateId)) {
    const info = api("GET", `/dates/${encodeURIComponent(dateId)}`).catch((problem) => {
      dateInfo.delete(dateId);
      throw problem;
    });
    dateInfo.set(dateId, info);
  }
  return dateInfo.get(dateId);
}
const describeDate = (d) => `${d.title} at ${d.venue}, ${when(d.starts_at)}`;

// ----- account ---------------------------------------------------------------------------

function remember() {
  if (state.session) {
    localStorage.setItem(STORED, JSON.stringify({ ...state.session, queueTokens: state.queueTokens }));
  } else {
    localStorage.removeItem(STORED);
  }
}

function setQueueToken(token) {
  state.queueToken = token;
  if (token) state.queueTokens[state.room] = token; else delete state.queueTokens[state.room];
  remember();
}

// The seats of a concert with a room of its own take tokens of that room only.
const roomOf = (about) => (about && about.waiting_room === "own" ? about.concert_id : "general");

function enterRoomOf(about) {
  state.room = roomOf(about);
  state.queueToken = state.queueTokens[state.room] || null;
}

// A token of the room of `about`'s concert: the buyer's live one there, or a new one.
function takeQueueToken(about) {
  enterRoomOf(about);
  const room = state.room;
  return api("POST", "/queue/tokens", room === "general" ? {} : { body: { concert_id: room } });
}

function setSession(session) {
  state.session = session;
  remember();
  $("account").hidden = !session;
  $("sign-in-entry").hidden = !!session;
  $("who").textContent = session ? session.username : "";
  if (session) refreshBalance();
}

async function refreshBalance() {
  try {
    const { balance } = await api("GET", "/balance");
    $("balance").textContent = won(balance);
    return balance;
  } catch (problem) {
    fail(problem);
    return 0;
  }
}

function showSignIn() {
  leaveSeats();
  show("auth");
}

async function signIn(create) {
  const username = $("username").value.trim();
  const password = $("password").value;
  say("");
  try {
    if (create) await api("POST", "/users", { body: { username, password } });
    const session = await api("POST", "/sessions", { body: { username, password } });
    $("password").value = "";
    setSession({ token: session.session_token, username, userId: session.user_id });
    await recoverHold();
    const next = state.pendingRoute && state.pendingRoute !== "#/sign-in" ? state.pendingRoute : "#/";
    state.pendingRoute = null;
    go(next);
  } catch (problem) {
    fail(problem);
  }
}

// Leaves the waiting room, ends the session and wipes the page, so the next person at this
// computer finds nothing of the previous buyer.
async function signOut() {
  const hadToken = state.queueToken;
  stopStreams();
  try { if (hadToken) await api("DELETE", "/queue/tokens/current"); } catch { /* leaving either way */ }
  try { await api("DELETE", "/sessions/current"); } catch { /* signed out either way */ }
  wipe();
  go("#/");
  say("You are signed out.", "info");
}

function signedOutElsewhere() {
  wipe();
  go("#/");
  say("You were signed out. Please sign in again to go on.", "info");
}

function wipe() {
  leaveSeats();
  clearInterval(state.countdown);
  stopOpeningCountdown();
  const epoch = state.epoch + 1;
  state = freshState();
  state.epoch = epoch;
  dateInfo.clear();
  localStorage.removeItem(STORED);
  setSession(null);
  $("balance").textContent = "0";
  $("username").value = "";
  $("password").value = "";
  $("hold-panel").hidden = true;
  $("hold-summary").textContent = "";
  $("countdown-announcer").textContent = "";
  $("seat-grid").replaceChildren();
  $("date-info").textContent = "";
  $("availability").textContent = "";
  $("selection").textContent = "";
  $("overview").hidden = true;
  $("reservation-list").replaceChildren();
  $("older-reservations").hidden = true;
  $("confirmation").textContent = "";
  $("queue-status").textContent = "";
  $("queue-wait").textContent = "";
  say("");
}

// ----- the buyer's live hold, found on the server --------------------------------------------

const isLive = (r) => r.status === "held" && Date.parse(r.expires_at) > Date.now();

async function recoverHold() {
  try {
    const { reservations } = await api("GET", "/reservations?limit=20");
    const live = reservations.find(isLive);
    if (live) await showHold(live); else endHold();
  } catch (problem) {
    fail(problem);
  }
}

async function showHold(reservation) {
  let about = null;
  try { about = await aboutDate(reservation.date_id); } catch (problem) { if (problem instanceof Stale) return; }
  state.hold = { ...reservation, about };
  $("hold-summary").textContent = `${plural(reservation.seat_nos.length, "seat", "seats")}: ${seatList(reservation.seat_nos)}` +
    (about ? ` · ${describeDate(about)}` : "") + ` · ${won(reservation.price)} won in total.`;
  $("pay").textContent = `Pay ${won(reservation.price)} won`;
  $("hold-panel").hidden = false;
  startCountdown(Date.parse(reservation.expires_at));
  const balance = await refreshBalance();
  $("amount").value = Math.max(1, reservation.price - balance);
  $("top-up-form").hidden = balance >= reservation.price;
  if (state.map && state.date.date_id === reservation.date_id) for (const seat of reservation.seat_nos) state.map.paint(seat);
  renderSelection();
}

function endHold() {
  const hold = state.hold;
  state.hold = null;
  $("hold-panel").hidden = true;
  clearInterval(state.countdown);
  $("countdown-announcer").textContent = "";
  if (hold && state.map && state.date.date_id === hold.date_id) for (const seat of hold.seat_nos) state.map.paint(seat);
  renderSelection();
}

// The countdown ticks visibly; a screen reader hears it at a few steps, not every second.
const ANNOUNCE_AT = [240, 180, 120, 60, 30, 10];

function startCountdown(until) {
  clearInterval(state.countdown);
  state.announced = null;
  const tick = () => {
    const left = Math.max(0, Math.round((until - Date.now()) / 1000));
    $("countdown").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    const step = ANNOUNCE_AT.find((s) => left <= s && left > s - 5);
    if (step !== undefined && state.announced !== step) {
      state.announced = step;
      $("countdown-announcer").textContent = step >= 60
        ? `${step / 60} minute${step === 60 ? "" : "s"} left to pay.` : `${step} seconds left to pay.`;
    }
    if (left === 0) {
      endHold();
      say(MESSAGES.hold_expired);
    }
  };
  tick();
  state.countdown = setInterval(tick, 250);
}

// ----- waiting room ----------------------------------------------------------------------

async function chooseDate(dateId) {
  leaveSeats();
  stopOpeningCountdown();
  say("");
  show("waiting");
  $("queue-status").textContent = "Joining the line…";
  $("queue-wait").textContent = "";
  try {
    const about = await aboutDate(dateId);
    if (about.status && about.status !== "on_sale") {
      dateInfo.delete(dateId);
      show("catalog");
      say(MESSAGES[about.status === "cancelled" ? "date_cancelled" : about.status] || "This date is not on sale.");
      return;
    }
    state.date = about;
    $("waiting-for").textContent = describeDate(about);
    const status = await takeQueueToken(about);
    onQueueStatus(status);
    if (status.status !== "active") watchQueue();
  } catch (problem) {
    fail(problem);
  }
}

function waitText(seconds) {
  if (seconds < 60) return "Less than a minute to wait.";
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 90) return `About ${plural(minutes, "minute", "minutes")} to wait.`;
  const hours = Math.floor(minutes / 60);
  return `About ${plural(hours, "hour", "hours")} ${minutes % 60} minutes to wait.`;
}

function onQueueStatus(status) {
  setQueueToken(status.queue_token);
  if ($("waiting").hidden) return;
  if (status.status !== "pre_queue") stopOpeningCountdown();
  if (status.status === "active") {
    $("queue-status").textContent = "It's your turn!";
    stopStreams();
    openSeats();
  } else if (status.status === "pre_queue") {
    const others = status.position - 1;
    $("queue-status").textContent = `You are in the pre-queue with ${won(others)} ${others === 1 ? "other" : "others"}; ` +
      "your place will be drawn at the opening.";
    startOpeningCountdown(state.date && state.date.sale_opens_at);
  } else {
    $("queue-status").textContent = `You are number ${won(status.position)} in line.`;
    $("queue-wait").textContent = `${waitText(status.estimated_wait_seconds)} (estimated at ${CLOCK.format(new Date())})`;
  }
}

// Before a sale opens, the time left to its opening, each second. Arriving early buys no better
// place, so the page says so rather than urging the buyer to be quick.
function startOpeningCountdown(opensAt) {
  if (!opensAt || state.opensCountdown) return;
  const until = Date.parse(opensAt);
  const tick = () => {
    const left = Math.max(0, Math.round((until - Date.now()) / 1000));
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), sec = left % 60;
    const clock = `${h > 0 ? `${h}:${String(m).padStart(2, "0")}` : m}:${String(sec).padStart(2, "0")}`;
    $("queue-wait").textContent = left > 0
      ? `The sale opens in ${clock} (at ${CLOCK.format(new Date(until))}). Everyone who is here before then gets a random place, so there is no need to hurry.`
      : "The sale is opening: your place is being drawn.";
  };
  tick();
  state.opensCountdown = setInterval(tick, 1000);
}

function stopOpeningCountdown() {
  clearInterval(state.opensCountdown);
  state.opensCountdown = null;
}

async function leaveQueue() {
  stopOpeningCountdown();
  stopStreams();
  try { if (state.queueToken) await api("DELETE", "/queue/tokens/current"); } catch (problem) { fail(problem); }
  setQueueToken(null);
  go("#/");
  say("You left the line.", "info");
}

// Reads a Server-Sent Events response with fetch (EventSource cannot send our headers). A
// frame can be megabytes (the first snapshot of a big hall), so each chunk is searched once.
async function stream(path, onEvent) {
  const controller = new AbortController();
  state.streams.push(controller);
  const epoch = state.epoch;
  const response = await fetch(API + path, { headers: headers(), signal: controller.signal });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Problem(data.code, data.detail || "", response.status);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let searched = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done || epoch !== state.epoch) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n", Math.max(0, searched - 1))) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      searched = 0;
      let name = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
    searched = buffer.length;
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
    fail(problem);
  }
}

// ----- seat map --------------------------------------------------------------------------
//
// A hall can have 100,000 seats. The page keeps their states in typed arrays and draws only the
// lines in view (plus a margin) as buttons: the venue's sections in stage order, each a heading
// and its rows, a row wrapping onto more lines when the screen is narrow. An overview strip on
// a canvas shows the whole hall, one pixel per seat, and jumps to any part of it. A live update
// repaints only the seats it names. One seat of the grid is a Tab stop; the arrow keys move
// between seats.

const AVAILABLE = 1, HELD = 2, SOLD = 3;
const CODE = { available: AVAILABLE, held: HELD, sold: SOLD };
const LABEL = { available: "available", held: "held by someone else", sold: "sold", mine: "held by you", selected: "your choice", owned: "yours, paid" };
const COLOUR = { held: [217, 119, 6], sold: [156, 163, 175], mine: [96, 165, 250], selected: [29, 78, 216], owned: [20, 83, 45] };
// Price categories: a section's seats wear its colour while available (`.c0`…`.c7` in the
// stylesheet); patterns and borders, not colour, tell the states apart.
const CATEGORY = [[21, 128, 61], [126, 34, 206], [185, 28, 28], [15, 118, 110], [161, 98, 7], [190, 24, 93], [77, 124, 15], [154, 52, 18]];
const MARGIN_ROWS = 6;

class SeatMap {
  constructor(listing) {
    const count = listing.seats.length;
    let top = 0;
    for (const { seat_no } of listing.seats) if (seat_no > top) top = seat_no;
    this.order = new Uint32Array(count); // position → seat_no
    this.position = new Int32Array(top + 1).fill(-1); // seat_no → position
    this.status = new Uint8Array(top + 1);
    this.price = new Float64Array(top + 1);
    this.category = new Uint8Array(top + 1); // seat_no → section index
    this.available = 0;
    listing.seats.forEach(({ seat_no, status, price }, i) => {
      this.order[i] = seat_no;
      this.position[seat_no] = i;
      this.status[seat_no] = CODE[status];
      this.price[seat_no] = price;
      if (status === "available") this.available += 1;
    });
    this.sections = listing.sections && listing.sections.length
      ? listing.sections
      : [{ name: "Seats", price: listing.seats.length ? listing.seats[0].price : 0, rows: [{ row: "", first_seat_no: this.order[0] || 1, seats: count }] }];
    this.sections.forEach((section, s) => {
      for (const row of section.rows) this.category.fill(s, row.first_seat_no, row.first_seat_no + row.seats);
    });
    this.lines = []; // the grid's lines in stage order: a section's heading, then its rows' seats
    this.lineOf = new Int32Array(count); // position → line
    this.rows = new Map(); // line → element, only those drawn
    this.buttons = new Map(); // seat_no → button, only those drawn
    this.active = 0; // the position that is the Tab stop
    this.grid = $("seat-grid");
    this.scroller = $("seat-scroller");
    this.canvas = $("overview-canvas");
    this.scheduled = false;
    const digits = String(top).length;
    document.documentElement.style.setProperty("--cell", digits <= 3 ? "2.5rem" : digits === 4 ? "2.9rem" : "3.6rem");
    document.documentElement.style.setProperty("--seat-font", digits <= 4 ? ".85rem" : ".8rem");
    this.grid.setAttribute("aria-rowcount", "0");
    this.legend();
    this.onScroll = () => this.schedule();
    this.scroller.addEventListener("scroll", this.onScroll, { passive: true });
    this.resize = new ResizeObserver(() => this.layout());
    this.resize.observe(this.scroller);
    this.layout();
  }

  destroy() {
    this.scroller.removeEventListener("scroll", this.onScroll);
    this.resize.disconnect();
    this.grid.replaceChildren();
    this.grid.style.height = "0";
    $("overview").hidden = true;
    $("categories").replaceChildren();
  }

  get count() { return this.order.length; }

  // The price categories, and the sections best available may be asked for.
  legend() {
    const items = this.sections.map((section, s) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `swatch available c${s % CATEGORY.length}`;
      swatch.setAttribute("aria-hidden", "true");
      item.append(swatch, `${section.name} · ${won(section.price)} won`);
      return item;
    });
    $("categories").replaceChildren(...items);
    offerSections(this.sections);
  }

  look(seat) {
    const status = this.status[seat];
    if (status === HELD && state.hold && state.hold.date_id === state.date.date_id && state.hold.seat_nos.includes(seat)) return "mine";
    if (status === SOLD && state.owned.has(seat)) return "owned";
    if (state.selected.has(seat)) return "selected";
    return status === AVAILABLE ? "available" : status === HELD ? "held" : "sold";
  }

  colour(seat) {
    const look = this.look(seat);
    return look === "available" ? CATEGORY[this.category[seat] % CATEGORY.length] : COLOUR[look];
  }

  // A venue row takes as many lines as the width needs, so a phone shows short lines and
  // nothing is cut off; each line starts with its row's label.
  layout() {
    const probe = document.createElement("div");
    probe.className = "seat-row";
    probe.innerHTML = '<span class="row-label">00</span><button class="seat" type="button" tabindex="-1">0</button>';
    this.grid.append(probe);
    const label = probe.firstChild.getBoundingClientRect().width || 32;
    const cell = probe.lastChild.getBoundingClientRect().width || 40;
    const gap = parseFloat(getComputedStyle(probe).columnGap) || 0;
    probe.remove();
    const width = this.grid.clientWidth - label - gap;
    let columns = Math.max(1, Math.floor((width + gap) / (cell + gap)));
    if (columns > 10) columns -= columns % 5;
    if (columns === this.columns && cell + gap === this.rowHeight) return;
    this.columns = columns;
    this.rowHeight = cell + gap;
    this.lines = [];
    this.sections.forEach((section, s) => {
      this.lines.push({ section: s });
      for (const row of section.rows) {
        const start = this.position[row.first_seat_no];
        for (let k = 0; k < row.seats; k += columns) {
          const from = start + k, to = start + Math.min(row.seats, k + columns);
          this.lineOf.fill(this.lines.length, from, to);
          this.lines.push({ section: s, row: row.row, first: k === 0, from, to });
        }
      }
    });
    this.rowCount = this.lines.length;
    this.grid.style.height = `${this.rowCount * this.rowHeight - gap}px`;
    this.grid.setAttribute("aria-rowcount", String(this.rowCount));
    this.grid.setAttribute("aria-colcount", String(columns + 1));
    for (const row of this.rows.values()) row.remove();
    this.rows.clear();
    this.buttons.clear();
    this.drawOverview();
    this.scrollToRow(this.lineOf[this.active] || 0, false);
    this.draw();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => { this.scheduled = false; this.draw(); });
  }

  visibleRows() {
    const first = Math.floor(this.scroller.scrollTop / this.rowHeight);
    const last = Math.min(this.rowCount - 1, Math.ceil((this.scroller.scrollTop + this.scroller.clientHeight) / this.rowHeight));
    return [first, last];
  }

  // Draws the lines in view and a margin around them, and drops the rest (but the Tab stop's).
  draw() {
    const [first, last] = this.visibleRows();
    const from = Math.max(0, first - MARGIN_ROWS);
    const to = Math.min(this.rowCount - 1, last + MARGIN_ROWS);
    const keep = this.lineOf[this.active];
    for (const [index, row] of this.rows) {
      if ((index < from || index > to) && index !== keep) this.dropRow(index, row);
    }
    for (let index = from; index <= to; index++) if (!this.rows.has(index)) this.drawRow(index);
    if (this.count && !this.rows.has(keep)) this.drawRow(keep);
    this.placeWindow(first, last);
  }

  drawRow(index) {
    const line = this.lines[index];
    const row = document.createElement("div");
    row.className = "seat-row";
    row.setAttribute("role", "row");
    row.setAttribute("aria-rowindex", String(index + 1));
    row.style.transform = `translateY(${index * this.rowHeight}px)`;
    const section = this.sections[line.section];
    if (line.from === undefined) {
      row.classList.add("section-head");
      const head = document.createElement("div");
      head.setAttribute("role", "columnheader");
      head.className = `c${line.section % CATEGORY.length}`;
      head.textContent = `${section.name} · ${won(section.price)} won`;
      row.append(head);
    } else {
      const label = document.createElement("div");
      label.setAttribute("role", "rowheader");
      label.className = "row-label";
      label.textContent = line.first ? line.row : "";
      if (line.row) label.setAttribute("aria-label", `Row ${line.row}, ${section.name}`);
      row.append(label);
      for (let i = line.from; i < line.to; i++) {
        const seat = this.order[i];
        const cell = document.createElement("div");
        cell.setAttribute("role", "gridcell");
        cell.setAttribute("aria-colindex", String(i - line.from + 2));
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.seat = seat;
        button.tabIndex = i === this.active ? 0 : -1;
        button.textContent = seat;
        cell.append(button);
        row.append(cell);
        this.buttons.set(seat, button);
        this.dress(button, seat);
      }
    }
    this.rows.set(index, row);
    this.grid.append(row);
  }

  dropRow(index, row) {
    const line = this.lines[index];
    if (line.from !== undefined) for (let i = line.from; i < line.to; i++) this.buttons.delete(this.order[i]);
    row.remove();
    this.rows.delete(index);
  }

  dress(button, seat) {
    const look = this.look(seat);
    button.className = `seat ${look} c${this.category[seat] % CATEGORY.length}`;
    button.setAttribute("aria-label", `Seat ${seat}, ${LABEL[look]}`);
    button.setAttribute("aria-pressed", String(look === "selected"));
    button.setAttribute("aria-disabled", String(look !== "available" && look !== "selected"));
  }

  // One seat's state changed: its button if drawn, and its pixel.
  paint(seat) {
    const button = this.buttons.get(seat);
    if (button) this.dress(button, seat);
    const i = this.position[seat];
    if (i >= 0 && this.context) {
      const [r, g, b] = this.colour(seat);
      this.context.fillStyle = `rgb(${r} ${g} ${b})`;
      this.context.fillRect(this.lineOf[i], i - this.lines[this.lineOf[i]].from, 1, 1);
    }
  }

  set(seat, status) {
    const code = CODE[status];
    const was = this.status[seat];
    if (!code || was === code || this.position[seat] < 0) return false;
    this.available += (code === AVAILABLE) - (was === AVAILABLE);
    this.status[seat] = code;
    this.paint(seat);
    return true;
  }

  // The overview: x is the line, y the column; the browser scales it to the strip. A section's
  // heading is a dark column, so the sections read apart.
  drawOverview() {
    const tools = $("overview");
    tools.hidden = this.rowCount * this.rowHeight <= this.scroller.clientHeight + 1;
    if (tools.hidden) { this.context = null; return; }
    this.canvas.width = this.rowCount;
    this.canvas.height = this.columns;
    this.context = this.canvas.getContext("2d");
    const image = this.context.createImageData(this.rowCount, this.columns);
    const pixels = new Uint32Array(image.data.buffer);
    const pack = ([r, g, b]) => (255 << 24) | (b << 16) | (g << 8) | r;
    this.lines.forEach((line, x) => {
      if (line.from === undefined) {
        for (let y = 0; y < this.columns; y++) pixels[y * this.rowCount + x] = pack([27, 27, 31]);
        return;
      }
      for (let i = line.from; i < line.to; i++) pixels[(i - line.from) * this.rowCount + x] = pack(this.colour(this.order[i]));
    });
    this.context.putImageData(image, 0, 0);
  }

  placeWindow(first, last) {
    if ($("overview").hidden) return;
    const box = $("overview-window");
    box.style.left = `${(first / this.rowCount) * 100}%`;
    box.style.width = `${((last - first + 1) / this.rowCount) * 100}%`;
  }

  scrollToRow(index, center = true) {
    const top = index * this.rowHeight;
    const view = this.scroller.clientHeight;
    if (center) this.scroller.scrollTop = Math.max(0, top - (view - this.rowHeight) / 2);
    else if (top < this.scroller.scrollTop || top + this.rowHeight > this.scroller.scrollTop + view) this.scroller.scrollTop = top;
  }

  // Makes a position the Tab stop, brings it into view and focuses it.
  focusAt(position) {
    const next = Math.max(0, Math.min(this.count - 1, position));
    const old = this.buttons.get(this.order[this.active]);
    if (old) old.tabIndex = -1;
    this.active = next;
    this.scrollToRow(this.lineOf[next], false);
    this.draw();
    const button = this.buttons.get(this.order[next]);
    button.tabIndex = 0;
    button.focus({ preventScroll: true });
  }

  // The same column of the seat line `step` lines of seats away (headings are skipped).
  lineAway(at, step) {
    const here = this.lines[this.lineOf[at]];
    let index = this.lineOf[at];
    for (let moved = 0; moved < Math.abs(step);) {
      index += Math.sign(step);
      if (index < 0 || index >= this.rowCount) return at;
      if (this.lines[index].from !== undefined) moved += 1;
    }
    const there = this.lines[index];
    return Math.min(there.to - 1, there.from + (at - here.from));
  }

  onKey(event) {
    const target = event.target.closest("[data-seat]");
    if (!target) return;
    const at = this.position[Number(target.dataset.seat)];
    const line = this.lines[this.lineOf[at]];
    const page = Math.max(1, Math.floor(this.scroller.clientHeight / this.rowHeight) - 1);
    const moves = {
      ArrowRight: at + 1, ArrowLeft: at - 1,
      ArrowDown: () => this.lineAway(at, 1), ArrowUp: () => this.lineAway(at, -1),
      PageDown: () => this.lineAway(at, page), PageUp: () => this.lineAway(at, -page),
      Home: event.ctrlKey ? 0 : line.from, End: event.ctrlKey ? this.count - 1 : line.to - 1,
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const move = moves[event.key];
    this.focusAt(typeof move === "function" ? move() : move);
  }

  jumpFromOverview(event) {
    const box = this.canvas.getBoundingClientRect();
    const row = Math.floor(((event.clientX - box.left) / box.width) * this.rowCount);
    this.scrollToRow(Math.max(0, Math.min(this.rowCount - 1, row)));
    this.draw();
  }
}

function renderSelection() {
  const count = state.selected.size;
  const map = state.map;
  let total = 0;
  if (map) for (const seat of state.selected) total += map.price[seat];
  $("selection").textContent = state.hold
    ? "Pay for or release your hold before choosing more seats."
    : count === 0
      ? `Pick up to ${state.limit} seats.`
      : `${count} of ${state.limit} seats chosen: ${seatList(state.selected)} · ${won(total)} won.`;
  $("hold").disabled = count === 0 || state.hold !== null;
  $("pick-bar").hidden = state.hold !== null;
  if (map) $("availability").textContent = `${won(map.available)} of ${won(map.count)} seats available.`;
  renderWaitlist();
}

// ----- waiting list ----------------------------------------------------------------------

function renderWaitlist() {
  const map = state.map;
  const entry = state.entry;
  $("waitlist-form").hidden = !map || map.available > 0 || Boolean(entry) || state.hold !== null;
  $("waitlist-status").hidden = !entry || entry.status !== "waiting";
  if (entry && entry.status === "waiting") {
    $("waitlist-place").textContent = entry.position === 1
      ? `You are first on the waiting list for ${plural(entry.quantity, "seat", "seats")}. Seats that come back are held for you here.`
      : `You are number ${won(entry.position)} on the waiting list for ${plural(entry.quantity, "seat", "seats")}. Seats that come back are held for the first in line.`;
  }
}

// The buyer's live entry for this date, if any, from their newest entries.
async function findEntry(dateId) {
  try {
    const { entries } = await api("GET", "/waitlist?limit=20");
    return entries.find((e) => e.date_id === dateId && (e.status === "waiting" || e.status === "offered")) || null;
  } catch (problem) {
    fail(problem);
    return null;
  }
}

// While the buyer waits, look now and then for an offer: it becomes their hold, with its
// countdown and a Pay button (no waiting room to pass again).
function watchEntry() {
  clearTimeout(state.entryPoll);
  const entry = state.entry;
  if (!entry) return;
  if (entry.status === "offered") { showOffer(entry); return; }
  const dateId = entry.date_id;
  const epoch = state.epoch;
  state.entryPoll = setTimeout(async () => {
    if (epoch !== state.epoch || !state.date || state.date.date_id !== dateId) return;
    state.entry = await findEntry(dateId);
    renderWaitlist();
    watchEntry();
  }, 2000);
}

async function showOffer(entry) {
  try {
    const reservation = await api("GET", `/reservations/${encodeURIComponent(entry.reservation_id)}`);
    if (!isLive(reservation)) return;
    state.entry = null;
    renderWaitlist();
    await showHold(reservation);
    const one = reservation.seat_nos.length === 1;
    say(`${one ? "Seat" : "Seats"} ${seatList(reservation.seat_nos)} came back for you from the waiting list, held until ${CLOCK.format(new Date(reservation.expires_at))}. Pay to keep ${one ? "it" : "them"}.`, "info");
  } catch (problem) {
    fail(problem);
  }
}

async function joinWaitlist(event) {
  event.preventDefault();
  const date = state.date;
  if (!date) return;
  try {
    const entry = await api("POST", `/dates/${encodeURIComponent(date.date_id)}/waitlist`, { body: { quantity: Number($("waitlist-quantity").value) } });
    state.entry = entry;
    say("");
    renderWaitlist();
    watchEntry();
  } catch (problem) {
    if (problem.code === "rehold_cooldown") say("Your last offer on this date ran out a moment ago, so you may join its waiting list again a little later.");
    else fail(problem);
  }
}

async function leaveWaitlist() {
  const entry = state.entry;
  if (!entry) return;
  try {
    await api("DELETE", `/waitlist/${encodeURIComponent(entry.entry_id)}`);
    state.entry = null;
    clearTimeout(state.entryPoll);
    say("You left the waiting list.", "info");
    renderWaitlist();
  } catch (problem) {
    fail(problem);
  }
}

function toggleSeat(seat) {
  const map = state.map;
  map.focusAt(map.position[seat]);
  if (state.hold) { say("Pay for or release your current hold before choosing other seats."); return; }
  const look = map.look(seat);
  if (state.selected.has(seat)) state.selected.delete(seat);
  else if (look !== "available") { say(`Seat ${seat} is ${LABEL[look]}. Please pick another.`); return; }
  else if (state.selected.size >= state.limit) { say(`You can hold at most ${state.limit} seats at once on this date.`); return; }
  else state.selected.add(seat);
  say("");
  map.paint(seat);
  renderSelection();
}

// A listing (the stream's first frame, or a fresh GET) replaces the map only on its first
// arrival; later ones are applied seat by seat, so nothing is drawn twice.
function applyListing(listing) {
  if (state.limit !== listing.max_seats_per_user || !$("best-quantity").options.length) {
    const options = Array.from({ length: listing.max_seats_per_user }, (_, i) => new Option(String(i + 1), String(i + 1)));
    $("best-quantity").replaceChildren(...options);
    $("waitlist-quantity").replaceChildren(...options.map((o) => new Option(o.text, o.value)));
    $("best-quantity").value = String(Math.min(2, listing.max_seats_per_user));
  }
  state.limit = listing.max_seats_per_user;
  if (!state.map || state.map.count !== listing.seats.length) {
    if (state.map) state.map.destroy();
    state.map = new SeatMap(listing);
    performance.mark("seat-map-drawn");
    renderSelection();
    return;
  }
  applySeats(listing.seats);
}

function applySeats(changes) {
  const lost = [];
  for (const { seat_no, status } of changes) {
    if (!state.map.set(seat_no, status)) continue;
    if (status !== "available" && state.selected.has(seat_no)) {
      state.selected.delete(seat_no);
      state.map.paint(seat_no);
      lost.push(seat_no);
    }
  }
  if (lost.length) say(`${lost.length === 1 ? "Seat" : "Seats"} ${seatList(lost)} ${lost.length === 1 ? "was" : "were"} just taken by someone else.`);
  renderSelection();
}

function leaveSeats() {
  stopStreams();
  clearTimeout(state.entryPoll);
  state.entry = null;
  if (state.map) state.map.destroy();
  state.map = null;
  state.selected.clear();
  state.owned.clear();
}

// The sections best available may be asked for, shown only when there is a choice.
function offerSections(sections) {
  $("best-section-field").hidden = sections.length < 2;
  $("best-section").replaceChildren(new Option("Any section", ""),
    ...sections.map((s) => new Option(`${s.name} (${won(s.price)} won)`, s.name)));
}

async function openSeats() {
  show("seats");
  const date = state.date;
  const sectioned = Boolean(date.sections && date.sections.length > 1);
  const prices = sectioned ? "from " : "";
  // The section picker is set from the date before the map arrives, so nothing moves then.
  offerSections(date.sections || []);
  $("date-info").textContent = `${describeDate(date)} · ${prices}${won(date.price)} won per seat`;
  $("availability").textContent = "Loading the seat map…";
  findOwnedSeats(date.date_id);
  listenSeats(date.date_id);
  findEntry(date.date_id).then((entry) => {
    if (!state.date || state.date.date_id !== date.date_id) return;
    state.entry = entry;
    renderWaitlist();
    watchEntry();
  });
}

// The buyer's own paid seats on this date, from their reservations (the newest few pages).
async function findOwnedSeats(dateId) {
  try {
    let cursor = null;
    for (let page = 0; page < 5; page++) {
      const query = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const { reservations, next_cursor } = await api("GET", `/reservations?limit=200${query}`);
      if (!state.date || state.date.date_id !== dateId) return;
      for (const r of reservations) {
        if (r.date_id !== dateId || r.status !== "paid") continue;
        for (const seat of r.seat_nos) { state.owned.add(seat); if (state.map) state.map.paint(seat); }
      }
      cursor = next_cursor;
      if (!cursor) return;
    }
  } catch (problem) {
    fail(problem);
  }
}

// A stream can end under the buyer (a phone changing networks, a server restart): the page
// listens again, and the new snapshot is applied seat by seat over the map it has.
async function listenSeats(dateId) {
  const stillHere = () => !$("seats").hidden && state.date && state.date.date_id === dateId;
  for (let failures = 0; failures < 5; failures++) {
    const started = Date.now();
    try {
      await stream(`/dates/${encodeURIComponent(dateId)}/seats/events`, (name, data) => {
        if (!state.date || state.date.date_id !== dateId) return;
        if (name === "snapshot") applyListing(data); else if (state.map) applySeats(data);
      });
    } catch (problem) {
      if (problem.name === "AbortError" || problem instanceof Stale) return;
      if (problem instanceof Problem && problem.status !== 429 && problem.status < 500) { fail(problem); return; }
    }
    if (!stillHere()) return;
    if (Date.now() - started > 30_000) failures = 0;
    await new Promise((resolve) => setTimeout(resolve, 1000 * (failures + 1)));
    if (!stillHere()) return;
  }
  say("The live seat updates stopped. Reload the page to see the latest seats.");
}

// ----- hold, top up, pay -----------------------------------------------------------------

const key = () => (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2));

async function holdSeats() {
  const seat_nos = [...state.selected].sort((a, b) => a - b);
  const dateId = state.date.date_id;
  $("hold").disabled = true;
  try {
    const reservation = await api("POST", "/reservations", { body: { date_id: dateId, seat_nos }, idempotent: key() });
    state.selected.clear();
    for (const seat of seat_nos) state.map.set(seat, "held");
    await showHold(reservation);
    say("");
    $("hold-title").tabIndex = -1;
    $("hold-title").focus();
  } catch (problem) {
    if (problem.code === "seat_unavailable") await lostRace(dateId, seat_nos);
    else fail(problem);
    renderSelection();
  }
}

// The server picks the seats: the best adjacent ones, by the contract's rule.
async function holdBest(event) {
  event.preventDefault();
  if (state.hold) { say("Pay for or release your current hold before choosing other seats."); return; }
  const dateId = state.date.date_id;
  const best = { quantity: Number($("best-quantity").value) };
  if ($("best-section").value) best.section = $("best-section").value;
  $("best-submit").disabled = true;
  try {
    const reservation = await api("POST", "/reservations", { body: { date_id: dateId, best_available: best }, idempotent: key() });
    for (const seat of state.selected) state.map.paint(seat);
    state.selected.clear();
    for (const seat of reservation.seat_nos) state.map.set(seat, "held");
    await showHold(reservation);
    say("");
    state.map.focusAt(state.map.position[reservation.seat_nos[0]]);
    $("hold-title").tabIndex = -1;
    $("hold-title").focus();
  } catch (problem) {
    fail(problem);
  } finally {
    $("best-submit").disabled = false;
    renderSelection();
  }
}

// Someone was quicker: the map is fetched again and the message names the seats that went.
async function lostRace(dateId, wanted) {
  try {
    const listing = await api("GET", `/dates/${encodeURIComponent(dateId)}/seats`);
    const taken = wanted.filter((seat) => {
      const entry = listing.seats.find((s) => s.seat_no === seat);
      return !entry || entry.status !== "available";
    });
    applyListing(listing);
    for (const seat of taken) { state.selected.delete(seat); state.map.paint(seat); }
    say(taken.length
      ? `Sorry, ${taken.length === 1 ? "seat" : "seats"} ${seatList(taken)} ${taken.length === 1 ? "was" : "were"} just taken by someone else. The map is up to date: please pick again.`
      : MESSAGES.seat_unavailable);
  } catch (problem) {
    fail(problem);
  }
}

async function topUp(event) {
  event.preventDefault();
  const amount = Number($("amount").value);
  if (!Number.isInteger(amount) || amount < 1) { say(MESSAGES.invalid_amount); return; }
  try {
    const charge = await api("POST", "/balance/charges", { body: { amount }, idempotent: key() });
    $("balance").textContent = won(charge.balance);
    if (state.hold && charge.balance >= state.hold.price) $("top-up-form").hidden = true;
    say(`Added ${won(amount)} won. Your balance is ${won(charge.balance)} won.`, "info");
  } catch (problem) {
    fail(problem);
  }
}

// Paying needs an admitted queue token; from another tab or after a reload the page asks the
// server for the buyer's live one.
async function pay() {
  const hold = state.hold;
  if (!hold) return;
  try {
    enterRoomOf(hold.about);
    if (!state.queueToken) {
      const status = await takeQueueToken(hold.about);
      setQueueToken(status.queue_token);
      if (status.status !== "active") {
        say("Your shopping time ended, so you are back in the waiting room. You can pay when it is your turn, if the hold has not expired.", "info");
        go(`#/dates/${encodeURIComponent(hold.date_id)}`);
        return;
      }
    }
    const payment = await api("POST", "/payments", { body: { reservation_id: hold.reservation_id }, idempotent: key() });
    endHold();
    stopStreams();
    setQueueToken(null);
    $("balance").textContent = won(payment.balance);
    const about = hold.about ? ` for ${describeDate(hold.about)}` : "";
    $("confirmation").textContent = `${payment.seat_nos.length === 1 ? "Seat" : "Seats"} ${seatList(payment.seat_nos)}${about} ${payment.seat_nos.length === 1 ? "is" : "are"} yours. ` +
      `You paid ${won(payment.amount)} won (payment ${payment.payment_id}); ${won(payment.balance)} won is left on your balance.`;
    say("");
    leaveSeats();
    history.replaceState(null, "", "#/");
    show("done");
  } catch (problem) {
    if (problem.code === "hold_expired" || problem.code === "reservation_not_held") endHold();
    if (problem.code === "queue_token_expired" || problem.code === "queue_token_invalid") setQueueToken(null);
    if (problem.code === "insufficient_balance") $("top-up-form").hidden = false;
    fail(problem);
  }
}

async function release() {
  const hold = state.hold;
  if (!hold) return;
  try {
    await api("DELETE", `/reservations/${hold.reservation_id}`);
    if (state.map && state.date.date_id === hold.date_id) for (const seat of hold.seat_nos) state.map.set(seat, "available");
    endHold();
    say("Your seats were released.", "info");
    if (!$("mine").hidden) showReservations(null);
  } catch (problem) {
    if (problem.code === "reservation_not_held") endHold();
    fail(problem);
  }
}

// ----- my reservations ---------------------------------------------------------------------

const STATUS = { held: "held, not paid yet", paid: "paid", expired: "expired", cancelled: "released", refunded: "refunded" };

async function showMine() {
  leaveSeats();
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
    const items = await Promise.all(reservations.map(reservationItem));
    if (!cursor) list.replaceChildren();
    if (!cursor && reservations.length === 0) list.textContent = "You have no reservations yet.";
    list.append(...items);
    state.olderReservations = next_cursor;
    older.hidden = !next_cursor;
  } catch (problem) {
    fail(problem);
  }
}

async function reservationItem(r) {
  const item = document.createElement("li");
  item.className = "reservation";
  item.dataset.reservation = r.reservation_id;
  let about = null;
  try { about = await aboutDate(r.date_id); } catch (problem) { if (problem instanceof Stale) throw problem; }
  const what = document.createElement("p");
  const title = document.createElement("strong");
  title.textContent = about ? `${about.title} at ${about.venue}` : "A date no longer listed";
  what.append(title, about ? ` · ${when(about.starts_at)}` : "");
  const seats = document.createElement("p");
  const status = document.createElement("span");
  status.className = "status";
  const live = isLive(r);
  status.textContent = live ? `held until ${CLOCK.format(new Date(r.expires_at))}` : STATUS[r.status === "held" ? "expired" : r.status] || r.status;
  if (about && about.status === "cancelled") status.textContent += " (the date was cancelled)";
  seats.append(`${r.seat_nos.length === 1 ? "Seat" : "Seats"} ${seatList(r.seat_nos)} · ${won(r.price)} won · `, status);
  const id = document.createElement("p");
  id.className = "hint";
  id.textContent = `Reservation ${r.reservation_id}`;
  item.append(what, seats, id);
  if (live) {
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    const payButton = document.createElement("button");
    payButton.type = "button";
    payButton.className = "primary pay-reservation";
    payButton.textContent = `Pay ${won(r.price)} won`;
    payButton.addEventListener("click", async () => { await showHold(r); pay(); });
    const releaseButton = document.createElement("button");
    releaseButton.type = "button";
    releaseButton.className = "release-reservation";
    releaseButton.textContent = "Release seats";
    releaseButton.addEventListener("click", async () => { await showHold(r); release(); });
    buttons.append(payButton, releaseButton);
    item.append(buttons);
  }
  if (r.status === "paid") item.append(paidActions(r, about));
  return item;
}

// A paid reservation can be refunded (the fee and the window are shown before the buyer
// confirms) or given to another user.
function paidActions(r, about) {
  const box = document.createElement("div");
  const buttons = document.createElement("div");
  buttons.className = "buttons";
  const panel = document.createElement("div");
  panel.className = "confirm";
  panel.hidden = true;
  const refundButton = document.createElement("button");
  refundButton.type = "button";
  refundButton.className = "refund-reservation";
  refundButton.textContent = "Refund…";
  const giveButton = document.createElement("button");
  giveButton.type = "button";
  giveButton.className = "give-reservation";
  giveButton.textContent = "Give to another user…";
  buttons.append(refundButton, giveButton);
  box.append(buttons, panel);
  const closes = about && about.refunds_close_at ? Date.parse(about.refunds_close_at) : NaN;
  if (closes <= Date.now()) {
    refundButton.disabled = true;
    refundButton.textContent = "Refunds closed";
  }
  const open = (...children) => {
    panel.replaceChildren(...children);
    panel.hidden = false;
    const first = panel.querySelector("input, button");
    if (first) first.focus();
  };
  const cancel = (label) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.addEventListener("click", () => { panel.hidden = true; panel.replaceChildren(); });
    return button;
  };
  refundButton.addEventListener("click", () => {
    const percent = about ? about.refund_fee_percent : null;
    const fee = percent === null ? null : Math.floor((r.price * percent) / 100);
    const terms = document.createElement("p");
    terms.className = "refund-terms";
    terms.textContent = fee === null
      ? `Refund ${plural(r.seat_nos.length, "seat", "seats")}? A fee may be kept.`
      : `Refund ${plural(r.seat_nos.length, "seat", "seats")} (${seatList(r.seat_nos)})? ` +
        `${won(r.price - fee)} won goes back to whoever paid; a fee of ${won(fee)} won (${percent}%) is kept. ` +
        (Number.isNaN(closes) ? "" : `Refunds for this date close ${when(closes)}.`);
    const confirm = document.createElement("button");
    confirm.type = "button";
    confirm.className = "primary confirm-refund";
    confirm.textContent = fee === null ? "Refund" : `Refund for ${won(r.price - fee)} won`;
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      try {
        const refund = await api("POST", "/refunds", { body: { reservation_id: r.reservation_id }, idempotent: key() });
        const mine = Boolean(state.session && state.session.userId) && refund.credited_user_id === state.session.userId;
        say(`Refunded: ${won(refund.amount)} won went back to ${mine ? "your balance" : "the balance of whoever paid"}. The seats are on sale again.`, "info");
        refreshBalance();
        await showReservations(null);
      } catch (problem) {
        confirm.disabled = false;
        fail(problem);
      }
    });
    const buttonsRow = document.createElement("div");
    buttonsRow.className = "buttons";
    buttonsRow.append(confirm, cancel("Keep my seats"));
    open(terms, buttonsRow);
  });
  giveButton.addEventListener("click", () => {
    const form = document.createElement("form");
    form.className = "give-form";
    const id = `give-${r.reservation_id}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = "Their username";
    const input = document.createElement("input");
    input.id = id;
    input.required = true;
    input.autocomplete = "off";
    input.setAttribute("autocapitalize", "none");
    const give = document.createElement("button");
    give.type = "submit";
    give.className = "primary";
    give.textContent = "Give";
    const note = document.createElement("p");
    note.className = "hint";
    note.textContent = "The seats become theirs; no money moves, and a later refund still goes to whoever paid.";
    form.append(label, input, give, cancel("Keep them"), note);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      give.disabled = true;
      try {
        await api("POST", "/transfers", { body: { reservation_id: r.reservation_id, to_username: input.value.trim() }, idempotent: key() });
        say(`Given to ${input.value.trim()}. The seats are theirs now.`, "info");
        await showReservations(null);
      } catch (problem) {
        give.disabled = false;
        fail(problem);
      }
    });
    open(form);
  });
  return box;
}

// ----- wiring ----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("home").addEventListener("click", (e) => { e.preventDefault(); say(""); go("#/"); });
  $("auth-form").addEventListener("submit", (e) => { e.preventDefault(); signIn(false); });
  $("sign-up").addEventListener("click", () => { if ($("auth-form").reportValidity()) signIn(true); });
  $("sign-in-entry").addEventListener("click", () => { state.pendingRoute = location.hash; go("#/sign-in"); });
  $("sign-out").addEventListener("click", signOut);
  $("leave-queue").addEventListener("click", leaveQueue);
  $("my-reservations").addEventListener("click", () => go("#/reservations"));
  $("see-reservations").addEventListener("click", () => go("#/reservations"));
  $("older-reservations").addEventListener("click", () => showReservations(state.olderReservations));
  $("hold").addEventListener("click", holdSeats);
  $("best-form").addEventListener("submit", holdBest);
  $("waitlist-form").addEventListener("submit", joinWaitlist);
  $("leave-waitlist").addEventListener("click", leaveWaitlist);
  $("top-up-form").addEventListener("submit", topUp);
  $("pay").addEventListener("click", pay);
  $("release").addEventListener("click", release);
  $("seat-grid").addEventListener("click", (event) => {
    const button = event.target.closest("[data-seat]");
    if (button && state.map) toggleSeat(Number(button.dataset.seat));
  });
  $("seat-grid").addEventListener("keydown", (event) => { if (state.map) state.map.onKey(event); });
  $("overview").addEventListener("pointerdown", (event) => { if (state.map) state.map.jumpFromOverview(event); });
  $("go-to-seat").addEventListener("submit", (event) => {
    event.preventDefault();
    const seat = Number($("seat-number").value);
    const map = state.map;
    if (!map || !Number.isInteger(seat) || seat < 1 || seat >= map.position.length || map.position[seat] < 0) {
      say(`There is no seat ${$("seat-number").value || ""} on this date.`);
      return;
    }
    say("");
    map.focusAt(map.position[seat]);
  });
  window.addEventListener("hashchange", onRoute);
  // Signing out in one tab signs out every tab of this browser; another buyer signing in
  // there starts this tab afresh.
  window.addEventListener("storage", (event) => {
    if (event.key !== STORED) return;
    const next = JSON.parse(event.newValue || "null");
    if (!next) { if (state.session) signedOutElsewhere(); return; }
    if (!state.session || next.token !== state.session.token) location.reload();
  });

  const stored = JSON.parse(localStorage.getItem(STORED) || "null");
  state.queueTokens = (stored && stored.queueTokens) || {};
  state.queueToken = state.queueTokens.general || null;
  setSession(stored ? { token: stored.token, username: stored.username, userId: stored.userId } : null);
  if (state.session) recoverHold();
  onRoute();
});
