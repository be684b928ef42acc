// The instance page (/ui/sessions/{uid}/instances/{name}): what it holds,
// why it ran (its causes and the cascade chain back to the first fire), its
// history, parent and clones; for a failed one the exception, Replay and Skip.
import { gql } from "./api.js";
import { h, fill, badge, json, absolute, sessionHref, instanceHref, errorBox, confirmDialog } from "./dom.js";
import { eventRow, head, fetchEvent, onView, asOfVar } from "./events.js";

const FIELDS = "seq kind at data causedBy instance trigger";
const LEVELS = { 0: "none", 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL" };
const SHOWN = ["timestamps", "actualKwargs", "result", "logLevel", "exceptionType", "exceptionInfo", "exceptionContext", "depth", "parent"];

async function fetchInstance(uid, name, asOf) {
  const query = `query Instance($uid: String!, $name: String!${asOfVar(asOf)}) {
    session(uid: $uid) { version ${onView(
      asOf,
      `instance(name: $name) { name task status kwargs abandonState metadata result logLevel isResolved canReplay canSkip parent depth
        clones { name status } history { ${FIELDS} } causes { ${FIELDS} } }`,
    )} }
  }`;
  const data = await gql(query, { uid, name, asOf });
  return (asOf === null ? data.session : data.session.asOf).instance;
}

/** The events that led to `event`, following causedBy back to what a caller did. */
async function chain(uid, event) {
  const out = [];
  let current = event;
  while (current.causedBy && out.length < 40) {
    const cause = await fetchEvent(uid, current.causedBy);
    if (!cause) break;
    out.push(cause);
    current = cause;
  }
  return out;
}

function describe(e) {
  if (e.kind === "TriggerFired") return [h("span", { class: "mono" }, e.trigger), " fired"];
  return [h("span", { class: "kind" }, e.kind), e.instance ? [" of ", h("span", { class: "mono" }, e.instance)] : null];
}

async function whyCard(uid, instance, asOfQuery) {
  const base = sessionHref(uid, asOfQuery);
  const card = h("section", { class: "card", id: "why" }, h("h2", {}, "Why it ran"));
  if (!instance.causes.length) {
    card.append(h("p", { class: "muted" }, instance.parent ? "No firing recorded on this clone itself; see the instance it replays." : "No firing recorded for it."));
    return card;
  }
  const items = await Promise.all(
    instance.causes.map(async (cause) => {
      const steps = await chain(uid, cause);
      const role = instance.abandonState.includes(cause.trigger) ? "unless" : "after";
      return h(
        "li",
        { class: "cause-item", dataset: { seq: cause.seq } },
        h("div", {}, h("a", { href: `${base}#e${cause.seq}`, class: "cause-link" }, `seq ${cause.seq}`), " · ", h("span", { class: "mono" }, cause.trigger), ` fired ${absolute(cause.at, true)}`, h("span", { class: "tag" }, role === "unless" ? "unless" : "after"), cause.causedBy ? h("span", { class: "tag" }, "cascade") : h("span", { class: "tag" }, "by a caller")),
        h("details", { open: true }, h("summary", {}, "kwargs"), json(cause.data.kwargs || {})),
        steps.length
          ? h(
              "div",
              { class: "chain-wrap" },
              h("div", { class: "muted" }, "Cascade chain, back to the first fire:"),
              h(
                "ol",
                { class: "chain" },
                steps.map((e, n) => h("li", {}, h("a", { href: `${base}#e${e.seq}` }, `seq ${e.seq}`), " ", describe(e), n === steps.length - 1 && !e.causedBy ? h("span", { class: "tag" }, "first fire, by a caller") : null)),
              ),
            )
          : null,
      );
    }),
  );
  card.append(h("ul", { class: "causes plain" }, items));
  return card;
}

function details(instance) {
  const m = instance.metadata || {};
  const other = Object.fromEntries(Object.entries(m).filter(([k]) => !SHOWN.includes(k)));
  const level = `${instance.logLevel} (${LEVELS[instance.logLevel] || "custom"})`;
  const rows = [
    ["Status", badge(instance.status)],
    ["Task", h("span", { class: "mono" }, instance.task)],
    ["Attempt (depth)", String(instance.depth)],
    ["Log level", level],
    ["Kwargs", json(instance.kwargs)],
    ["Kwargs handed over", m.actualKwargs !== undefined ? json(m.actualKwargs) : h("span", { class: "muted" }, "not started yet")],
    ["Result", instance.result !== null && instance.result !== undefined ? json(instance.result) : h("span", { class: "muted" }, "none")],
    ["Unless fired", instance.abandonState.length ? instance.abandonState.join(", ") : h("span", { class: "muted" }, "none")],
    ["Timestamps", json(m.timestamps || {})],
    ["Other metadata", Object.keys(other).length ? json(other) : h("span", { class: "muted" }, "none")],
  ];
  return h("section", { class: "card", id: "details" }, h("h2", {}, "Details"), h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
}

function parseObject(text, what) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} is not valid JSON: ${err.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error(`${what} must be a JSON object ({...}).`);
  return value;
}

function failureCard(uid, instance, asOf, rerender) {
  const m = instance.metadata || {};
  const card = h(
    "section",
    { class: "card", id: "failure" },
    h("h2", {}, "Failure"),
    h("p", {}, h("strong", { id: "exception-type", class: "mono" }, m.exceptionType || "unknown exception")),
    h("pre", { class: "traceback", id: "traceback" }, m.exceptionInfo || "(no message or traceback recorded)"),
    m.exceptionContext && Object.keys(m.exceptionContext).length ? h("details", {}, h("summary", {}, "Exception context"), json(m.exceptionContext)) : null,
  );
  if (asOf !== null || (!instance.canReplay && !instance.canSkip)) return card;
  const original = JSON.stringify(instance.kwargs, null, 2);
  const replayText = h("textarea", { id: "replay-kwargs", rows: 8, spellcheck: "false", "aria-describedby": "replay-help" }, original);
  const replayError = h("div", { id: "replay-error" });
  const replay = h("button", { type: "button", class: "primary", id: "replay" }, "Replay…");
  replay.addEventListener("click", async () => {
    fill(replayError);
    let kwargs;
    try {
      kwargs = parseObject(replayText.value, "The replacement kwargs");
    } catch (err) {
      return fill(replayError, errorBox(err));
    }
    const same = JSON.stringify(kwargs) === JSON.stringify(instance.kwargs);
    const ok = await confirmDialog(`Replay ${instance.name}?`, h("div", {}, h("p", {}, same ? "A clone is scheduled at once with the same kwargs." : "A clone is scheduled at once with these kwargs, replacing the original ones whole:"), same ? null : json(kwargs)), "Replay");
    if (!ok) return;
    try {
      const data = await gql(
        `mutation Replay($uid: String!, $name: String!, $kwargs: JSON) { replayFailedInstance(session: $uid, instance: $name, replacementKwargs: $kwargs) { name status } }`,
        { uid, name: instance.name, kwargs: same ? null : kwargs },
      );
      const clone = data.replayFailedInstance;
      rerender(h("div", { class: "ok", id: "outcome", role: "status" }, "Replayed as ", h("a", { href: instanceHref(uid, clone.name) }, clone.name), ` (${clone.status.toLowerCase()}).`));
    } catch (err) {
      fill(replayError, errorBox(err));
    }
  });

  const cascade = h("input", { type: "checkbox", id: "skip-cascade" });
  const resultText = h("textarea", { id: "skip-result", rows: 4, spellcheck: "false" }, "{}");
  const skipError = h("div", { id: "skip-error" });
  const skip = h("button", { type: "button", class: "danger", id: "skip" }, "Skip…");
  skip.addEventListener("click", async () => {
    fill(skipError);
    let result;
    try {
      result = parseObject(resultText.value, "The result");
    } catch (err) {
      return fill(skipError, errorBox(err));
    }
    const ok = await confirmDialog(
      `Skip ${instance.name}?`,
      h("div", {}, h("p", {}, cascade.checked ? `It is marked skipped, and ${instance.task} is fired with this result, as if it had finished:` : "It is marked skipped; nothing is fired."), cascade.checked ? json(result) : null),
      "Skip",
    );
    if (!ok) return;
    try {
      const data = await gql(
        `mutation Skip($uid: String!, $name: String!, $cascade: Boolean, $result: JSON) { skipFailedInstance(session: $uid, instance: $name, cascade: $cascade, result: $result) { name status } }`,
        { uid, name: instance.name, cascade: cascade.checked, result },
      );
      const skipped = data.skipFailedInstance;
      rerender(h("div", { class: "ok", id: "outcome", role: "status" }, `${skipped.name} is ${skipped.status.toLowerCase()}${cascade.checked ? `; ${instance.task} fired with the result` : ""}.`));
    } catch (err) {
      fill(skipError, errorBox(err));
    }
  });

  card.append(
    h(
      "div",
      { class: "grid2 actions-grid" },
      h("div", {}, h("h3", {}, "Replay"), h("p", { class: "muted", id: "replay-help" }, "Edit the kwargs of the clone (keyed by trigger, as above). Unchanged: the same kwargs."), h("label", { for: "replay-kwargs" }, "Replacement kwargs (JSON object)"), replayText, replayError, replay),
      h("div", {}, h("h3", {}, "Skip"), h("p", { class: "muted" }, "Mark it skipped; optionally fire the task name with a result, as if it had finished."), h("label", { class: "check-line" }, cascade, " Cascade: fire ", h("span", { class: "mono" }, instance.task)), h("label", { for: "skip-result" }, "Result (JSON object)"), resultText, skipError, skip),
    ),
  );
  return card;
}

export async function renderInstance(main, uid, name, params, outcome = null) {
  const asOfParam = params.get("asOf");
  const asOf = asOfParam !== null && /^\d+$/.test(asOfParam) ? Number(asOfParam) : null;
  const asOfQuery = asOf === null ? "" : `?asOf=${asOf}`;
  document.title = `${name} · ${uid} · triggers`;
  const crumbs = h("div", { class: "crumbs" }, h("a", { href: "/ui/" }, "Sessions"), " / ", h("a", { href: sessionHref(uid, asOfQuery), class: "mono" }, uid), " / ");
  const instance = await fetchInstance(uid, name, asOf);
  if (!instance) {
    fill(main, crumbs, h("div", { class: "card empty", id: "empty" }, h("h1", {}, name), h("p", {}, asOf === null ? "This session has no instance of that name." : `No instance of that name as of version ${asOf}.`)));
    return;
  }
  const rerender = (message) => renderInstance(main, uid, name, params, message);
  const base = sessionHref(uid, asOfQuery);
  const family = h(
    "div",
    { class: "row family" },
    instance.parent ? ["Replays ", h("a", { class: "mono", href: instanceHref(uid, instance.parent, asOfQuery), id: "parent" }, instance.parent)] : null,
    instance.clones.length ? ["Replayed as ", instance.clones.map((c) => h("span", {}, h("a", { class: "mono clone", href: instanceHref(uid, c.name, asOfQuery) }, c.name), " ", badge(c.status)))] : null,
  );
  const failed = instance.status === "FAILED" || Boolean(instance.metadata && instance.metadata.exceptionType);
  fill(
    main,
    outcome,
    asOf !== null ? h("div", { class: "note" }, `As of version ${asOf} of the session. `, h("a", { href: location.pathname }, "Now")) : null,
    crumbs,
    h("section", { class: "card", id: "header" }, h("div", { class: "row" }, h("h1", { class: "mono" }, instance.name), badge(instance.status)), family),
    failed ? failureCard(uid, instance, asOf, rerender) : null,
    await whyCard(uid, instance, asOfQuery),
    details(instance),
    h("section", { class: "card", id: "history" }, h("h2", {}, `History (${instance.history.length} events)`), h("table", { class: "events" }, head(), h("tbody", {}, instance.history.map((e) => eventRow(uid, e, false, base))))),
  );
}
