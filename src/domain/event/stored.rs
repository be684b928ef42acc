//! Events as stored: the payload as a JSON object without its `kind` tag, and
//! the way back, upcasting a payload written in an older format one step at a
//! time (the formats are listed in the parent module's documentation).

use serde::Deserialize;
use serde_json::Value;

use super::{EventPayload, PAYLOAD_FORMAT};
use crate::domain::{DomainError, JsonObject, Runner};

impl EventPayload {
    /// The payload as stored: a JSON object without the `kind` tag.
    pub fn to_data(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("event payloads always serialise");
        if let Value::Object(map) = &mut value {
            map.remove("kind");
        }
        value
    }

    /// Reads a stored payload back: `data` as written in payload format
    /// `format`, upcast to [`PAYLOAD_FORMAT`] first. A format this build does not
    /// know (newer, or never written), or a payload that does not fit its format,
    /// is reported as corrupt.
    pub fn from_data(kind: &str, format: i32, data: Value) -> Result<Self, DomainError> {
        if format > PAYLOAD_FORMAT {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload has format {format}, newer than this build understands ({PAYLOAD_FORMAT})"
            )));
        }
        if format < 1 {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload has format {format}, which was never written (formats start at 1)"
            )));
        }
        let Value::Object(mut map) = data else {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload is not an object"
            )));
        };
        for (from, upcast) in (format..).zip(&UPCASTS[(format - 1) as usize..]) {
            upcast(kind, &mut map).map_err(|what| {
                DomainError::Corrupt(format!("{kind} payload of format {from}: {what}"))
            })?;
        }
        map.insert("kind".to_owned(), Value::String(kind.to_owned()));
        serde_json::from_value(Value::Object(map))
            .map_err(|err| DomainError::Corrupt(format!("{kind} payload: {err}")))
    }

    /// [`Self::from_data`] from the stored text. A payload in today's format is
    /// parsed once, straight into its variant (the text with the `kind` tag put
    /// in front); an older one goes through [`Self::from_data`]'s upcasts. Every
    /// read of a log decodes this way, so it is what `rebuild` and catch-up reads
    /// spend most of their time on.
    pub fn from_data_text(kind: &str, format: i32, data: &str) -> Result<Self, DomainError> {
        if format != PAYLOAD_FORMAT {
            let data = serde_json::from_str(data)
                .map_err(|err| DomainError::Corrupt(format!("{kind} payload: {err}")))?;
            return Self::from_data(kind, format, data);
        }
        let Some(fields) = data.trim_start().strip_prefix('{') else {
            return Err(DomainError::Corrupt(format!(
                "{kind} payload is not an object"
            )));
        };
        let mut tagged = String::with_capacity(data.len() + kind.len() + 12);
        tagged.push_str("{\"kind\":");
        tagged.push_str(&Value::from(kind).to_string());
        if !fields.trim_start().starts_with('}') {
            tagged.push(',');
        }
        tagged.push_str(fields);
        serde_json::from_str(&tagged)
            .map_err(|err| DomainError::Corrupt(format!("{kind} payload: {err}")))
    }
}

/// Rewrites the data of a `kind` event from one payload format to the next, or
/// says what in it does not fit the older format.
type Upcast = fn(kind: &str, data: &mut JsonObject) -> Result<(), String>;

/// `UPCASTS[n - 1]` takes a payload from format `n` to `n + 1`.
const UPCASTS: [Upcast; PAYLOAD_FORMAT as usize - 1] = [format_1_runner_to_using];

/// Format 1 -> 2: `InstanceScheduled.runner` from `{"runner": "inline"}` or
/// `{"runner": "worker", "queue": "<queue>"}` to `"inline"` or `"worker:<queue>"`.
fn format_1_runner_to_using(kind: &str, data: &mut JsonObject) -> Result<(), String> {
    /// How format 1 spelled a runner (serde's adjacently tagged `Runner`, frozen).
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", tag = "runner", content = "queue")]
    enum RunnerV1 {
        Inline,
        Worker(String),
    }

    if kind != "InstanceScheduled" {
        return Ok(());
    }
    // A missing runner is left for deserialisation to report.
    let Some(runner) = data.get_mut("runner") else {
        return Ok(());
    };
    if !runner.is_object() {
        return Err(format!(
            "runner {runner} is not a format-1 runner object \
             ({{\"runner\": \"inline\"}} or {{\"runner\": \"worker\", \"queue\": \"<queue>\"}})"
        ));
    }
    let old = RunnerV1::deserialize(&*runner)
        .map_err(|err| format!("runner {runner} is not a format-1 runner: {err}"))?;
    let new = match old {
        RunnerV1::Inline => Runner::Inline,
        RunnerV1::Worker(queue) if queue.is_empty() => {
            return Err(format!("runner {runner} names an empty worker queue"));
        }
        RunnerV1::Worker(queue) => Runner::Worker(queue),
    };
    *runner = Value::String(runner_as_using::spell(&new));
    Ok(())
}

/// `InstanceScheduled.runner` as stored since format 2: the `using` spelling.
/// Spelled out here rather than borrowed from `Runner`'s `Display`, so that how
/// runners print can never change what the log holds.
pub(super) mod runner_as_using {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    use super::Runner;

    /// `"inline"` or `"worker:<queue>"`.
    pub(super) fn spell(runner: &Runner) -> String {
        match runner {
            Runner::Inline => "inline".to_owned(),
            Runner::Worker(queue) => format!("worker:{queue}"),
        }
    }

    pub(in crate::domain::event) fn serialize<S: Serializer>(
        runner: &Runner,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&spell(runner))
    }

    pub(in crate::domain::event) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Runner, D::Error> {
        let value = Value::deserialize(deserializer)?;
        value.as_str().and_then(Runner::parse_using).ok_or_else(|| {
            D::Error::custom(format!(
                "runner {value} is not \"inline\" or \"worker:<queue>\""
            ))
        })
    }
}
