//! Running COMMAND for one claim: the task as JSON on standard input, and the
//! judgement of what it did (exit status, standard output, the tail of standard
//! error) as the outcome to report.

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::engine::Claim;

/// `errorType` of a command that exited unsuccessfully (or was killed by a signal).
const COMMAND_FAILED: &str = "triggers.work.CommandFailed";
/// `errorType` of a command that exited 0 without printing one JSON object.
const INVALID_RESULT: &str = "triggers.work.InvalidResult";
/// `errorType` of a command that could not be started at all.
const COMMAND_NOT_STARTED: &str = "triggers.work.CommandNotStarted";

/// How much of standard error becomes the reported error, in bytes.
const STDERR_TAIL: usize = 4096;
/// The largest standard output accepted as a result, in bytes.
const MAX_STDOUT: usize = 16 * 1024 * 1024;

/// What a run of COMMAND came to.
#[derive(Debug, PartialEq)]
pub(super) enum CommandOutcome {
    /// Report `completeTask` with this result.
    Complete(Value),
    /// Report `failTask`.
    Fail {
        error: String,
        error_type: &'static str,
        context: Value,
    },
}

/// Runs `command` with the task on standard input; what it came to.
pub(super) async fn execute(command: &[String], claim: &Claim) -> CommandOutcome {
    let input = json!({
        "session": claim.session,
        "instance": claim.instance,
        "run": claim.run,
        "kwargs": claim.kwargs,
        "attempt": claim.attempt,
    });
    let mut process = Command::new(&command[0]);
    process
        .args(&command[1..])
        .env("TRIGGERS_SESSION", &claim.session)
        .env("TRIGGERS_INSTANCE", &claim.instance)
        .env("TRIGGERS_RUN", &claim.run)
        .env("TRIGGERS_ATTEMPT", claim.attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match process.spawn() {
        Ok(child) => child,
        Err(err) => {
            return CommandOutcome::Fail {
                error: format!("cannot start {:?}: {err}", command[0]),
                error_type: COMMAND_NOT_STARTED,
                context: json!({"command": command}),
            }
        }
    };
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A command that does not read its input closes the pipe early:
            // that is its business, not a failure.
            let _ = stdin.write_all(input.to_string().as_bytes()).await;
            let _ = stdin.write_all(b"\n").await;
            let _ = stdin.shutdown().await;
        }
        drop(stdin);
    };
    let (_, stdout, stderr, status) = tokio::join!(
        feed,
        read_pipe(stdout, MAX_STDOUT, Keep::First),
        read_pipe(stderr, STDERR_TAIL, Keep::Last),
        child.wait(),
    );
    match status {
        Ok(status) => outcome(status.success(), status.code(), &stdout, &stderr),
        Err(err) => CommandOutcome::Fail {
            error: format!("cannot wait for the command: {err}"),
            error_type: COMMAND_FAILED,
            context: json!({}),
        },
    }
}

/// Judges a finished command by its exit and output.
fn outcome(success: bool, code: Option<i32>, stdout: &Output, stderr: &Output) -> CommandOutcome {
    let stderr_text = String::from_utf8_lossy(&stderr.bytes).trim().to_owned();
    if !success {
        let how = match code {
            Some(code) => format!("the command exited with status {code}"),
            None => "the command was killed by a signal".to_owned(),
        };
        return CommandOutcome::Fail {
            error: if stderr_text.is_empty() {
                how
            } else {
                stderr_text
            },
            error_type: COMMAND_FAILED,
            context: json!({"exitCode": code, "stderrTruncated": stderr.truncated}),
        };
    }
    if stdout.truncated {
        return CommandOutcome::Fail {
            error: format!("the command printed more than {MAX_STDOUT} bytes on standard output"),
            error_type: INVALID_RESULT,
            context: json!({"exitCode": code}),
        };
    }
    match serde_json::from_slice::<Value>(&stdout.bytes) {
        Ok(result @ Value::Object(_)) => CommandOutcome::Complete(result),
        _ => {
            let printed = String::from_utf8_lossy(&stdout.bytes);
            let printed = tail(printed.trim(), 512);
            CommandOutcome::Fail {
                error: format!(
                    "the command exited 0 but did not print one JSON object on standard output \
                     (it printed {printed:?}){}",
                    if stderr_text.is_empty() {
                        String::new()
                    } else {
                        format!("; standard error: {stderr_text}")
                    }
                ),
                error_type: INVALID_RESULT,
                context: json!({"exitCode": code}),
            }
        }
    }
}

/// Bytes read from a pipe, and whether some were dropped.
#[derive(Debug, Default)]
struct Output {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Which bytes of a pipe to keep once it gives more than the limit.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The first ones (a result: more than the limit is refused anyway).
    First,
    /// The last ones (an error: its end says the most).
    Last,
}

/// Reads all of `pipe`, keeping `limit` bytes of it at most.
async fn read_pipe(pipe: Option<impl AsyncRead + Unpin>, limit: usize, keep: Keep) -> Output {
    let mut output = Output::default();
    let Some(mut pipe) = pipe else {
        return output;
    };
    let mut buffer = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        match keep {
            Keep::First => {
                let room = limit.saturating_sub(output.bytes.len());
                output.bytes.extend_from_slice(&buffer[..n.min(room)]);
                output.truncated |= n > room;
            }
            Keep::Last => {
                output.bytes.extend_from_slice(&buffer[..n]);
                if output.bytes.len() > limit {
                    let excess = output.bytes.len() - limit;
                    output.bytes.drain(..excess);
                    output.truncated = true;
                }
            }
        }
    }
    output
}

/// The last `max` characters of `text`.
fn tail(text: &str, max: usize) -> &str {
    let count = text.chars().count();
    match text.char_indices().nth(count.saturating_sub(max)) {
        Some((start, _)) if count > max => &text[start..],
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(text: &str) -> Output {
        Output {
            bytes: text.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn a_json_object_on_stdout_after_exit_0_is_the_result() {
        assert_eq!(
            outcome(true, Some(0), &out(" {\"ok\": true}\n"), &out("")),
            CommandOutcome::Complete(json!({"ok": true}))
        );
    }

    #[test]
    fn a_non_zero_exit_fails_with_the_stderr_tail() {
        let CommandOutcome::Fail {
            error, error_type, ..
        } = outcome(
            false,
            Some(3),
            &out("{}"),
            &out("Traceback...\nValueError: x\n"),
        )
        else {
            panic!("expected a failure");
        };
        assert_eq!(error_type, COMMAND_FAILED);
        assert_eq!(error, "Traceback...\nValueError: x");
    }

    #[test]
    fn stdout_that_is_not_one_object_is_an_invalid_result() {
        for printed in ["", "[1]", "ok", "{} {}"] {
            let CommandOutcome::Fail { error_type, .. } =
                outcome(true, Some(0), &out(printed), &out(""))
            else {
                panic!("expected a failure for {printed:?}");
            };
            assert_eq!(error_type, INVALID_RESULT, "for {printed:?}");
        }
    }

    #[tokio::test]
    async fn the_stderr_tail_keeps_the_last_bytes() {
        let text = "x".repeat(10_000) + "END";
        let output = read_pipe(Some(text.as_bytes()), 100, Keep::Last).await;
        assert!(output.truncated);
        assert_eq!(output.bytes.len(), 100);
        assert!(output.bytes.ends_with(b"END"));
    }

    #[tokio::test]
    async fn stdout_past_the_limit_keeps_its_first_bytes_and_says_so() {
        let text = "START".to_owned() + &"x".repeat(10_000);
        let output = read_pipe(Some(text.as_bytes()), 100, Keep::First).await;
        assert!(output.truncated);
        assert_eq!(output.bytes.len(), 100);
        assert!(output.bytes.starts_with(b"START"));
        let short = read_pipe(Some(&b"{}"[..]), 100, Keep::First).await;
        assert!(!short.truncated);
        assert_eq!(short.bytes, b"{}");
    }

    #[test]
    fn tail_counts_characters() {
        assert_eq!(tail("héllo", 3), "llo");
        assert_eq!(tail("hé", 5), "hé");
    }
}
