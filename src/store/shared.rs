//! The Rust both backends run alike, written once as macros that each backend
//! expands inside its own `impl` blocks: the reads whose SQL is shared
//! ([`super::sql`]), the write plan's statements on a connection, and a locked
//! session's read and commit. Only the sqlx types differ between the two
//! expansions (`SqlitePool` or `PgPool`, their rows and connections), which
//! generic code over `sqlx::Database` would have to spell out as a dozen
//! trait bounds per function.
//!
//! Each backend module provides what the macros call by name:
//! - `at(DateTime<Utc>)`: a timestamp as the backend binds it;
//! - `limit(Option<u64>)`: a row limit (none is `-1` on SQLite, NULL on PostgreSQL);
//! - `write::STEPS`: its SQL for each step of the write plan;
//! - on the store, `snapshot_turn()`: what a snapshot write waits for first;
//! - for [`Admin`](super::Admin): `keys(&[String])` (a list of keys as one
//!   parameter), `admin_tx()` (a write transaction, with what must be held
//!   while it is open), `guard_appends` (each append's version guard in that
//!   transaction), `insert_events` (one chunk of events), `INSERT_CHUNK`,
//!   `RECORD_PURGE`, `PURGES_DONE` and `STILL_PURGEABLE_SUFFIX`.

/// The SQL of each [`Step`](super::plan::Step) from the constants of the
/// module it is expanded in, with `lock` (`None` where the backend needs none).
macro_rules! step_sql {
    ($lock:expr) => {
        StepSql {
            lock: $lock,
            checks: CHECKS,
            stale: STALE,
            instances: INSTANCES,
            put_sessions: PUT_SESSIONS,
            drop_instances: DROP_INSTANCES,
            drop_queue: DROP_QUEUE,
            restore_queue: RESTORE_QUEUE,
            put_snapshots: PUT_SNAPSHOTS,
        }
    };
}

/// `impl Store for $store`: the backend's own methods, then those whose SQL
/// and decoding both backends share, on `self.pool`.
macro_rules! impl_store {
    ($store:ty, $db:ty { $($own:tt)* }) => {
    #[async_trait]
    impl Store for $store {
        $($own)*

        fn admin(&self) -> &dyn super::Admin {
            self
        }

        fn observe_groups(&self, observer: super::GroupObserver) {
            self.writer.observe(observer);
        }

        async fn ping(&self) -> StoreResult<()> {
            sqlx::query(PING).execute(&self.pool).await?;
            Ok(())
        }

        async fn commit(&self, commit: Commit<'_>) -> StoreResult<()> {
            // Encode everything before queueing for the writer.
            let Some(decision) = Decision::encode(commit)? else {
                return Ok(());
            };
            self.writer.commit(self, decision, self.timeout).await
        }

        async fn recent_sessions(&self, query: RecentSessions<'_>) -> StoreResult<Vec<SessionSummary>> {
            let mut select = browse::recent_sessions::<$db, _>(query, at);
            let rows = select.build().fetch_all(&self.pool).await?;
            rows.iter().map(browse::decode_summary).collect()
        }

        async fn instance_counts(
            &self,
            sessions: &[String],
        ) -> StoreResult<Vec<Vec<(InstanceStatus, u64)>>> {
            let rows = match browse::instance_counts::<$db>(sessions) {
                Some(mut select) => select.build().fetch_all(&self.pool).await?,
                None => Vec::new(),
            };
            let rows = rows.iter().map(browse::decode_count);
            browse::group_counts(sessions, rows.collect::<StoreResult<Vec<_>>>()?)
        }

        async fn session_events(&self, session: &SessionUid, query: &EventQuery<'_>) -> StoreResult<Vec<Event>> {
            let session = session.as_str();
            let Some((mut select, reverse)) = browse::session_events::<$db>(session, query)? else {
                return Ok(Vec::new());
            };
            let rows = select.build().fetch_all(&self.pool).await?;
            browse::decode_events(session, &rows, reverse)
        }

        async fn version(&self, session: &SessionUid) -> StoreResult<u64> {
            let session = session.as_str();
            let version: Option<i64> = sqlx::query_scalar(SESSION_VERSION)
                .bind(session)
                .fetch_optional(&self.pool)
                .await?;
            version.map_or(Ok(0), |v| to_u64(v, "session version"))
        }

        async fn events(&self, session: &SessionUid, after: u64, limit: Option<u64>) -> StoreResult<Vec<Event>> {
            let session = session.as_str();
            let rows = sqlx::query(EVENTS_AFTER)
                .bind(session)
                .bind(to_i64(after)?)
                .bind(self::limit(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(|row| decode_event(session, row)).collect()
        }

        async fn events_by_seq(&self, session: &SessionUid, seqs: &[u64]) -> StoreResult<Vec<Event>> {
            let session = session.as_str();
            let seqs = seqs
                .iter()
                .map(|&seq| to_i64(seq))
                .collect::<StoreResult<BTreeSet<_>>>()?
                .into_iter()
                .collect::<Vec<_>>();
            let mut events = Vec::with_capacity(seqs.len());
            // Chunks of an ascending list, each read in order: the whole is in order.
            for chunk in seqs.chunks(IN_CHUNK) {
                let mut select = QueryBuilder::<$db>::new(EVENTS_BY_SEQ);
                select.push_bind(session).push(" AND seq IN (");
                let mut list = select.separated(", ");
                for seq in chunk {
                    list.push_bind(*seq);
                }
                select.push(")").push(EVENTS_BY_SEQ_END);
                for row in select.build().fetch_all(&self.pool).await? {
                    events.push(decode_event(session, &row)?);
                }
            }
            Ok(events)
        }

        async fn instances(&self, query: InstanceQuery<'_>) -> StoreResult<Vec<InstanceRow>> {
            let InstanceQuery { statuses, task, first, after } = query;
            let mut select = QueryBuilder::<$db>::new(INSTANCES);
            if let Some((session, name)) = after {
                select
                    .push(INSTANCES_AFTER)
                    .push_bind(session)
                    .push(INSTANCES_AFTER_NAME)
                    .push_bind(name)
                    .push(")");
            }
            if !statuses.is_empty() {
                select.push(" AND status IN (");
                let mut list = select.separated(", ");
                for status in statuses {
                    list.push_bind(status.as_str());
                }
                select.push(")");
            }
            if let Some(task) = task {
                select.push(" AND task = ").push_bind(task);
            }
            select.push(INSTANCES_END).push_bind(i64::from(first));
            let rows = select.build().fetch_all(&self.pool).await?;
            rows.iter().map(decode_instance).collect()
        }

        async fn instance_events(&self, session: &SessionUid, instance: &InstanceName) -> StoreResult<Vec<Event>> {
            let (session, instance) = (session.as_str(), instance.as_str());
            let rows = sqlx::query(INSTANCE_EVENTS)
                .bind(session)
                .bind(instance)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(|row| decode_event(session, row)).collect()
        }

        async fn snapshot(&self, session: &SessionUid) -> StoreResult<Option<StoredSnapshot>> {
            let session = session.as_str();
            let Some(row) = sqlx::query(SNAPSHOT)
                .bind(session)
                .fetch_optional(&self.pool)
                .await?
            else {
                return Ok(None);
            };
            let version = to_u64(row.int("version")?, "snapshot version")?;
            let state = row.text("state")?.to_owned();
            Ok(Some(StoredSnapshot { version, state }))
        }

        async fn save_snapshot(&self, session: &SessionUid, snapshot: &StoredSnapshot) -> StoreResult<()> {
            let session = session.as_str();
            let _turn = self.snapshot_turn().await?;
            sqlx::query(SAVE_SNAPSHOT)
                .bind(session)
                .bind(to_i64(snapshot.version)?)
                .bind(&snapshot.state)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn sessions(
            &self,
            first: u32,
            after: Option<&str>,
        ) -> StoreResult<Vec<SessionSummary>> {
            let rows = sqlx::query(SESSIONS)
                .bind(after.unwrap_or(""))
                .bind(i64::from(first))
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|row| -> StoreResult<SessionSummary> {
                    Ok(SessionSummary {
                        uid: row.text("uid")?.to_owned(),
                        version: to_u64(row.int("version")?, "session version")?,
                        updated_at: row.timestamp("updated_at")?,
                    })
                })
                .collect()
        }

        async fn claimable(
            &self,
            queue: &str,
            now: DateTime<Utc>,
            limit: u32,
        ) -> StoreResult<Vec<QueueEntry>> {
            let rows = sqlx::query(CLAIMABLE)
                .bind(queue)
                .bind(at(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(decode_queue_entry).collect()
        }

        async fn lease(&self, token: &str) -> StoreResult<Option<QueueEntry>> {
            let row = sqlx::query(LEASED)
                .bind(token)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(decode_queue_entry).transpose()
        }

        async fn expired_leases(
            &self,
            now: DateTime<Utc>,
            limit: u32,
        ) -> StoreResult<Vec<QueueEntry>> {
            let rows = sqlx::query(EXPIRED_LEASES)
                .bind(at(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(decode_queue_entry).collect()
        }

        async fn session_uids(&self) -> StoreResult<Vec<String>> {
            Ok(sqlx::query_scalar(SESSION_UIDS)
                .fetch_all(&self.pool)
                .await?)
        }
    }
    };
}

/// `impl Exec for $exec`: the backend's own methods, then the single-statement
/// steps on the connection in `self.0`, with the SQL of `write::STEPS` (a step the backend has no SQL for
/// answers `None` and sends nothing).
macro_rules! impl_exec {
    ($exec:ident, $db:ty { $($own:tt)* }) => {
    impl $exec<'_> {
        /// A step that answers one column, `None` where the backend has no such step.
        async fn scalars<T>(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<T>>>
        where
            T: for<'r> sqlx::Decode<'r, $db> + sqlx::Type<$db> + Send + Unpin,
        {
            let Some(sql) = write::STEPS.of(step) else {
                return Ok(None);
            };
            plan::count_statements(1);
            let values = sqlx::query_scalar(sql)
                .bind(rows)
                .fetch_all(&mut *self.0)
                .await?;
            Ok(Some(values))
        }
    }

    #[async_trait]
    impl Exec for $exec<'_> {
        $($own)*

        async fn ints(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<i64>>> {
            self.scalars(step, rows).await
        }

        async fn texts(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<String>>> {
            self.scalars(step, rows).await
        }

        async fn run(&mut self, step: Step, rows: String) -> StoreResult<()> {
            if let Some(sql) = write::STEPS.of(step) {
                plan::count_statements(1);
                sqlx::query(sql).bind(rows).execute(&mut *self.0).await?;
            }
            Ok(())
        }
    }
    };
}

/// `impl LockedSession for $locked`, a transaction in `self.tx` for
/// `self.session`, its plan statements through `$exec`.
macro_rules! impl_locked_session {
    ($locked:ty, $exec:ident) => {
        #[async_trait]
        impl LockedSession for $locked {
            async fn events_after(&mut self, after: u64) -> StoreResult<Vec<Event>> {
                let rows = sqlx::query(EVENTS_AFTER)
                    .bind(&self.session)
                    .bind(to_i64(after)?)
                    .bind(self::limit(None))
                    .fetch_all(&mut *self.tx)
                    .await?;
                rows.iter()
                    .map(|row| decode_event(&self.session, row))
                    .collect()
            }

            async fn commit(mut self: Box<Self>, commit: Commit<'_>) -> StoreResult<()> {
                debug_assert_eq!(commit.session, self.session);
                let Some(decision) = Decision::encode(commit)? else {
                    return Ok(());
                };
                let mut outcomes =
                    plan::write_group(&mut $exec(&mut self.tx), &[&decision]).await?;
                // Refused: dropping the transaction rolls it back.
                outcomes.pop().expect("one outcome")?;
                self.tx.commit().await?;
                plan::count_statements(2);
                Ok(())
            }
        }
    };
}

/// Writes a group in the open transaction `$tx` through `$exec` and commits it,
/// unless no decision of the group stands (then dropping `$tx` rolls it back).
/// Evaluates to a [`Grouped`](super::group::Grouped).
macro_rules! write_group_in {
    ($tx:ident, $exec:ident, $group:expr) => {{
        let mut $tx = $tx;
        match plan::write_group(&mut $exec(&mut $tx), $group).await {
            // Dropping the transaction rolls it back.
            Err(err) => Grouped::Failed(err),
            Ok(outcomes) => {
                plan::count_statements(2);
                let commit = if plan::nothing_stands(&outcomes) {
                    Ok(())
                } else {
                    $tx.commit().await.map_err(Into::into)
                };
                Grouped::Written { outcomes, commit }
            }
        }
    }};
}

/// `impl Admin for $store` on the backend's statements, their order and the
/// decoding written once.
macro_rules! impl_admin {
    ($store:ty) => {
        #[async_trait]
        impl Admin for $store {
            async fn append(&self, appends: &[Append]) -> StoreResult<()> {
                let appends: Vec<&Append> =
                    appends.iter().filter(|a| !a.events.is_empty()).collect();
                if appends.is_empty() {
                    return Ok(());
                }
                let (_held, mut tx) = self.admin_tx().await?;
                guard_appends(&mut tx, &appends).await?;
                let events: Vec<&AppendedEvent> = appends.iter().flat_map(|a| &a.events).collect();
                for chunk in events.chunks(INSERT_CHUNK) {
                    insert_events(&mut tx, chunk).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn export_page(
                &self,
                only: Option<&str>,
                after: (&str, u64),
                limit: u32,
            ) -> StoreResult<Vec<RawEvent>> {
                let query = match only {
                    Some(session) => sqlx::query(EXPORT_ONE).bind(session),
                    None => sqlx::query(EXPORT_ALL).bind(after.0),
                };
                let rows = query
                    .bind(to_i64(after.1)?)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(decode_raw_event).collect()
            }

            async fn versions(&self, sessions: &[String]) -> StoreResult<Vec<u64>> {
                let rows = sqlx::query(VERSIONS)
                    .bind(keys(sessions)?)
                    .fetch_all(&self.pool)
                    .await?;
                versions_in_order(sessions, &rows)
            }

            async fn purge_candidates(
                &self,
                before: DateTime<Utc>,
                after: &str,
                limit: u32,
            ) -> StoreResult<Vec<PurgeCandidate>> {
                let rows = sqlx::query(&candidates_sql())
                    .bind(at(before))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(decode_candidate).collect()
            }

            async fn purge(
                &self,
                sessions: &[PurgeCandidate],
                resolved_before: DateTime<Utc>,
                by: &str,
            ) -> StoreResult<Vec<String>> {
                let (_held, mut tx) = self.admin_tx().await?;
                let still = still_purgeable_sql(STILL_PURGEABLE_SUFFIX);
                let now = crate::engine::now();
                let mut purged = Vec::with_capacity(sessions.len());
                for candidate in sessions {
                    let found = sqlx::query(&still)
                        .bind(&candidate.session)
                        .bind(to_i64(candidate.version)?)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if found.is_none() {
                        continue;
                    }
                    sqlx::query(RECORD_PURGE)
                        .bind(&candidate.session)
                        .bind(to_i64(candidate.version)?)
                        .bind(at(candidate.updated_at))
                        .bind(at(resolved_before))
                        .bind(at(now))
                        .bind(by)
                        .execute(&mut *tx)
                        .await?;
                    for sql in PURGE_ROWS {
                        sqlx::query(sql)
                            .bind(&candidate.session)
                            .execute(&mut *tx)
                            .await?;
                    }
                    purged.push(candidate.session.clone());
                }
                sqlx::query(PURGES_DONE).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(purged)
            }

            async fn purges(&self) -> StoreResult<Vec<PurgeRecord>> {
                let rows = sqlx::query(PURGES).fetch_all(&self.pool).await?;
                rows.iter().map(decode_purge).collect()
            }

            async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<QueueStat>> {
                let rows = sqlx::query(QUEUE_STATS)
                    .bind(at(now))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|row| decode_queue_stat(row, now)).collect()
            }
        }
    };
}
