//! The query language of `GET /actors/search/{type}` (spec §7.13), parsed from query parameters
//! and evaluated in Rust over stored documents, so every store backend answers the same way.
//!
//! A parameter `path[.op]=value` is one condition on the document field at `path` (dotted paths
//! reach into objects; arrays match when the whole array or any element matches, as in MongoDB).
//! Operators: `eq` (default), `neq`, `in`, `nin`, `like`, `nlike`, `between`, `gt`, `gte`, `lt`,
//! `lte`. Values are converted as Abaco does: `true`/`false`, `none`, numbers, JSON (with `'`
//! read as `"`), datetimes for time fields (lenient ISO-8601 prefixes such as `2020-05`), else the
//! raw string. `like` takes a regular expression of a safe subset (literals, `.`, classes, `\d \w
//! \s`, `* + ?`, `^ $`) matched in linear time. `search=` (every word) and `exactsearch=` (the
//! phrase) are case-insensitive substring filters over the strings of the displayed item.
//! This module knows neither HTTP nor the store; the route supplies documents and items.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use serde_json::Value;

use crate::case::Case;
use crate::params::non_negative as count;

mod pattern;

pub use pattern::Pattern;

/// Records returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// Fields whose values are compared as datetimes (Abaco's list, plus `finish_time`).
pub const TIME_FIELDS: &[&str] = &[
    "start_time",
    "message_received_time",
    "last_execution_time",
    "last_update_time",
    "StartedAt",
    "FinishedAt",
    "create_time",
    "last_health_check_time",
    "finish_time",
];

/// Parameters that are not conditions.
const RESERVED: &[&str] = &[
    "x-nonce",
    "skip",
    "limit",
    "search",
    "exactsearch",
    "pretty",
];

/// Longest accepted `like` pattern, in characters.
const MAX_PATTERN: usize = 1000;

/// How much `like` matching one search may do, in automaton steps (per character, one per live
/// state tested; usually a few): a fraction of a second of CPU, and room for a simple pattern
/// over 10,000 actors with kilobyte descriptions. A search that needs more is refused rather
/// than allowed to occupy the server.
pub const MATCH_BUDGET: u64 = 300_000_000;

/// What is left of a search's [`MATCH_BUDGET`].
#[derive(Debug)]
pub struct Budget {
    left: std::cell::Cell<u64>,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(MATCH_BUDGET)
    }
}

impl Budget {
    pub fn new(steps: u64) -> Budget {
        Budget {
            left: std::cell::Cell::new(steps),
        }
    }

    /// Matches `pattern` against `text` on what is left; `None` once it runs out.
    fn matches(&self, pattern: &Pattern, text: &str) -> Option<bool> {
        let mut left = self.left.get();
        let outcome = pattern.is_match_within(text, &mut left);
        self.left.set(left);
        outcome
    }
}

/// The error of a search that ran out of [`Budget`].
pub const TOO_COSTLY: &str = "The search needs too much matching: narrow it (a shorter `like` pattern, fewer wildcards, or other conditions first).";

/// A parsed search: conditions, text filters and the page.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub conditions: Vec<Condition>,
    /// Lower-cased words of `search=`; each must occur in the item.
    pub words: Vec<String>,
    /// Lower-cased phrases of `exactsearch=`; each must occur in the item.
    pub phrases: Vec<String>,
    pub skip: usize,
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub path: Vec<String>,
    pub test: Test,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Eq(Term),
    Neq(Term),
    In(Vec<Term>),
    Nin(Vec<Term>),
    Cmp(Ordering, bool, Term),
    Between(Term, Term),
    Like(Pattern),
    Nlike(Pattern),
}

/// A converted query value.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    Null,
    Bool(bool),
    Number(f64),
    Time(DateTime<Utc>),
    Text(String),
    Json(Value),
}

impl Query {
    /// Parses the query parameters of a search; the error is the client's mistake, worded for it.
    pub fn parse(pairs: &[(String, String)], case: Case) -> Result<Query, String> {
        let mut query = Query {
            conditions: Vec::new(),
            words: Vec::new(),
            phrases: Vec::new(),
            skip: 0,
            limit: DEFAULT_LIMIT,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "skip" => query.skip = count("skip", value)?,
                "limit" => query.limit = count("limit", value)?,
                "search" => query.words.extend(
                    value
                        .split_whitespace()
                        .map(|w| w.trim_matches('"').to_lowercase())
                        .filter(|w| !w.is_empty()),
                ),
                "exactsearch" => {
                    let phrase = value.trim().trim_matches('"').to_lowercase();
                    if !phrase.is_empty() {
                        query.phrases.push(phrase);
                    }
                }
                k if k.is_empty() || RESERVED.contains(&k) => {}
                _ => query.conditions.push(Condition::parse(key, value, case)?),
            }
        }
        Ok(query)
    }

    /// Lets `actor_id` conditions name the human actor id: stored documents hold the
    /// `{tenant}_{id}` key, so plain ids are qualified with the caller's tenant.
    pub fn qualify_actor_ids(&mut self, tenant: &str) {
        let prefix = format!("{tenant}_");
        let qualify = |t: &mut Term| {
            if let Term::Text(s) = t {
                if !s.starts_with(&prefix) {
                    *s = format!("{prefix}{s}");
                }
            }
        };
        for c in self
            .conditions
            .iter_mut()
            .filter(|c| c.path == ["actor_id"])
        {
            match &mut c.test {
                Test::Eq(t) | Test::Neq(t) => qualify(t),
                Test::In(ts) | Test::Nin(ts) => ts.iter_mut().for_each(qualify),
                _ => {}
            }
        }
    }

    /// Whether the stored document satisfies every condition.
    /// Fails with [`TOO_COSTLY`] when `budget` runs out.
    pub fn matches_doc(&self, doc: &Value, budget: &Budget) -> Result<bool, String> {
        for condition in &self.conditions {
            if !condition.matches(doc, budget)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the displayed item contains every `search` word and `exactsearch` phrase.
    pub fn matches_text(&self, item: &Value) -> bool {
        if self.words.is_empty() && self.phrases.is_empty() {
            return true;
        }
        let mut strings = Vec::new();
        collect_strings(item, &mut strings);
        let found = |needle: &String| strings.iter().any(|s| s.contains(needle.as_str()));
        self.words.iter().all(found) && self.phrases.iter().all(found)
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.to_lowercase()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

const OPERATORS: &[&str] = &[
    "eq", "neq", "in", "nin", "like", "nlike", "between", "gt", "gte", "lt", "lte",
];

impl Condition {
    fn parse(key: &str, raw: &str, case: Case) -> Result<Condition, String> {
        let mut path: Vec<String> = key.split('.').map(str::to_string).collect();
        let op = match path.last() {
            Some(last) if path.len() > 1 && OPERATORS.contains(&last.as_str()) => path.pop(),
            _ => None,
        };
        if path.iter().any(String::is_empty) {
            return Err(format!("Invalid search field: {key:?}."));
        }
        if case == Case::Camel {
            path[0] = camel_to_under(&path[0]);
        }
        let time = path.iter().any(|p| TIME_FIELDS.contains(&p.as_str()));
        let one = || convert(raw, time);
        let test = match op.as_deref() {
            None | Some("eq") => Test::Eq(one()?),
            Some("neq") => Test::Neq(one()?),
            Some("in") => Test::In(list(raw, time)?),
            Some("nin") => Test::Nin(list(raw, time)?),
            Some("like") => Test::Like(Pattern::compile(raw)?),
            Some("nlike") => Test::Nlike(Pattern::compile(raw)?),
            Some("between") => {
                let (a, b) = raw.split_once(',').ok_or_else(|| {
                    format!("Invalid value for {key}: between takes two values, `low,high`.")
                })?;
                Test::Between(convert(a.trim(), time)?, convert(b.trim(), time)?)
            }
            Some("gt") => Test::Cmp(Ordering::Greater, false, one()?),
            Some("gte") => Test::Cmp(Ordering::Greater, true, one()?),
            Some("lt") => Test::Cmp(Ordering::Less, false, one()?),
            Some("lte") => Test::Cmp(Ordering::Less, true, one()?),
            Some(other) => return Err(format!("Unknown search operator: {other}.")),
        };
        Ok(Condition { path, test })
    }

    fn matches(&self, doc: &Value, budget: &Budget) -> Result<bool, String> {
        let mut values = Vec::new();
        reach(doc, &self.path, &mut values);
        let any = |f: &dyn Fn(&Value) -> bool| values.iter().any(|v| f(v));
        let exhausted = std::cell::Cell::new(false);
        let like = |p: &Pattern, s: &str| {
            budget.matches(p, s).unwrap_or_else(|| {
                exhausted.set(true);
                false
            })
        };
        let outcome = match &self.test {
            Test::Eq(t) => equals_any(&values, t),
            Test::Neq(t) => !equals_any(&values, t),
            Test::In(ts) => ts.iter().any(|t| equals_any(&values, t)),
            Test::Nin(ts) => !ts.iter().any(|t| equals_any(&values, t)),
            Test::Cmp(dir, or_equal, t) => any(&|v| {
                compare(v, t).is_some_and(|o| o == *dir || (*or_equal && o == Ordering::Equal))
            }),
            Test::Between(low, high) => any(&|v| {
                compare(v, low).is_some_and(|o| o != Ordering::Less)
                    && compare(v, high).is_some_and(|o| o != Ordering::Greater)
            }),
            Test::Like(p) => any(&|v| v.as_str().is_some_and(|s| like(p, s))),
            Test::Nlike(p) => !any(&|v| v.as_str().is_some_and(|s| like(p, s))),
        };
        if exhausted.get() {
            return Err(TOO_COSTLY.to_string());
        }
        Ok(outcome)
    }
}

/// The values at `path`: through arrays on the way, and at the leaf the array and its elements.
fn reach<'a>(value: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    match (path.split_first(), value) {
        (None, Value::Array(items)) => {
            out.push(value);
            out.extend(items.iter());
        }
        (None, _) => out.push(value),
        (Some((head, rest)), Value::Object(map)) => {
            if let Some(v) = map.get(head) {
                reach(v, rest, out);
            }
        }
        (Some(_), Value::Array(items)) => items.iter().for_each(|v| reach(v, path, out)),
        (Some(_), _) => {}
    }
}

/// `null` also matches an absent field, as in MongoDB.
fn equals_any(values: &[&Value], term: &Term) -> bool {
    match term {
        Term::Null if values.is_empty() => true,
        _ => values.iter().any(|v| equals(v, term)),
    }
}

fn equals(value: &Value, term: &Term) -> bool {
    match (term, value) {
        (Term::Null, v) => v.is_null(),
        (Term::Bool(b), Value::Bool(v)) => b == v,
        (Term::Number(n), Value::Number(v)) => v.as_f64() == Some(*n),
        // Numeric strings (`uid`, all-digit ids) equal the number they spell.
        (Term::Number(n), Value::String(v)) => v.trim().parse::<f64>().ok() == Some(*n),
        (Term::Text(s), Value::String(v)) => s == v,
        (Term::Time(t), Value::String(v)) => parse_stored_time(v).is_some_and(|d| d == *t),
        (Term::Json(j), v) => json_equal(j, v),
        _ => false,
    }
}

fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// How the stored value orders against the term; `None` across types (never matches).
fn compare(value: &Value, term: &Term) -> Option<Ordering> {
    match (term, value) {
        (Term::Number(n), Value::Number(v)) => v.as_f64()?.partial_cmp(n),
        (Term::Json(Value::Number(n)), Value::Number(v)) => v.as_f64()?.partial_cmp(&n.as_f64()?),
        (Term::Text(s), Value::String(v)) => Some(v.as_str().cmp(s.as_str())),
        (Term::Time(t), Value::String(v)) => Some(parse_stored_time(v)?.cmp(t)),
        _ => None,
    }
}

/// Abaco's `camel_to_under`: `lastUpdateTime` → `last_update_time`.
pub fn camel_to_under(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `in`/`nin` values: a JSON list, else comma-separated items, else one value.
fn list(raw: &str, time: bool) -> Result<Vec<Term>, String> {
    if !time {
        if let Term::Json(Value::Array(items)) = convert(raw, false)? {
            return Ok(items.into_iter().map(term_of_json).collect());
        }
    }
    raw.split(',')
        .map(|item| convert(item.trim(), time))
        .collect()
}

fn term_of_json(v: Value) -> Term {
    match v {
        Value::Null => Term::Null,
        Value::Bool(b) => Term::Bool(b),
        Value::String(s) => Term::Text(s),
        Value::Number(n) => n
            .as_f64()
            .map(Term::Number)
            .unwrap_or(Term::Json(Value::Number(n))),
        other => Term::Json(other),
    }
}

/// Abaco's value conversion (spec §7.13 step 2).
pub fn convert(raw: &str, time: bool) -> Result<Term, String> {
    match raw {
        "true" | "True" => return Ok(Term::Bool(true)),
        "false" | "False" => return Ok(Term::Bool(false)),
        "none" | "None" | "null" => return Ok(Term::Null),
        _ => {}
    }
    if time {
        return parse_time(raw).map(Term::Time).ok_or_else(|| {
            format!(
                "Invalid datetime {raw:?}: use ISO-8601, e.g. 2020, 2020-05-01 or 2020-05-01T14:45:41.591Z."
            )
        });
    }
    if let Ok(n) = raw.trim().parse::<f64>() {
        if n.is_finite() && !raw.trim().is_empty() {
            return Ok(Term::Number(n));
        }
    }
    match serde_json::from_str::<Value>(&raw.replace('\'', "\"")) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(Term::Json(v)),
        Ok(Value::String(s)) => Ok(Term::Text(s)),
        _ => Ok(Term::Text(raw.to_string())),
    }
}

/// A stored time (RFC 3339), or any lenient ISO-8601 form.
pub fn parse_stored_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| parse_time(s))
}

/// Lenient ISO-8601: `2020`, `2020-05`, `2020-05-01`, `2020-05-01T14`, `...T14:45`,
/// `...T14:45:41`, `...T14:45:41.591`, each optionally followed by `Z` or an offset (`+02:00`,
/// `-0500`); a space may replace the `T`. Missing parts are the start of the period; no offset
/// means UTC.
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    let (body, offset) = split_offset(s)?;
    let (date, time) = match body.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (body, None),
    };
    let mut parts = date.split('-');
    let year: i32 = digits(parts.next()?, 4)?;
    let month: u32 = parts.next().map(|m| digits(m, 2)).unwrap_or(Some(1))?;
    let day: u32 = parts.next().map(|d| digits(d, 2)).unwrap_or(Some(1))?;
    if parts.next().is_some() {
        return None;
    }
    let (mut h, mut m, mut sec, mut nanos) = (0u32, 0u32, 0u32, 0u32);
    if let Some(t) = time {
        let (hms, frac) = match t.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (t, None),
        };
        let mut fields = hms.split(':');
        h = digits(fields.next()?, 2)?;
        m = fields.next().map(|x| digits(x, 2)).unwrap_or(Some(0))?;
        sec = fields.next().map(|x| digits(x, 2)).unwrap_or(Some(0))?;
        if fields.next().is_some() {
            return None;
        }
        if let Some(f) = frac {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            nanos = format!("{f:0<9}").parse().ok()?;
        }
    }
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(h, m, sec, nanos)?;
    let local = offset.from_local_datetime(&naive).single()?;
    Some(local.with_timezone(&Utc))
}

fn digits<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Splits a trailing `Z` or `±HH[:]MM` offset off a datetime.
fn split_offset(s: &str) -> Option<(&str, FixedOffset)> {
    let utc = FixedOffset::east_opt(0)?;
    if let Some(body) = s.strip_suffix(['Z', 'z']) {
        return Some((body, utc));
    }
    // An offset only follows a time: look for a sign after the `T`.
    let Some(t_at) = s.find(['T', ' ']) else {
        return Some((s, utc));
    };
    let Some(sign_at) = s[t_at..].rfind(['+', '-']).map(|i| i + t_at) else {
        return Some((s, utc));
    };
    let (body, off) = s.split_at(sign_at);
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let off = off[1..].replace(':', "");
    let hours: i32 = digits(off.get(..2)?, 2)?;
    let minutes: i32 = digits(off.get(2..)?, 2)?;
    Some((
        body,
        FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))?,
    ))
}

#[cfg(test)]
mod tests;
