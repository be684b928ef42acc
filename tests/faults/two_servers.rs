//! Two server processes on one database, 32 clients split across them, all
//! hammering the same few sessions.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use triggers::testkit::TestDb;

use crate::harness::{audit, fire_until, start_server, workflow, Client, PATIENCE};

on_both_backends!(seconds = 240;
    two_servers_on_one_database_apply_every_fire_exactly_once,
);

const CLIENTS: usize = 32;
const FIRES_PER_CLIENT: usize = 15;
const SESSIONS: usize = 3;

async fn two_servers_on_one_database_apply_every_fire_exactly_once(db: TestDb) {
    let dir = db.dir();
    let one = start_server(&db.url, &dir, &[]).await;
    let two = start_server(&db.url, &dir, &[]).await;
    let clients = [Client::new(&one.address), Client::new(&two.address)];
    let sessions: Vec<String> = (0..SESSIONS).map(|i| format!("shared:{i}")).collect();
    for (i, session) in sessions.iter().enumerate() {
        clients[i % 2].configure(session, workflow()).await;
    }

    let started = std::time::Instant::now();
    let never = Arc::new(AtomicBool::new(false));
    let fired = fire_until(&clients, CLIENTS, &sessions, Some(FIRES_PER_CLIENT), never).await;
    let elapsed = started.elapsed();
    assert_eq!(
        fired.failed(),
        0,
        "with both servers up no fire fails: {:?}",
        fired.failures
    );
    assert_eq!(fired.duplicates, 0, "every key was sent once");
    assert_eq!(fired.acked.len(), CLIENTS * FIRES_PER_CLIENT);

    // Both servers run inline jobs; each instance runs (and cascades) once.
    clients[0].wait_quiet(PATIENCE).await;
    let found = audit(&clients[1], &sessions, &fired).await;
    assert_eq!(found.fires, CLIENTS * FIRES_PER_CLIENT);
    // Both answer the same, whichever appended.
    for session in &sessions {
        assert_eq!(
            clients[0].state(session).await,
            clients[1].state(session).await
        );
    }
    one.terminate().await;
    two.terminate().await;

    eprintln!(
        "FIGURES two servers {:?}: {CLIENTS} clients x {FIRES_PER_CLIENT} fires into {SESSIONS} \
         sessions through 2 processes in {elapsed:.1?}: {} acknowledged, {} in the logs \
         ({} events)",
        db.backend,
        fired.acked.len(),
        found.fires,
        found.events,
    );
}
