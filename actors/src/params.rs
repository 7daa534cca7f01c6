//! Request parameters the way Abaco's `reqparse` reads them: the JSON object body (when the
//! content type is JSON) merged with the query string and a form body, JSON values first, and
//! typed converters whose failures name the parameter and its help text.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::case::{under_to_camel, Case};
use crate::reply::ApiError;

/// The merged parameters of one request.
#[derive(Debug, Default)]
pub struct Params {
    json: Map<String, Value>,
    /// Query string and form values, in order, repeated keys kept.
    values: Vec<(String, String)>,
    case: Case,
}

/// A parameter: its snake name and help text (used in error messages).
pub struct Param {
    pub name: &'static str,
    pub help: &'static str,
}

impl Params {
    /// Builds the parameters of a request. `prefix` starts error messages ("Invalid actor description").
    pub fn parse(
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        case: Case,
        prefix: &str,
    ) -> Result<Params, ApiError> {
        let mut params = Params {
            case,
            ..Params::default()
        };
        if let Some(q) = query {
            params.values.extend(parse_urlencoded(q));
        }
        let content_type = content_type(headers);
        if content_type == "application/json" {
            if !body.iter().all(u8::is_ascii_whitespace) {
                match parse_json(body) {
                    Ok(Value::Object(map)) => params.json = map,
                    Ok(Value::Null) => {}
                    Ok(_) => {
                        return Err(ApiError::bad(format!(
                            "{prefix}: Unable to process the JSON description.: the body must be a JSON object."
                        )))
                    }
                    Err(e) => {
                        return Err(ApiError::bad(format!(
                            "{prefix}: Unable to process the JSON description.: 400 Bad Request: Failed to decode JSON object: {e}"
                        )))
                    }
                }
            }
        } else if content_type == "application/x-www-form-urlencoded" {
            let text = std::str::from_utf8(body).map_err(|_| {
                ApiError::bad(format!("{prefix}: the form body is not valid UTF-8."))
            })?;
            params.values.extend(parse_urlencoded(text));
        }
        Ok(params)
    }

    /// The wire name of a parameter in the configured case.
    pub fn wire_name(&self, name: &str) -> String {
        match self.case {
            Case::Snake => name.to_string(),
            Case::Camel => under_to_camel(name),
        }
    }

    /// The first value given for `name` (JSON wins), `None` when absent or JSON `null`.
    pub fn raw(&self, name: &str) -> Option<Value> {
        let key = self.wire_name(name);
        if let Some(v) = self.json.get(&key) {
            return match v {
                Value::Null => None,
                Value::Array(items) if items.is_empty() => None,
                Value::Array(items) => Some(items[0].clone()),
                other => Some(other.clone()),
            };
        }
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| Value::String(v.clone()))
    }

    /// Whether the parameter was supplied at all (even as `null`).
    pub fn has(&self, name: &str) -> bool {
        let key = self.wire_name(name);
        self.json.contains_key(&key) || self.values.iter().any(|(k, _)| *k == key)
    }

    /// Every value given for `name` (for `action='append'` parameters such as `hints`).
    pub fn all(&self, name: &str) -> Vec<Value> {
        let key = self.wire_name(name);
        let mut out = Vec::new();
        match self.json.get(&key) {
            Some(Value::Array(items)) => out.extend(items.iter().cloned()),
            Some(Value::Null) | None => {}
            Some(other) => out.push(other.clone()),
        }
        out.extend(
            self.values
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| Value::String(v.clone())),
        );
        out
    }

    pub fn string(&self, p: &Param, prefix: &str) -> Result<Option<String>, ApiError> {
        match self.raw(p.name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Bool(b)) => Ok(Some(if b { "True" } else { "False" }.into())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.invalid(p, prefix)),
        }
    }

    pub fn required_string(&self, p: &Param, prefix: &str) -> Result<String, ApiError> {
        match self.string(p, prefix)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(self.invalid(p, prefix)),
        }
    }

    /// Flask-RESTful's `inputs.boolean`: JSON booleans, or `true/false/1/0` strings.
    pub fn boolean(&self, p: &Param, prefix: &str) -> Result<Option<bool>, ApiError> {
        match self.raw(p.name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(self.invalid(p, prefix)),
            },
            Some(_) => Err(self.invalid(p, prefix)),
        }
    }

    pub fn int(&self, p: &Param, prefix: &str) -> Result<Option<i64>, ApiError> {
        match self.raw(p.name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| self.invalid(p, prefix)),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.invalid(p, prefix)),
            Some(_) => Err(self.invalid(p, prefix)),
        }
    }

    /// A JSON object (form values must hold a JSON object too).
    pub fn dict(&self, p: &Param, prefix: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.raw(p.name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(Value::String(s)) => match parse_json(s.as_bytes()) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                _ => Err(self.invalid(p, prefix)),
            },
            Some(_) => Err(self.invalid(p, prefix)),
        }
    }

    /// `"{prefix}: {'name': 'help'}"` as Abaco words it.
    pub fn invalid(&self, p: &Param, prefix: &str) -> ApiError {
        ApiError::bad(format!(
            "{prefix}: {{'{}': '{}'}}",
            self.wire_name(p.name),
            p.help
        ))
    }
}

/// How deeply a JSON body may nest. The platform stores what it is given inside its own
/// documents (an actor's state, a mailbox message), which add levels of their own; anything
/// near serde_json's limit of 128 would be accepted here and then be unreadable from the store.
pub const MAX_JSON_DEPTH: usize = 64;

/// Why a JSON request body was refused.
#[derive(Debug)]
pub enum JsonError {
    /// Not JSON: serde_json's reason.
    Syntax(String),
    /// Nested deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Syntax(why) => f.write_str(why),
            JsonError::TooDeep => write!(
                f,
                "the JSON document is nested deeper than {MAX_JSON_DEPTH} levels"
            ),
        }
    }
}

/// Parses a JSON request body, refusing documents nested deeper than [`MAX_JSON_DEPTH`].
pub fn parse_json(body: &[u8]) -> Result<Value, JsonError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json stops at 128 levels itself.
        if e.to_string().starts_with("recursion limit exceeded") {
            JsonError::TooDeep
        } else {
            JsonError::Syntax(e.to_string())
        }
    })?;
    if depth_exceeds(&value, MAX_JSON_DEPTH) {
        return Err(JsonError::TooDeep);
    }
    Ok(value)
}

/// Whether `value` nests more than `limit` arrays and objects deep.
fn depth_exceeds(value: &Value, limit: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return false,
    };
    if limit == 0 {
        return true;
    }
    children
        .into_iter()
        .any(|child| depth_exceeds(child, limit - 1))
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Decodes `a=1&b=two+words` pairs (percent-decoding, `+` as space).
/// A paging parameter (`skip`, `limit`, `offset`): a non-negative integer; the error names it.
pub fn non_negative(name: &str, value: &str) -> Result<usize, String> {
    value.trim().parse::<usize>().map_err(|_| {
        format!("Invalid {name} parameter: {value:?}; it must be a non-negative integer.")
    })
}

pub fn parse_urlencoded(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_pairs_decode() {
        assert_eq!(
            parse_urlencoded("a=1&b=two+words&c=%7B%7D&d"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "two words".into()),
                ("c".into(), "{}".into()),
                ("d".into(), "".into())
            ]
        );
        assert_eq!(
            parse_urlencoded("x=100%"),
            vec![("x".into(), "100%".into())]
        );
    }

    fn json_params(body: &str, case: Case) -> Result<Params, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        Params::parse(
            &headers,
            None,
            body.as_bytes(),
            case,
            "Invalid actor description",
        )
    }

    const IMAGE: Param = Param {
        name: "image",
        help: "Reference to image on docker hub for this actor.",
    };
    const STATELESS: Param = Param {
        name: "stateless",
        help: "Whether the actor stores private state.",
    };

    #[test]
    fn missing_required_names_the_field() {
        let p = json_params("{}", Case::Snake).unwrap();
        let err = p
            .required_string(&IMAGE, "Invalid actor description")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid actor description: {'image': 'Reference to image on docker hub for this actor.'}"
        );
    }

    #[test]
    fn booleans_follow_inputs_boolean() {
        let p = json_params(r#"{"stateless": "FALSE"}"#, Case::Snake).unwrap();
        assert_eq!(p.boolean(&STATELESS, "x").unwrap(), Some(false));
        let p = json_params(r#"{"stateless": "nope"}"#, Case::Snake).unwrap();
        assert!(p.boolean(&STATELESS, "x").is_err());
        let p = json_params(r#"{"stateless": 1}"#, Case::Snake).unwrap();
        assert!(p.boolean(&STATELESS, "x").is_err());
    }

    #[test]
    fn malformed_json_is_a_400() {
        let err = json_params("{not json", Case::Snake).unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)));
        let err = json_params("[1,2]", Case::Snake).unwrap_err();
        assert!(matches!(err, ApiError::BadRequest(_)));
    }

    #[test]
    fn camel_mode_reads_camel_names_only() {
        const MAX: Param = Param {
            name: "max_workers",
            help: "How many workers this actor is allowed at the same time.",
        };
        let p = json_params(r#"{"maxWorkers": 3, "max_workers": 9}"#, Case::Camel).unwrap();
        assert_eq!(p.int(&MAX, "x").unwrap(), Some(3));
    }
}
