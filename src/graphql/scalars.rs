//! The two custom scalars.
//!
//! - `JSON`: kwargs, results, metadata and configurations travel as plain JSON
//!   values, inline in the GraphQL document or in variables.
//! - `DateTime`: RFC 3339 in UTC with microseconds (`2024-05-01T12:00:00.123456Z`),
//!   exactly as the timestamps in instance metadata are written, so the two
//!   compare as strings.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value as GqlValue};
use chrono::Utc;
use serde_json::Value;

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
        // Every serde_json value has a GraphQL value; the fallback is unreachable.
        GqlValue::from_json(self.0.clone()).unwrap_or(GqlValue::Null)
    }
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
