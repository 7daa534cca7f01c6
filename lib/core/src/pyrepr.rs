//! Python `repr` of JSON values. Abaco hands dicts and lists to containers as Python reprs
//! (`{'key': 'value', 'flag': True}`), and actor libraries parse them with `ast.literal_eval`,
//! so `MSG`, `_abaco_actor_state` and `_actor_configs` must be rendered the same way.

use serde_json::Value;

/// `str(value)` as Python would print it inside an environment variable: strings verbatim,
/// everything else as its repr.
pub fn env_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

/// Python's `repr` of the value.
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(value, &mut out);
    out
}

fn write_repr(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(k, out);
                out.push_str(": ");
                write_repr(v, out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    // Python prefers single quotes and switches to double quotes when that avoids escaping.
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: Value, expect: &str) {
        assert_eq!(repr(&value), expect);
    }

    #[test]
    fn renders_like_python() {
        check(
            json!({"key1": "value1", "n": 1, "flag": true, "x": null}),
            "{'key1': 'value1', 'n': 1, 'flag': True, 'x': None}",
        );
        check(json!([1, 2.5, "a"]), "[1, 2.5, 'a']");
        check(json!("it's"), "\"it's\"");
        check(json!("a'b\"c"), "'a\\'b\"c'");
        check(json!("line\nbreak"), "'line\\nbreak'");
        assert_eq!(env_value(&json!("plain")), "plain");
        assert_eq!(
            env_value(&json!({"event_type": "ACTOR_READY"})),
            "{'event_type': 'ACTOR_READY'}"
        );
    }
}
