// Talking to /graphql: queries and mutations over HTTP, subscriptions over
// WebSocket (graphql-transport-ws), with the API token kept for the browser
// session only (sessionStorage).

const TOKEN_KEY = "triggers.apiToken";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A GraphQL error: the server's message and its `extensions.code`. */
export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

function authHeaders(extra = {}) {
  const headers = { "content-type": "application/json", ...extra };
  const has = Object.keys(headers).some((k) => k.toLowerCase() === "authorization");
  const t = token();
  if (t && !has) headers.authorization = `Bearer ${t}`;
  return headers;
}

/** POSTs one operation; its raw JSON answer. */
export async function post(body, headers = {}) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: authHeaders(headers),
    body: JSON.stringify(body),
  });
  try {
    return await response.json();
  } catch {
    return { errors: [{ message: `HTTP ${response.status}`, extensions: { code: "HTTP" } }] };
  }
}

/** Runs an operation; its `data`, or throws the first error as an ApiError. */
export async function gql(query, variables = {}) {
  const body = await post({ query, variables });
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    throw new ApiError(first.message, (first.extensions && first.extensions.code) || "ERROR");
  }
  return body.data;
}

/**
 * Subscribes over graphql-transport-ws. `handlers.next(payload)` for each
 * result, `handlers.error(err)`, `handlers.closed()` when the connection ends
 * (not after `close()`). Returns `close()`.
 */
export function subscribe(query, variables, handlers, headers = {}) {
  const url = new URL("/graphql", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url, "graphql-transport-ws");
  let closing = false;
  const auth = authHeaders(headers);
  const authorization = Object.entries(auth).find(([k]) => k.toLowerCase() === "authorization");
  socket.onopen = () => {
    const payload = authorization ? { Authorization: authorization[1] } : {};
    socket.send(JSON.stringify({ type: "connection_init", payload }));
  };
  socket.onmessage = (message) => {
    const msg = JSON.parse(message.data);
    switch (msg.type) {
      case "connection_ack":
        socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables } }));
        break;
      case "ping":
        socket.send(JSON.stringify({ type: "pong" }));
        break;
      case "next":
        handlers.next && handlers.next(msg.payload);
        break;
      case "error":
        handlers.error && handlers.error(msg.payload);
        break;
      case "complete":
        socket.close();
        break;
    }
  };
  socket.onclose = (event) => {
    if (!closing && handlers.closed) handlers.closed(event);
  };
  return () => {
    closing = true;
    if (socket.readyState <= 1) socket.close();
  };
}
