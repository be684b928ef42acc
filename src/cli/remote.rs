//! `configure`, `fire`, `show` and `events`: GraphQL operations against a
//! running server, printed for a terminal.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{json, Value};

use super::client::Client;
use super::output::{count, shorten, table};
use super::{CliError, ConfigureArgs, EventsArgs, FireArgs, ShowArgs};

const CONFIGURE: &str = "mutation Configure($session: String!, $tasks: JSON!, $strict: Boolean!) {
  configure(session: $session, tasks: $tasks, strict: $strict) { uid version tasks { name } }
}";

const FIRE: &str =
    "mutation Fire($session: String!, $trigger: String!, $kwargs: JSON, $key: String) {
  fire(session: $session, trigger: $trigger, kwargs: $kwargs, idempotencyKey: $key) {
    duplicate
    event { seq }
    scheduled { name }
    abandoned { name }
    session { version }
  }
}";

const SHOW: &str = "query Show($session: String!) {
  session(uid: $session) {
    uid
    version
    tasks { name run using runner after unless andEvery }
    instances { name task status depth parent kwargs result metadata }
  }
}";

const EVENTS: &str = "query Events($session: String!, $after: Int!, $first: Int!) {
  session(uid: $session) { events(after: $after, first: $first) { seq at kind instance trigger causedBy } }
}";

/// Events fetched per request by `triggers events`.
const EVENTS_PAGE: u64 = 1000;

/// `triggers configure <session> <file.json>`.
pub(super) async fn configure(args: ConfigureArgs) -> Result<(), CliError> {
    let text = read_input(&args.file)?;
    let tasks: Value = serde_json::from_str(&text)
        .map_err(|err| CliError::Usage(format!("{} is not valid JSON: {err}", args.file)))?;
    let (data, extensions) = Client::new(&args.server)?
        .request_with_extensions(
            CONFIGURE,
            json!({"session": args.session, "tasks": tasks, "strict": args.strict}),
        )
        .await?;
    let session = &data["configure"];
    let configured: Vec<&str> = tasks
        .as_object()
        .map(|t| t.keys().map(String::as_str).collect())
        .unwrap_or_default();
    println!(
        "configured {} on session {} (version {}, {} tasks in all)",
        list(&configured),
        text_of(&session["uid"]),
        session["version"],
        session["tasks"].as_array().map_or(0, Vec::len)
    );
    eprint!("{}", render_warnings(&extensions["warnings"]));
    Ok(())
}

/// `warning: <message>` lines for the warnings of a response.
fn render_warnings(warnings: &Value) -> String {
    warnings
        .as_array()
        .map(|list| {
            list.iter()
                .map(|w| format!("warning: {}\n", text_of(&w["message"])))
                .collect()
        })
        .unwrap_or_default()
}

/// `triggers fire <session> <trigger> [--kwargs JSON] [--idempotency-key K]`.
pub(super) async fn fire(args: FireArgs) -> Result<(), CliError> {
    let kwargs: Value = serde_json::from_str(&args.kwargs)
        .map_err(|err| CliError::Usage(format!("--kwargs is not valid JSON: {err}")))?;
    let data = Client::new(&args.server)?
        .request(
            FIRE,
            json!({
                "session": args.session,
                "trigger": args.trigger,
                "kwargs": kwargs,
                "key": args.idempotency_key,
            }),
        )
        .await?;
    let fired = &data["fire"];
    let names = |field: &str| -> Vec<String> {
        fired[field]
            .as_array()
            .map(|list| list.iter().map(|i| text_of(&i["name"])).collect())
            .unwrap_or_default()
    };
    let duplicate = if fired["duplicate"] == json!(true) {
        " (a repeat of this idempotency key: nothing was appended)"
    } else {
        ""
    };
    println!(
        "fired {} on session {}: event #{}{duplicate}",
        args.trigger, args.session, fired["event"]["seq"]
    );
    println!("  scheduled: {}", list(&names("scheduled")));
    println!("  abandoned: {}", list(&names("abandoned")));
    println!("  session version: {}", fired["session"]["version"]);
    Ok(())
}

/// `triggers show <session>`.
pub(super) async fn show(args: ShowArgs) -> Result<(), CliError> {
    let data = Client::new(&args.server)?
        .request(SHOW, json!({"session": args.session}))
        .await?;
    if args.json {
        let text = serde_json::to_string_pretty(&data["session"])
            .map_err(|err| CliError::Usage(format!("cannot print the session as JSON: {err}")))?;
        println!("{text}");
    } else {
        print!("{}", render_session(&data["session"]));
    }
    Ok(())
}

/// `triggers events <session>`: every event after `--after`, page by page.
pub(super) async fn events(args: EventsArgs) -> Result<(), CliError> {
    let client = Client::new(&args.server)?;
    let mut after = args.after;
    let mut rows = Vec::new();
    loop {
        let data = client
            .request(
                EVENTS,
                json!({"session": args.session, "after": after, "first": EVENTS_PAGE}),
            )
            .await?;
        let page = data["session"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for event in &page {
            after = event["seq"].as_u64().unwrap_or(after);
            rows.push(event_row(event));
        }
        if (page.len() as u64) < EVENTS_PAGE {
            break;
        }
    }
    if rows.is_empty() {
        println!(
            "session {} has no events after {}",
            args.session, args.after
        );
        return Ok(());
    }
    print!(
        "{}",
        table(
            &["SEQ", "AT", "KIND", "INSTANCE/TRIGGER", "CAUSED BY"],
            &rows
        )
    );
    Ok(())
}

/// The `show` output: a header line, the tasks, then the instances.
fn render_session(session: &Value) -> String {
    let empty = Vec::new();
    let tasks = session["tasks"].as_array().unwrap_or(&empty);
    let instances = session["instances"].as_array().unwrap_or(&empty);
    let mut out = session_header(session, tasks, instances);
    if tasks.is_empty() {
        out.push_str("\nno tasks configured\n");
        return out;
    }
    out.push('\n');
    out.push_str(&tasks_table(tasks, instances));
    if instances.is_empty() {
        out.push_str("\nno instances yet\n");
        return out;
    }
    out.push('\n');
    out.push_str(&instances_table(instances));
    out
}

/// `session <uid>: version <v>, <n> tasks, <m> instances (<k> unresolved)`.
fn session_header(session: &Value, tasks: &[Value], instances: &[Value]) -> String {
    let unresolved = instances
        .iter()
        .filter(|i| {
            !matches!(
                i["status"].as_str(),
                Some("FINISHED" | "SKIPPED" | "REPLAYED" | "ABANDONED")
            )
        })
        .count();
    format!(
        "session {}: version {}, {}, {} ({} unresolved)\n",
        text_of(&session["uid"]),
        session["version"],
        count(tasks.len(), "task"),
        count(instances.len(), "instance"),
        unresolved
    )
}

/// One row per task: its name, runner, `after` (the `andEvery` trigger
/// marked), `unless`, and its instances counted by status.
fn tasks_table(tasks: &[Value], instances: &[Value]) -> String {
    let by_task = statuses_by_task(instances);
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|task| {
            let name = text_of(&task["name"]);
            let counts = by_task
                .get(&name)
                .map_or_else(|| "none yet".to_owned(), status_counts);
            vec![
                name,
                run_of(task),
                dash_if_empty(after_of(task).join(", ")),
                dash_if_empty(strings(&task["unless"]).join(", ")),
                counts,
            ]
        })
        .collect();
    table(&["TASK", "RUN", "AFTER", "UNLESS", "INSTANCES"], &rows)
}

/// Each task's instances counted by status.
fn statuses_by_task(instances: &[Value]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut by_task: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for instance in instances {
        *by_task
            .entry(text_of(&instance["task"]))
            .or_default()
            .entry(status_of(instance))
            .or_default() += 1;
    }
    by_task
}

/// `2 finished, 1 failed`.
fn status_counts(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The job name, with its runner when that is not `inline`.
fn run_of(task: &Value) -> String {
    let mut run = text_of(&task["run"]);
    if let Some(runner) = task["runner"].as_str().filter(|r| *r != "inline") {
        run.push_str(&format!(" ({runner})"));
    }
    run
}

/// The `after` triggers, the `andEvery` one marked `(every)`.
fn after_of(task: &Value) -> Vec<String> {
    let every = task["andEvery"].as_str();
    strings(&task["after"])
        .into_iter()
        .map(|t| {
            if Some(t.as_str()) == every {
                format!("{t} (every)")
            } else {
                t
            }
        })
        .collect()
}

/// One row per instance: name, status, depth, parent, last change, outcome.
fn instances_table(instances: &[Value]) -> String {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                text_of(&i["name"]),
                status_of(i),
                i["depth"].to_string(),
                i["parent"].as_str().unwrap_or("-").to_owned(),
                i.pointer("/metadata/timestamps/lastModified")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_owned(),
                outcome(i),
            ]
        })
        .collect();
    table(
        &[
            "INSTANCE",
            "STATUS",
            "DEPTH",
            "PARENT",
            "LAST MODIFIED",
            "RESULT / ERROR",
        ],
        &rows,
    )
}

/// Longest result or error shown in a `show` table (`--json` has it all).
const OUTCOME_WIDTH: usize = 60;

/// What an instance ended with: its error (`Type: first line of the message`)
/// when it failed, else its result as compact JSON, shortened.
fn outcome(instance: &Value) -> String {
    let metadata = &instance["metadata"];
    if let Some(kind) = metadata["exceptionType"].as_str() {
        let message = metadata["exceptionInfo"]
            .as_str()
            .and_then(|info| info.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or("");
        let text = if message.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}: {message}")
        };
        return shorten(&text, OUTCOME_WIDTH);
    }
    match &instance["result"] {
        Value::Null => "-".to_owned(),
        result => shorten(&result.to_string(), OUTCOME_WIDTH),
    }
}

fn event_row(event: &Value) -> Vec<String> {
    let subject = match (event["instance"].as_str(), event["trigger"].as_str()) {
        (Some(instance), Some(trigger)) => format!("{instance} <- {trigger}"),
        (Some(instance), None) => instance.to_owned(),
        (None, Some(trigger)) => trigger.to_owned(),
        (None, None) => "-".to_owned(),
    };
    vec![
        event["seq"].to_string(),
        text_of(&event["at"]),
        text_of(&event["kind"]),
        subject,
        event["causedBy"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |seq| seq.to_string()),
    ]
}

fn read_input(path: &str) -> Result<String, CliError> {
    let mut text = String::new();
    let read = if path == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|source| CliError::Io {
        context: format!("cannot read {path}"),
        source,
    })?;
    Ok(text)
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn status_of(instance: &Value) -> String {
    text_of(&instance["status"]).to_lowercase()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|list| list.iter().map(text_of).collect())
        .unwrap_or_default()
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

fn list<T: AsRef<str>>(names: &[T]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn show_renders_tasks_with_instance_counts_and_instances_with_status() {
        let session = json!({
            "uid": "q:1",
            "version": 7,
            "tasks": [
                {"name": "t_a", "run": "r", "using": null, "after": ["p", "x"], "unless": [], "andEvery": "p"},
                {"name": "t_b", "run": "r", "using": "worker", "runner": "worker:default", "after": ["t_a"], "unless": ["stop"], "andEvery": null}
            ],
            "instances": [
                {"name": "t_a#0", "task": "t_a", "status": "FINISHED", "depth": 0, "parent": null,
                 "result": {"score": 12},
                 "metadata": {"timestamps": {"lastModified": "2024-01-01T00:00:00.000000Z"}}},
                {"name": "t_b#0", "task": "t_b", "status": "FAILED", "depth": 0, "parent": null,
                 "result": null,
                 "metadata": {"exceptionType": "app.ScoringError",
                              "exceptionInfo": "\nmodel \"Psych 01\" is not loaded on this worker, nor anywhere else\nTraceback...",
                              "timestamps": {"lastModified": "2024-01-01T00:00:01.000000Z"}}}
            ]
        });
        let out = render_session(&session);
        assert!(
            out.starts_with("session q:1: version 7, 2 tasks, 2 instances (1 unresolved)"),
            "{out}"
        );
        assert!(
            out.contains("t_a   r                   p (every), x  -       1 finished"),
            "{out}"
        );
        assert!(
            out.contains("t_b   r (worker:default)  t_a           stop    1 failed"),
            "{out}"
        );
        assert!(
            out.contains(
                "t_a#0     finished  0      -       2024-01-01T00:00:00.000000Z  {\"score\":12}\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("failed    0      -       2024-01-01T00:00:01.000000Z  app.ScoringError: model \"Psych 01\" is not loaded on this wo…\n"),
            "{out}"
        );
        let one =
            json!({"uid": "q:2", "version": 1, "tasks": [session["tasks"][0]], "instances": []});
        assert!(
            render_session(&one)
                .starts_with("session q:2: version 1, 1 task, 0 instances (0 unresolved)"),
            "{}",
            render_session(&one)
        );
    }

    #[test]
    fn an_event_row_names_instance_and_trigger() {
        let row = event_row(&json!({
            "seq": 3, "at": "2024-01-01T00:00:00Z", "kind": "TriggerApplied",
            "instance": "t_a#0", "trigger": "p", "causedBy": 2
        }));
        assert_eq!(
            row,
            [
                "3",
                "2024-01-01T00:00:00Z",
                "TriggerApplied",
                "t_a#0 <- p",
                "2"
            ]
        );
    }
}
