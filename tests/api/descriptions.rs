//! The schema documents itself: every type, field, argument and enum value has
//! a description, so GraphiQL's docs panel and `schema.graphql` explain the
//! whole API.

use serde_json::{json, Value};

use crate::support::{spawn_app, TestDb};

on_both_backends!(every_type_field_argument_and_enum_value_has_a_description);

const INTROSPECTION: &str = "{ __schema { types {
    name kind description
    fields { name description args { name description } }
    inputFields { name description }
    enumValues { name description }
} } }";

fn described(value: &Value) -> bool {
    value["description"]
        .as_str()
        .is_some_and(|d| !d.trim().is_empty())
}

async fn every_type_field_argument_and_enum_value_has_a_description(db: TestDb) {
    let app = spawn_app(&db).await;
    let data = app.data(INTROSPECTION, json!({})).await;
    let mut missing = Vec::new();
    let empty = Vec::new();
    for ty in data["__schema"]["types"].as_array().expect("types") {
        let name = ty["name"].as_str().unwrap();
        if name.starts_with("__") {
            continue; // GraphQL's own introspection types
        }
        // GraphQL's own scalars are described by the GraphQL specification.
        let builtin = matches!(name, "String" | "Int" | "Float" | "Boolean" | "ID");
        if !builtin && !described(ty) {
            missing.push(format!("type {name}"));
        }
        for field in ty["fields"].as_array().unwrap_or(&empty) {
            let field_name = field["name"].as_str().unwrap();
            if !described(field) {
                missing.push(format!("field {name}.{field_name}"));
            }
            for arg in field["args"].as_array().unwrap_or(&empty) {
                if !described(arg) {
                    missing.push(format!("argument {name}.{field_name}({})", arg["name"]));
                }
            }
        }
        for field in ty["inputFields"].as_array().unwrap_or(&empty) {
            if !described(field) {
                missing.push(format!("input field {name}.{}", field["name"]));
            }
        }
        for value in ty["enumValues"].as_array().unwrap_or(&empty) {
            if !described(value) {
                missing.push(format!("enum value {name}.{}", value["name"]));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} parts of the schema have no description:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}
