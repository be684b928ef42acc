//! Ctrl-C and SIGTERM, for the commands that stop gracefully (`serve`, `work`).

use tokio::sync::watch;

/// Counts Ctrl-C / SIGTERM signals (SIGTERM on Unix only): the receiver reads
/// how many arrived, so a command can stop gracefully on the first and at once
/// on the second. The handlers are installed at once (not at the first poll),
/// so a signal that arrives while the command starts is a graceful stop too,
/// not the default "terminate now".
pub(super) fn listen() -> std::io::Result<watch::Receiver<u32>> {
    let (count, counted) = watch::channel(0u32);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => tracing::info!("Ctrl-C received"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                }
                count.send_modify(|n| *n += 1);
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        loop {
            match tokio::signal::ctrl_c().await {
                Ok(()) => {
                    tracing::info!("Ctrl-C received");
                    count.send_modify(|n| *n += 1);
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for Ctrl-C");
                    // Keep the sender: the count stays where it is.
                    std::future::pending::<()>().await;
                }
            }
        }
    });
    Ok(counted)
}
