//! The deep merge of `withParams` under trigger kwargs (docs/configuration.md, "withParams").

use serde_json::Value;

use super::JsonObject;

/// Merges `overlay` into `base`: on conflict the overlay wins, nested objects merge
/// recursively, every other value (lists included) is replaced.
pub fn deep_merge(base: &JsonObject, overlay: &JsonObject) -> JsonObject {
    let mut merged = base.clone();
    merge_into(&mut merged, overlay);
    merged
}

/// In-place form of [`deep_merge`].
pub fn merge_into(target: &mut JsonObject, overlay: &JsonObject) {
    for (key, value) in overlay {
        match (target.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming)) => {
                merge_into(existing, incoming)
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn trigger_kwargs_win_and_nested_objects_merge() {
        let params = obj(
            json!({"scoring": {"model": "Psych 01", "weights": [1, 2], "deep": {"a": 1}}, "static": true}),
        );
        let kwargs = obj(json!({"scoring": {"weights": [3], "deep": {"b": 2}}, "page": 1}));
        assert_eq!(
            Value::Object(deep_merge(&params, &kwargs)),
            json!({"scoring": {"model": "Psych 01", "weights": [3], "deep": {"a": 1, "b": 2}}, "static": true, "page": 1})
        );
    }

    #[test]
    fn a_scalar_replaces_an_object_and_the_reverse() {
        let base = obj(json!({"a": {"x": 1}, "b": 2}));
        let overlay = obj(json!({"a": 5, "b": {"y": 1}}));
        assert_eq!(
            Value::Object(deep_merge(&base, &overlay)),
            json!({"a": 5, "b": {"y": 1}})
        );
    }
}
