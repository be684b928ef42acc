//! Translating failures into GraphQL errors: a human message and `extensions.code`.
//!
//! Engine errors carry their code ([`crate::engine::Error::code`]). Client errors
//! keep their message; internal ones (storage failures, corrupt logs) are logged
//! here with their cause chain and answered with a generic message and an
//! `errorId` that finds the log line. Errors raised by async-graphql itself
//! (syntax, validation, limits, argument coercion) get `BAD_INPUT` from
//! [`ErrorCodes`], so every error a client sees has a code.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe,
};
use async_graphql::{ErrorExtensionValues, ErrorExtensions, Response, ServerError};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::engine;

/// `extensions.code` of malformed requests and arguments.
pub const BAD_INPUT: &str = "BAD_INPUT";
/// `extensions.code` of a missing or wrong API token.
pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
/// `extensions.code` of a database that is unreachable, restarting or busy: retry.
pub const UNAVAILABLE: &str = "UNAVAILABLE";
/// `extensions.code` of failures that are the server's fault.
pub const INTERNAL: &str = "INTERNAL";
/// The message every internal error is answered with.
pub const INTERNAL_MESSAGE: &str = "internal error";

/// A GraphQL error with a message and a code.
pub fn coded(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code))
}

/// A `BAD_INPUT` error.
pub fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    coded(BAD_INPUT, message)
}

/// Translates an engine error, logging internal ones.
pub fn from_engine(err: &engine::Error) -> async_graphql::Error {
    if let engine::Error::Unavailable(_) = err {
        tracing::warn!(error = %err, causes = %cause_chain(err), "database unavailable");
        return coded(err.code(), err.to_string());
    }
    if err.is_client_error() {
        return coded(err.code(), err.to_string());
    }
    let error_id = uuid::Uuid::new_v4().simple().to_string();
    tracing::error!(
        error_id,
        code = err.code(),
        error = %err,
        causes = %cause_chain(err),
        "internal error answering a GraphQL request"
    );
    async_graphql::Error::new(INTERNAL_MESSAGE).extend_with(|_, ext| {
        ext.set("code", INTERNAL);
        ext.set("errorId", error_id.clone());
    })
}

/// `source: source: ...` of an error, for the log.
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain.join(": ")
}

/// `engine::Result` -> `async_graphql::Result`, through [`from_engine`].
///
/// async-graphql converts any `Display` error with `?`; resolvers call `.gql()?`
/// instead so that every engine error gets its code and internal messages never
/// reach a client. ([`ErrorCodes`] is the safety net for a forgotten one.)
pub trait GqlResult<T> {
    /// Converts the error side.
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResult<T> for engine::Result<T> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|err| from_engine(&err))
    }
}

/// Schema extension giving every error in a response a code (see the module docs).
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

#[async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        response.errors.iter_mut().for_each(ensure_code);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                response.errors.iter_mut().for_each(ensure_code);
                response
            })
            .boxed()
    }
}

/// Adds a code to an error that has none: an engine error converted by a bare
/// `?` gets its own (and its message replaced if internal); anything else was
/// raised by async-graphql while reading the request, so it is `BAD_INPUT`.
fn ensure_code(error: &mut ServerError) {
    if error
        .extensions
        .as_ref()
        .is_some_and(|ext| ext.get("code").is_some())
    {
        return;
    }
    let translated = error.source::<engine::Error>().map(from_engine);
    let extensions = error
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    match translated {
        Some(translated) => {
            error.message = translated.message;
            if let Some(values) = translated.extensions {
                for key in ["code", "errorId"] {
                    if let Some(value) = values.get(key) {
                        extensions.set(key, value.clone());
                    }
                }
            }
        }
        None => extensions.set("code", BAD_INPUT),
    }
}
