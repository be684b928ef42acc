//! The two custom scalars.
//!
//! - `JSON`: kwargs, results, metadata and configurations travel as plain JSON
//!   values, inline in the GraphQL document or in variables.
//! - `DateTime`: RFC 3339 in UTC with microseconds (`2024-05-01T12:00:00.123456Z`),
//!   exactly as the timestamps in instance metadata are written, so the two
//!   compare as strings.

use std::borrow::Cow;

use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{
    ContextSelectionSet, InputValueError, InputValueResult, Name, OutputType, Positioned, Scalar,
    ScalarType, ServerResult, Value as GqlValue,
};
use chrono::Utc;
use serde_json::Value;

use crate::domain::JsonObject;

use crate::domain::state::timestamp;

/// Any JSON value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Json(pub Value);

/// Any JSON value: object, array, string, number, boolean or null.
#[Scalar(name = "JSON")]
impl ScalarType for Json {
    fn parse(value: GqlValue) -> InputValueResult<Self> {
        Ok(Json(value.into_json()?))
    }

    fn is_valid(_value: &GqlValue) -> bool {
        true
    }

    fn to_value(&self) -> GqlValue {
        graphql_value(&self.0)
    }
}

/// A JSON value a resolver borrows from the state, served as the `JSON` scalar
/// without a copy of it made first: listings of many instances spend most of
/// their time on their kwargs and metadata.
pub enum JsonRef<'a> {
    /// Any value.
    Value(&'a Value),
    /// An object (kwargs, metadata, params).
    Object(&'a JsonObject),
}

impl<'a> From<&'a Value> for JsonRef<'a> {
    fn from(value: &'a Value) -> Self {
        JsonRef::Value(value)
    }
}

impl<'a> From<&'a JsonObject> for JsonRef<'a> {
    fn from(value: &'a JsonObject) -> Self {
        JsonRef::Object(value)
    }
}

impl OutputType for JsonRef<'_> {
    fn type_name() -> Cow<'static, str> {
        <Json as OutputType>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Json as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        _ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<GqlValue> {
        Ok(match self {
            JsonRef::Value(value) => graphql_value(value),
            JsonRef::Object(object) => graphql_object(object),
        })
    }
}

/// The GraphQL value of a JSON value, built from a reference (serde's way,
/// `GqlValue::from_json`, takes the value by move and goes through a serializer).
fn graphql_value(value: &Value) -> GqlValue {
    match value {
        Value::Null => GqlValue::Null,
        Value::Bool(b) => GqlValue::Boolean(*b),
        Value::Number(n) => GqlValue::Number(n.clone()),
        Value::String(s) => GqlValue::String(s.clone()),
        Value::Array(items) => GqlValue::List(items.iter().map(graphql_value).collect()),
        Value::Object(object) => graphql_object(object),
    }
}

fn graphql_object(object: &JsonObject) -> GqlValue {
    GqlValue::Object(
        object
            .iter()
            .map(|(key, value)| (Name::new(key), graphql_value(value)))
            .collect(),
    )
}

impl From<Value> for Json {
    fn from(value: Value) -> Self {
        Json(value)
    }
}

impl From<crate::domain::JsonObject> for Json {
    fn from(value: crate::domain::JsonObject) -> Self {
        Json(Value::Object(value))
    }
}

/// A point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<Utc>);

/// A point in time, RFC 3339 (written in UTC with microseconds).
#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: GqlValue) -> InputValueResult<Self> {
        match &value {
            GqlValue::String(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| DateTime(t.with_timezone(&Utc)))
                .map_err(|err| InputValueError::custom(format!("not an RFC 3339 time: {err}"))),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> GqlValue {
        GqlValue::String(timestamp(self.0))
    }
}

impl From<chrono::DateTime<Utc>> for DateTime {
    fn from(value: chrono::DateTime<Utc>) -> Self {
        DateTime(value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_borrowed_json_value_is_served_as_serde_would_convert_it() {
        let value = json!({
            "z": [1, -2, 3.5, 1e300, u64::MAX, "s\"\n", null, true, {"nested": {}}],
            "a": {"b": [], "c": false},
            "": "empty key"
        });
        let expected = GqlValue::from_json(value.clone()).unwrap();
        assert_eq!(graphql_value(&value), expected);
        assert_eq!(graphql_object(value.as_object().unwrap()), expected);
        // Key order is kept, as the JSON scalar promises.
        let GqlValue::Object(object) = graphql_value(&value) else {
            panic!("an object");
        };
        let keys: Vec<&str> = object.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", ""]);
    }
}
