//! `triggers copy`: export streamed into import, from one database to another
//! (SQLite to PostgreSQL when a deployment outgrows one machine, and back).
//!
//! The source is read in keyset pages by a task of its own, a few pages ahead
//! of the import, which appends them in batches. Being an import, a copy can
//! be interrupted and run again: it appends only what the target lacks.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::export::Pages;
use super::import::{ImportReport, Importer};
use super::lines::parse_raw;
use super::progress::Progress;
use super::OpsResult;
use crate::store::{RawEvent, Store};
use crate::Engine;

/// Pages read ahead of the import.
const AHEAD: usize = 4;

/// Copies every event of `from` into `to`'s database; the import's report.
///
/// # Errors
/// What either database fails with, a target session whose events differ is
/// reported (not an error), a corrupt source row stops the copy.
pub async fn copy(
    from: Arc<dyn Store>,
    to: &Engine,
    progress: Progress,
) -> OpsResult<ImportReport> {
    let (pages_tx, mut pages_rx) = mpsc::channel::<OpsResult<Vec<RawEvent>>>(AHEAD);
    let reader = tokio::spawn(async move {
        let mut pages = Pages::all(from.as_ref());
        loop {
            let page = pages.next().await.transpose();
            let Some(page) = page else { return };
            let failed = page.is_err();
            if pages_tx.send(page).await.is_err() || failed {
                return;
            }
        }
    });
    let mut importer = Importer::new(to, progress, "copying");
    let mut position = 0;
    while let Some(page) = pages_rx.recv().await {
        for raw in page? {
            position += 1;
            importer.push(position, parse_raw(raw)).await?;
        }
    }
    // The reader ended after its last page, or failed and said so above.
    let _ = reader.await;
    importer.finish().await
}
