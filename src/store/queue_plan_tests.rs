//! Unit tests of the queue reduction: what a decision's queue changes leave of
//! each instance's row, and which conditions are left for the stored rows.

use chrono::TimeZone;

use super::*;

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, second).unwrap()
}

fn enqueue(instance: &str, available_at: DateTime<Utc>) -> QueueOp {
    QueueOp::Enqueue {
        instance: instance.into(),
        queue: "inline".into(),
        run: "job".into(),
        available_at,
    }
}

fn lease(instance: &str, token: &str, now: DateTime<Utc>, current: Option<&str>) -> QueueOp {
    QueueOp::Lease {
        instance: instance.into(),
        owner: "me".into(),
        token: token.into(),
        expires_at: at(50),
        now,
        current_token: current.map(str::to_owned),
    }
}

fn remove(instance: &str) -> QueueOp {
    QueueOp::Remove {
        instance: instance.into(),
    }
}

fn held(token: &str) -> Lease {
    Lease {
        owner: "me".into(),
        token: token.into(),
        expires_at: at(50),
    }
}

fn put(instance: &str, available_at: DateTime<Utc>, lease: Option<Lease>) -> Put {
    Put {
        instance: instance.into(),
        queue: "inline".into(),
        run: "job".into(),
        available_at,
        lease,
    }
}

fn check(instance: &str, now: DateTime<Utc>, held: Option<&str>, only_available: bool) -> Check {
    Check {
        instance: instance.into(),
        now,
        held: held.map(str::to_owned),
        only_available,
    }
}

#[test]
fn an_enqueue_and_its_lease_become_one_leased_row_with_nothing_to_check() {
    let ops = [enqueue("a#0", at(1)), lease("a#0", "t", at(1), None)];
    assert_eq!(
        reduce(&ops),
        Ok(QueueChanges {
            puts: vec![put("a#0", at(1), Some(held("t")))],
            ..QueueChanges::default()
        })
    );
}

#[test]
fn the_last_change_of_each_instance_wins_in_first_touch_order() {
    let ops = [
        enqueue("a#0", at(1)),
        remove("b#0"),
        remove("a#0"),
        enqueue("b#0", at(2)),
    ];
    assert_eq!(
        reduce(&ops),
        Ok(QueueChanges {
            puts: vec![put("b#0", at(2), None)],
            deletes: vec!["a#0".into()],
            ..QueueChanges::default()
        })
    );
}

#[test]
fn a_lease_on_a_stored_row_is_a_check_and_a_relet() {
    // Claiming (no token) and reporting under one's own lease, then leaving.
    let ops = [lease("a#0", "t", at(1), None)];
    assert_eq!(
        reduce(&ops),
        Ok(QueueChanges {
            checks: vec![check("a#0", at(1), None, false)],
            relets: vec![Relet {
                instance: "a#0".into(),
                lease: held("t"),
            }],
            ..QueueChanges::default()
        })
    );
    let ops = [lease("a#0", "t", at(1), Some("t")), remove("a#0")];
    assert_eq!(
        reduce(&ops),
        Ok(QueueChanges {
            checks: vec![check("a#0", at(1), Some("t"), false)],
            deletes: vec!["a#0".into()],
            ..QueueChanges::default()
        })
    );
}

#[test]
fn a_second_lease_on_a_relet_row_is_judged_on_the_first_and_checks_availability() {
    let ops = [
        lease("a#0", "t", at(1), None),
        lease("a#0", "u", at(2), Some("t")),
    ];
    let changes = reduce(&ops).expect("the renewal holds");
    assert_eq!(
        changes.checks,
        vec![
            check("a#0", at(1), None, false),
            check("a#0", at(2), None, true)
        ]
    );
    assert_eq!(changes.relets[0].lease, held("u"));
}

#[test]
fn leases_that_cannot_hold_on_what_the_decision_wrote_refuse_it() {
    // Not available yet, leased twice without the token, after a removal,
    // renewed under a token the row does not hold.
    for ops in [
        vec![enqueue("a#0", at(5)), lease("a#0", "t", at(1), None)],
        vec![
            enqueue("a#0", at(1)),
            lease("a#0", "t", at(1), None),
            lease("a#0", "u", at(1), None),
        ],
        vec![remove("a#0"), lease("a#0", "t", at(1), None)],
        vec![enqueue("a#0", at(1)), lease("a#0", "t", at(1), Some("x"))],
    ] {
        assert_eq!(reduce(&ops), Err("a#0".to_owned()), "{ops:?}");
    }
}
