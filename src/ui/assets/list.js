// The sessions list (/ui/): most recently updated first, searchable by uid
// prefix, in pages (keyset cursors in the URL, so every page can be shared).
import { gql } from "./api.js";
import { h, fill, sessionHref, countBadges, when, duration } from "./dom.js";

export const PAGE = 25;
/** A session with scheduled or running instances and no event for this long is flagged. */
export const STUCK_MS = 15 * 60 * 1000;

const QUERY = `query Recent($prefix: String, $first: Int, $after: String) {
  recentSessions(uidPrefix: $prefix, first: $first, after: $after) {
    uid version updatedAt instanceCounts { status count }
  }
}`;

// `after`: the cursor of this page; `trail`: those of the pages between the
// first and this one (to go back).
function listHref(prefix, after, trail) {
  const p = new URLSearchParams();
  if (prefix) p.set("q", prefix);
  if (after) p.set("after", after);
  if (trail.length) p.set("trail", JSON.stringify(trail));
  const text = p.toString();
  return text ? `/ui/?${text}` : "/ui/";
}

function count(counts, status) {
  const found = counts.find((c) => c.status === status);
  return found ? found.count : 0;
}

/** Why a session stands out: failed instances, or work that has not moved for long. */
export function flags(session, now = Date.now()) {
  const out = [];
  const failed = count(session.instanceCounts, "FAILED");
  if (failed) out.push(h("span", { class: "flag failed" }, `${failed} failed`));
  const busy = count(session.instanceCounts, "RUNNING") + count(session.instanceCounts, "SCHEDULED");
  const idle = now - Date.parse(session.updatedAt);
  if (busy && idle > STUCK_MS) {
    out.push(h("span", { class: "flag stuck", title: "scheduled or running instances, and no event since" }, `stuck? idle ${duration(idle)}`));
  }
  return out;
}

export async function renderList(main, params) {
  const prefix = params.get("q") || "";
  const after = params.get("after") || null;
  let trail = [];
  try {
    trail = JSON.parse(params.get("trail") || "[]");
  } catch {
    trail = [];
  }
  document.title = prefix ? `Sessions “${prefix}” · triggers` : "Sessions · triggers";
  const data = await gql(QUERY, { prefix: prefix || null, first: PAGE + 1, after });
  const rows = data.recentSessions.slice(0, PAGE);
  const more = data.recentSessions.length > PAGE;

  const search = h("input", { type: "search", id: "q", name: "q", value: prefix, placeholder: "questionnaire:", "aria-label": "uid prefix" });
  const form = h(
    "form",
    { class: "toolbar", role: "search", action: "/ui/", method: "get" },
    h("label", { for: "q" }, "Sessions whose uid starts with"),
    search,
    h("button", { type: "submit", class: "primary" }, "Search"),
    prefix ? h("a", { href: "/ui/" }, "Clear") : null,
  );

  let body;
  if (!rows.length) {
    body = h(
      "div",
      { class: "empty", id: "empty" },
      h("h2", {}, prefix ? `No session's uid starts with “${prefix}”` : after ? "No more sessions" : "No sessions yet"),
      h(
        "p",
        {},
        prefix || after
          ? "Try a shorter prefix, or go back to the first page."
          : "Sessions appear here once something configures or fires one (the configure and fire mutations, or triggers configure / triggers fire).",
      ),
    );
  } else {
    const now = Date.now();
    body = h(
      "table",
      { class: "sessions", id: "sessions" },
      h("thead", {}, h("tr", {}, h("th", {}, "Session"), h("th", { class: "num" }, "Version"), h("th", {}, "Last update"), h("th", {}, "Instances"))),
      h(
        "tbody",
        {},
        rows.map((s) => {
          const marks = flags(s, now);
          const cls = [marks.some((m) => m.classList.contains("failed")) ? "is-failed" : "", marks.some((m) => m.classList.contains("stuck")) ? "is-stuck" : ""].join(" ").trim();
          return h(
            "tr",
            { class: cls || null, dataset: { uid: s.uid } },
            h("td", {}, h("a", { class: "uid", href: sessionHref(s.uid) }, s.uid), marks),
            h("td", { class: "num" }, String(s.version)),
            h("td", {}, when(s.updatedAt)),
            h("td", {}, countBadges(s.instanceCounts)),
          );
        }),
      ),
    );
  }

  const last = rows[rows.length - 1];
  const nextCursor = last ? JSON.stringify([last.updatedAt, last.uid]) : null;
  const previous = after ? listHref(prefix, trail[trail.length - 1] || null, trail.slice(0, -1)) : null;
  const next = more ? listHref(prefix, nextCursor, after ? [...trail, after] : []) : null;
  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("span", { class: "muted" }, rows.length ? `Page ${trail.length + (after ? 2 : 1)} · ${rows.length} sessions` : ""),
    previous ? h("a", { class: "button", href: previous, rel: "prev", id: "prev" }, "← Newer") : h("span", { class: "button", "aria-disabled": "true" }, "← Newer"),
    next ? h("a", { class: "button", href: next, rel: "next", id: "next" }, "Older →") : h("span", { class: "button", "aria-disabled": "true" }, "Older →"),
  );

  fill(main, h("h1", {}, "Sessions"), h("p", { class: "muted" }, "Most recently updated first."), h("div", { class: "card" }, form, body, pager));
}
