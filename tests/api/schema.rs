//! `schema.graphql` at the repo root is the exported schema: it must match the
//! code, and the code must keep the names clients rely on (docs/graphql.md).

use std::path::PathBuf;

fn schema_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema.graphql")
}

#[test]
fn schema_graphql_matches_the_code() {
    let exported = triggers::graphql::sdl();
    let path = schema_file();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &exported).expect("write schema.graphql");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == exported {
        return;
    }
    let first_difference = committed
        .lines()
        .zip(exported.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| {
            format!(
                "line {}:\n  schema.graphql: {a}\n  code:           {b}",
                i + 1
            )
        })
        .unwrap_or_else(|| {
            format!(
                "one is a prefix of the other ({} vs {} lines)",
                committed.lines().count(),
                exported.lines().count()
            )
        });
    panic!(
        "schema.graphql is out of date with the code.\nFirst difference at {first_difference}\n\
         If the change is intended (clients rely on these names: docs/graphql.md), regenerate it with:\n  \
         UPDATE_SCHEMA=1 cargo test --test api schema"
    );
}

/// The signatures clients rely on (docs/graphql.md), as they must read in the SDL.
const PINNED: &[(&str, &[&str])] = &[
    (
        "Query",
        &[
            "session(uid: String!): Session!",
            "sessions(first: Int, after: String): [SessionSummary!]!",
            "instances(status: [InstanceStatus!], task: String, first: Int, after: String): [TaskInstance!]!",
        ],
    ),
    (
        "Session",
        &[
            "uid: String!",
            "version: Int!",
            "tasks: [TaskConfig!]!",
            "task(name: String!): TaskConfig",
            "instances(status: [InstanceStatus!], task: String): [TaskInstance!]!",
            "instance(name: String!): TaskInstance",
            "unresolvedTasks: [TaskConfig!]!",
            "unresolvedInstances: [TaskInstance!]!",
            "instancesWithUnresolvedLogs: [TaskInstance!]!",
            "latestKwargs: JSON!",
            "events(after: Int, first: Int): [Event!]!",
            "asOf(version: Int!): Session!",
        ],
    ),
    (
        "TaskConfig",
        &[
            "name: String!",
            "after: [String!]!",
            "andEvery: String",
            "unless: [String!]!",
            "run: String!",
            "using: String",
            "withParams: JSON!",
            "maxRetries: Int!",
            "extras: JSON!",
            "instances: [TaskInstance!]!",
        ],
    ),
    (
        "TaskInstance",
        &[
            "session: String!",
            "name: String!",
            "task: String!",
            "status: InstanceStatus!",
            "kwargs: JSON!",
            "abandonState: [String!]!",
            "metadata: JSON!",
            "result: JSON",
            "logLevel: Int!",
            "isResolved: Boolean!",
            "canRun: Boolean!",
            "canAbandon: Boolean!",
            "canReplay: Boolean!",
            "canSkip: Boolean!",
            "parent: String",
            "depth: Int!",
            "history: [Event!]!",
            "causes: [Event!]!",
        ],
    ),
    (
        "Event",
        &[
            "seq: Int!",
            "kind: String!",
            "at: DateTime!",
            "data: JSON!",
            "causedBy: Int",
            "instance: String",
            "trigger: String",
        ],
    ),
    (
        "FireResult",
        &[
            "session: Session!",
            "event: Event!",
            "scheduled: [TaskInstance!]!",
            "abandoned: [TaskInstance!]!",
            "duplicate: Boolean!",
        ],
    ),
    ("SessionSummary", &["uid: String!", "version: Int!", "updatedAt: DateTime!"]),
    (
        "TaskClaim",
        &[
            "leaseToken: String!",
            "session: String!",
            "instance: String!",
            "run: String!",
            "kwargs: JSON!",
            "attempt: Int!",
            "leaseExpiresAt: DateTime!",
        ],
    ),
    (
        "Mutation",
        &[
            "configure(session: String!, tasks: JSON!, strict: Boolean = false): Session!",
            "fire(session: String!, trigger: String!, kwargs: JSON, idempotencyKey: String): FireResult!",
            "replayFailedInstance(session: String!, instance: String!, replacementKwargs: JSON): TaskInstance!",
            "skipFailedInstance(session: String!, instance: String!, cascade: Boolean, result: JSON): TaskInstance!",
            "updateInstanceStatus(session: String!, instance: String!, status: InstanceStatus!, metadata: JSON, cascade: Boolean, cascadeKwargs: JSON): TaskInstance!",
            "updateInstanceMetadata(session: String!, instance: String!, metadata: JSON!): TaskInstance!",
            "markInstanceLogsResolved(session: String!, instance: String!): TaskInstance!",
            "claimTasks(worker: String!, queue: String, max: Int, leaseSeconds: Int): [TaskClaim!]!",
            "heartbeat(leaseToken: String!, leaseSeconds: Int): DateTime!",
            "completeTask(leaseToken: String!, result: JSON, logLevel: Int): TaskInstance!",
            "failTask(leaseToken: String!, error: String!, errorType: String, context: JSON, logLevel: Int, retry: Boolean, cooldownSeconds: Int, replacementKwargs: JSON): TaskInstance!",
            "skipTask(leaseToken: String!, metadata: JSON): TaskInstance!",
        ],
    ),
    ("Subscription", &["sessionEvents(session: String!, afterVersion: Int): Event!"]),
];

/// The field lines of `type <name> { ... }` in `sdl`, trimmed, without docs.
fn fields_of(sdl: &str, name: &str) -> Vec<String> {
    let header = format!("type {name} {{");
    let start = sdl
        .find(&header)
        .unwrap_or_else(|| panic!("no type {name} in the schema"));
    let body = &sdl[start + header.len()..];
    let body = &body[..body.find("\n}").expect("a closing brace")];
    let mut lines = Vec::new();
    let mut in_doc = false;
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "\"\"\"" || (line.starts_with("\"\"\"") && !line.ends_with("\"\"\"")) {
            in_doc = !in_doc;
            continue;
        }
        if !in_doc && !line.starts_with("\"\"\"") {
            lines.push(line);
        }
    }
    // Arguments with descriptions are written one per line: join them back
    // into `name(arg: T, ...): Type`.
    let mut fields = Vec::new();
    let mut open: Option<String> = None;
    for line in lines {
        match open.as_mut() {
            Some(signature) if line.starts_with(')') => {
                signature.push_str(line);
                fields.push(open.take().unwrap());
            }
            Some(signature) => {
                if !signature.ends_with('(') {
                    signature.push(' ');
                }
                signature.push_str(line);
            }
            None if line.ends_with('(') => open = Some(line.to_owned()),
            None => fields.push(line.to_owned()),
        }
    }
    fields
}

/// `name(args): Type` split into its name, its arguments and its type.
fn parts(signature: &str) -> (&str, Vec<&str>, &str) {
    match signature.split_once('(') {
        Some((name, rest)) => {
            let (args, ty) = rest.rsplit_once("): ").expect("`(...): Type`");
            (name, args.split(", ").collect(), ty)
        }
        None => {
            let (name, ty) = signature.split_once(": ").expect("`name: Type`");
            (name, Vec::new(), ty)
        }
    }
}

/// Whether a field of the schema answers every query written against the
/// pinned signature: the same name, arguments and type, and any argument
/// added since optional (nullable), so that a query leaving it out still runs.
fn serves(field: &str, pinned: &str) -> bool {
    let (name, args, ty) = parts(field);
    let (pinned_name, pinned_args, pinned_ty) = parts(pinned);
    name == pinned_name
        && ty == pinned_ty
        && args.len() >= pinned_args.len()
        && args[..pinned_args.len()] == pinned_args[..]
        && args[pinned_args.len()..]
            .iter()
            .all(|arg| !arg.ends_with('!'))
}

#[test]
fn an_added_argument_serves_the_pinned_signature_only_when_optional() {
    let pinned = "events(after: Int, first: Int): [Event!]!";
    assert!(serves("events(after: Int, first: Int): [Event!]!", pinned));
    assert!(serves(
        "events(after: Int, first: Int, kinds: [String!]): [Event!]!",
        pinned
    ));
    assert!(!serves(
        "events(after: Int, first: Int, kinds: [String!]!): [Event!]!",
        pinned
    ));
    assert!(!serves("events(first: Int, after: Int): [Event!]!", pinned));
    assert!(!serves("events(after: Int): [Event!]!", pinned));
    assert!(!serves("events(after: Int, first: Int): [Event!]", pinned));
    assert!(serves("version: Int!", "version: Int!"));
}

#[test]
fn the_schema_keeps_every_name_clients_rely_on() {
    let sdl = triggers::graphql::sdl();
    for (type_name, pinned) in PINNED {
        let fields = fields_of(&sdl, type_name);
        for signature in *pinned {
            assert!(
                fields.iter().any(|f| serves(f, signature)),
                "{type_name}.{signature} is a name clients rely on (docs/graphql.md); the schema has {fields:#?}"
            );
        }
    }
    assert!(sdl.contains("scalar JSON") && sdl.contains("scalar DateTime"));
    let statuses = "UNSTARTED SCHEDULED RUNNING FINISHED FAILED SKIPPED REPLAYED ABANDONED";
    let start = sdl
        .find("enum InstanceStatus {")
        .expect("the InstanceStatus enum");
    let body = &sdl[start..start + sdl[start..].find("\n}").unwrap()];
    let values: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_uppercase()))
        .collect();
    assert_eq!(values.join(" "), statuses);
}
