// The session page (/ui/sessions/{uid}): header, tasks with their
// directives, instances, the timeline and the event log; live through the
// sessionEvents subscription, or as of version k (`?asOf=k`).
import { gql, subscribe } from "./api.js";
import { h, fill, badge, countBadges, when, instanceHref } from "./dom.js";
import { renderTimeline } from "./timeline.js";
import { eventLog, onView, asOfVar } from "./events.js";

export const INSTANCES_PAGE = 100;

const VIEW = `uid version updatedAt instanceCounts { status count }
  tasks { name after andEvery unless run using runner }
  unresolvedTasks { name }`;
const INSTANCE = "name task status parent depth metadata";

async function fetchView(uid, asOf) {
  const query = `query Session($uid: String!${asOfVar(asOf)}, $first: Int) {
    session(uid: $uid) { version ${onView(asOf, `${VIEW} instances(first: $first) { ${INSTANCE} }`)} }
  }`;
  const data = await gql(query, { uid, asOf, first: INSTANCES_PAGE + 1 });
  const view = asOf === null ? data.session : data.session.asOf;
  return { latest: data.session.version, view };
}

async function fetchInstances(uid, asOf, after) {
  const query = `query More($uid: String!${asOfVar(asOf)}, $first: Int, $after: String) {
    session(uid: $uid) { ${onView(asOf, `instances(first: $first, after: $after) { ${INSTANCE} }`)} }
  }`;
  const data = await gql(query, { uid, asOf, first: INSTANCES_PAGE + 1, after });
  return (asOf === null ? data.session : data.session.asOf).instances;
}

async function fetchFires(uid, asOf) {
  const query = `query Fires($uid: String!${asOfVar(asOf)}) {
    session(uid: $uid) { ${onView(asOf, `events(kinds: ["TriggerFired"], first: 500) { seq at trigger causedBy }`)} }
  }`;
  const data = await gql(query, { uid, asOf });
  return (asOf === null ? data.session : data.session.asOf).events;
}

function directive(key, value) {
  if (value === null || value === undefined || (Array.isArray(value) && !value.length)) return null;
  return h("div", {}, h("span", { class: "k" }, `${key}: `), Array.isArray(value) ? value.join(", ") : value);
}

function tasksCard(view) {
  const unresolved = new Set(view.unresolvedTasks.map((t) => t.name));
  const body = view.tasks.length
    ? h(
        "div",
        { class: "scroll" },
        h(
        "table",
        { id: "tasks" },
        h("thead", {}, h("tr", {}, h("th", {}, "Task"), h("th", {}, "Directives"))),
        h(
          "tbody",
          {},
          view.tasks.map((t) =>
            h(
              "tr",
              { dataset: { task: t.name } },
              h("td", {}, h("span", { class: "mono" }, t.name), unresolved.has(t.name) ? h("span", { class: "tag warn", title: "no instance yet, or an unresolved one" }, "unresolved") : h("span", { class: "tag" }, "resolved")),
              h(
                "td",
                { class: "directives" },
                directive("after", t.after),
                directive("andEvery", t.andEvery),
                directive("unless", t.unless),
                directive("run", t.run),
                directive("using", t.using || `(default: ${t.runner})`),
              ),
            ),
          ),
        ),
      ),
      )
    : h("p", { class: "muted" }, "No task configured (yet) in this view.");
  return [h("h2", {}, `Tasks (${view.tasks.length})`), body];
}

function instanceRow(uid, i, query) {
  const t = (i.metadata && i.metadata.timestamps) || {};
  return h(
    "tr",
    { dataset: { instance: i.name, status: i.status } },
    h("td", {}, h("a", { class: "mono", href: instanceHref(uid, i.name, query) }, i.name)),
    h("td", {}, badge(i.status)),
    h("td", {}, i.parent ? ["replays ", h("a", { class: "mono", href: instanceHref(uid, i.parent, query) }, i.parent)] : ""),
    h("td", {}, when(t.lastModified || t.created)),
  );
}

function header(view, latest, asOf, live) {
  const max = latest;
  const number = h("input", { type: "number", id: "asof-number", min: 0, max, value: asOf ?? max, "aria-label": "version" });
  const slider = h("input", { type: "range", id: "asof-range", min: 0, max, value: asOf ?? max, "aria-label": "version slider" });
  slider.addEventListener("input", () => (number.value = slider.value));
  number.addEventListener("input", () => (slider.value = number.value));
  const form = h(
    "form",
    { class: "asof", id: "asof-form" },
    h("label", { for: "asof-number" }, "Time travel: as of version"),
    slider,
    number,
    h("button", { type: "submit" }, "Show"),
    asOf !== null ? h("a", { href: location.pathname, id: "asof-now" }, "Back to now (live)") : null,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const k = Math.max(0, Math.min(max, Number(number.value) || 0));
    location.search = k === max ? "" : `?asOf=${k}`;
  });
  return [
    h("div", { class: "crumbs" }, h("a", { href: "/ui/" }, "Sessions"), " / "),
    h("div", { class: "row" }, h("h1", { class: "uid" }, view.uid), h("span", { class: "grow" }), live),
    h(
      "div",
      { class: "summary" },
      h("dl", {}, h("dt", {}, "Version"), h("dd", { id: "version" }, String(view.version)), h("dt", {}, "Last update"), h("dd", { id: "updated" }, when(view.updatedAt))),
      h("div", {}, h("div", { class: "muted" }, "Instances by status"), h("div", { id: "counts" }, countBadges(view.instanceCounts))),
    ),
    form,
  ];
}

export async function renderSession(main, uid, params) {
  const asOfParam = params.get("asOf");
  const asOf = asOfParam !== null && /^\d+$/.test(asOfParam) ? Number(asOfParam) : null;
  const query = asOf === null ? "" : `?asOf=${asOf}`;
  document.title = `${uid} · triggers`;
  const [{ latest, view }, fires] = await Promise.all([fetchView(uid, asOf), fetchFires(uid, asOf)]);
  if (latest === 0) {
    fill(main, h("div", { class: "crumbs" }, h("a", { href: "/ui/" }, "Sessions"), " / "), h("div", { class: "card empty", id: "empty" }, h("h1", { class: "uid" }, uid), h("p", {}, "Nothing happened in this session yet: no configure, no fire.")));
    return;
  }
  const state = { view, instances: view.instances.slice(0, INSTANCES_PAGE), more: view.instances.length > INSTANCES_PAGE, fires };
  const live = h("span", { class: "live", id: "live" }, asOf === null ? "connecting…" : "paused");
  const headerCard = h("section", { class: "card", id: "header" });
  const tasks = h("section", { class: "card", id: "tasks-card" });
  const instances = h("section", { class: "card", id: "instances-card" });
  const timeline = h("section", { class: "card", id: "timeline-card" });

  const draw = () => {
    fill(headerCard, header(state.view, Math.max(latest, state.view.version), asOf, live));
    fill(tasks, tasksCard(state.view));
    const moreButton = state.more ? h("button", { type: "button", id: "more-instances", onclick: more }, "More instances") : null;
    fill(
      instances,
      h("h2", {}, `Instances (${state.view.instanceCounts.reduce((n, c) => n + c.count, 0)})`),
      state.instances.length
        ? h("div", { class: "scroll" }, h("table", { id: "instances" }, h("thead", {}, h("tr", {}, h("th", {}, "Instance"), h("th", {}, "Status"), h("th", {}, "Clone of"), h("th", {}, "Last change"))), h("tbody", {}, state.instances.map((i) => instanceRow(uid, i, query)))))
        : h("p", { class: "muted" }, "No instance yet: the tasks wait for their triggers."),
      moreButton,
    );
    const lastLane = state.more && state.instances.length ? Date.parse(state.instances[state.instances.length - 1].metadata.timestamps.created) : Infinity;
    const shownFires = state.fires.filter((f) => Date.parse(f.at) <= lastLane);
    const svg = renderTimeline(state.instances, shownFires, Date.parse(state.view.updatedAt), (i) => instanceHref(uid, i.name, query), Math.max(main.clientWidth - 100, 900));
    fill(
      timeline,
      h("h2", {}, "Timeline"),
      state.more ? h("p", { class: "muted" }, `The first ${state.instances.length} instances and the firings of their time.`) : null,
      svg ? h("div", { class: "timeline-wrap", onclick: log.onClick }, svg) : h("p", { class: "muted" }, "Nothing to draw yet."),
      h(
        "div",
        { class: "legend" },
        h("span", {}, h("i", { class: "lg-wait" }), "created, waiting for triggers"),
        h("span", {}, h("i", { class: "lg-scheduled" }), "scheduled"),
        h("span", {}, h("i", { class: "lg-running" }), "running → its end (colour of the status)"),
        h("span", {}, h("i", { class: "lg-fire" }), "trigger fired"),
        h("span", {}, "idle gaps over 5 min are folded: ⋯ duration ⋯"),
      ),
    );
  };
  async function more() {
    const page = await fetchInstances(uid, asOf, state.instances[state.instances.length - 1].name);
    state.instances.push(...page.slice(0, INSTANCES_PAGE));
    state.more = page.length > INSTANCES_PAGE;
    draw();
  }

  const filters = { kinds: (params.get("kind") || "").split(",").filter(Boolean), instance: params.get("instance") || null };
  const log = eventLog(uid, asOf, state.view.version, filters, state.instances.map((i) => i.name), (next) => {
    const p = new URLSearchParams();
    if (asOf !== null) p.set("asOf", asOf);
    if (next.kinds.length) p.set("kind", next.kinds.join(","));
    if (next.instance) p.set("instance", next.instance);
    location.search = p.toString();
  });
  draw();
  fill(
    main,
    asOf !== null ? h("div", { class: "note", id: "asof-note" }, `Showing the session as of version ${asOf} of ${latest}: exactly the state after event ${asOf}. Live updates are paused.`) : null,
    headerCard,
    h("div", { class: "grid2" }, tasks, instances),
    timeline,
    log.el,
  );
  await log.first();
  // For measurements: the time from navigation to the first events shown.
  performance.mark("triggers:events-shown");
  const target = /^#e(\d+)$/.exec(location.hash);
  if (target) await log.show(Number(target[1]));
  if (asOf === null) follow(uid, state, log, live, draw);
}

/** Live: each new event goes on top of the log; the rest is refreshed at most every 500 ms. */
function follow(uid, state, log, live, draw) {
  let pending = null;
  let seen = state.view.version;
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      const [{ view }, fires] = await Promise.all([fetchView(uid, null), fetchFires(uid, null)]);
      const known = new Map(state.instances.map((i) => [i.name, i]));
      state.view = view;
      state.fires = fires;
      const fresh = view.instances.slice(0, INSTANCES_PAGE);
      if (state.instances.length <= INSTANCES_PAGE) {
        state.instances = fresh;
        state.more = view.instances.length > INSTANCES_PAGE;
      } else {
        for (const i of fresh) known.set(i.name, i);
        state.instances = state.instances.map((i) => known.get(i.name));
      }
      draw();
      live.classList.add("on");
      live.textContent = "live";
    }, 500);
  };
  const connect = () => {
    subscribe(
      `subscription Live($uid: String!, $after: Int) { sessionEvents(session: $uid, afterVersion: $after) { seq kind at data causedBy instance trigger } }`,
      { uid, after: seen },
      {
        next: (payload) => {
          const event = payload.data && payload.data.sessionEvents;
          if (!event) return;
          seen = Math.max(seen, event.seq);
          log.add(event);
          refresh();
        },
        error: () => {
          live.classList.remove("on");
          live.textContent = "live updates failed";
        },
        closed: () => {
          live.classList.remove("on");
          live.textContent = "reconnecting…";
          setTimeout(connect, 2000);
        },
      },
    );
    live.classList.add("on");
    live.textContent = "live";
  };
  connect();
}
