//! `extensions.warnings` of a response: what a mutation accepted but wants the
//! caller to know (today: `configure`'s diagnostics).
//!
//! [`Warnings`] gives each request a list that resolvers append to through
//! [`warn`]; once the operation has run, a non-empty list becomes the
//! response's top-level `extensions.warnings`, each entry
//! `{"task", "directive", "message"}`. A response without findings has no
//! `warnings` key at all.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest,
};
use async_graphql::{Context, Request, Response, ServerResult, Value};

use crate::domain::config::diagnostics::ConfigWarning;

/// Schema extension collecting the warnings of a request.
pub(crate) struct Warnings;

impl ExtensionFactory for Warnings {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(WarningsExtension {
            found: Found::default(),
        })
    }
}

/// The list of one request, shared with its resolvers as request data.
#[derive(Clone, Default)]
struct Found(Arc<Mutex<Vec<ConfigWarning>>>);

struct WarningsExtension {
    found: Found,
}

/// Adds `warnings` to the response of the request `ctx` belongs to.
pub(crate) fn warn(ctx: &Context<'_>, warnings: Vec<ConfigWarning>) {
    if warnings.is_empty() {
        return;
    }
    if let Some(found) = ctx.data_opt::<Found>() {
        if let Ok(mut list) = found.0.lock() {
            list.extend(warnings);
        }
    }
}

#[async_trait::async_trait]
impl Extension for WarningsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        next.run(ctx, request.data(self.found.clone())).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        let found = match self.found.0.lock() {
            Ok(mut list) => std::mem::take(&mut *list),
            Err(_) => Vec::new(),
        };
        if !found.is_empty() {
            let list = serde_json::to_value(&found)
                .ok()
                .and_then(|json| Value::from_json(json).ok());
            if let Some(list) = list {
                response.extensions.insert("warnings".to_owned(), list);
            }
        }
        response
    }
}
