#!/usr/bin/env python3
"""Builds a session of about 100,000 events through a running server, to
measure how fast the web UI opens a long history (docs/ui.md).

    cargo run --release -- serve &
    scripts/ui-big-session.py                      # http://127.0.0.1:8080, session big:1
    open http://127.0.0.1:8080/ui/sessions/big%3A1

The session has a task run on every `pageReceived` (each firing makes,
schedules, runs and finishes an instance, which cascades), and between pages
`heartbeat` firings no task waits for, the way long-lived sessions
accumulate them. Fires are sent 100 to a request (aliased mutations).
Only the standard library is used.
"""

import argparse
import json
import sys
import time
import urllib.request


def post(server, query, variables, token):
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(server + "/graphql", data=body, headers={"content-type": "application/json"})
    if token:
        request.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.load(response)
    if answer.get("errors"):
        sys.exit(f"the server refused: {answer['errors'][0]}")
    return answer["data"]


def version(server, session, token):
    return post(server, "query($s: String!) { session(uid: $s) { version } }", {"s": session}, token)["session"]["version"]


def fire_batch(server, session, token, fires):
    fields = " ".join(
        f'f{n}: fire(session: $s, trigger: "{trigger}", kwargs: {{n: {value}}}) {{ duplicate }}'
        for n, (trigger, value) in enumerate(fires)
    )
    post(server, f"mutation($s: String!) {{ {fields} }}", {"s": session}, token)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--session", default="big:1")
    parser.add_argument("--events", type=int, default=100_000, help="stop once the session has this many")
    parser.add_argument("--pages", type=int, default=1_000, help="pageReceived firings (about 7 events each)")
    parser.add_argument("--token", default=None, help="the API token, if the server has one")
    args = parser.parse_args()
    server, session, token = args.server.rstrip("/"), args.session, args.token

    post(
        server,
        "mutation($s: String!, $t: JSON!) { configure(session: $s, tasks: $t) { version } }",
        {
            "s": session,
            "t": {
                "t_importResponses": {
                    "after": ["firstPageReceived"],
                    "andEvery": "pageReceived",
                    "run": "triggers.testing.DevNull",
                    "using": "inline",
                },
                "t_report": {"after": ["questionnaireComplete"], "run": "triggers.testing.PassThru", "using": "inline"},
            },
        },
        token,
    )
    fire_batch(server, session, token, [("firstPageReceived", 0)])
    started = time.monotonic()
    # The pages are spread among the heartbeats, so that instances span the
    # whole history; heartbeats fill up to the target once they are done.
    per_page = max(0, (args.events - 7 * args.pages) // max(1, args.pages))

    def fires():
        for page in range(args.pages):
            yield ("pageReceived", page)
            for beat in range(per_page):
                yield ("heartbeat", beat)
        beat = 0
        while True:
            beat += 1
            yield ("heartbeat", beat)

    stream = fires()
    current = version(server, session, token)
    while current < args.events - 10:
        batch = [next(stream) for _ in range(min(100, args.events - current - 5))]
        fire_batch(server, session, token, batch)
        current = version(server, session, token)
        print(f"\r{current} events", end="", flush=True)
    fire_batch(server, session, token, [("questionnaireComplete", 1)])
    # Inline instances finish shortly after their fires.
    for _ in range(600):
        before = version(server, session, token)
        time.sleep(0.5)
        if version(server, session, token) == before:
            break
    print(f"\r{version(server, session, token)} events in {session} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
