// The UI's entry point: reads the page from the location, asks for the API
// token when the server wants one (and shows nothing else until then), and
// hands the page to its module.
import { gql, setToken, token, ApiError } from "./api.js";
import { h, fill, errorBox } from "./dom.js";
import { renderList } from "./list.js";
import { renderSession } from "./session.js";
import { renderInstance } from "./instance.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav-token");

/** The page named by a path under /ui/. */
export function route(pathname) {
  const parts = pathname.split("/").filter(Boolean);
  if (parts[0] !== "ui") return { page: "missing" };
  const decode = (segment) => decodeURIComponent(segment);
  if (parts.length === 1) return { page: "list" };
  if (parts[1] === "sessions" && parts.length === 3) return { page: "session", uid: decode(parts[2]) };
  if (parts[1] === "sessions" && parts.length === 5 && parts[3] === "instances") {
    return { page: "instance", uid: decode(parts[2]), name: decode(parts[4]) };
  }
  return { page: "missing" };
}

function tokenNav() {
  if (!token()) return fill(nav);
  fill(
    nav,
    h(
      "button",
      {
        type: "button",
        class: "link",
        onclick: () => {
          setToken(null);
          location.reload();
        },
      },
      "Forget token",
    ),
  );
}

function tokenForm(wrong) {
  document.title = "Token needed · triggers";
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    autofocus: true,
  });
  const form = h(
    "form",
    { class: "card token-form", id: "token-form" },
    h("h1", {}, "API token needed"),
    h(
      "p",
      {},
      "This server requires its API token (TRIGGERS_API_TOKEN). It is kept in this browser tab only, until you close it.",
    ),
    wrong ? h("div", { class: "error", role: "alert" }, "That token was refused. Check it and try again.") : null,
    h("label", { for: "token" }, "Token"),
    h("div", { class: "row" }, input, h("button", { type: "submit", class: "primary" }, "Continue")),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    start();
  });
  fill(main, form);
  input.focus();
}

async function start() {
  tokenNav();
  const where = route(location.pathname);
  const params = new URLSearchParams(location.search);
  fill(main, h("p", { class: "muted loading" }, "Loading…"));
  try {
    // One cheap question first: it tells whether the token is needed.
    await gql("{ __typename }");
  } catch (err) {
    if (err instanceof ApiError && err.code === "UNAUTHORIZED") {
      const hadToken = Boolean(token());
      setToken(null);
      tokenNav();
      return tokenForm(hadToken);
    }
    return fill(main, errorBox(err));
  }
  try {
    if (where.page === "list") await renderList(main, params);
    else if (where.page === "session") await renderSession(main, where.uid, params);
    else if (where.page === "instance") await renderInstance(main, where.uid, where.name, params);
    else {
      document.title = "Not found · triggers";
      fill(main, h("div", { class: "card empty" }, h("h1", {}, "No such page"), h("p", {}, h("a", { href: "/ui/" }, "All sessions"))));
    }
  } catch (err) {
    console.error(err);
    fill(main, errorBox(err));
  }
}

start();
