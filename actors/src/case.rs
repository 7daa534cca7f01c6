//! snake_case / camelCase handling of `[web] case` (spec §2.9): parameter names are read in the
//! configured case, and model displays are renamed (dropping `null` fields) in camel mode.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Case {
    #[default]
    Snake,
    Camel,
}

impl Case {
    pub fn from_config(value: &str) -> Case {
        if value.eq_ignore_ascii_case("camel") {
            Case::Camel
        } else {
            Case::Snake
        }
    }
}

/// Abaco's `under_to_camel`: `default_environment` → `defaultEnvironment`, `_links` stays `_links`.
pub fn under_to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut first = true;
    for part in s.split('_') {
        if part.is_empty() {
            out.push('_');
            continue;
        }
        if first {
            out.push_str(&part.to_lowercase());
            first = false;
        } else {
            let mut chars = part.chars();
            if let Some(c) = chars.next() {
                out.extend(c.to_uppercase());
                out.push_str(&chars.as_str().to_lowercase());
            }
        }
    }
    out
}

/// A model display in the configured case: camel renames every key except `_links` and drops
/// `null` values (Abaco's `AbacoDAO.case()`).
pub fn model(case: Case, display: Map<String, Value>) -> Value {
    match case {
        Case::Snake => Value::Object(display),
        Case::Camel => Value::Object(
            display
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    if k.starts_with('_') {
                        (k, v)
                    } else {
                        (under_to_camel(&k), v)
                    }
                })
                .collect(),
        ),
    }
}

/// Abaco's `dict_to_camel`: renames top-level keys, keeps `null`s.
pub fn dict(case: Case, display: Map<String, Value>) -> Value {
    match case {
        Case::Snake => Value::Object(display),
        Case::Camel => Value::Object(
            display
                .into_iter()
                .map(|(k, v)| {
                    if k.starts_with('_') {
                        (k, v)
                    } else {
                        (under_to_camel(&k), v)
                    }
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_like_abaco() {
        for (snake, camel) in [
            ("default_environment", "defaultEnvironment"),
            ("max_workers", "maxWorkers"),
            ("use_container_uid", "useContainerUid"),
            ("log_ex", "logEx"),
            ("_links", "_links"),
            ("_abaco_foo", "_abacoFoo"),
            ("id", "id"),
        ] {
            assert_eq!(under_to_camel(snake), camel);
        }
    }

    #[test]
    fn camel_models_drop_nulls() {
        let mut m = Map::new();
        m.insert("max_workers".into(), Value::Null);
        m.insert("status_message".into(), Value::String("x".into()));
        assert_eq!(
            model(Case::Camel, m),
            serde_json::json!({"statusMessage": "x"})
        );
    }
}
