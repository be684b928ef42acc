// GraphiQL on /graphql, from the binary's own copy (src/ui/vendor): queries
// and mutations over HTTP, subscriptions over WebSocket on the same /graphql.
// The UI's token (if given in this tab) is sent unless the Headers tab sets
// an Authorization of its own.
import { post, subscribe } from "./api.js";

function isSubscription(query, operationName) {
  const text = query.replace(/#[^\n]*/g, "");
  const operations = [...text.matchAll(/(?:^|})\s*(query|mutation|subscription)\s*([_A-Za-z][_0-9A-Za-z]*)?/g)];
  // GraphiQL may still name the operation of the previous document.
  const chosen = (operationName && operations.find((m) => m[2] === operationName)) || operations[0];
  return Boolean(chosen && chosen[1] === "subscription");
}

/** An async iterator of a subscription's results. */
function subscription(params, headers) {
  const queue = [];
  const waiting = [];
  let done = false;
  const push = (item) => {
    const next = waiting.shift();
    if (next) next(item);
    else queue.push(item);
  };
  const close = subscribe(
    params.query,
    params.variables || {},
    {
      next: (payload) => push({ value: payload, done: false }),
      error: (errors) => push({ value: { errors }, done: false }),
      closed: () => {
        done = true;
        push({ value: undefined, done: true });
      },
    },
    headers,
  );
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next() {
      if (queue.length) return Promise.resolve(queue.shift());
      if (done) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => waiting.push(resolve));
    },
    return() {
      done = true;
      close();
      return Promise.resolve({ value: undefined, done: true });
    },
  };
}

function fetcher(params, options = {}) {
  const headers = (options && options.headers) || {};
  if (isSubscription(params.query || "", params.operationName)) return subscription(params, headers);
  return post(params, headers);
}

const root = ReactDOM.createRoot(document.getElementById("graphiql"));
root.render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultEditorToolsVisibility: true,
    defaultQuery: `# triggers: the GraphQL API (docs/graphql.md). Try:
query Recent {
  recentSessions(first: 10) {
    uid
    version
    updatedAt
    instanceCounts { status count }
  }
}
`,
  }),
);
