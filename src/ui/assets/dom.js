// Small helpers to build the DOM (text is always set as text, never as HTML)
// and to format what pages show.

/** `h("a", {href: "/x", class: "c"}, "text", child)`: an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the content of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function sessionHref(uid, query = "") {
  return `/ui/sessions/${encodeURIComponent(uid)}${query}`;
}

export function instanceHref(uid, name, query = "") {
  return `${sessionHref(uid)}/instances/${encodeURIComponent(name)}${query}`;
}

/** A status badge (`FAILED` -> "failed"). */
export function badge(status, count) {
  const label = status.toLowerCase();
  return h(
    "span",
    { class: `badge s-${label}`, title: count === undefined ? label : `${count} ${label}` },
    count === undefined ? label : [h("b", {}, String(count)), " ", label],
  );
}

export function countBadges(counts) {
  if (!counts.length) return h("span", { class: "muted" }, "no instances");
  return h("span", { class: "badges" }, counts.map((c) => badge(c.status, c.count)));
}

/** "2 h 14 min", "45 s", "3 d 2 h". */
export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hrs = Math.floor(m / 60);
  if (hrs < 24) return m % 60 ? `${hrs} h ${m % 60} min` : `${hrs} h`;
  const d = Math.floor(hrs / 24);
  return hrs % 24 ? `${d} d ${hrs % 24} h` : `${d} d`;
}

export function relative(iso, now = Date.now()) {
  const ms = now - Date.parse(iso);
  if (ms < 5000) return "just now";
  return `${duration(ms)} ago`;
}

/** "2026-12-03 13:12:18 UTC" (to the second); `precise` adds milliseconds. */
export function absolute(iso, precise = false) {
  const text = new Date(iso).toISOString().replace("T", " ");
  return `${precise ? text.slice(0, 23) : text.slice(0, 19)} UTC`;
}

/** A <time> showing "3 min ago", the absolute time beside it. */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  return h(
    "span",
    { class: "when" },
    h("time", { datetime: iso, title: iso }, relative(iso)),
    h("span", { class: "abs" }, absolute(iso)),
  );
}

/** Pretty JSON in a <pre>. */
export function json(value, cls = "json") {
  return h("pre", { class: cls }, JSON.stringify(value, null, 2));
}

/** One line of JSON, cut at `max` characters. */
export function brief(value, max = 120) {
  const text = JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function errorBox(err) {
  return h(
    "div",
    { class: "error", role: "alert" },
    err.code ? h("code", { class: "code" }, err.code) : null,
    " ",
    err.message || String(err),
  );
}

/**
 * An in-page confirmation dialog; resolves true when confirmed. `body` is
 * shown above the buttons.
 */
export function confirmDialog(title, body, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      body,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", "data-action": "cancel", onclick: () => done(false) }, "Cancel"),
        h("button", { type: "button", class: "primary", "data-action": "confirm", onclick: () => done(true) }, confirmLabel),
      ),
    );
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      done(false);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
