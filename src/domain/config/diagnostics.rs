//! Configuration diagnostics: what `configure` accepts but is probably a
//! mistake, said out loud.
//!
//! - A directive that is not one of the known ones is kept verbatim in the
//!   task's `extras` (applications may keep their own notes there), but it is
//!   just as likely a typo (`unles`, `andevery`); the warning names the
//!   closest known directive when one is close.
//! - A task with no `using` whose `run` has no handler registered in this
//!   process goes to the worker queue `default`, where it waits for an
//!   external worker; a mistyped handler name would otherwise sit `scheduled`
//!   forever without a word.
//!
//! [`refuse_unknown_directives`] is the strict mode: unknown directives are a
//! `BAD_CONFIGURATION` instead of a warning.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Runner, TaskConfig};
use crate::domain::DomainError;

/// The directives a task understands, as they are spelled.
pub const DIRECTIVES: [&str; 7] = [
    "after",
    "run",
    "andEvery",
    "unless",
    "withParams",
    "using",
    "maxRetries",
];

/// Something in an accepted configuration that is likely a mistake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigWarning {
    /// The task it is about.
    pub task: String,
    /// The directive it is about (`None` when about the task as a whole).
    pub directive: Option<String>,
    /// What was found, and what happens because of it.
    pub message: String,
}

/// The warnings for `tasks`; `is_registered` says which `run` names have an
/// in-process handler. In task order, then directive order.
pub fn diagnose(
    tasks: &BTreeMap<String, TaskConfig>,
    is_registered: impl Fn(&str) -> bool,
) -> Vec<ConfigWarning> {
    let mut warnings = Vec::new();
    for (name, task) in tasks {
        for directive in task.extras.keys() {
            warnings.push(ConfigWarning {
                task: name.clone(),
                directive: Some(directive.clone()),
                message: unknown_directive_message(name, directive)
                    + "; it is kept in the task's extras",
            });
        }
        if task.using.is_none() && !is_registered(&task.run) {
            warnings.push(ConfigWarning {
                task: name.clone(),
                directive: Some("run".to_owned()),
                message: format!(
                    "task {name:?}: no handler named {:?} is registered in this server and the task has no \"using\", so its instances go to the worker queue {:?} and wait there for an external worker (set \"using\": \"worker\" to say so, or check the name)",
                    task.run,
                    Runner::DEFAULT_QUEUE
                ),
            });
        }
    }
    warnings
}

/// Strict mode: refuses a configuration with an unknown directive.
pub fn refuse_unknown_directives(tasks: &BTreeMap<String, TaskConfig>) -> Result<(), DomainError> {
    for (name, task) in tasks {
        if let Some(directive) = task.extras.keys().next() {
            return Err(DomainError::BadConfiguration(format!(
                "{}; strict configuration accepts only {}",
                unknown_directive_message(name, directive),
                DIRECTIVES.join(", ")
            )));
        }
    }
    Ok(())
}

fn unknown_directive_message(task: &str, directive: &str) -> String {
    match nearest_directive(directive) {
        Some(known) => {
            format!("task {task:?}: unknown directive {directive:?} (did you mean {known:?}?)")
        }
        None => format!("task {task:?}: unknown directive {directive:?}"),
    }
}

/// The known directive `key` is probably a misspelling of: the same letters
/// in another case or with `_`/`-` between words, or at most two edits away
/// (and fewer than half the directive's letters).
pub fn nearest_directive(key: &str) -> Option<&'static str> {
    let wanted = fold(key);
    DIRECTIVES
        .iter()
        .map(|known| (edit_distance(&wanted, &fold(known)), *known))
        .filter(|(distance, known)| *distance <= 2 && distance * 2 < known.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

fn fold(key: &str) -> Vec<char> {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Levenshtein distance (insertions, deletions, substitutions).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::parse_tasks;

    #[test]
    fn typos_of_directives_name_the_directive_meant() {
        for (typo, meant) in [
            ("unles", "unless"),
            ("andevery", "andEvery"),
            ("and_every", "andEvery"),
            ("afterr", "after"),
            ("withParam", "withParams"),
            ("max_retries", "maxRetries"),
            ("Using", "using"),
            ("runn", "run"),
        ] {
            assert_eq!(nearest_directive(typo), Some(meant), "{typo}");
        }
        for unrelated in ["description", "owner", "url", "x", "retries"] {
            assert_eq!(nearest_directive(unrelated), None, "{unrelated}");
        }
    }

    #[test]
    fn unknown_directives_and_unhandled_runs_are_reported_in_order() {
        let tasks = parse_tasks(&json!({
            "t_b": {"after": ["a"], "afterr": ["b"], "run": "known", "owner": "me"},
            "t_a": {"after": [], "run": "app.Unknown"},
            "t_c": {"after": [], "run": "app.Unknown", "using": "worker"},
        }))
        .unwrap();
        let warnings = diagnose(&tasks, |run| run == "known");
        let found: Vec<(&str, Option<&str>)> = warnings
            .iter()
            .map(|w| (w.task.as_str(), w.directive.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                ("t_a", Some("run")),
                ("t_b", Some("afterr")),
                ("t_b", Some("owner"))
            ]
        );
        assert!(warnings[0].message.contains("worker queue \"default\""));
        assert!(warnings[1].message.contains("did you mean \"after\"?"));
        assert!(warnings[1].message.contains("kept in the task's extras"));
        assert!(!warnings[2].message.contains("did you mean"));
    }

    #[test]
    fn strict_mode_refuses_an_unknown_directive_with_the_suggestion() {
        let tasks = parse_tasks(&json!({"t": {"after": [], "run": "r", "unles": ["x"]}})).unwrap();
        let DomainError::BadConfiguration(message) = refuse_unknown_directives(&tasks).unwrap_err()
        else {
            panic!("expected BadConfiguration");
        };
        assert!(
            message.contains("\"unles\" (did you mean \"unless\"?)"),
            "{message}"
        );
        let fine = parse_tasks(&json!({"t": {"after": [], "run": "r"}})).unwrap();
        assert!(refuse_unknown_directives(&fine).is_ok());
    }
}
