// The session's event log: newest first, 200 a page ("Older" loads the next
// page, and scrolling to the end does too), filtered by kind and instance,
// with `causedBy` links that jump to the cause (fetched when it is not on the
// page). Live events are added on top as they arrive.
import { gql } from "./api.js";
import { KINDS } from "./kinds.js";
import { h, fill, instanceHref, absolute, relative, brief, json } from "./dom.js";

export const EVENTS_PAGE = 200;
const FIELDS = "seq kind at data causedBy instance trigger";

/** The declaration of `$asOf` when the view is as of a version (an unused variable is refused). */
export function asOfVar(asOf) {
  return asOf === null ? "" : ", $asOf: Int";
}

/** `inner` selected on the session, or on its view as of `asOf`. */
export function onView(asOf, inner) {
  return asOf === null ? inner : `asOf(version: $asOf) { ${inner} }`;
}

function viewOf(data, asOf) {
  return asOf === null ? data.session : data.session.asOf;
}

/** Fetches events of the (viewed) session; ascending. */
export async function fetchEvents(uid, asOf, args) {
  const query = `query Events($uid: String!${asOfVar(asOf)}, $before: Int, $after: Int, $first: Int, $kinds: [String!], $instance: String) {
    session(uid: $uid) { ${onView(asOf, `events(before: $before, after: $after, first: $first, kinds: $kinds, instance: $instance) { ${FIELDS} }`)} }
  }`;
  const data = await gql(query, { uid, asOf, ...args });
  return viewOf(data, asOf).events;
}

/** One event by seq, or null. */
export async function fetchEvent(uid, seq) {
  const events = await fetchEvents(uid, null, { after: seq - 1, first: 1 });
  return events.find((e) => e.seq === seq) || null;
}

function payload(event) {
  const rest = { ...event.data };
  delete rest.instance;
  delete rest.trigger;
  return rest;
}

/**
 * A table row of `event` (`id` anchors it as `#e<seq>` unless `anchor` is
 * false); its links to events point at `base#e<seq>` (this page by default).
 */
export function eventRow(uid, event, anchor = true, base = "") {
  const rest = payload(event);
  const keys = Object.keys(rest);
  return h(
    "tr",
    { id: anchor ? `e${event.seq}` : null, dataset: { seq: event.seq, kind: event.kind } },
    h("td", { class: "seq num" }, h("a", { href: `${base}#e${event.seq}` }, String(event.seq))),
    h("td", {}, h("time", { datetime: event.at, title: relative(event.at) }, absolute(event.at, true).slice(0, -4))),
    h("td", { class: "kind" }, event.kind),
    h(
      "td",
      {},
      event.trigger ? h("span", { class: "mono" }, event.trigger) : null,
      event.trigger && event.instance ? " → " : null,
      event.instance ? h("a", { class: "mono", href: instanceHref(uid, event.instance) }, event.instance) : null,
    ),
    h("td", { class: "num caused" }, event.causedBy ? h("a", { href: `${base}#e${event.causedBy}`, class: "cause", dataset: { seq: event.causedBy } }, `← ${event.causedBy}`) : h("span", { class: "muted", title: "done by a caller" }, "caller")),
    h("td", { class: "data" }, keys.length ? h("details", {}, h("summary", {}, brief(rest, 90)), json(rest)) : ""),
  );
}

export function head() {
  return h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Seq"), h("th", {}, "Time (UTC)"), h("th", {}, "Kind"), h("th", {}, "Trigger / instance"), h("th", { class: "num" }, "Caused by"), h("th", {}, "Data")));
}

/**
 * The event log of `uid` (as of `asOf`, or live), first showing the events
 * before `version + 1`. `filters`: `{kinds: [...], instance}`; `onFilter`
 * is told when the user changes them.
 */
export function eventLog(uid, asOf, version, filters, instanceNames, onFilter) {
  const tbody = h("tbody", { id: "event-rows" });
  const pinned = h("div", { id: "pinned" });
  const status = h("span", { class: "muted", id: "events-status" });
  const older = h("button", { type: "button", id: "older" }, "Older events");
  let oldest = version + 1;
  let loading = false;
  let exhausted = false;
  const matches = (e) => (!filters.kinds.length || filters.kinds.includes(e.kind)) && (!filters.instance || e.instance === filters.instance);
  const args = () => ({ kinds: filters.kinds.length ? filters.kinds : null, instance: filters.instance || null });

  async function loadOlder() {
    if (loading || exhausted) return;
    loading = true;
    older.disabled = true;
    try {
      const page = await fetchEvents(uid, asOf, { before: oldest, first: EVENTS_PAGE, ...args() });
      for (const e of page.reverse()) tbody.append(eventRow(uid, e));
      if (page.length) oldest = page[page.length - 1].seq;
      exhausted = page.length < EVENTS_PAGE;
      const shown = tbody.children.length;
      status.textContent = shown ? (exhausted ? `All ${shown} matching events shown.` : `${shown} newest matching events shown.`) : "No event matches these filters.";
    } finally {
      loading = false;
      older.disabled = exhausted;
      older.hidden = exhausted;
    }
  }

  async function show(seq, scroll = true) {
    for (const row of tbody.querySelectorAll("tr.target")) row.classList.remove("target");
    const row = document.getElementById(`e${seq}`);
    if (row && row.parentElement === tbody) {
      row.classList.add("target");
      if (scroll) row.scrollIntoView({ block: "center" });
      return;
    }
    const event = await fetchEvent(uid, seq);
    if (!event) return fill(pinned, h("p", { class: "error" }, `No event ${seq} in this session.`));
    const table = h("table", { class: "events" }, head(), h("tbody", {}, eventRow(uid, event, true)));
    fill(pinned, h("div", { class: "card pinned", id: "pinned-event" }, h("div", { class: "row" }, h("strong", {}, `Event ${seq}`), h("span", { class: "muted" }, "(not among the events listed below)"), h("span", { class: "grow" }), h("button", { type: "button", onclick: () => fill(pinned) }, "Close")), table));
    document.getElementById(`e${seq}`).classList.add("target");
    if (scroll) pinned.scrollIntoView({ block: "center" });
  }

  // A causedBy link or an anchor to an event: shown (and fetched if need be).
  function onClick(e) {
    const link = e.target.closest('a[href^="#e"]');
    if (!link) return;
    const seq = Number(link.getAttribute("href").slice(2));
    if (!Number.isInteger(seq)) return;
    e.preventDefault();
    history.replaceState(null, "", `${location.pathname}${location.search}#e${seq}`);
    show(seq);
  }

  const kindBoxes = KINDS.map((k) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "kind", value: k, checked: filters.kinds.includes(k) }), k));
  const instanceInput = h("input", { id: "filter-instance", name: "instance", list: "instance-names", value: filters.instance || "", placeholder: "any instance", "aria-label": "instance" });
  const form = h(
    "form",
    { class: "filters", id: "event-filters" },
    h("fieldset", {}, h("legend", { class: "muted" }, "Kinds (none: all)"), kindBoxes),
    h("div", { class: "row" }, h("label", { for: "filter-instance" }, "Instance"), instanceInput, h("datalist", { id: "instance-names" }, instanceNames.map((n) => h("option", { value: n }))), h("button", { type: "submit", class: "primary" }, "Apply"), h("a", { href: "?" + new URLSearchParams(asOf === null ? {} : { asOf }).toString() }, "Clear")),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const kinds = [...form.querySelectorAll('input[name="kind"]:checked')].map((i) => i.value);
    onFilter({ kinds, instance: instanceInput.value.trim() || null });
  });

  const el = h(
    "section",
    { class: "card", id: "events", "aria-labelledby": "events-title" },
    h("h2", { id: "events-title" }, "Event log"),
    form,
    pinned,
    h("table", { class: "events", onclick: onClick }, head(), tbody),
    h("div", { class: "pager" }, status, older),
  );
  pinned.addEventListener("click", onClick);
  older.addEventListener("click", loadOlder);
  // Infinite scroll: the next page comes when the end of the log is in view.
  const sentinel = h("div", { "aria-hidden": "true" });
  el.append(sentinel);
  new IntersectionObserver((entries) => {
    if (entries.some((x) => x.isIntersecting) && tbody.children.length) loadOlder();
  }).observe(sentinel);

  return {
    el,
    first: loadOlder,
    show,
    onClick,
    /** A live event: on top when it matches the filters. */
    add(event) {
      if (document.getElementById(`e${event.seq}`) && tbody.querySelector(`[data-seq="${event.seq}"]`)) return;
      if (!matches(event)) return;
      const row = eventRow(uid, event);
      row.classList.add("fresh");
      tbody.prepend(row);
    },
  };
}
