//! The questionnaire workload: the README's questionnaire workflow and one
//! respondent's journey through it. `triggers loadgen` drives it over HTTP,
//! the benches through the library, and the test suites check it end to end.

use serde_json::{json, Value};

/// One respondent's journey through the questionnaire, fired in this order.
pub const JOURNEY: [&str; 5] = [
    "firstPageReceived",
    "pageReceived",
    "pageReceived",
    "pageReceived",
    "questionnaireComplete",
];

/// The handler `triggers loadgen` and the benches run every task with, so that
/// the load measures the engine, not the jobs.
pub const LOAD_HANDLER: &str = "triggers.testing.DevNull";

/// The questionnaire workflow (as in the README), every task run inline by
/// DevNull ([`LOAD_HANDLER`]).
pub fn questionnaire() -> Value {
    questionnaire_run_by(LOAD_HANDLER)
}

/// The questionnaire workflow with every task run by the handler `run`.
pub fn questionnaire_run_by(run: &str) -> Value {
    json!({
        "t_importSubject": {"after": ["firstPageReceived"], "run": run},
        "t_importResponses": {
            "after": ["firstPageReceived"],
            "andEvery": "pageReceived",
            "run": run
        },
        "t_importBrowserMetadata": {
            "after": ["firstPageReceived", "questionnaireComplete"],
            "run": run
        },
        "t_scoreResponses": {
            "after": ["t_importSubject", "questionnaireComplete"],
            "unless": ["questionnaireAbandoned"],
            "run": run,
            "withParams": {"scoring": {"model": "Psych 01"}}
        }
    })
}
