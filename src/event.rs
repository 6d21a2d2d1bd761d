//! Matching QMP events against filters: the rule ([`event_match`]) and the typed filter an
//! event wait takes ([`EventFilter`]), with the one parser of its JSON form (the C ABI's
//! `filters_json`, which every binding sends).

use serde_json::{Number, Value};

use crate::error::{Error, Result};

/// What an event wait looks for: an event called `name` whose body matches `filter` by the
/// rule of [`event_match`] (`None`: any body).
#[derive(Clone, Debug, PartialEq)]
pub struct EventFilter {
    /// The event's name, e.g. `"SHUTDOWN"`.
    pub name: String,
    /// A sub-dict the event must match, e.g. `{"data": {"guest": true}}`; `None` for any.
    pub filter: Option<Value>,
}

impl EventFilter {
    /// A filter for any event called `name`.
    pub fn new(name: impl Into<String>) -> EventFilter {
        EventFilter {
            name: name.into(),
            filter: None,
        }
    }

    /// The same filter, also requiring the event to match `filter` ([`event_match`]).
    pub fn matching(mut self, filter: Value) -> EventFilter {
        self.filter = Some(filter);
        self
    }

    /// Whether `event` (a whole QMP event object) is called `name` and matches.
    pub fn matches(&self, event: &Value) -> bool {
        event.get("event").and_then(Value::as_str) == Some(self.name.as_str())
            && event_match(event, self.filter.as_ref())
    }

    /// Parses the JSON form of a list of filters: a non-empty array of
    /// `{"name": "EVENT", "match": {...}}` objects (`"match"` optional, an object or `null`;
    /// no other key). [`Error::Invalid`] says what is wrong and where.
    pub fn list_from_json(value: Value) -> Result<Vec<EventFilter>> {
        let bad = |why: String| Error::Invalid(why);
        let Value::Array(items) = value else {
            return Err(bad(
                "must be a JSON array of {\"name\": ..., \"match\": ...} objects".into(),
            ));
        };
        if items.is_empty() {
            return Err(bad("the array is empty; give at least one filter".into()));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let Value::Object(mut obj) = item else {
                    return Err(bad(format!(
                        "element {i} is {}, not an object",
                        kind(&item)
                    )));
                };
                if let Some(key) = obj.keys().find(|k| *k != "name" && *k != "match") {
                    return Err(bad(format!("element {i} has an unknown key {key:?}")));
                }
                let name = match obj.remove("name") {
                    Some(Value::String(name)) => name,
                    _ => return Err(bad(format!("element {i} needs a string \"name\""))),
                };
                let filter = match obj.remove("match") {
                    None | Some(Value::Null) => None,
                    Some(v @ Value::Object(_)) => Some(v),
                    Some(other) => {
                        return Err(bad(format!(
                            "element {i}: \"match\" is {}, not an object or null",
                            kind(&other)
                        )))
                    }
                };
                Ok(EventFilter { name, filter })
            })
            .collect()
    }
}

/// A JSON value's kind, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// True when `event` matches `filter`, the rule of QEMU's `QEMUMachine.event_match`.
///
/// The filter is a sub-dict: `event` must hold every key of `filter`, recursively, with equal
/// values wherever the filter's value is not `null`. A `null` filter (or `None`) matches
/// anything, so a filter cannot ask for an explicit `null`. Numbers compare by value (`1`
/// matches `1.0`).
///
/// ```
/// use qm::event_match;
/// use serde_json::json;
/// assert!(event_match(&json!({"foo": {"bar": 1}}), Some(&json!({"foo": null}))));
/// assert!(!event_match(&json!({"foo": {"bar": 1}}), Some(&json!({"foo": {"abc": null}}))));
/// ```
pub fn event_match(event: &Value, filter: Option<&Value>) -> bool {
    match filter {
        None | Some(Value::Null) => true,
        Some(Value::Object(filter)) => match event {
            Value::Object(event) => filter
                .iter()
                .all(|(k, f)| event.get(k).is_some_and(|e| event_match(e, Some(f)))),
            _ => false,
        },
        Some(Value::Number(f)) => match event {
            Value::Number(e) => numbers_equal(e, f),
            _ => false,
        },
        Some(other) => other == event,
    }
}

/// Equality by value, exact as in Python: `1 == 1.0`, but integers are never rounded through
/// a float (`2**64-1 != 2**64-2`).
fn numbers_equal(a: &Number, b: &Number) -> bool {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    /// A float equals an integer only if it is integral and converts back exactly.
    fn float_is(f: f64, i: i128) -> bool {
        f.fract() == 0.0 && f >= i128::MIN as f64 && f < i128::MAX as f64 && f as i128 == i
    }
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => x == y,
        (Some(x), None) => b.as_f64().is_some_and(|f| float_is(f, x)),
        (None, Some(y)) => a.as_f64().is_some_and(|f| float_is(f, y)),
        (None, None) => a.as_f64() == b.as_f64(),
    }
}

#[cfg(test)]
mod filter_tests {
    use super::EventFilter;
    use serde_json::{json, Value};

    #[test]
    fn filters_from_json() {
        let f = EventFilter::list_from_json(
            json!([{"name":"STOP"},{"name":"RESET","match":{"data":{"guest":false}}}]),
        )
        .unwrap();
        assert_eq!(f[0], EventFilter::new("STOP"));
        assert_eq!(
            f[1],
            EventFilter::new("RESET").matching(json!({"data":{"guest":false}}))
        );
        assert!(f[1].matches(&json!({"event":"RESET","data":{"guest":false,"reason":"x"}})));
        assert!(!f[1].matches(&json!({"event":"STOP","data":{"guest":false}})));
        for bad in [
            "{}",
            "[]",
            "[1]",
            r#"[{"match":{}}]"#,
            r#"[{"name":1}]"#,
            r#"[{"name":"A","match":[1]}]"#,
            r#"[{"name":"A","mach":{}}]"#,
        ] {
            let value: Value = serde_json::from_str(bad).unwrap();
            assert!(EventFilter::list_from_json(value).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event_match;
    use serde_json::json;

    /// The examples of the docstring of `QEMUMachine.event_match`, query on the left.
    #[test]
    fn seed_docstring_examples() {
        assert!(event_match(&json!({"foo": 1}), None));
        assert!(event_match(
            &json!({"foo": {"bar": 1}}),
            Some(&json!({"foo": null}))
        ));
        assert!(event_match(&json!({"foo": 5}), Some(&json!({"foo": null}))));
        assert!(!event_match(
            &json!({"foo": {"bar": 1}}),
            Some(&json!({"foo": {"abc": null}}))
        ));
        assert!(event_match(
            &json!({"foo": {"bar": 1, "rab": 2}}),
            Some(&json!({"foo": {"rab": 2}}))
        ));
    }

    #[test]
    fn values_compare_exactly() {
        let ev = json!({"event": "BLOCK_JOB_COMPLETED", "data": {"device": "drive0", "len": 10}});
        assert!(event_match(
            &ev,
            Some(&json!({"data": {"device": "drive0"}}))
        ));
        assert!(!event_match(
            &ev,
            Some(&json!({"data": {"device": "drive1"}}))
        ));
        assert!(event_match(&ev, Some(&json!({"data": {"len": 10.0}}))));
        assert!(!event_match(&ev, Some(&json!({"data": {"len": 11}}))));
        assert!(!event_match(
            &ev,
            Some(&json!({"data": {"device": {"x": 1}}}))
        ));
        assert!(!event_match(&ev, Some(&json!({"missing": null}))));
        assert!(event_match(&json!([1, 2]), Some(&json!([1, 2]))));
        assert!(!event_match(&json!("1"), Some(&json!(1))));
    }

    #[test]
    fn integers_compare_exactly_not_through_floats() {
        let big = json!({"n": u64::MAX});
        assert!(event_match(&big, Some(&json!({"n": u64::MAX}))));
        assert!(!event_match(&big, Some(&json!({"n": u64::MAX - 1}))));
        let min = json!({"n": i64::MIN});
        assert!(!event_match(&min, Some(&json!({"n": i64::MIN + 1}))));
        assert!(event_match(&json!({"n": 2.0}), Some(&json!({"n": 2}))));
        assert!(!event_match(&json!({"n": 2.5}), Some(&json!({"n": 2}))));
        // 2^53 + 1 has no float: the float 2^53 is not it.
        assert!(!event_match(
            &json!({"n": 9007199254740993u64}),
            Some(&json!({"n": 9007199254740992.0}))
        ));
    }
}
