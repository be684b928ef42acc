//! Response fields in the order the query selected them, at every level.
//!
//! async-graphql resolves the fields of a query's objects concurrently and
//! writes each into the response map when it completes, so a field whose
//! resolver awaits (say `scheduled`, which reads the session) lands after
//! one that does not (`duplicate`). GraphQL asks for the selection order, and
//! people reading a response expect it; [`SelectionOrder`] restores it once
//! the response is complete: it keeps the parsed document of the request and
//! walks the response beside the operation's selections (fragments expanded
//! in place, fields merged by response key as GraphQL collects them).
//!
//! It applies to queries, mutations and each message of a subscription. JSON
//! scalars (kwargs, results, metadata) are leaves: their keys stay as stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextSubscribe,
};
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, OperationDefinition, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned, Response, ServerResult, Value, Variables};
use futures::stream::BoxStream;
use futures::StreamExt;

/// Schema extension putting response fields in selection order.
pub(crate) struct SelectionOrder;

impl ExtensionFactory for SelectionOrder {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SelectionOrderExtension::default())
    }
}

/// One request's extension: the document, kept from parsing to the response.
#[derive(Default)]
struct SelectionOrderExtension {
    document: Arc<Mutex<Option<Arc<ExecutableDocument>>>>,
}

impl SelectionOrderExtension {
    fn document(slot: &Mutex<Option<Arc<ExecutableDocument>>>) -> Option<Arc<ExecutableDocument>> {
        slot.lock().map(|document| document.clone()).unwrap_or(None)
    }
}

#[async_trait::async_trait]
impl Extension for SelectionOrderExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Ok(mut slot) = self.document.lock() {
            *slot = Some(Arc::new(document.clone()));
        }
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        if let Some(document) = Self::document(&self.document) {
            reorder(&document, operation_name, &mut response.data);
        }
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        // The document is parsed once the stream is first polled, so it is
        // looked up per message rather than now. A subscription document has
        // one operation (validation sees to it), hence no name.
        let slot = self.document.clone();
        next.run(ctx, stream)
            .map(move |mut response| {
                if let Some(document) = Self::document(&slot) {
                    reorder(&document, None, &mut response.data);
                }
                response
            })
            .boxed()
    }
}

/// Puts the fields of `data` in the order `document`'s operation selects them.
fn reorder(document: &ExecutableDocument, operation_name: Option<&str>, data: &mut Value) {
    let Some(operation) = operation(&document.operations, operation_name) else {
        return;
    };
    let walker = Walker {
        fragments: &document.fragments,
    };
    walker.value(data, &[&operation.node.selection_set.node]);
}

/// The operation a request runs: the named one, or the only one.
fn operation<'a>(
    operations: &'a DocumentOperations,
    name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

struct Walker<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
}

impl<'a> Walker<'a> {
    /// Reorders `value`, the result of a field selected with `sets` (several
    /// when the same response key is selected more than once).
    fn value(&self, value: &mut Value, sets: &[&'a SelectionSet]) {
        match value {
            Value::Object(fields) => self.object(fields, sets),
            Value::List(items) => items.iter_mut().for_each(|item| self.value(item, sets)),
            _ => {}
        }
    }

    fn object(&self, fields: &mut IndexMap<Name, Value>, sets: &[&'a SelectionSet]) {
        let mut keys: IndexMap<&'a str, Vec<&'a SelectionSet>> = IndexMap::new();
        for set in sets {
            self.collect(set, &mut keys);
        }
        let mut old = std::mem::take(fields);
        fields.reserve(old.len());
        for (key, sets) in keys {
            if let Some((name, mut value)) = old.swap_remove_entry(key) {
                if sets.iter().any(|set| !set.items.is_empty()) {
                    self.value(&mut value, &sets);
                }
                fields.insert(name, value);
            }
        }
        // Nothing is left unless async-graphql added a key of its own; keep it.
        fields.extend(old);
    }

    /// Response keys in selection order, with the sub-selections of each.
    /// Validation has refused fragment cycles before anything executes.
    fn collect(&self, set: &'a SelectionSet, keys: &mut IndexMap<&'a str, Vec<&'a SelectionSet>>) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let key = field.alias.as_ref().unwrap_or(&field.name).node.as_str();
                    keys.entry(key).or_default().push(&field.selection_set.node);
                }
                Selection::InlineFragment(fragment) => {
                    self.collect(&fragment.node.selection_set.node, keys)
                }
                Selection::FragmentSpread(spread) => {
                    if let Some(fragment) = self.fragments.get(&spread.node.fragment_name.node) {
                        self.collect(&fragment.node.selection_set.node, keys);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reordered(query: &str, data: serde_json::Value) -> String {
        let document = async_graphql::parser::parse_query(query).unwrap();
        let mut data = Value::from_json(data).unwrap();
        reorder(&document, None, &mut data);
        data.into_json().unwrap().to_string()
    }

    #[test]
    fn fields_follow_the_selection_with_aliases_fragments_and_lists() {
        let query = "{ b: x { z y } ...F a { ... on T { d c } } } fragment F on Q { e }";
        let data = serde_json::json!({
            "a": [{"c": 1, "d": 2}, {"c": 3, "d": 4}],
            "e": {"json": {"q": 1, "p": 2}},
            "b": {"y": 1, "z": 2},
        });
        assert_eq!(
            reordered(query, data),
            r#"{"b":{"z":2,"y":1},"e":{"json":{"q":1,"p":2}},"a":[{"d":2,"c":1},{"d":4,"c":3}]}"#
        );
    }

    #[test]
    fn a_key_selected_twice_merges_its_selections_in_order() {
        let query = "{ a { y } b a { x y z } }";
        let data = serde_json::json!({"b": 1, "a": {"z": 3, "x": 1, "y": 2}});
        assert_eq!(reordered(query, data), r#"{"a":{"y":2,"x":1,"z":3},"b":1}"#);
    }
}
