//! Task configuration: the directives of docs/configuration.md, parsed and validated as a
//! whole so that bad configuration is rejected before anything is written.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names::name_problem;
use super::{DomainError, JsonObject};

/// The default of `maxRetries`.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Which runner executes a task's instances (docs/concepts.md, "Runners").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "runner", content = "queue")]
pub enum Runner {
    /// A handler registered in the engine's process.
    Inline,
    /// An external worker claiming from the named queue.
    Worker(String),
}

impl Runner {
    /// The queue an external worker claims from when none is named.
    pub const DEFAULT_QUEUE: &'static str = "default";

    /// Parses a `using` directive: `inline`, `worker` or `worker:<queue>`.
    pub fn parse_using(using: &str) -> Option<Runner> {
        match using {
            "inline" => Some(Runner::Inline),
            "worker" => Some(Runner::Worker(Self::DEFAULT_QUEUE.to_owned())),
            _ => using
                .strip_prefix("worker:")
                .filter(|queue| !queue.is_empty())
                .map(|queue| Runner::Worker(queue.to_owned())),
        }
    }

    /// The queue-table name of this runner: `inline` or the worker queue.
    pub fn queue_name(&self) -> &str {
        match self {
            Runner::Inline => "inline",
            Runner::Worker(queue) => queue,
        }
    }
}

impl fmt::Display for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Runner::Inline => f.write_str("inline"),
            Runner::Worker(queue) => write!(f, "worker:{queue}"),
        }
    }
}

/// One task of a session: when it runs, what it runs, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskConfig {
    /// Triggers that must all fire before an instance can run; sorted, and includes `and_every`.
    pub after: Vec<String>,
    /// The handler or job name (like a Celery task name).
    pub run: String,
    /// Every firing of this trigger makes (or completes) an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and_every: Option<String>,
    /// Once all of these fired for an unstarted instance, it is abandoned; sorted.
    #[serde(default)]
    pub unless: Vec<String>,
    /// Static kwargs, keyed like trigger kwargs, merged under them when the instance runs.
    #[serde(default)]
    pub with_params: JsonObject,
    /// The `using` directive as configured (validated by [`Runner::parse_using`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub using: Option<String>,
    /// How many times an instance of this task may retry itself.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Every other directive, kept verbatim.
    #[serde(default)]
    pub extras: JsonObject,
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

impl TaskConfig {
    /// Whether `trigger` is in this task's `after` set.
    pub fn is_after(&self, trigger: &str) -> bool {
        self.after
            .binary_search_by(|t| t.as_str().cmp(trigger))
            .is_ok()
    }

    /// Whether `trigger` is in this task's `unless` set.
    pub fn is_unless(&self, trigger: &str) -> bool {
        self.unless
            .binary_search_by(|t| t.as_str().cmp(trigger))
            .is_ok()
    }

    /// Every trigger this task listens to (`after` and `unless`).
    pub fn triggers(&self) -> impl Iterator<Item = &str> {
        self.after
            .iter()
            .chain(self.unless.iter())
            .map(String::as_str)
    }

    /// The runner named by `using`, if any (validated at configure time).
    pub fn configured_runner(&self) -> Option<Runner> {
        self.using.as_deref().and_then(Runner::parse_using)
    }

    /// The runner its instances go to: `using` when given; otherwise inline
    /// when `run` has a handler in this process, else the default worker queue.
    pub fn runner(&self, has_handler: bool) -> Runner {
        self.configured_runner().unwrap_or_else(|| {
            if has_handler {
                Runner::Inline
            } else {
                Runner::Worker(Runner::DEFAULT_QUEUE.to_owned())
            }
        })
    }
}

/// Parses and validates a whole `tasks` document. Any error rejects all of it.
pub fn parse_tasks(tasks: &Value) -> Result<BTreeMap<String, TaskConfig>, DomainError> {
    let Value::Object(tasks) = tasks else {
        return Err(bad(format!(
            "tasks must be a JSON object of task name -> directives, got {}",
            json_type(tasks)
        )));
    };
    tasks
        .iter()
        .map(|(name, directives)| Ok((name.clone(), parse_task(name, directives)?)))
        .collect()
}

fn parse_task(name: &str, directives: &Value) -> Result<TaskConfig, DomainError> {
    if let Some(problem) = name_problem("task name", name) {
        return Err(bad(problem));
    }
    let Value::Object(directives) = directives else {
        return Err(bad(format!(
            "task {name:?}: directives must be a JSON object, got {}",
            json_type(directives)
        )));
    };
    let mut extras = JsonObject::new();
    let mut after = None;
    let mut run = None;
    let mut and_every = None;
    let mut unless = Vec::new();
    let mut with_params = JsonObject::new();
    let mut using = None;
    let mut max_retries = DEFAULT_MAX_RETRIES;
    for (key, value) in directives {
        match key.as_str() {
            "after" => after = Some(string_list(name, key, value)?),
            "run" => run = Some(non_empty_string(name, key, value)?),
            "andEvery" => and_every = Some(non_empty_string(name, key, value)?),
            "unless" => unless = string_list(name, key, value)?,
            "withParams" => with_params = params(name, value)?,
            "using" => {
                let runner = non_empty_string(name, key, value)?;
                if Runner::parse_using(&runner).is_none() {
                    return Err(bad(format!(
                        "task {name:?}: directive \"using\" names unknown runner {runner:?} (expected \"inline\", \"worker\" or \"worker:<queue>\")"
                    )));
                }
                using = Some(runner);
            }
            "maxRetries" => {
                max_retries = value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "task {name:?}: directive \"maxRetries\" must be an integer >= 0, got {value}"
                        ))
                    })?
            }
            _ => {
                extras.insert(key.clone(), value.clone());
            }
        }
    }
    let mut after = after.ok_or_else(|| {
        bad(format!(
            "task {name:?}: directive \"after\" is required (a list of trigger names, may be empty)"
        ))
    })?;
    let run = run.ok_or_else(|| {
        bad(format!(
            "task {name:?}: directive \"run\" is required (the name of the job to run)"
        ))
    })?;
    if let Some(every) = &and_every {
        after.push(every.clone());
    }
    after.sort();
    after.dedup();
    unless.sort();
    unless.dedup();
    Ok(TaskConfig {
        after,
        run,
        and_every,
        unless,
        with_params,
        using,
        max_retries,
        extras,
    })
}

fn string_list(task: &str, key: &str, value: &Value) -> Result<Vec<String>, DomainError> {
    let items = value.as_array().ok_or_else(|| {
        bad(format!(
            "task {task:?}: directive {key:?} must be a list of trigger names, got {}",
            json_type(value)
        ))
    })?;
    items
        .iter()
        .map(|item| match item {
            Value::String(s) if !s.is_empty() => match name_problem("trigger name", s) {
                None => Ok(s.clone()),
                Some(problem) => Err(bad(format!("task {task:?}: directive {key:?}: {problem}"))),
            },
            _ => Err(bad(format!(
                "task {task:?}: directive {key:?} must contain only non-empty strings, got {item}"
            ))),
        })
        .collect()
}

fn non_empty_string(task: &str, key: &str, value: &Value) -> Result<String, DomainError> {
    match value {
        Value::String(s) if !s.is_empty() => match name_problem("name", s) {
            None => Ok(s.clone()),
            Some(problem) => Err(bad(format!("task {task:?}: directive {key:?}: {problem}"))),
        },
        _ => Err(bad(format!(
            "task {task:?}: directive {key:?} must be a non-empty string, got {value}"
        ))),
    }
}

fn params(task: &str, value: &Value) -> Result<JsonObject, DomainError> {
    let object = value.as_object().ok_or_else(|| {
        bad(format!(
            "task {task:?}: directive \"withParams\" must be an object of objects, got {}",
            json_type(value)
        ))
    })?;
    if let Some((key, inner)) = object.iter().find(|(_, v)| !v.is_object()) {
        return Err(bad(format!(
            "task {task:?}: directive \"withParams\" entry {key:?} must be an object, got {}",
            json_type(inner)
        )));
    }
    Ok(object.clone())
}

fn bad(message: String) -> DomainError {
    DomainError::BadConfiguration(message)
}

/// A JSON value's type, for error messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub mod diagnostics;

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_directive_is_parsed_and_the_rest_kept_as_extras() {
        let tasks = parse_tasks(&json!({
            "t_score": {
                "after": ["b", "a"],
                "andEvery": "page",
                "unless": ["stop"],
                "run": "app.Score",
                "withParams": {"scoring": {"model": "Psych 01"}},
                "using": "worker:gpu",
                "maxRetries": 5,
                "description": "scores pages"
            }
        }))
        .unwrap();
        let task = &tasks["t_score"];
        assert_eq!(task.after, ["a", "b", "page"]);
        assert_eq!(task.and_every.as_deref(), Some("page"));
        assert_eq!(task.unless, ["stop"]);
        assert_eq!(task.configured_runner(), Some(Runner::Worker("gpu".into())));
        assert_eq!(task.max_retries, 5);
        assert_eq!(task.extras["description"], json!("scores pages"));
    }

    #[test]
    fn bad_configuration_names_the_task_and_directive() {
        let cases = [
            (json!({"t": {"run": "x"}}), "\"after\" is required"),
            (json!({"t": {"after": []}}), "\"run\" is required"),
            (
                json!({"t": {"after": "a", "run": "x"}}),
                "\"after\" must be a list",
            ),
            (
                json!({"t": {"after": [], "run": "x", "withParams": {"a": 1}}}),
                "\"withParams\" entry \"a\"",
            ),
            (
                json!({"t": {"after": [], "run": "x", "using": "celery"}}),
                "unknown runner",
            ),
            (
                json!({"t": {"after": [], "run": "x", "maxRetries": -1}}),
                "\"maxRetries\"",
            ),
            (json!({"": {"after": [], "run": "x"}}), "must not be empty"),
            (json!([1]), "must be a JSON object"),
        ];
        for (doc, expected) in cases {
            let err = parse_tasks(&doc).unwrap_err();
            let DomainError::BadConfiguration(message) = &err else {
                panic!("{doc}: expected BadConfiguration, got {err:?}")
            };
            assert!(message.contains(expected), "{doc}: {message}");
            if doc.as_object().is_some_and(|o| o.contains_key("t")) {
                assert!(message.contains("\"t\""), "{message} should name the task");
            }
        }
    }
}
