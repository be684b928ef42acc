//! Limits on the shape of a GraphQL document, checked before async-graphql
//! works on it, because two of its steps cost more than the document's size:
//!
//! - its parser recurses once per level of brackets, so a document of a few
//!   kilobytes of `[[[[...` overflows the stack and aborts the whole server
//!   process. The nesting is measured on the text, before parsing.
//! - its recursive-depth and complexity checks expand fragment spreads every
//!   time they are used, so a chain of fragments that each spread the next one
//!   twice takes time exponential in its length. The number of fields the
//!   document selects, fragments expanded, is counted here in linear time
//!   (each fragment once) and held to the complexity limit.
//!
//! Both apply to every request, over HTTP and over WebSocket.
//!
//! Parsing is also where a small request spends most of its time in
//! async-graphql (its parser is a PEG grammar), and clients send the same few
//! documents again and again with other variables. So a document that passed
//! both limits is kept, parsed, in a bounded cache keyed by its text, and the
//! next request with the same text starts from a copy instead of the parser.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Name, Request, ServerError, ServerResult};

use super::error::BAD_INPUT;

/// Schema extension enforcing the limits of the module docs.
pub(crate) struct DocumentLimits {
    /// Deepest nesting of `{`, `[` and `(` accepted.
    pub(crate) max_nesting: usize,
    /// Most fields a document may select, fragments expanded.
    pub(crate) max_fields: usize,
    /// Documents that passed, parsed (shared by every request).
    pub(crate) parsed: Arc<ParsedDocuments>,
}

impl DocumentLimits {
    /// The limits, with an empty cache of parsed documents.
    pub(crate) fn new(max_nesting: usize, max_fields: usize) -> Self {
        Self {
            max_nesting,
            max_fields,
            parsed: Arc::default(),
        }
    }
}

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentLimitsExtension {
            max_nesting: self.max_nesting,
            max_fields: self.max_fields,
            parsed: self.parsed.clone(),
        })
    }
}

struct DocumentLimitsExtension {
    max_nesting: usize,
    max_fields: usize,
    parsed: Arc<ParsedDocuments>,
}

/// Parsed documents by their text: at most [`Self::CAPACITY`] of them, each at
/// most [`Self::MAX_TEXT`] bytes long. When it is full it is emptied and
/// fills again with what is sent now, so a client that sends a new document
/// every time costs a parse and nothing more, and memory stays bounded.
#[derive(Default)]
pub(crate) struct ParsedDocuments {
    documents: Mutex<HashMap<Box<str>, Arc<ExecutableDocument>>>,
}

impl ParsedDocuments {
    /// Documents kept.
    const CAPACITY: usize = 256;
    /// Longest text kept.
    const MAX_TEXT: usize = 16 * 1024;

    fn get(&self, text: &str) -> Option<Arc<ExecutableDocument>> {
        self.lock().get(text).cloned()
    }

    fn keep(&self, text: &str, document: ExecutableDocument) {
        if text.len() > Self::MAX_TEXT {
            return;
        }
        let mut documents = self.lock();
        if documents.len() >= Self::CAPACITY {
            documents.clear();
        }
        documents.insert(text.into(), Arc::new(document));
    }

    /// The map (a panic elsewhere while it was held leaves it usable: it is
    /// only a cache).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<ExecutableDocument>>> {
        self.documents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many documents are kept (tests look).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[async_trait::async_trait]
impl Extension for DocumentLimitsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(document) = self.parsed.get(&request.query) {
            // It passed both limits when it was kept.
            request.set_parsed_query(ExecutableDocument::clone(&document));
            return next.run(ctx, request).await;
        }
        let nesting = nesting(&request.query);
        if nesting > self.max_nesting {
            return Err(refusal(format!(
                "the query is nested {nesting} levels deep (brackets); the limit is {}",
                self.max_nesting
            )));
        }
        // Parsed once here; async-graphql reuses the parsed document.
        let fields = selected_fields(request.parsed_query()?);
        if fields > self.max_fields {
            return Err(refusal(format!(
                "Query is too complex: it selects {fields} fields once fragments are expanded; the limit is {}",
                self.max_fields
            )));
        }
        let document = request.parsed_query()?.clone();
        self.parsed.keep(&request.query, document);
        next.run(ctx, request).await
    }
}

fn refusal(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", BAD_INPUT);
    error.extensions = Some(extensions);
    error
}

/// The deepest nesting of `{`, `[` and `(` in a GraphQL document, outside
/// strings and comments. Unbalanced or unterminated input only makes the
/// answer larger or leaves it to the parser's own error.
fn nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && !matches!(bytes[i], b'\n' | b'\r') {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                // A plain string ends at its quote, or (invalid) at the line's end.
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n' | b'\r') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// How many fields the operations of `document` select, each fragment spread
/// counted as the fields of its fragment (computed once per fragment).
fn selected_fields(document: &ExecutableDocument) -> usize {
    let mut counter = Counter {
        document,
        fragments: HashMap::new(),
    };
    document
        .operations
        .iter()
        .map(|(_, operation)| counter.selection_set(&operation.node.selection_set.node, 0))
        .fold(0, usize::saturating_add)
}

struct Counter<'a> {
    document: &'a ExecutableDocument,
    /// Fields of each fragment; `None` while it is being counted (a cycle,
    /// which validation refuses later, counts as nothing).
    fragments: HashMap<&'a Name, Option<usize>>,
}

impl<'a> Counter<'a> {
    /// Deeper than this the fragments of a document are refused by
    /// async-graphql's own recursion limit (32) anyway; stopping here keeps
    /// this count off the stack's edge.
    const MAX_RECURSION: usize = 64;

    fn selection_set(&mut self, set: &'a SelectionSet, depth: usize) -> usize {
        if depth > Self::MAX_RECURSION {
            return usize::MAX;
        }
        set.items
            .iter()
            .map(|selection| match &selection.node {
                Selection::Field(field) => 1usize
                    .saturating_add(self.selection_set(&field.node.selection_set.node, depth + 1)),
                Selection::InlineFragment(fragment) => {
                    self.selection_set(&fragment.node.selection_set.node, depth + 1)
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node, depth + 1)
                }
            })
            .fold(0, usize::saturating_add)
    }

    fn fragment(&mut self, name: &'a Name, depth: usize) -> usize {
        match self.fragments.get(name) {
            Some(Some(fields)) => return *fields,
            Some(None) => return 0,
            None => {}
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return 0;
        };
        self.fragments.insert(name, None);
        let fields = self.selection_set(&fragment.node.selection_set.node, depth);
        self.fragments.insert(name, Some(fields));
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_brackets_outside_strings_and_comments() {
        assert_eq!(nesting("{ a }"), 1);
        assert_eq!(nesting("{ a(x: [[1]]) { b } }"), 4);
        assert_eq!(nesting("{ a(x: \"[[[{{{\") }"), 2);
        assert_eq!(nesting("{ a(x: \"\\\"[[[\") }"), 2);
        assert_eq!(nesting("{ a(x: \"\"\"[[[ \\\"\"\" [[\"\"\") }"), 2);
        assert_eq!(nesting("# [[[[\n{ a }"), 1);
        assert_eq!(nesting("{ a(x: \"unterminated\n[[[[ }"), 6);
        assert_eq!(nesting(&"[".repeat(10_000)), 10_000);
    }

    fn fields(query: &str) -> usize {
        selected_fields(&async_graphql::parser::parse_query(query).unwrap())
    }

    fn parse(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).unwrap()
    }

    #[test]
    fn parsed_documents_are_found_by_their_text() {
        let cache = ParsedDocuments::default();
        assert!(cache.get("{ a }").is_none());
        cache.keep("{ a }", parse("{ a }"));
        let kept = cache.get("{ a }").expect("kept");
        assert_eq!(selected_fields(&kept), 1);
        assert!(
            cache.get("{ a  }").is_none(),
            "another text is another document"
        );
    }

    #[test]
    fn parsed_documents_stay_bounded() {
        let cache = ParsedDocuments::default();
        for i in 0..ParsedDocuments::CAPACITY {
            let text = format!("{{ a{i} }}");
            cache.keep(&text, parse(&text));
        }
        assert_eq!(cache.len(), ParsedDocuments::CAPACITY);
        cache.keep("{ last }", parse("{ last }"));
        assert_eq!(cache.len(), 1, "a full cache starts again");
        assert!(cache.get("{ last }").is_some());

        let long = format!("{{ a {} }}", "b ".repeat(ParsedDocuments::MAX_TEXT));
        cache.keep(&long, parse(&long));
        assert!(cache.get(&long).is_none(), "a long text is not kept");
    }

    #[test]
    fn fields_are_counted_with_fragments_expanded_once_each() {
        assert_eq!(fields("{ a b { c d } }"), 4);
        assert_eq!(fields("{ a ...F ...F } fragment F on Q { b c }"), 5);
        assert_eq!(fields("{ ... on Q { a } }"), 1);
        assert_eq!(
            fields("{ ...A } fragment A on Q { ...B } fragment B on Q { ...A x }"),
            1
        );
        let mut bomb = String::from("{ ...F0 } ");
        for i in 0..200 {
            bomb.push_str(&format!(
                "fragment F{i} on Q {{ a ...F{n} ...F{n} }} ",
                n = i + 1
            ));
        }
        bomb.push_str("fragment F200 on Q { a }");
        assert!(fields(&bomb) > 1_000_000);
    }
}
