//! The GraphQL object types (docs/graphql.md), as thin views over engine values.
//!
//! A [`Session`] holds one folded [`SessionState`] (the live one, or one folded up
//! to a version for `asOf`), and every object reached from it reads that same
//! state, so one answer is one consistent snapshot: nested `events` and
//! `history` stop at the state's version too.

use std::sync::Arc;

use async_graphql::{Context, Enum, Object, Result, SimpleObject};

use super::error::{bad_input, GqlResult};
use super::scalars::{DateTime, Json, JsonRef};
use super::{engine, page_size};
use crate::domain::{self, Instance, SessionState};
use crate::engine::Claim;

/// Where an instance is in its life (docs/concepts.md, "Instances").
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "InstanceStatus")]
pub enum InstanceStatus {
    /// Created by a trigger, waiting for the rest of its `after` set.
    Unstarted,
    /// Every `after` trigger fired; handed to its runner.
    Scheduled,
    /// A runner started it.
    Running,
    /// The job returned a result; its cascade has fired.
    Finished,
    /// The job failed (or retried itself).
    Failed,
    /// Skipped by the job itself or by an operator.
    Skipped,
    /// A failed instance that was replayed as a clone.
    Replayed,
    /// Its `unless` set fired before it started.
    Abandoned,
}

impl From<domain::InstanceStatus> for InstanceStatus {
    fn from(status: domain::InstanceStatus) -> Self {
        use domain::InstanceStatus as S;
        match status {
            S::Unstarted => Self::Unstarted,
            S::Scheduled => Self::Scheduled,
            S::Running => Self::Running,
            S::Finished => Self::Finished,
            S::Failed => Self::Failed,
            S::Skipped => Self::Skipped,
            S::Replayed => Self::Replayed,
            S::Abandoned => Self::Abandoned,
        }
    }
}

impl From<InstanceStatus> for domain::InstanceStatus {
    fn from(status: InstanceStatus) -> Self {
        use domain::InstanceStatus as S;
        match status {
            InstanceStatus::Unstarted => S::Unstarted,
            InstanceStatus::Scheduled => S::Scheduled,
            InstanceStatus::Running => S::Running,
            InstanceStatus::Finished => S::Finished,
            InstanceStatus::Failed => S::Failed,
            InstanceStatus::Skipped => S::Skipped,
            InstanceStatus::Replayed => S::Replayed,
            InstanceStatus::Abandoned => S::Abandoned,
        }
    }
}

/// Parses a non-negative `Int` argument.
pub(super) fn non_negative(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| bad_input(format!("{what} must be >= 0, got {value}")))
}

/// Seqs and versions are `Int`: i64 on the wire.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A session: its tasks, instances and timeline, as of one version.
pub struct Session {
    state: Arc<SessionState>,
}

impl Session {
    /// A view of this state.
    pub fn new(state: Arc<SessionState>) -> Self {
        Self { state }
    }

    fn instance_view(&self, position: usize) -> TaskInstance {
        TaskInstance::in_state(self.state.clone(), position)
    }

    fn task_view(&self, name: &str) -> Option<TaskConfig> {
        TaskConfig::in_state(&self.state, name)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.state.instances().iter().position(|i| i.name == name)
    }
}

/// A session: an isolated container of tasks, instances and events.
#[Object]
impl Session {
    /// The caller-chosen UID.
    async fn uid(&self) -> &str {
        self.state.uid()
    }

    /// The seq of the last event folded into this view (0 for a session never used).
    async fn version(&self) -> i64 {
        int(self.state.version())
    }

    /// Every configured task, by name.
    async fn tasks(&self) -> Vec<TaskConfig> {
        self.state
            .tasks()
            .filter_map(|(name, _)| self.task_view(name))
            .collect()
    }

    /// One task, or null if it is not configured.
    async fn task(&self, #[graphql(desc = "The task name.")] name: String) -> Option<TaskConfig> {
        self.task_view(&name)
    }

    /// Instances in creation order, optionally only those of one task and/or with
    /// one of the given statuses.
    async fn instances(
        &self,
        #[graphql(desc = "Only instances with one of these statuses (all when absent or empty).")]
        status: Option<Vec<InstanceStatus>>,
        #[graphql(desc = "Only instances of this task.")] task: Option<String>,
    ) -> Vec<TaskInstance> {
        let statuses: Vec<domain::InstanceStatus> = status
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect();
        self.state
            .instances()
            .iter()
            .enumerate()
            .filter(|(_, i)| task.as_deref().is_none_or(|t| i.task == t))
            .filter(|(_, i)| statuses.is_empty() || statuses.contains(&i.status))
            .map(|(position, _)| self.instance_view(position))
            .collect()
    }

    /// One instance by name (`<task>#<n>`), or null.
    async fn instance(
        &self,
        #[graphql(desc = "The instance name (`<task>#<n>`).")] name: String,
    ) -> Option<TaskInstance> {
        self.position(&name).map(|p| self.instance_view(p))
    }

    /// Tasks with no instance yet, or with an unresolved instance.
    async fn unresolved_tasks(&self) -> Vec<TaskConfig> {
        self.state
            .unresolved_tasks()
            .into_iter()
            .filter_map(|name| self.task_view(name))
            .collect()
    }

    /// Instances that are not finished, skipped, replayed or abandoned.
    async fn unresolved_instances(&self) -> Vec<TaskInstance> {
        self.filtered(|i| !i.is_resolved())
    }

    /// Instances that logged at ERROR or worse and that nobody marked resolved.
    async fn instances_with_unresolved_logs(&self) -> Vec<TaskInstance> {
        self.filtered(Instance::has_unresolved_logs)
    }

    /// The most recent kwargs of every trigger fired, by trigger name.
    async fn latest_kwargs(&self) -> Json {
        self.state.latest_kwargs().into()
    }

    /// The timeline: events with seq > `after` (default 0), ascending, at most
    /// `first` (default 100, at most 1000), up to this view's version.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only events with a greater seq (exclusive; default 0).")] after: Option<
            i64,
        >,
        #[graphql(desc = "Page size: default 100, at most 1000.")] first: Option<i32>,
    ) -> Result<Vec<Event>> {
        let after = non_negative(after.unwrap_or(0), "after")?;
        let first = u64::from(page_size(ctx, first)?);
        let version = self.state.version();
        if after >= version || first == 0 {
            return Ok(Vec::new());
        }
        let first = first.min(version - after);
        let events = engine(ctx)
            .events(self.state.uid(), after, Some(first))
            .await
            .gql()?;
        Ok(events
            .into_iter()
            .filter(|e| e.seq <= version)
            .map(Event::from)
            .collect())
    }

    /// The session as it was right after event `version` (0: before anything
    /// happened): exactly the fold of events 1..version.
    async fn as_of(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The seq of the last event to fold (0 to the session's version).")]
        version: i64,
    ) -> Result<Session> {
        let current = self.state.version();
        let version = non_negative(version, "version")?;
        if version > current {
            return Err(bad_input(format!(
                "asOf(version: {version}): session {:?} is at version {current}",
                self.state.uid()
            )));
        }
        if version == current {
            return Ok(Session::new(self.state.clone()));
        }
        let state = engine(ctx)
            .session_as_of(self.state.uid(), version)
            .await
            .gql()?;
        Ok(Session::new(Arc::new(state)))
    }
}

impl Session {
    fn filtered(&self, keep: impl Fn(&Instance) -> bool) -> Vec<TaskInstance> {
        self.state
            .instances()
            .iter()
            .enumerate()
            .filter(|(_, i)| keep(i))
            .map(|(position, _)| self.instance_view(position))
            .collect()
    }
}

/// A configured task, read from one session view.
pub struct TaskConfig {
    state: Arc<SessionState>,
    name: String,
    config: Arc<domain::TaskConfig>,
}

impl TaskConfig {
    fn in_state(state: &Arc<SessionState>, name: &str) -> Option<Self> {
        Some(Self {
            config: state.task_arc(name)?,
            state: state.clone(),
            name: name.to_owned(),
        })
    }
}

/// A named rule of a session: which triggers must fire, and what then runs.
#[Object]
impl TaskConfig {
    /// The task name (conventionally `t_...`).
    async fn name(&self) -> &str {
        &self.name
    }

    /// Triggers that must all fire before an instance can run; sorted, and
    /// includes `andEvery`.
    async fn after(&self) -> &[String] {
        &self.config.after
    }

    /// Every firing of this trigger makes (or completes) an instance.
    async fn and_every(&self) -> Option<&str> {
        self.config.and_every.as_deref()
    }

    /// Once all of these fired for an unstarted instance, it is abandoned; sorted.
    async fn unless(&self) -> &[String] {
        &self.config.unless
    }

    /// The handler or job to run.
    async fn run(&self) -> &str {
        &self.config.run
    }

    /// The runner: `inline`, `worker` or `worker:<queue>`; null for the default.
    async fn using(&self) -> Option<&str> {
        self.config.using.as_deref()
    }

    /// Where this server sends its instances: `inline`, or `worker:<queue>`
    /// (a `run` with no handler here and no `using` goes to `worker:default`).
    async fn runner(&self, ctx: &Context<'_>) -> String {
        let has_handler = engine(ctx).registry().contains(&self.config.run);
        self.config.runner(has_handler).to_string()
    }

    /// Static kwargs merged under the trigger kwargs when an instance runs.
    async fn with_params(&self) -> JsonRef<'_> {
        (&self.config.with_params).into()
    }

    /// How many times an instance may retry itself.
    async fn max_retries(&self) -> i64 {
        i64::from(self.config.max_retries)
    }

    /// Every other directive, verbatim.
    async fn extras(&self) -> JsonRef<'_> {
        (&self.config.extras).into()
    }

    /// This task's instances in creation order.
    async fn instances(&self) -> Vec<TaskInstance> {
        self.state
            .instances()
            .iter()
            .enumerate()
            .filter(|(_, i)| i.task == self.name)
            .map(|(position, _)| TaskInstance::in_state(self.state.clone(), position))
            .collect()
    }
}

/// Where a [`TaskInstance`] reads its instance from.
enum InstanceSource {
    /// A position in a session view: no copy, and the task config at hand.
    State(Arc<SessionState>, usize),
    /// An instance on its own (a mutation's result, a listing row).
    Owned {
        session: String,
        instance: Box<Instance>,
    },
}

/// One instance, for the `TaskInstance` type.
pub struct TaskInstance {
    source: InstanceSource,
}

impl TaskInstance {
    fn in_state(state: Arc<SessionState>, position: usize) -> Self {
        Self {
            source: InstanceSource::State(state, position),
        }
    }

    /// An instance of `session` on its own (its task config is loaded on demand).
    pub fn owned(session: impl Into<String>, instance: Instance) -> Self {
        Self {
            source: InstanceSource::Owned {
                session: session.into(),
                instance: Box::new(instance),
            },
        }
    }

    /// The instance named `name` in a session view, if it has one.
    pub fn named(state: &Arc<SessionState>, name: &str) -> Option<Self> {
        let position = state.instances().iter().position(|i| i.name == name)?;
        Some(Self::in_state(state.clone(), position))
    }

    fn inner(&self) -> &Instance {
        match &self.source {
            InstanceSource::State(state, position) => &state.instances()[*position],
            InstanceSource::Owned { instance, .. } => instance,
        }
    }

    fn session_uid(&self) -> &str {
        match &self.source {
            InstanceSource::State(state, _) => state.uid(),
            InstanceSource::Owned { session, .. } => session,
        }
    }

    /// Answers with the instance's task config.
    async fn with_task<T>(
        &self,
        ctx: &Context<'_>,
        answer: impl Fn(&Instance, &domain::TaskConfig) -> T,
    ) -> Result<Option<T>> {
        let inst = self.inner();
        match &self.source {
            InstanceSource::State(state, _) => Ok(state.task(&inst.task).map(|t| answer(inst, t))),
            InstanceSource::Owned { session, .. } => {
                let state = engine(ctx).session(session).await.gql()?;
                Ok(state.task(&inst.task).map(|t| answer(inst, t)))
            }
        }
    }

    /// Events from a view stop at its version; others are as stored now.
    fn visible(&self, events: Vec<domain::Event>) -> Vec<Event> {
        let limit = match &self.source {
            InstanceSource::State(state, _) => state.version(),
            InstanceSource::Owned { .. } => u64::MAX,
        };
        events
            .into_iter()
            .filter(|e| e.seq <= limit)
            .map(Event::from)
            .collect()
    }
}

/// One execution of a task, named `<task>#<n>`.
#[Object]
impl TaskInstance {
    /// The session UID.
    async fn session(&self) -> &str {
        self.session_uid()
    }

    /// `<task>#<n>`.
    async fn name(&self) -> &str {
        &self.inner().name
    }

    /// The task it belongs to.
    async fn task(&self) -> &str {
        &self.inner().task
    }

    /// Where it is in its life.
    async fn status(&self) -> InstanceStatus {
        self.inner().status.into()
    }

    /// The kwargs of its `after` triggers, keyed by trigger name.
    async fn kwargs(&self) -> JsonRef<'_> {
        (&self.inner().kwargs).into()
    }

    /// The `unless` triggers that fired for it, sorted.
    async fn abandon_state(&self) -> Vec<&str> {
        self.inner()
            .abandon_state
            .iter()
            .map(String::as_str)
            .collect()
    }

    /// Timestamps, results, errors and operator metadata.
    async fn metadata(&self) -> JsonRef<'_> {
        (&self.inner().metadata).into()
    }

    /// The result it finished (or was skipped) with, if any.
    async fn result(&self) -> Option<JsonRef<'_>> {
        self.inner().result().map(JsonRef::from)
    }

    /// The highest log level recorded (0 when none was).
    async fn log_level(&self) -> i64 {
        self.inner().log_level()
    }

    /// Finished, skipped, replayed or abandoned.
    async fn is_resolved(&self) -> bool {
        self.inner().is_resolved()
    }

    /// Unstarted, with its whole `after` set present, and not about to be abandoned.
    async fn can_run(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(self
            .with_task(ctx, |i, t| i.can_run(t))
            .await?
            .unwrap_or(false))
    }

    /// Unstarted, with a non-empty `unless` set that has fully fired.
    async fn can_abandon(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(self
            .with_task(ctx, |i, t| i.can_abandon(t))
            .await?
            .unwrap_or(false))
    }

    /// Failed: `replayFailedInstance` accepts it.
    async fn can_replay(&self) -> bool {
        self.inner().can_replay()
    }

    /// Failed: `skipFailedInstance` accepts it.
    async fn can_skip(&self) -> bool {
        self.inner().can_skip()
    }

    /// The failed instance this one replays.
    async fn parent(&self) -> Option<&str> {
        self.inner().parent.as_deref()
    }

    /// The attempt number: 0 for an original instance, +1 per replay.
    async fn depth(&self) -> i64 {
        i64::from(self.inner().depth)
    }

    /// Every event about this instance, ascending.
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<Event>> {
        let events = engine(ctx)
            .instance_history(self.session_uid(), &self.inner().name)
            .await
            .gql()?;
        Ok(self.visible(events))
    }

    /// The `TriggerFired` events whose kwargs this instance holds (inherited ones
    /// included, pointing at the original firing) or whose `unless` it recorded.
    async fn causes(&self, ctx: &Context<'_>) -> Result<Vec<Event>> {
        let seqs = self.inner().cause_seqs();
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let events = engine(ctx)
            .events_by_seq(self.session_uid(), &seqs)
            .await
            .gql()?;
        Ok(self.visible(events))
    }
}

/// One event of a session's log.
pub struct Event(domain::Event);

impl From<domain::Event> for Event {
    fn from(event: domain::Event) -> Self {
        Event(event)
    }
}

/// A fact of a session's log.
#[Object]
impl Event {
    /// Gap-free per-session sequence number from 1: the session's version after it.
    async fn seq(&self) -> i64 {
        int(self.0.seq)
    }

    /// The event kind (`TriggerFired`, `InstanceFinished`, ...).
    async fn kind(&self) -> &str {
        self.0.payload.kind()
    }

    /// When the decision was taken.
    async fn at(&self) -> DateTime {
        self.0.at.into()
    }

    /// The payload (for `TriggerFired`: `{"trigger": ..., "kwargs": {...}}`).
    async fn data(&self) -> Json {
        Json(self.0.payload.to_data())
    }

    /// The seq of the event that led to this one; null for what a caller did.
    async fn caused_by(&self) -> Option<i64> {
        self.0.caused_by.map(int)
    }

    /// The instance this event is about, if any.
    async fn instance(&self) -> Option<&str> {
        self.0.payload.instance()
    }

    /// The trigger this event is about, if any.
    async fn trigger(&self) -> Option<&str> {
        self.0.payload.trigger()
    }
}

/// What a `fire` did.
pub struct FireResult {
    uid: String,
    event: domain::Event,
    scheduled: Vec<String>,
    abandoned: Vec<String>,
    duplicate: bool,
    /// Read only when `session`, `scheduled` or `abandoned` is asked for: most
    /// callers want the event alone, and a fire should cost one commit.
    state: tokio::sync::OnceCell<Arc<SessionState>>,
}

impl FireResult {
    /// The result of a fire; the session is read after it, on demand.
    pub fn new(event: domain::Event, result: crate::engine::FireResult) -> Self {
        Self {
            uid: result.session,
            event,
            scheduled: result.scheduled,
            abandoned: result.abandoned,
            duplicate: result.duplicate,
            state: tokio::sync::OnceCell::new(),
        }
    }

    async fn state(&self, ctx: &Context<'_>) -> Result<&Arc<SessionState>> {
        self.state
            .get_or_try_init(|| async { engine(ctx).session(&self.uid).await.gql() })
            .await
    }

    async fn instances(&self, ctx: &Context<'_>, names: &[String]) -> Result<Vec<TaskInstance>> {
        let state = self.state(ctx).await?;
        Ok(names
            .iter()
            .filter_map(|name| TaskInstance::named(state, name))
            .collect())
    }
}

/// What a `fire` did.
#[Object]
impl FireResult {
    /// The session after the fire.
    async fn session(&self, ctx: &Context<'_>) -> Result<Session> {
        Ok(Session::new(self.state(ctx).await?.clone()))
    }

    /// The `TriggerFired` event (the first one, for a duplicate).
    async fn event(&self) -> Event {
        Event(self.event.clone())
    }

    /// Instances this fire scheduled (not those of later cascades).
    async fn scheduled(&self, ctx: &Context<'_>) -> Result<Vec<TaskInstance>> {
        self.instances(ctx, &self.scheduled).await
    }

    /// Instances this fire abandoned.
    async fn abandoned(&self, ctx: &Context<'_>) -> Result<Vec<TaskInstance>> {
        self.instances(ctx, &self.abandoned).await
    }

    /// The idempotency key was used before: nothing was appended.
    async fn duplicate(&self) -> bool {
        self.duplicate
    }
}

/// One row of the `sessions` listing.
#[derive(SimpleObject)]
#[graphql(name = "SessionSummary")]
pub struct SessionSummary {
    /// The session UID.
    pub uid: String,
    /// Its version (seq of its last event).
    pub version: i64,
    /// When its last event was decided.
    pub updated_at: DateTime,
}

impl From<crate::store::SessionSummary> for SessionSummary {
    fn from(summary: crate::store::SessionSummary) -> Self {
        Self {
            uid: summary.uid,
            version: int(summary.version),
            updated_at: summary.updated_at.into(),
        }
    }
}

/// An instance handed to an external worker under a lease.
#[derive(SimpleObject)]
#[graphql(name = "TaskClaim")]
pub struct TaskClaim {
    /// Names the claim in `heartbeat`, `completeTask`, `failTask` and `skipTask`.
    pub lease_token: String,
    /// The session.
    pub session: String,
    /// The instance (`<task>#<n>`).
    pub instance: String,
    /// The job to run.
    pub run: String,
    /// The kwargs to run it with (`withParams` merged under the trigger kwargs).
    pub kwargs: Json,
    /// The instance's depth + 1.
    pub attempt: i64,
    /// When the lease ends unless renewed with `heartbeat`.
    pub lease_expires_at: DateTime,
}

impl From<Claim> for TaskClaim {
    fn from(claim: Claim) -> Self {
        Self {
            lease_token: claim.lease_token,
            session: claim.session,
            instance: claim.instance,
            run: claim.run,
            kwargs: claim.kwargs.into(),
            attempt: i64::from(claim.attempt),
            lease_expires_at: claim.lease_expires_at.into(),
        }
    }
}
