//! The catalogue: every rule of docs/concepts.md and docs/configuration.md as a user sees it
//! (statuses, kwargs, results, metadata, event kinds and `causedBy`), each a
//! given / when / then story on a database of its own, on both backends.
//!
//! One file per part of the rules:
//! - `firing`: one-shot and `andEvery` tasks, and the kwargs their instances capture.
//! - `unless`: which instances an abandoning trigger reaches, and which it leaves alone.
//! - `cascades`: kwargs merged under params, finished tasks firing their own name.
//! - `replay`: replay and skip of failed instances, and jobs that skip or retry themselves.
//! - `manual`: manual changes (status, metadata, resolved logs) and the unresolved queries.
//! - `idempotency`: idempotency keys, runners and handlers.
//! - `questionnaire`: the questionnaire example, end to end.
//! - `log`: the log: causes, `asOf`, `causedBy`, timestamps and reads.

mod cascades;
mod firing;
mod idempotency;
mod log;
mod manual;
mod questionnaire;
mod replay;
mod unless;
