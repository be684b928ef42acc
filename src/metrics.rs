//! Prometheus metrics: the series an operator scrapes from `GET /metrics`
//! (docs/operations.md lists them).
//!
//! Each engine owns a [`Metrics`] with a registry of its own (not the process's
//! global one), so several engines in one process (tests, embedders) each read
//! their own values. The engine and the store count as they go; the queue
//! gauges are read from the store when scraped ([`Metrics::set_queues`]), one
//! aggregate query per scrape, never a scan per fire.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::store::QueueStat;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The engine's series (names in docs/operations.md).
pub struct Metrics {
    registry: Registry,
    /// `fire` calls applied (a duplicate of an idempotency key is not).
    pub(crate) fires: IntCounter,
    /// Events committed to the log by this process.
    pub(crate) events_appended: IntCounter,
    /// How long a decision waited for the database to make it durable.
    pub(crate) commit_seconds: Histogram,
    /// Decisions made durable by each group commit.
    pub(crate) decisions_per_commit: Histogram,
    /// Leases the sweeper found ended and returned to the queue.
    pub(crate) lease_expirations: IntCounter,
    /// Inline runs, by how the handler ended.
    pub(crate) inline_runs: IntCounterVec,
    /// HTTP requests answered, by status code.
    pub(crate) http_requests: IntCounterVec,
    /// Store operations that failed, by class ([`crate::store::StoreError::class`]).
    pub(crate) store_errors: IntCounterVec,
    queue_depth: IntGaugeVec,
    queue_oldest: GaugeVec,
    /// Queues reported by an earlier scrape: a queue that drained reads 0
    /// rather than vanishing (an alert on it then resolves instead of going stale).
    known_queues: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Commit latency buckets: from a fast in-memory commit to a stalled database.
const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Group sizes up to the largest group the store allows by default.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

impl Metrics {
    /// A fresh registry with every series at zero.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("a valid counter");
            registry
                .register(Box::new(counter.clone()))
                .expect("registered once");
            counter
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let counter = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid");
            registry
                .register(Box::new(counter.clone()))
                .expect("registered once");
            counter
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let histogram = Histogram::with_opts(opts).expect("a valid histogram");
            registry
                .register(Box::new(histogram.clone()))
                .expect("registered once");
            histogram
        };
        let fires = counter(
            "triggers_fires_total",
            "Fires applied (a repeated idempotency key is not counted).",
        );
        let events_appended = counter(
            "triggers_events_appended_total",
            "Events appended to the log.",
        );
        let commit_seconds = histogram(
            "triggers_commit_seconds",
            "Time a decision waited for the database to make it durable.",
            COMMIT_BUCKETS,
        );
        let decisions_per_commit = histogram(
            "triggers_decisions_per_commit",
            "Decisions made durable by one group commit.",
            GROUP_BUCKETS,
        );
        let lease_expirations = counter(
            "triggers_lease_expirations_total",
            "Leases that ended without an outcome; their instances went back to the queue.",
        );
        let inline_runs = counter_vec(
            "triggers_inline_runs_total",
            "Inline runs, by outcome (finished, failed, skipped, retried).",
            "outcome",
        );
        let http_requests = counter_vec(
            "triggers_http_requests_total",
            "HTTP requests answered, by status code.",
            "status",
        );
        let store_errors = counter_vec(
            "triggers_store_errors_total",
            "Store operations that failed, by class.",
            "class",
        );
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "triggers_queue_depth",
                "Scheduled instances waiting in the queue (not leased, or their lease ended).",
            ),
            &["queue"],
        )
        .expect("valid");
        let queue_oldest = GaugeVec::new(
            Opts::new(
                "triggers_queue_oldest_scheduled_age_seconds",
                "How long the oldest claimable instance of the queue has waited to be claimed.",
            ),
            &["queue"],
        )
        .expect("valid");
        for gauge in [
            Box::new(queue_depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue_oldest.clone()),
        ] {
            registry.register(gauge).expect("registered once");
        }
        Metrics {
            registry,
            fires,
            events_appended,
            commit_seconds,
            decisions_per_commit,
            lease_expirations,
            inline_runs,
            http_requests,
            store_errors,
            queue_depth,
            queue_oldest,
            known_queues: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records a group commit of `decisions` decisions.
    pub(crate) fn group_committed(&self, decisions: usize) {
        self.decisions_per_commit.observe(decisions as f64);
    }

    /// Records a decision that took `waited` to commit.
    pub(crate) fn commit_took(&self, waited: Duration) {
        self.commit_seconds.observe(waited.as_secs_f64());
    }

    /// Sets the queue gauges from the store's aggregate.
    pub fn set_queues(&self, stats: &[QueueStat]) {
        let mut known = self.known_queues.lock().expect("not poisoned");
        for queue in known.iter() {
            if !stats.iter().any(|s| &s.queue == queue) {
                self.queue_depth.with_label_values(&[queue]).set(0);
                self.queue_oldest.with_label_values(&[queue]).set(0.0);
            }
        }
        for stat in stats {
            let depth = i64::try_from(stat.depth).unwrap_or(i64::MAX);
            self.queue_depth
                .with_label_values(&[&stat.queue])
                .set(depth);
            self.queue_oldest
                .with_label_values(&[&stat.queue])
                .set(stat.oldest_age.map_or(0.0, |age| age.as_secs_f64()));
            known.insert(stat.queue.clone());
        }
    }

    /// Every series in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Metrics;
    use crate::store::QueueStat;

    #[test]
    fn a_drained_queue_reads_zero_instead_of_vanishing() {
        let metrics = Metrics::new();
        metrics.set_queues(&[QueueStat {
            queue: "mail".into(),
            depth: 3,
            oldest_age: Some(Duration::from_secs(90)),
        }]);
        let text = metrics.render();
        assert!(
            text.contains("triggers_queue_depth{queue=\"mail\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("triggers_queue_oldest_scheduled_age_seconds{queue=\"mail\"} 90"),
            "{text}"
        );
        metrics.set_queues(&[]);
        let text = metrics.render();
        assert!(
            text.contains("triggers_queue_depth{queue=\"mail\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn every_pinned_series_is_exposed_from_the_start() {
        let text = Metrics::new().render();
        for name in [
            "triggers_fires_total 0",
            "triggers_events_appended_total 0",
            "triggers_commit_seconds_count 0",
            "triggers_decisions_per_commit_count 0",
            "triggers_lease_expirations_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
