//! The GraphQL object types (docs/graphql.md), as thin views over engine values.
//!
//! A [`Session`] holds one folded [`SessionState`] (the live one, or one folded up
//! to a version for `asOf`), and every object reached from it reads that same
//! state, so one answer is one consistent snapshot: nested `events` and
//! `history` stop at the state's version too.

use std::sync::Arc;

use async_graphql::{Context, Object, Result};

use super::error::{bad_input, GqlResult};
use super::scalars::{DateTime, Json, JsonRef};
use super::{check_text, engine, page_size};
use crate::domain::{self, Instance, InstanceName, SessionState, SessionUid};
use crate::store::{EventQuery, EventWindow};

mod event;
mod listing;
mod outcomes;
mod task;

pub use event::Event;
pub use listing::{SessionSummary, StatusCount};
pub use outcomes::{FireResultObject, TaskClaimObject};
pub use task::TaskConfigObject;

/// The GraphQL `InstanceStatus` is the domain's (it derives the enum).
pub use crate::domain::InstanceStatus;

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

    fn task_view(&self, name: &str) -> Option<TaskConfigObject> {
        TaskConfigObject::in_state(&self.state, name)
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

    /// When the last event folded into this view was decided; null for a
    /// session never used.
    async fn updated_at(&self) -> Option<DateTime> {
        self.state.updated_at().map(DateTime::from)
    }

    /// This view's instances counted by status, in the order of
    /// `InstanceStatus`; statuses with no instance are left out.
    async fn instance_counts(&self) -> Vec<StatusCount> {
        let instances = self.state.instances();
        StatusCount::list(domain::InstanceStatus::ALL.map(|status| {
            let count = instances.iter().filter(|i| i.status == status).count();
            (status, count as u64)
        }))
    }

    /// Every configured task, by name.
    async fn tasks(&self) -> Vec<TaskConfigObject> {
        self.state
            .tasks()
            .filter_map(|(name, _)| self.task_view(name))
            .collect()
    }

    /// One task, or null if it is not configured.
    async fn task(
        &self,
        #[graphql(desc = "The task name.")] name: String,
    ) -> Option<TaskConfigObject> {
        self.task_view(&name)
    }

    /// Instances in creation order, optionally only those of one task and/or with
    /// one of the given statuses; all of them, or a page when `first` is given.
    async fn instances(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only instances with one of these statuses (all when absent or empty).")]
        status: Option<Vec<InstanceStatus>>,
        #[graphql(desc = "Only instances of this task.")] task: Option<String>,
        #[graphql(desc = "Page size (at most 1000); all matching instances when absent.")]
        first: Option<i32>,
        #[graphql(
            desc = "The name of the last instance of the previous page (exclusive): the page continues after it in creation order."
        )]
        after: Option<String>,
    ) -> Result<Vec<TaskInstance>> {
        let first = match first {
            Some(first) => page_size(ctx, Some(first))? as usize,
            None => usize::MAX,
        };
        let start = match after {
            Some(after) => self.position(&after).map(|p| p + 1).ok_or_else(|| {
                bad_input(format!(
                    "after: session {:?} has no instance {after:?}",
                    self.state.uid()
                ))
            })?,
            None => 0,
        };
        let statuses = status.unwrap_or_default();
        Ok(self
            .state
            .instances()
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, i)| task.as_deref().is_none_or(|t| i.task == t))
            .filter(|(_, i)| statuses.is_empty() || statuses.contains(&i.status))
            .take(first)
            .map(|(position, _)| self.instance_view(position))
            .collect())
    }

    /// One instance by name (`<task>#<n>`), or null.
    async fn instance(
        &self,
        #[graphql(desc = "The instance name (`<task>#<n>`).")] name: String,
    ) -> Option<TaskInstance> {
        self.position(&name).map(|p| self.instance_view(p))
    }

    /// Tasks with no instance yet, or with an unresolved instance.
    async fn unresolved_tasks(&self) -> Vec<TaskConfigObject> {
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

    /// The timeline, ascending, up to this view's version: the first `first`
    /// (default 100, at most 1000) events with seq > `after` (default 0), or
    /// with `before`, the last `first` events with seq < `before`; only those of
    /// the given kinds and/or about one instance when asked.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only events with a greater seq (exclusive; default 0).")] after: Option<
            i64,
        >,
        #[graphql(desc = "Page size: default 100, at most 1000.")] first: Option<i32>,
        #[graphql(
            desc = "The last events with a smaller seq (exclusive), instead of the first after `after`: paging backwards."
        )]
        before: Option<i64>,
        #[graphql(
            desc = "Only events of these kinds (`TriggerFired`, ...; all when absent or empty)."
        )]
        kinds: Option<Vec<String>>,
        #[graphql(desc = "Only events about this instance (`<task>#<n>`).")] instance: Option<
            String,
        >,
    ) -> Result<Vec<Event>> {
        let limit = u64::from(page_size(ctx, first)?);
        let window = match (after, before) {
            (Some(_), Some(_)) => {
                return Err(bad_input(
                    "events: give `after` (paging forwards) or `before` (backwards), not both",
                ))
            }
            (_, Some(before)) => EventWindow::Before(non_negative(before, "before")?),
            (after, None) => EventWindow::After(non_negative(after.unwrap_or(0), "after")?),
        };
        let kinds = kinds.unwrap_or_default();
        if let Some(unknown) = kinds
            .iter()
            .find(|k| !domain::EVENT_KINDS.contains(&k.as_str()))
        {
            return Err(bad_input(format!(
                "kinds: no event kind is called {unknown:?}; the kinds are {}",
                domain::EVENT_KINDS.join(", ")
            )));
        }
        check_text("instance", instance.as_deref())?;
        let query = EventQuery {
            kinds: &kinds,
            instance: instance.as_deref(),
            window,
            up_to: self.state.version(),
            limit,
        };
        let events = engine(ctx)
            .session_events(&SessionUid::stored(self.state.uid()), &query)
            .await
            .gql()?;
        Ok(events.into_iter().map(Event::from).collect())
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
            .session_as_of(&SessionUid::stored(self.state.uid()), version)
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
                let session = SessionUid::stored(session);
                let state = engine(ctx).session(&session).await.gql()?;
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
        self.inner().status
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

    /// The instances replaying this one (their `parent` is this one), in
    /// creation order.
    async fn clones(&self, ctx: &Context<'_>) -> Result<Vec<TaskInstance>> {
        let name = &self.inner().name;
        let state = match &self.source {
            InstanceSource::State(state, _) => state.clone(),
            InstanceSource::Owned { session, .. } => engine(ctx)
                .session(&SessionUid::stored(session))
                .await
                .gql()?,
        };
        Ok(state
            .instances()
            .iter()
            .enumerate()
            .filter(|(_, i)| i.parent.as_deref() == Some(name.as_str()))
            .map(|(position, _)| TaskInstance::in_state(state.clone(), position))
            .collect())
    }

    /// The attempt number: 0 for an original instance, +1 per replay.
    async fn depth(&self) -> i64 {
        i64::from(self.inner().depth)
    }

    /// Every event about this instance, ascending.
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<Event>> {
        let events = engine(ctx)
            .instance_history(
                &SessionUid::stored(self.session_uid()),
                &InstanceName::stored(&self.inner().name),
            )
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
            .events_by_seq(&SessionUid::stored(self.session_uid()), &seqs)
            .await
            .gql()?;
        Ok(self.visible(events))
    }
}
