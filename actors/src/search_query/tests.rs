//! Unit tests of the search query language: one `check(query, document, expected)` per case,
//! plus the regular-expression subset, paging, text filters and lenient datetimes.

use serde_json::{json, Value};

use super::*;
use crate::params::parse_urlencoded;

fn parse(query: &str) -> Result<Query, String> {
    Query::parse(&parse_urlencoded(query), Case::Snake)
}

/// Whether the document matches the query string.
fn check(query: &str, doc: &Value, expect: bool) {
    let q = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(
        q.matches_doc(doc, &Budget::default()),
        Ok(expect),
        "{query} on {doc}"
    );
}

fn check_error(query: &str, expect: &str) {
    let err = parse(query).expect_err(query);
    assert!(err.contains(expect), "{query}: {err}");
}

fn execution() -> Value {
    json!({
        "id": "E1", "actor_id": "DEV_A1", "status": "COMPLETE", "runtime": 12, "cpu": 300,
        "executor": "alice", "exit_code": 0, "worker_id": null,
        "message_received_time": "2021-05-01T12:30:45.123456789Z",
        "start_time": "2021-05-01T12:30:46Z",
        "final_state": {"StartedAt": "2021-05-01T12:30:46.5Z", "ExitCode": 0},
        "hints": ["sync", "fast"], "default_environment": {"k": "v"}
    })
}

#[test]
fn equality_and_negation() {
    let e = execution();
    check("status=COMPLETE", &e, true);
    check("status.eq=COMPLETE", &e, true);
    check("status.eq=complete", &e, false);
    check("status.neq=COMPLETE", &e, false);
    check("status.neq=ERROR", &e, true);
    check("runtime=12", &e, true);
    check("runtime=12.0", &e, true);
    check("exit_code=0", &e, true);
    check("worker_id=none", &e, true);
    check("missing=none", &e, true);
    check("missing.neq=x", &e, true);
    check("executor=alice&status=COMPLETE", &e, true);
    check("executor=alice&status=ERROR", &e, false);
    check("default_environment={'k': 'v'}", &e, true);
    check("final_state.ExitCode=0", &e, true);
}

#[test]
fn membership() {
    let e = execution();
    check("status.in=['COMPLETE','ERROR']", &e, true);
    check("status.in=COMPLETE,ERROR", &e, true);
    check("status.in=RUNNING", &e, false);
    check("status.nin=RUNNING,SUBMITTED", &e, true);
    check("status.nin=[\"COMPLETE\"]", &e, false);
    check("hints=sync", &e, true);
    check("hints.in=slow,fast", &e, true);
    check("hints.nin=fast", &e, false);
    check("hints=['sync','fast']", &e, true);
}

#[test]
fn ordering_numbers_strings_and_times() {
    let e = execution();
    check("runtime.gt=11", &e, true);
    check("runtime.gt=12", &e, false);
    check("runtime.gte=12", &e, true);
    check("runtime.lt=12", &e, false);
    check("runtime.lte=12", &e, true);
    check("runtime.between=10,12", &e, true);
    check("runtime.between=13,20", &e, false);
    check("executor.gt=a", &e, true);
    check("runtime.gt=abc", &e, false);
    check("message_received_time.gt=2021-05-01T12:30", &e, true);
    check("message_received_time.gt=2021-05-02", &e, false);
    check("message_received_time.lt=2022", &e, true);
    check("start_time.eq=2021-05-01T12:30:46Z", &e, true);
    check("start_time.between=2021-05-01,2021-05-02", &e, true);
    check("start_time.gte=2021-05-01T14:30:46%2B02:00", &e, true);
    check("start_time.gt=2021-05-01T14:30:46%2B02:00", &e, false);
    check("final_state.StartedAt.gt=2021-05-01T12:30:46.4", &e, true);
}

#[test]
fn like_patterns() {
    let e = execution();
    check("executor.like=li", &e, true);
    check("executor.like=^al.*e$", &e, true);
    check("executor.like=^li", &e, false);
    check("executor.nlike=^b", &e, true);
    check("hints.like=^fa", &e, true);
    check("runtime.like=1", &e, false);
    check("runtime.nlike=1", &e, true);
    for (pattern, text, expect) in [
        ("a+b", "xaab", true),
        ("a+b", "xb", false),
        ("colou?r", "color", true),
        ("[0-9]\\d", "x42", true),
        ("[^a-z]", "abc", false),
        ("\\.", "a.b", true),
        ("\\.", "ab", false),
        ("^$", "", true),
        ("x*", "", true),
        ("a.*?c$", "abbc", true),
        ("\\w+\\s\\S", "hi there", true),
        ("[a\\-]", "-", true),
    ] {
        let p = Pattern::compile(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(p.is_match(text), expect, "{pattern} on {text:?}");
    }
}

#[test]
fn text_search_is_a_case_insensitive_filter() {
    let item = json!({"logs": "Hello World\nbye", "_links": {"self": "http://x/actors/v2/A1"}});
    let text = |q: &str| parse(q).map(|q| q.matches_text(&item)).unwrap_or(false);
    assert!(text("search=hello"));
    assert!(text("search=world+BYE"));
    assert!(!text("search=world+nope"));
    assert!(text("exactsearch=o+w"));
    assert!(!text("exactsearch=world+hello"));
    assert!(text("search=A1"));
    assert!(text(""));
}

#[test]
fn paging_and_reserved_parameters() {
    let q = parse("skip=5&limit=2&x-nonce=abc&pretty=true").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((q.skip, q.limit, q.conditions.len()), (5, 2, 0));
    let q = parse("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((q.skip, q.limit), (0, DEFAULT_LIMIT));
    check_error("skip=-1", "skip");
    check_error("limit=ten", "limit");
}

#[test]
fn invalid_input_is_reported() {
    check_error("start_time.gt=yesterday", "Invalid datetime");
    check_error("runtime.between=5", "between takes two values");
    check_error("executor.like=(a|b)", "not supported");
    check_error("executor.like=*a", "quantifier follows nothing");
    check_error("executor.like=[ab", "unclosed");
    check_error(".eq=3", "Invalid search field");
}

#[test]
fn camel_keys_and_actor_ids() {
    let pairs = parse_urlencoded("lastUpdateTime.gt=2020&actor_id=A1&actor_id.in=A2,DEV_A3");
    let mut q = Query::parse(&pairs, Case::Camel).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(q.conditions[0].path, vec!["last_update_time".to_string()]);
    q.qualify_actor_ids("DEV");
    assert_eq!(q.conditions[1].test, Test::Eq(Term::Text("DEV_A1".into())));
    assert_eq!(
        q.conditions[2].test,
        Test::In(vec![
            Term::Text("DEV_A2".into()),
            Term::Text("DEV_A3".into())
        ])
    );
}

#[test]
fn lenient_datetimes() {
    let at = |s: &str| parse_time(s).map(|t| t.to_rfc3339());
    for (input, expect) in [
        ("2020", Some("2020-01-01T00:00:00+00:00")),
        ("2020-05", Some("2020-05-01T00:00:00+00:00")),
        ("2020-05-01", Some("2020-05-01T00:00:00+00:00")),
        ("2020-05-01T14", Some("2020-05-01T14:00:00+00:00")),
        ("2020-05-01 14:45", Some("2020-05-01T14:45:00+00:00")),
        (
            "2020-05-01T14:45:41.591Z",
            Some("2020-05-01T14:45:41.591+00:00"),
        ),
        (
            "2020-05-01T14:45:41-0500",
            Some("2020-05-01T19:45:41+00:00"),
        ),
        ("2020-13-01", None),
        ("20", None),
        ("2020-05-01T", None),
        ("nonsense", None),
    ] {
        assert_eq!(at(input).as_deref(), expect, "{input}");
    }
}

/// A `like` search that would match too much text is refused instead of occupying the server;
/// a literal pattern costs a few steps per character, `a*a*a*a*b` one per piece.
#[test]
fn like_matching_is_bounded_by_the_budget() {
    let doc = json!({"description": "a".repeat(1000)});
    let stars = parse("description.like=a*a*a*a*b").unwrap();
    assert_eq!(stars.matches_doc(&doc, &Budget::new(7_000)), Ok(false));
    assert_eq!(
        stars.matches_doc(&doc, &Budget::new(5_000)),
        Err(TOO_COSTLY.to_string())
    );
    let literal = parse("description.like=aab").unwrap();
    assert_eq!(literal.matches_doc(&doc, &Budget::new(5_000)), Ok(false));
    // The budget is shared by every document of one search.
    let budget = Budget::new(10_000);
    assert_eq!(stars.matches_doc(&doc, &budget), Ok(false));
    assert!(stars.matches_doc(&doc, &budget).is_err());
}
