//! Claims serve the oldest work first: a claim always includes the oldest
//! claimable instance of its queue, so no scheduled instance waits behind
//! newer ones, whatever keeps arriving and however many workers claim at once.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use crate::support::{spawn_app, TestApp, TestDb, S};

on_both_backends!(
    one_claim_at_a_time_takes_the_oldest_scheduled_instance,
    under_concurrent_claims_the_oldest_waits_at_most_one_round,
);

/// A worker task `t_score` with one instance per `page`.
async fn configure_pages(app: &TestApp) {
    app.configure(
        S,
        json!({"t_score": {"after": [], "andEvery": "page", "run": "jobs.score", "using": "worker"}}),
    )
    .await;
}

/// The instance number of a claim (`t_score#<n>`).
fn number(claim: &serde_json::Value) -> u32 {
    let name = claim["instance"].as_str().expect("an instance name");
    name.strip_prefix("t_score#")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected instance {name}"))
}

async fn one_claim_at_a_time_takes_the_oldest_scheduled_instance(db: TestDb) {
    let app = spawn_app(&db).await;
    configure_pages(&app).await;
    // Twelve waiting (so that #10 and #11 sort after #9 as text would not).
    for n in 0..12 {
        app.fire(S, "page", json!({ "n": n })).await;
    }
    for expected in 0..20 {
        let claims = app.claim("w", None, 1, 30).await;
        assert_eq!(claims.len(), 1, "claim {expected}: {claims:#?}");
        assert_eq!(
            number(&claims[0]),
            expected,
            "the claim took a newer instance than the oldest waiting"
        );
        // Newer work keeps arriving; it must not overtake what waits.
        app.fire(S, "page", json!({ "n": 12 + expected })).await;
    }
}

async fn under_concurrent_claims_the_oldest_waits_at_most_one_round(db: TestDb) {
    let app = Arc::new(spawn_app(&db).await);
    configure_pages(&app).await;
    let mut fired = 0u32;
    for _ in 0..16 {
        app.fire(S, "page", json!({ "n": fired })).await;
        fired += 1;
    }
    let mut claimed = BTreeSet::new();
    for round in 0..6 {
        let oldest = (0..fired)
            .find(|n| !claimed.contains(n))
            .expect("something waits");
        // Four workers claim two each at once.
        let mut claimers = Vec::new();
        for w in 0..4 {
            let app = app.clone();
            claimers.push(tokio::spawn(async move {
                app.claim(&format!("w{w}"), None, 2, 30).await
            }));
        }
        for claimer in claimers {
            for claim in claimer.await.expect("a claimer panicked") {
                assert!(claimed.insert(number(&claim)), "claimed twice: {claim:#}");
            }
        }
        assert!(
            claimed.contains(&oldest),
            "round {round}: t_score#{oldest}, the oldest waiting, was passed over; claimed {claimed:?}"
        );
        // Newer work arrives between rounds.
        for _ in 0..4 {
            app.fire(S, "page", json!({ "n": fired })).await;
            fired += 1;
        }
    }
}
