//! Building an [`Engine`]: its handlers, hooks, engine options and store
//! settings, then opening the database.

use std::sync::Arc;

use super::{Engine, EngineOptions, Handler, Hook, Registry, Result};
use crate::store;

/// Builds an [`Engine`]: handlers, hooks and options, then [`EngineBuilder::open`].
pub struct EngineBuilder {
    url: String,
    store_options: store::StoreOptions,
    registry: Registry,
    hooks: Vec<Arc<dyn Hook>>,
    options: EngineOptions,
}

impl EngineBuilder {
    pub(super) fn new(url: String) -> Self {
        EngineBuilder {
            url,
            store_options: store::StoreOptions::default(),
            registry: Registry::default(),
            hooks: Vec::new(),
            options: EngineOptions::default(),
        }
    }

    /// Registers an inline handler for `run`.
    pub fn handler(mut self, run: impl Into<String>, handler: impl Handler) -> Self {
        self.registry.register(run, handler);
        self
    }

    /// Adds a hook.
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Replaces the options.
    pub fn options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the store's settings (pool size, synchronous mode, busy timeout,
    /// group size).
    pub fn store_options(mut self, options: store::StoreOptions) -> Self {
        self.store_options = options;
        self
    }

    /// Opens the database (running migrations), recovers inline work left by a
    /// previous process, and starts the lease sweeper.
    pub async fn open(self) -> Result<Engine> {
        let store = store::open_with(&self.url, &self.store_options).await?;
        Ok(Engine::with_store(store, self.registry, self.hooks, self.options).await)
    }
}
