//! Matching QMP events against filters.

use serde_json::{Number, Value};

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
